// The record hvsync keeps: what each instance should be (vmState), what is being done to it
// (taskState), what the hypervisor says it is (powerState), every power-state change with its
// cause, and a change log with revisions that watchers resume from. Asynchronous so that a
// PostgreSQL backend fits behind the same interface as SQLite.
import type {
  ActionName,
  Policy,
  RecordedPowerState,
  TaskState,
  TransitionCause,
  VmState,
} from '../model/index.ts';

export interface InstanceRecord {
  readonly uuid: string;
  readonly name: string;
  readonly host: string;
  readonly vmState: VmState;
  readonly taskState: TaskState | null;
  /** The action the task in flight performs (taskState alone does not say); null with no task. */
  readonly taskAction: ActionName | null;
  /** Epoch ms when the task in flight began; null with no task. */
  readonly taskStartedAt: number | null;
  /** The last task's error, kept until the next task starts. */
  readonly taskError: string | null;
  readonly powerState: RecordedPowerState;
  readonly powerReason: string;
  /** Per-instance policy override; null follows the deployment's policy. */
  readonly policy: Policy | null;
  /** Increases by one on every write; writes are conditional on it. */
  readonly version: number;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** The fields a write may set; uuid, version and timestamps are the store's. */
export type InstanceFields = Omit<InstanceRecord, 'uuid' | 'version' | 'createdAt' | 'updatedAt'>;

export interface NewTransition {
  readonly from: RecordedPowerState | null;
  readonly to: RecordedPowerState;
  readonly vmStateFrom: VmState | null;
  readonly vmStateTo: VmState;
  readonly cause: TransitionCause;
  /** The driver's detail (`destroyed`, `finished`...) or the engine's note. */
  readonly detail: string;
  /** True when the change was not made through hvsync (a guest shutdown, virsh behind our back). */
  readonly outOfBand: boolean;
  /** When the hypervisor observed it, epoch ms. */
  readonly observedAt: number;
}

export interface TransitionRecord extends NewTransition {
  readonly id: number;
  readonly uuid: string;
  /** When it was committed, epoch ms. */
  readonly recordedAt: number;
}

/**
 * Marks a write as entry `seq` of an agent's outage journal `id`. The store remembers the highest
 * seq it has processed per journal in the same transaction as the write, and answers an entry at
 * or below it `duplicate` without applying it: a journal replayed twice is applied once.
 */
export interface JournalTag {
  readonly id: string;
  readonly seq: number;
  /** The host whose agent keeps the journal. */
  readonly host: string;
}

export type InstanceWrite =
  | {
      readonly kind: 'create';
      readonly uuid: string;
      readonly fields: InstanceFields;
      readonly transition?: NewTransition;
      readonly journal?: JournalTag;
    }
  | {
      readonly kind: 'update';
      readonly uuid: string;
      /** The version the writer read; the write fails with `conflict` if it changed since. */
      readonly expectedVersion: number;
      /**
       * The host the record must be on for the write to apply, else `conflict`: a check made
       * before the write (a host token's) then holds at commit, whatever committed in between.
       */
      readonly expectedHost?: string;
      readonly patch: Partial<InstanceFields>;
      readonly transition?: NewTransition;
      readonly journal?: JournalTag;
    };

export type RefusalReason = 'conflict' | 'exists' | 'not-found' | 'duplicate';

export type WriteResult =
  | { readonly ok: true; readonly instance: InstanceRecord; readonly revision: number }
  | {
      readonly ok: false;
      /**
       * conflict: the version moved; exists: create of a known uuid; not-found: update of an
       * unknown one; duplicate: a journal entry already processed (not applied again).
       */
      readonly reason: RefusalReason;
      readonly current: InstanceRecord | null;
    };

export interface ChangeRecord {
  readonly revision: number;
  readonly type: 'created' | 'updated';
  readonly instance: InstanceRecord;
  readonly at: number;
}

export interface ChangesPage {
  readonly changes: ChangeRecord[];
  /** The oldest revision still kept; a watcher asking for anything older must re-list. */
  readonly oldestRevision: number;
  readonly latestRevision: number;
}

export interface HostRecord {
  readonly name: string;
  readonly driver: string;
  readonly connected: boolean;
  readonly lastSeenAt: number;
  readonly lastReconcileAt: number | null;
  /**
   * Why the hypervisor connection is down: the last failed reconnect's reason (wrong URI,
   * permission denied...), or how it dropped. Null while connected.
   */
  readonly connectionError: string | null;
  /** Journal entries the host's agent holds that the control plane has not acknowledged. */
  readonly backlog: number;
}

/** What an engine reports of its host. */
export type HostStatus = Omit<HostRecord, 'connectionError' | 'backlog'> & {
  /** An agent's unacknowledged journal entries; 0 when absent (an engine writing directly). */
  readonly backlog?: number;
  /**
   * Recorded with the rest when given (an agent's report carries it); when absent the recorded
   * one stays, for an engine that records it on its own (recordConnectionError).
   */
  readonly connectionError?: string | null;
};

export interface InstanceFilter {
  readonly host?: string;
  readonly vmState?: VmState;
  readonly powerState?: RecordedPowerState;
  /** Leaves out instances whose vmState is `deleted`. */
  readonly hideDeleted?: boolean;
  /** Only instances with a task in flight. */
  readonly taskInFlight?: boolean;
  /** Page size; the store caps it. */
  readonly limit?: number;
  /** Keyset pagination: uuids strictly greater than this. */
  readonly after?: string;
}

/**
 * Who a bearer token stands for besides the admin: a hypervisor host's agent, or a reader (a
 * dashboard, a monitoring job). The admin token is the server's own option, never stored.
 */
export type CredentialKind = 'host' | 'reader';

export interface CredentialRecord {
  readonly kind: CredentialKind;
  /** The host's name for `host`; a label of the owner's choosing for `reader`. */
  readonly name: string;
  /** sha256 of the token, lowercase hex: the token itself is never stored. */
  readonly tokenHash: string;
  readonly createdAt: number;
  /** When it was revoked, epoch ms; null while it is valid. */
  readonly revokedAt: number | null;
}

export interface NewCredential {
  readonly kind: CredentialKind;
  readonly name: string;
  readonly tokenHash: string;
  /** Revoke the name's valid credential in the same transaction instead of refusing. */
  readonly replace?: boolean;
}

export type AddCredentialResult =
  | { readonly ok: true; readonly credential: CredentialRecord }
  /** The name already has a valid credential (and `replace` was not asked for). */
  | { readonly ok: false; readonly reason: 'exists'; readonly current: CredentialRecord };

/** Options both stores take. */
export interface StoreOptions {
  /** Change-log rows kept; a watcher that falls further behind must re-list. Default 100 000. */
  readonly maxChanges?: number;
  /** Most writes committed in one transaction. Default 2 000. */
  readonly maxBatch?: number;
  /** Epoch-ms clock for timestamps. Default Date.now. */
  readonly now?: () => number;
  /** Told when a subscriber throws (default: a process warning); the others carry on regardless. */
  readonly onListenerError?: (error: unknown) => void;
  /**
   * Told when writes start failing (the error) and when they succeed again (null): a write
   * transaction that cannot commit (disk full, file gone read-only, I/O error, database gone).
   */
  readonly onWriteHealth?: (failure: StoreError | null) => void;
  /** Told of every write transaction that committed, with where its writes' time went. */
  readonly onCommit?: (commit: CommitTiming) => void;
}

/**
 * Where the time of one committed write transaction went, in ms: for latency metrics, so that
 * a slow write shows whether it waited or committed slowly.
 */
export interface CommitTiming {
  /**
   * For each write of the transaction, from the call to the transaction's start: the rest of its
   * event-loop turn and, on PostgreSQL, the transaction in flight ahead of it.
   */
  readonly queuedMs: readonly number[];
  /** From the transaction's start to its commit (PostgreSQL: one round trip, more on a retry). */
  readonly commitMs: number;
}

/** Counters both stores keep. */
export interface StoreStats {
  /** Write transactions committed. */
  readonly commits: number;
  /** Writes that succeeded. */
  readonly writes: number;
  /** Writes refused with conflict, exists or not-found. */
  readonly refused: number;
  /** Writes that failed with an error (the others in their batch still committed). */
  readonly failed: number;
  /** Write transactions (and host updates) that could not commit at all. */
  readonly commitFailures: number;
  /** Batches redone write by write because one write in them failed: the slow path. */
  readonly retried: number;
  /** Change-log rows removed by retention. */
  readonly pruned: number;
  readonly listenerErrors: number;
}

export type StoreErrorCode =
  | 'migration-failed'
  | 'closed'
  | 'corrupt'
  | 'io'
  /** Another process holds the database file's lock. */
  | 'locked'
  /** The file or its directory cannot be written. */
  | 'read-only';

export class StoreError extends Error {
  override readonly name = 'StoreError';
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
