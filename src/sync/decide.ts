// The sync policy as a pure function of plain data: given what the record says, what the
// hypervisor confirmed and why we looked, what should be written and done. No I/O and no clock,
// so every row of docs/decisions.md is a unit test.
import { ALIVE_POWER_STATES } from '../model/index.ts';
import type {
  Policy,
  PowerState,
  RecordedPowerState,
  TransitionCause,
  VmState,
} from '../model/index.ts';
import type { Transition } from '../virt/index.ts';
import type { InstanceRecord } from '../store/index.ts';
import { isMigratingPause, migrationDecision } from './migration.ts';

/** What the hypervisor confirmed about one instance. */
export type Observation =
  | { readonly kind: 'present'; readonly powerState: PowerState; readonly reason: string }
  /** A listing lacked it and a lookup confirmed nothing either way. */
  | { readonly kind: 'missing' }
  /** The hypervisor confirmed it does not exist. */
  | { readonly kind: 'gone' };

export interface DecideInput {
  readonly record: Pick<
    InstanceRecord,
    'vmState' | 'taskState' | 'powerState' | 'powerReason' | 'host'
  >;
  readonly observation: Observation;
  /** The event that made us look, if any; it only adds detail, the observation decides. */
  readonly event: { readonly transition: Transition; readonly detail: string } | null;
  readonly thisHost: string;
  readonly policy: Policy;
  /** Why we looked; both causes decide on a confirmed observation, so the table is the same. */
  readonly cause: Extract<TransitionCause, 'event' | 'reconcile'>;
}

export type DecisionReason =
  | 'other-host'
  | 'running-elsewhere'
  | 'claimed'
  | 'migrated-away'
  | 'switching-over'
  | 'migration'
  | 'gone'
  | 'missing'
  | 'task-in-flight'
  | 'in-sync'
  | 'record-only'
  | 'shutting-down'
  | 'nostate'
  | 'deleted-but-alive'
  | 'intent-differs'
  | 'paused-left-alone'
  | 'started'
  | 'resumed'
  | 'paused'
  | 'suspended'
  | 'stopped'
  | 'crashed'
  | 'power-off';

export interface DecisionWrite {
  readonly powerState: RecordedPowerState;
  readonly powerReason: string;
  /** Present only when vmState changes. */
  readonly vmState?: VmState;
  /** Present only when the record moves to this host (a migration's claim). */
  readonly host?: string;
}

export interface Decision {
  /** Null when the record already says all this (or must not be touched). */
  readonly write: DecisionWrite | null;
  readonly action: 'force-stop' | null;
  /** The change was made behind hvsync's back (guest shutdown, virsh, a crash). */
  readonly outOfBand: boolean;
  /** Worth an operator's attention; nothing is done about it automatically. */
  readonly warn: boolean;
  readonly reason: DecisionReason;
  /** Set when the write moves the record between hosts: its history entry has cause `migration`. */
  readonly migration?: { readonly from: string; readonly to: string };
}

const LIVE_VM_STATES: ReadonlySet<VmState> = new Set(['active', 'stopped', 'paused', 'suspended']);
const CRASH_REASONS: ReadonlySet<string> = new Set(['crashed', 'failed', 'panicked']);

/**
 * The power state a decision works with. libvirt tears a crashed QEMU down to SHUTOFF with
 * reason `crashed` (or `failed` when the emulator died) unless the domain keeps crashed guests;
 * either way it is a crash, not a shutdown, and is recorded as one.
 */
export function effectivePower(
  observed: { readonly powerState: PowerState; readonly reason: string },
  event: DecideInput['event'],
): { powerState: PowerState; reason: string } {
  if (observed.powerState !== 'shutoff') return { ...observed };
  if (CRASH_REASONS.has(observed.reason)) return { powerState: 'crashed', reason: observed.reason };
  if (
    event &&
    (event.transition === 'crashed' ||
      (event.transition === 'stopped' && CRASH_REASONS.has(event.detail)))
  ) {
    return { powerState: 'crashed', reason: event.detail };
  }
  return { ...observed };
}

interface Row {
  readonly vmState?: VmState;
  readonly action?: 'force-stop';
  readonly warn?: boolean;
  readonly reason: DecisionReason;
}

const IN_SYNC: Row = { reason: 'in-sync' };
const RECORD_ONLY: Row = { reason: 'record-only' };
const SHUTTING_DOWN: Row = { reason: 'shutting-down' };
const STOPPED: Row = { vmState: 'stopped', reason: 'stopped' };
const CRASHED: Row = { vmState: 'stopped', reason: 'crashed' };

/** The policy table (docs/decisions.md) for instances on this host with no task in flight. */
function policyRow(policy: Policy, vmState: VmState, power: PowerState): Row {
  if (vmState === 'deleted' || vmState === 'soft-deleted') {
    return ALIVE_POWER_STATES.has(power)
      ? { warn: true, reason: 'deleted-but-alive' }
      : RECORD_ONLY;
  }
  if (!LIVE_VM_STATES.has(vmState)) return RECORD_ONLY;
  if (power === 'shutdown') return SHUTTING_DOWN;
  if (power === 'nostate') return { warn: vmState === 'active', reason: 'nostate' };
  if (power === 'crashed') return vmState === 'stopped' ? IN_SYNC : CRASHED;
  if (power === 'shutoff') return vmState === 'stopped' ? IN_SYNC : STOPPED;
  return policy === 'observe' ? observeLive(vmState, power) : enforceLive(vmState, power);
}

