// The states an instance's record speaks of. Every layer (driver, store, engine, API, CLI) uses
// these; nothing else defines them.

/** Lists every member of a string union exactly once, checked by the compiler. */
function members<T extends string>(all: Record<T, true>): readonly T[] {
  return Object.keys(all) as T[];
}

/** What the instance should be: the control plane's intent. */
export type VmState =
  | 'building'
  | 'active'
  | 'stopped'
  | 'paused'
  | 'suspended'
  | 'error'
  | 'deleted'
  | 'soft-deleted'
  | 'resized'
  | 'rescued'
  | 'shelved';

export const VM_STATES = members<VmState>({
  building: true,
  active: true,
  stopped: true,
  paused: true,
  suspended: true,
  error: true,
  deleted: true,
  'soft-deleted': true,
  resized: true,
  rescued: true,
  shelved: true,
});

/** Power state as hvsync understands it, whatever the hypervisor calls it. */
export type PowerState =
  | 'running'
  | 'paused'
  | 'shutdown' // shutting down
  | 'shutoff'
  | 'crashed'
  | 'suspended' // pm-suspended (guest suspend-to-RAM)
  | 'nostate';

export const POWER_STATES = members<PowerState>({
  running: true,
  paused: true,
  shutdown: true,
  shutoff: true,
  crashed: true,
  suspended: true,
  nostate: true,
});

/** A power state, or `missing`: the hypervisor no longer lists it but did not confirm it deleted. */
export type RecordedPowerState = PowerState | 'missing';

export const RECORDED_POWER_STATES: readonly RecordedPowerState[] = [...POWER_STATES, 'missing'];

/** What is being done to the instance while a task is in flight. */
export type TaskState = 'powering-on' | 'powering-off' | 'rebooting' | 'pausing' | 'unpausing';

export const TASK_STATES = members<TaskState>({
  'powering-on': true,
  'powering-off': true,
  rebooting: true,
  pausing: true,
  unpausing: true,
});

/** `observe` follows the hypervisor; `enforce` holds it to the record's intent. */
export type Policy = 'observe' | 'enforce';

export const POLICIES = members<Policy>({ observe: true, enforce: true });

/**
 * Why a transition was recorded. `reboot` (libvirt's reboot event) and `hard-reboot` (a stop and
 * a start seen together) leave the power state as it was: their entry is the only trace.
 * `migration`: another host confirmed the instance running there and the record moved to it; the
 * entry's detail names both hosts (`host-a → host-b`).
 */
export type TransitionCause =
  'event' | 'reconcile' | 'action' | 'adopt' | 'reboot' | 'hard-reboot' | 'migration';

export const TRANSITION_CAUSES = members<TransitionCause>({
  event: true,
  reconcile: true,
  action: true,
  adopt: true,
  reboot: true,
  'hard-reboot': true,
  migration: true,
});
