// One pass for one instance: read the record, confirm the state with the hypervisor, decide,
// write (or start enforcement's task). The queue runs at most one pass per instance at a time.
import type { Policy } from '../model/index.ts';
import type { InstanceRecord, NewTransition, EngineStore } from '../store/index.ts';
import type { LifecycleEvent, ObservedInstance } from '../virt/index.ts';
import { present } from './confirm.ts';
import type { Confirmed } from './confirm.ts';
import { adopt, decide, eventFits } from './decide.ts';
import type { Decision, Observation } from './decide.ts';
import { SUPERSEDED } from './queue.ts';
import type { RunResult } from './queue.ts';
import { rebootSeen, strongerSign } from './reboot.ts';
import type { RebootSign } from './reboot.ts';
import { settleWindowFor } from './settle.ts';
import { MAX_WRITE_ATTEMPTS } from './types.ts';
import type { Counters, SyncLogger } from './types.ts';
import type { WriteRecord } from './write.ts';

/** What one pass needs to know; later work for the same instance merges into it. */
export interface Work {
  readonly cause: 'event' | 'reconcile';
  /** The latest event; it says where to look and adds detail, the confirmed state decides. */
  readonly event: LifecycleEvent | null;
  /** A reconcile listing's entry, when nothing touched the instance since the listing began. */
  readonly listed: ObservedInstance | null;
  /** The listing lacked the instance: a failed lookup means `missing`, not "try later". */
  readonly probe: boolean;
  /** The stop followed a SHUTDOWN event: the guest went down for real, nothing to wait for. */
  readonly realStop: boolean;
  /**
   * A reboot or power-off event folded into this work (and not part of a task), kept when a
   * later event replaces it: found running as before, the instance was rebooted.
   */
  readonly rebootSign?: RebootSign;
}

/** A pass with no listing entry and no event: look again (after a task, say). */
export const LOOK_AGAIN: Work = {
  cause: 'reconcile',
  event: null,
  listed: null,
  probe: false,
  realStop: false,
};

export interface PassOutcome {
  readonly wrote: boolean;
  readonly cause: 'event' | 'reconcile' | 'adopt' | null;
  readonly observed: Observation['kind'] | 'unknown';
}

export const UNKNOWN: PassOutcome = { wrote: false, cause: null, observed: 'unknown' };

/** Later work wins, but an event's information is never dropped for an event-less pass. */
export function mergeWork(older: Work, newer: Work): Work {
  const sign = strongerSign(older.rebootSign, newer.rebootSign);
  if (newer.event || !older.event) return { ...newer, rebootSign: sign };
  return { ...older, listed: null, probe: false, rebootSign: sign };
}

export interface PassDeps {
  readonly store: EngineStore;
  readonly policy: Policy;
  readonly counters: Counters;
  readonly log: SyncLogger;
  readonly now: () => number;
  readonly write: WriteRecord;
  confirm(uuid: string, probe: boolean): Promise<Confirmed | null>;
  host(): string;
  connected(): boolean;
  /** Starts enforcement's force-stop task with the decision's write; false on a version conflict. */
  enforce(
    record: InstanceRecord,
    decision: Decision,
    transition: NewTransition | undefined,
    event: LifecycleEvent | null,
  ): Promise<boolean>;
}

export function passRunner(
  deps: PassDeps,
): (uuid: string, work: Work, settle: () => Promise<boolean>) => Promise<RunResult<PassOutcome>> {
  return (uuid, work, settle) => runPass(deps, uuid, work, settle);
}

