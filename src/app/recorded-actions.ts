// Actions on a control-plane replica, which has no hypervisor: the action is checked against the
// record as it stands (the model's rules, as the engine checks them) and recorded as the
// instance's task with the same fields the engine writes when it starts one, conditional on the
// version checked. The agent of the instance's host sees the task on its watch and performs it.
import { checkAction, hostReachability, taskMark, type ActionName } from '../model/index.ts';
import type { InstanceRecord, Store } from '../store/index.ts';
import { ActionRejected, type ActionPort } from '../server/index.ts';

export interface RecordedActionsOptions {
  readonly store: Pick<Store, 'getInstance' | 'listHosts' | 'write'>;
  readonly hostTimeoutMs: number;
  readonly now?: () => number;
}

/** Writes retried after a version conflict before the caller is told to try again. */
const ATTEMPTS = 5;

/**
 * An action on an instance whose host's agent is not reporting is refused at once (503, naming
 * the host and since when) rather than recorded to time out later: nothing could perform it,
 * and a task left in flight is exactly what users of other systems found stuck. A task recorded
 * just before its host falls silent is ended by the host monitor's sweep.
 */
export function recordedActions(options: RecordedActionsOptions): ActionPort {
  const { store, hostTimeoutMs } = options;
  const now = options.now ?? Date.now;
  return {
    async submit(uuid: string, action: ActionName): Promise<InstanceRecord> {
      for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
        const record = await store.getInstance(uuid);
        if (record === null) throw new ActionRejected('not-found', `no instance ${uuid}`);
        const refusal = checkAction(record, action);
        if (refusal !== null) throw new ActionRejected(refusal.code, refusal.message);
        await checkHost(record);
        const result = await store.write({
          kind: 'update',
          uuid,
          expectedVersion: record.version,
          patch: taskMark(action, now()),
        });
        if (result.ok) return result.instance;
        if (result.reason === 'not-found') {
          throw new ActionRejected('not-found', `no instance ${uuid}`);
        }
      }
      throw new ActionRejected('task-in-flight', `instance ${uuid} kept changing; try again`);
    },
  };

  async function checkHost(record: InstanceRecord): Promise<void> {
    const host = (await store.listHosts()).find((h) => h.name === record.host) ?? null;
    const reachability = hostReachability(record.host, host, now(), hostTimeoutMs);
    if (!reachability.reachable) {
      throw new ActionRejected(
        'unavailable',
        `${reachability.reason}: nothing can act on instance ${record.uuid} now`,
      );
    }
    if (host !== null && !host.connected) {
      const why = host.connectionError === null ? '' : ` (${host.connectionError})`;
      throw new ActionRejected(
        'unavailable',
        `host ${record.host}'s agent is not connected to its hypervisor${why}: nothing can be done`,
      );
    }
  }
}
