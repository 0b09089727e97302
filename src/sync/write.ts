// The one door to the store for the engine's parts: a conditional write, counted, and when it
// records a transition, reported as a commit (detection latency for metrics, a debug line).
import type { InstanceWrite, EngineStore, WriteResult } from '../store/index.ts';
import type { LifecycleEvent } from '../virt/index.ts';
import type { HostRecords } from './host-records.ts';
import type { CommitInfo, Counters, SyncLogger } from './types.ts';

export interface WriteDeps {
  readonly store: EngineStore;
  readonly counters: Counters;
  readonly log: SyncLogger;
  readonly now: () => number;
  readonly onCommit: ((commit: CommitInfo) => void) | undefined;
  /** Told of every instance written (or tried): the reconciler's freshness. */
  touched(uuid: string): void;
  /** The reconcile's copy of this host's records, kept current by every write. */
  readonly records: HostRecords;
}

export type WriteRecord = (
  write: InstanceWrite,
  event: LifecycleEvent | null,
) => Promise<WriteResult>;

export function recordWriter(deps: WriteDeps): WriteRecord {
  return async (write, event) => {
    let result: WriteResult;
    try {
      result = await deps.store.write(write);
    } catch (error) {
      deps.records.unsure(write.uuid);
      throw error;
    } finally {
      deps.touched(write.uuid);
    }
    deps.records.written(write, result);
    if (!result.ok) {
      if (result.reason === 'conflict') deps.counters.conflicts++;
      return result;
    }
    deps.counters.writes++;
    const transition = write.transition;
    if (transition) {
      const commit: CommitInfo = {
        uuid: write.uuid,
        cause: transition.cause,
        from: transition.from,
        to: transition.to,
        vmStateFrom: transition.vmStateFrom,
        vmStateTo: transition.vmStateTo,
        outOfBand: transition.outOfBand,
        latencyMs: event ? deps.now() - event.observedAt : null,
      };
      deps.log.debug({ ...commit }, 'committed');
      try {
        deps.onCommit?.(commit);
      } catch (error) {
        deps.log.warn({ err: error }, 'onCommit hook threw');
      }
    }
    return result;
  };
}
