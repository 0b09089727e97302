// Store records to API v1 objects: the one place where epoch milliseconds become ISO strings and
// store-internal fields (createdAt) are left out.
import type { ActionName } from '../model/index.ts';
import type { ChangeRecord, HostRecord, InstanceRecord, TransitionRecord } from '../store/index.ts';
import type { ApiHost, ApiInstance, ApiTask, ApiTransition, ApiWatchEvent } from './types.ts';

export function isoTime(epochMs: number): string {
  return new Date(epochMs).toISOString();
}

/** `stale`: whether the power state is to be believed, when the caller knows (GET, not watch). */
export function apiInstance(record: InstanceRecord, stale?: boolean): ApiInstance {
  return {
    uuid: record.uuid,
    name: record.name,
    host: record.host,
    vmState: record.vmState,
    taskState: record.taskState,
    taskAction: record.taskAction,
    taskStartedAt: record.taskStartedAt === null ? null : isoTime(record.taskStartedAt),
    taskError: record.taskError,
    powerState: record.powerState,
    ...(stale === undefined ? {} : { powerStateStale: stale }),
    powerReason: record.powerReason,
    policy: record.policy,
    createdAt: isoTime(record.createdAt),
    updatedAt: isoTime(record.updatedAt),
    version: record.version,
  };
}

export function apiTransition(transition: TransitionRecord): ApiTransition {
  return {
    from: transition.from,
    to: transition.to,
    vmStateFrom: transition.vmStateFrom,
    vmStateTo: transition.vmStateTo,
    cause: transition.cause,
    detail: transition.detail,
    outOfBand: transition.outOfBand,
    observedAt: isoTime(transition.observedAt),
    recordedAt: isoTime(transition.recordedAt),
  };
}

export function apiHost(host: HostRecord, reachable: boolean): ApiHost {
  return {
    name: host.name,
    driver: host.driver,
    connected: host.connected,
    lastSeenAt: isoTime(host.lastSeenAt),
    reachable,
    lastReconcileAt: host.lastReconcileAt === null ? null : isoTime(host.lastReconcileAt),
    connectionError: host.connectionError,
    backlog: host.backlog,
  };
}

/** `now` stands in for the start time when a port hands back a record without one. */
export function apiTask(record: InstanceRecord, action: ActionName, now: number): ApiTask {
  return {
    uuid: record.uuid,
    action,
    taskState: record.taskState,
    startedAt: isoTime(record.taskStartedAt ?? now),
  };
}

export function apiWatchEvent(change: ChangeRecord): ApiWatchEvent {
  return { revision: change.revision, type: change.type, instance: apiInstance(change.instance) };
}
