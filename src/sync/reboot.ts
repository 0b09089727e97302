// A reboot ends where it started (running → running), so the power state alone leaves no trace
// of it. These pure rules say which events hint at one and when a pass that changes nothing has
// still seen one, so that the engine can record it in the history a user reads.
import type { LifecycleEvent } from '../virt/index.ts';
import type { InstanceRecord } from '../store/index.ts';
import type { Decision, Observation } from './decide.ts';

export type RebootCause = 'reboot' | 'hard-reboot';

/** An event that, if the instance is found running as before, means it was rebooted. */
export interface RebootSign {
  readonly cause: RebootCause;
  /** The event's detail: `reboot`, or what the power-off said (`destroyed`, `crashed`...). */
  readonly detail: string;
}

export function rebootSign(
  event: Pick<LifecycleEvent, 'transition' | 'detail' | 'powerState'>,
): RebootSign | null {
  // libvirt's reboot event: the guest restarted inside the same QEMU process.
  if (event.transition === 'rebooted') return { cause: 'reboot', detail: event.detail };
  // Half of a power cycle; a migration leaves, it does not cycle.
  const off = event.powerState === 'shutoff' || event.powerState === 'crashed';
  if (off && event.detail !== 'migrated') return { cause: 'hard-reboot', detail: event.detail };
  return null;
}

/** Two signs folded into one pass: a power cycle says more than a guest reboot. */
export function strongerSign(
  older: RebootSign | undefined,
  newer: RebootSign | undefined,
): RebootSign | undefined {
  if (older?.cause === 'hard-reboot' && newer?.cause !== 'hard-reboot') return older;
  return newer ?? older;
}

export interface RebootInput {
  readonly record: Pick<InstanceRecord, 'powerState' | 'taskState'>;
  readonly observation: Observation;
  /** The strongest sign among the events folded into the pass (none arrived during a task). */
  readonly sign: RebootSign | null;
  readonly decision: Pick<Decision, 'write' | 'action'>;
}

/** The reboot to record, or null when there is none or another entry already tells the story. */
export function rebootSeen(input: RebootInput): RebootSign | null {
  const { record, observation, decision, sign } = input;
  if (sign === null) return null;
  // Anything that changes the record leaves its own entry; a task records its own outcome.
  if (decision.write !== null || decision.action !== null || record.taskState !== null) {
    return null;
  }
  // Running before and after: the stop was never believed (or never seen), so nothing shows it.
  const running = observation.kind === 'present' && observation.powerState === 'running';
  if (!running || record.powerState !== 'running') return null;
  return sign;
}