async function runPass(
  deps: PassDeps,
  uuid: string,
  work: Work,
  settle: () => Promise<boolean>,
): Promise<RunResult<PassOutcome>> {
  if (!deps.connected()) return UNKNOWN;
  deps.counters.passes++;
  const { event } = work;
  let settled = work.realStop;
  let listed = work.listed;
  let checkedStale = false;
  /** The record a refused create returned: a store that reads only this host's records has it. */
  let known: InstanceRecord | null = null;
  for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
    // Read before confirming: a write conditional on this version then carries a state at
    // least as new as anything already written, so the record never goes backwards.
    const record = known ?? (await deps.store.getInstance(uuid));
    known = null;
    const policy = record?.policy ?? deps.policy;
    if (event && !settled && settleWindowFor(policy, { kind: 'event', event }).hold) {
      // Wait before the lookup: the window is for the events that follow, and one lookup after
      // it is enough.
      if (await settle()) return SUPERSEDED;
      settled = true;
      continue;
    }
    let observed: ObservedInstance | null;
    let observation: Observation;
    if (listed) {
      observed = listed;
      observation = present(listed);
      listed = null;
    } else {
      const confirmed = await deps.confirm(uuid, work.probe);
      if (!confirmed) return UNKNOWN;
      ({ observed, observation } = confirmed);
    }
    if (event && !checkedStale) {
      checkedStale = true;
      const actual = observation.kind === 'present' ? observation.powerState : null;
      if (event.powerState !== null && event.powerState !== actual) deps.counters.staleSkipped++;
    }

    if (!record) {
      if (!observed) return { wrote: false, cause: null, observed: observation.kind };
      const adopted = await adoptInstance(deps, observed, event);
      if ('wrote' in adopted) return adopted;
      // Created meanwhile, or recorded on another host (an arrival by migration): decide on it.
      known = adopted.current;
      continue;
    }

    const decision = decide({
      record,
      observation,
      event: event ? { transition: event.transition, detail: event.detail } : null,
      thisHost: deps.host(),
      policy,
      cause: work.cause,
    });
    if (!settled && settleWindowFor(policy, { kind: 'decision', observation, decision }).hold) {
      // A listing (or a late lookup) can catch an instance mid-reboot too: settle and look again.
      if (await settle()) return SUPERSEDED;
      settled = true;
      continue;
    }
    if (decision.warn) {
      deps.log.warn(
        { uuid, reason: decision.reason, vmState: record.vmState, observation },
        'instance needs attention',
      );
    }

    const transition = decision.write
      ? transitionFor(deps, record, decision, work, observation)
      : undefined;
    if (decision.action === 'force-stop') {
      if (!(await deps.enforce(record, decision, transition, event))) continue;
      deps.counters.enforcements++;
      deps.log.info({ uuid, reason: decision.reason }, 'enforcing: powering off');
      return { wrote: true, cause: work.cause, observed: observation.kind };
    }
    const reboot = rebootSeen({ record, observation, sign: work.rebootSign ?? null, decision });
    if (!decision.write && !reboot) {
      return { wrote: false, cause: null, observed: observation.kind };
    }
    const result = await deps.write(
      {
        kind: 'update',
        uuid,
        expectedVersion: record.version,
        patch: decision.write ?? {},
        transition: reboot ? rebootTransition(deps, record, reboot, work) : transition,
      },
      event,
    );
    if (result.ok) return { wrote: true, cause: work.cause, observed: observation.kind };
    if (result.reason !== 'conflict') {
      return { wrote: false, cause: null, observed: observation.kind };
    }
  }
  deps.log.warn({ uuid }, 'gave up after repeated write conflicts');
  return UNKNOWN;
}

function transitionFor(
  deps: PassDeps,
  record: InstanceRecord,
  decision: Decision,
  work: Work,
  observation: Observation,
): NewTransition | undefined {
  const write = decision.write;
  if (!write) return undefined;
  const { event } = work;
  const moved = decision.migration;
  return {
    from: record.powerState,
    to: write.powerState,
    vmStateFrom: record.vmState,
    vmStateTo: write.vmState ?? record.vmState,
    cause: moved ? 'migration' : work.cause,
    detail: moved
      ? `${moved.from} → ${moved.to}`
      : event && eventFits(event, observation)
        ? event.detail
        : decision.reason,
    outOfBand: decision.outOfBand,
    observedAt: event?.observedAt ?? deps.now(),
  };
}

/** A reboot leaves the power state where it was: only this entry tells it happened. */
function rebootTransition(
  deps: PassDeps,
  record: InstanceRecord,
  reboot: RebootSign,
  work: Work,
): NewTransition {
  return {
    from: record.powerState,
    to: record.powerState,
    vmStateFrom: record.vmState,
    vmStateTo: record.vmState,
    cause: reboot.cause,
    detail: reboot.detail,
    outOfBand: true,
    observedAt: work.event?.observedAt ?? deps.now(),
  };
}

async function adoptInstance(
  deps: PassDeps,
  observed: ObservedInstance,
  event: LifecycleEvent | null,
): Promise<PassOutcome | { readonly current: InstanceRecord | null }> {
  const adopted = adopt(observed);
  const result = await deps.write(
    {
      kind: 'create',
      uuid: observed.uuid,
      fields: {
        name: observed.name,
        host: deps.host(),
        vmState: adopted.vmState,
        taskState: null,
        taskAction: null,
        taskStartedAt: null,
        taskError: null,
        powerState: adopted.powerState,
        powerReason: adopted.powerReason,
        policy: null,
      },
      transition: {
        from: null,
        to: adopted.powerState,
        vmStateFrom: null,
        vmStateTo: adopted.vmState,
        cause: 'adopt',
        detail: event?.detail ?? adopted.powerReason,
        outOfBand: false,
        observedAt: event?.observedAt ?? deps.now(),
      },
    },
    event,
  );
  if (!result.ok) return { current: result.current };
  deps.counters.adopted++;
  deps.log.debug({ uuid: observed.uuid, name: observed.name, vmState: adopted.vmState }, 'adopted');
  return { wrote: true, cause: 'adopt', observed: 'present' };
}