/** observe: the hypervisor is the truth and vmState follows it. */
function observeLive(vmState: VmState, power: 'running' | 'paused' | 'suspended'): Row {
  const follows: Record<typeof power, VmState> = {
    running: 'active',
    paused: 'paused',
    suspended: 'suspended',
  };
  const target = follows[power];
  if (target === vmState) return IN_SYNC;
  if (power === 'running')
    return { vmState: 'active', reason: vmState === 'stopped' ? 'started' : 'resumed' };
  return { vmState: target, reason: power };
}

/** enforce: vmState is the intent; Nova's table. */
function enforceLive(vmState: VmState, power: 'running' | 'paused' | 'suspended'): Row {
  switch (vmState) {
    case 'active':
      if (power === 'running') return IN_SYNC;
      // Tools pause guests briefly (snapshots, migrations): leave them be (Nova bug 1097806).
      if (power === 'paused') return { reason: 'paused-left-alone' };
      // Nova calls its stop API: the instance is stopped and powered off.
      return { vmState: 'stopped', action: 'force-stop', reason: 'power-off' };
    case 'stopped':
      return { action: 'force-stop', reason: 'power-off' };
    case 'paused':
      return power === 'paused' ? IN_SYNC : { warn: true, reason: 'intent-differs' };
    default: // suspended
      if (power === 'suspended') return IN_SYNC;
      // pm-suspend is the guest's own doing, never an intent hvsync set, so is its wake-up.
      if (power === 'running') return { vmState: 'active', reason: 'resumed' };
      return { warn: true, reason: 'intent-differs' };
  }
}

/** The fields to write, or null when the record already says so. */
function writeFor(
  record: DecideInput['record'],
  powerState: RecordedPowerState,
  powerReason: string,
  vmState: VmState | undefined,
): DecisionWrite | null {
  const vmChanges = vmState !== undefined && vmState !== record.vmState;
  if (!vmChanges && powerState === record.powerState) return null;
  return vmChanges ? { powerState, powerReason, vmState } : { powerState, powerReason };
}

export function decide(input: DecideInput): Decision {
  const { record, observation, event } = input;
  // Another host's instance, or a migration step: never a user's stop (docs: Migration).
  const migration = migrationDecision(input);
  if (migration) return migration;

  if (observation.kind === 'gone') {
    // Confirmed non-existence ends any intent, task or not. States whose workflows run without a
    // domain (building, shelved, resized...) or that need an operator (error) keep their vmState.
    const vmState = LIVE_VM_STATES.has(record.vmState) ? 'deleted' : undefined;
    const write = writeFor(record, 'nostate', 'undefined', vmState);
    return { write, action: null, outOfBand: write !== null, warn: false, reason: 'gone' };
  }

  if (observation.kind === 'missing') {
    // Absence alone proves nothing: say so, never conclude from it.
    const write = writeFor(record, 'missing', 'unlisted', undefined);
    return { write, action: null, outOfBand: false, warn: false, reason: 'missing' };
  }

  const power = effectivePower(observation, event);
  if (record.taskState !== null) {
    // The task's own completion settles vmState; meanwhile the power state is still the truth.
    const write = writeFor(record, power.powerState, power.reason, undefined);
    return { write, action: null, outOfBand: false, warn: false, reason: 'task-in-flight' };
  }

  const row = policyRow(input.policy, record.vmState, power.powerState);
  const write = writeFor(record, power.powerState, power.reason, row.vmState);
  return {
    write,
    action: row.action ?? null,
    outOfBand: write !== null,
    warn: row.warn ?? false,
    reason: row.reason,
  };
}

/** The vmState an unknown domain is adopted with: what it is now, never a reason to act. */
export function adoptedVmState(powerState: PowerState): VmState {
  switch (powerState) {
    case 'running':
    case 'shutdown': // still running, on its way down; the stop will be seen as it happens
      return 'active';
    case 'paused':
      return 'paused';
    case 'suspended':
      return 'suspended';
    case 'shutoff':
    case 'crashed':
      return 'stopped';
    case 'nostate':
      // Nothing known: `error` is the one state no policy ever acts on.
      return 'error';
  }
}

/**
 * What an adopted record starts with; the crash distinction applies here too. A domain paused
 * for an incoming migration is a running guest on its way in, not a pause anyone asked for.
 */
export function adopt(observed: { readonly powerState: PowerState; readonly reason: string }): {
  vmState: VmState;
  powerState: PowerState;
  powerReason: string;
} {
  const power = effectivePower(observed, null);
  const incoming = power.powerState === 'paused' && isMigratingPause(power.reason);
  return {
    vmState: incoming ? 'active' : adoptedVmState(power.powerState),
    powerState: power.powerState,
    powerReason: power.reason,
  };
}

/**
 * True when the confirmed state is the one the event announced, so the event's own detail may
 * describe the change; otherwise the event was stale and the decision's reason says more.
 */
export function eventFits(
  event: NonNullable<DecideInput['event']> & { readonly powerState: PowerState | null },
  observation: Observation,
): boolean {
  if (observation.kind === 'gone') return event.transition === 'undefined';
  if (observation.kind !== 'present') return false;
  return (
    event.powerState === null ||
    event.powerState === observation.powerState ||
    event.powerState === effectivePower(observation, event).powerState
  );
}
