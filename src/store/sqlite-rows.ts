// The one place where records become SQL values and rows become records: column names, booleans
// as 0/1, the change log's JSON snapshot.
import type {
  ActionName,
  Policy,
  RecordedPowerState,
  TaskState,
  TransitionCause,
  VmState,
} from '../model/index.ts';
import type {
  ChangeRecord,
  HostRecord,
  HostStatus,
  InstanceFields,
  InstanceRecord,
  NewTransition,
  TransitionRecord,
} from './types.ts';

export type SqlValue = string | number | null;

/** Every writable instance field and its column, in a fixed order that statements rely on. */
export const INSTANCE_COLUMNS = {
  name: 'name',
  host: 'host',
  vmState: 'vm_state',
  taskState: 'task_state',
  taskAction: 'task_action',
  taskStartedAt: 'task_started_at',
  taskError: 'task_error',
  powerState: 'power_state',
  powerReason: 'power_reason',
  policy: 'policy',
} as const satisfies Record<keyof InstanceFields, string>;

export type InstanceField = keyof typeof INSTANCE_COLUMNS;

/** Every field of a record and its column: the writable ones and those the store keeps. */
export const RECORD_COLUMNS = {
  uuid: 'uuid',
  ...INSTANCE_COLUMNS,
  version: 'version',
  createdAt: 'created_at',
  updatedAt: 'updated_at',
} as const satisfies Record<keyof InstanceRecord, string>;

export const INSTANCE_FIELDS = Object.keys(INSTANCE_COLUMNS) as InstanceField[];

export interface InstanceRow {
  uuid: string;
  name: string;
  host: string;
  vm_state: string;
  task_state: string | null;
  task_action: string | null;
  task_started_at: number | null;
  task_error: string | null;
  power_state: string;
  power_reason: string;
  policy: string | null;
  version: number;
  created_at: number;
  updated_at: number;
}

export interface TransitionRow {
  id: number;
  uuid: string;
  power_from: string | null;
  power_to: string;
  vm_state_from: string | null;
  vm_state_to: string;
  cause: string;
  detail: string;
  /** 0/1 in SQLite, a boolean in PostgreSQL: the one mapper below serves both stores. */
  out_of_band: number | boolean;
  observed_at: number;
  recorded_at: number;
}

export interface ChangeRow {
  revision: number;
  type: string;
  instance: string;
  at: number;
}

export interface HostRow {
  name: string;
  driver: string;
  connected: number;
  last_seen_at: number;
  last_reconcile_at: number | null;
  connection_error: string | null;
  backlog: number;
}

// The casts below trust the database: only this module writes these columns, from typed records.

export function instanceFromRow(row: InstanceRow): InstanceRecord {
  return {
    uuid: row.uuid,
    name: row.name,
    host: row.host,
    vmState: row.vm_state as VmState,
    taskState: row.task_state as TaskState | null,
    taskAction: row.task_action as ActionName | null,
    taskStartedAt: row.task_started_at,
    taskError: row.task_error,
    powerState: row.power_state as RecordedPowerState,
    powerReason: row.power_reason,
    policy: row.policy as Policy | null,
    version: row.version,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** A field's SQL value; undefined (a JS caller's omission) becomes NULL so NOT NULL catches it. */
export function fieldValue(fields: Partial<InstanceFields>, field: InstanceField): SqlValue {
  return fields[field] ?? null;
}

export function transitionValues(uuid: string, t: NewTransition, recordedAt: number): SqlValue[] {
  return [
    uuid,
    t.from,
    t.to,
    t.vmStateFrom,
    t.vmStateTo,
    t.cause,
    t.detail,
    t.outOfBand ? 1 : 0,
    t.observedAt,
    recordedAt,
  ];
}

export function transitionFromRow(row: TransitionRow): TransitionRecord {
  return {
    id: row.id,
    uuid: row.uuid,
    from: row.power_from as RecordedPowerState | null,
    to: row.power_to as RecordedPowerState,
    vmStateFrom: row.vm_state_from as VmState | null,
    vmStateTo: row.vm_state_to as VmState,
    cause: row.cause as TransitionCause,
    detail: row.detail,
    outOfBand: row.out_of_band === true || row.out_of_band === 1,
    observedAt: row.observed_at,
    recordedAt: row.recorded_at,
  };
}

export function encodeSnapshot(instance: InstanceRecord): string {
  return JSON.stringify(instance);
}

/** A change-log snapshot as a record: snapshots taken before migration 5 have no taskAction. */
export function snapshotRecord(instance: InstanceRecord): InstanceRecord {
  return instance.taskAction === undefined ? { ...instance, taskAction: null } : instance;
}

export function changeFromRow(row: ChangeRow): ChangeRecord {
  return {
    revision: row.revision,
    type: row.type as ChangeRecord['type'],
    instance: snapshotRecord(JSON.parse(row.instance) as InstanceRecord),
    at: row.at,
  };
}

export function hostValues(host: HostStatus): SqlValue[] {
  return [
    host.name,
    host.driver,
    host.connected ? 1 : 0,
    host.lastSeenAt,
    host.lastReconcileAt,
    host.backlog ?? 0,
    host.connectionError ?? null,
    host.connectionError !== undefined ? 1 : 0,
  ];
}

export function hostFromRow(row: HostRow): HostRecord {
  return {
    name: row.name,
    driver: row.driver,
    connected: row.connected !== 0,
    lastSeenAt: row.last_seen_at,
    lastReconcileAt: row.last_reconcile_at,
    connectionError: row.connection_error,
    backlog: row.backlog,
  };
}
