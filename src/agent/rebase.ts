// What an observation journaled during an outage becomes when the control plane refuses it
// because the record changed meanwhile (a user's task, another writer). Pure.
//
// The power state the hypervisor showed is a fact, in order, and is kept, with the time it was
// observed; everything the engine decided from it (vmState, a task) was decided on a record that
// is no longer current, so it is dropped: the reconcile that follows the replay decides again on
// the current record. Precisely, for a refused entry and the record as it stands:
// - no record (deleted from the control plane), or recorded on another host: dropped;
// - the entry carries no power state (a decision only: a task, a vmState): dropped;
// - the record already shows that power state and reason, and the entry is not a reboot's
//   history entry (from = to): dropped, as already recorded;
// - otherwise an update conditional on the current version that sets powerState and
//   powerReason, with the entry's transition rewritten from the current power state and
//   vmState (vmState unchanged) and its observedAt kept.
import type { InstanceRecord, InstanceWrite, NewTransition } from '../store/index.ts';

export function rebaseObservation(
  write: InstanceWrite,
  current: InstanceRecord | null,
  host: string,
): InstanceWrite | null {
  if (current === null || current.host !== host) return null;
  const fields = write.kind === 'create' ? write.fields : write.patch;
  const { powerState, powerReason } = fields;
  if (powerState === undefined) return null;
  const reason = powerReason ?? current.powerReason;
  const original = write.transition;
  const reboot = original !== undefined && original.from === original.to;
  const unchanged = powerState === current.powerState && reason === current.powerReason;
  if (unchanged && !reboot) return null;
  const transition: NewTransition | undefined =
    original === undefined || (powerState === current.powerState && !reboot)
      ? undefined
      : {
          ...original,
          from: current.powerState,
          to: powerState,
          vmStateFrom: current.vmState,
          vmStateTo: current.vmState,
        };
  return {
    kind: 'update',
    uuid: write.uuid,
    expectedVersion: current.version,
    patch: { powerState, powerReason: reason },
    ...(transition === undefined ? {} : { transition }),
  };
}
