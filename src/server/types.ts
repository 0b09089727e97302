// What the API server needs from the rest of the process, and the shapes it speaks. The API
// sees the sync engine only through these ports, which the process wiring implements with it.
import type {
  ActionName,
  Policy,
  RecordedPowerState,
  TaskState,
  TransitionCause,
  VmState,
} from '../model/index.ts';
import type {
  EngineStore,
  InstanceFields,
  InstanceRecord,
  NewTransition,
  WriteResult,
} from '../store/index.ts';

export interface ActionPort {
  /** Validates and starts the action; resolves once taskState is recorded (not when done). */
  submit(uuid: string, action: ActionName): Promise<InstanceRecord>;
}

/** What the agent routes need of the store: an engine's writes, on behalf of a remote engine. */
export type AgentPort = Pick<
  EngineStore,
  'getInstance' | 'write' | 'upsertHost' | 'recordConnectionError'
>;

export interface Readiness {
  readonly ready: boolean;
  /** Why the process is not ready, one short sentence each; empty when ready. */
  readonly reasons: string[];
}

export interface ReadinessPort {
  check(): Readiness;
}

/** Why an action port refused an action; each maps to one HTTP status. */
export type ActionRejectedCode = 'not-found' | 'task-in-flight' | 'invalid-action' | 'unavailable';

export class ActionRejected extends Error {
  override readonly name = 'ActionRejected';
  constructor(
    readonly code: ActionRejectedCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export type ServerErrorCode =
  'insecure-listen' | 'invalid-listen' | 'invalid-option' | 'listen-failed';

export class ServerError extends Error {
  override readonly name = 'ServerError';
  constructor(
    readonly code: ServerErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

// The wire shapes of API v1. Timestamps are ISO 8601 strings; the store's epoch ms stay inside.

export interface ApiInstance {
  readonly uuid: string;
  readonly name: string;
  readonly host: string;
  readonly vmState: VmState;
  readonly taskState: TaskState | null;
  /** When the task in flight began; null with no task. */
  readonly taskStartedAt: string | null;
  readonly taskError: string | null;
  readonly powerState: RecordedPowerState;
  readonly powerReason: string;
  readonly policy: Policy | null;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly version: number;
}

export interface ApiInstancesPage {
  readonly instances: ApiInstance[];
  /** Pass as `after` for the next page; null on the last page. */
  readonly next: string | null;
}

export interface ApiTransition {
  readonly from: RecordedPowerState | null;
  readonly to: RecordedPowerState;
  readonly vmStateFrom: VmState | null;
  readonly vmStateTo: VmState;
  readonly cause: TransitionCause;
  readonly detail: string;
  readonly outOfBand: boolean;
  readonly observedAt: string;
  readonly recordedAt: string;
}

export interface ApiTask {
  readonly uuid: string;
  readonly action: ActionName;
  readonly taskState: TaskState | null;
  readonly startedAt: string;
}

export interface ApiActionAccepted {
  readonly task: ApiTask;
  readonly instance: ApiInstance;
}

export interface ApiHost {
  readonly name: string;
  readonly driver: string;
  readonly connected: boolean;
  readonly lastSeenAt: string;
  readonly lastReconcileAt: string | null;
  /** Why the hypervisor connection is down (the last reconnect's failure); null while connected. */
  readonly connectionError: string | null;
  /** Observations the host's agent holds that the control plane has not acknowledged yet. */
  readonly backlog: number;
}

/** The `data` of one `event: instance` in the watch stream; its SSE id is the revision. */
export interface ApiWatchEvent {
  readonly revision: number;
  readonly type: 'created' | 'updated';
  readonly instance: ApiInstance;
}

// The error codes and their statuses live in errors.ts, next to the code that answers them.
export type { ApiError, ApiErrorCode } from './errors.ts';
export { API_ERRORS } from './errors.ts';

/**
 * The `data` of an `event: error` that ends a watch stream: `too-slow` (the client fell too far
 * behind) and `shutting-down` say to resume from `lastRevision`; `revision-too-old` says to
 * re-list.
 */
export interface ApiWatchError {
  readonly error: 'too-slow' | 'shutting-down' | 'revision-too-old' | 'internal';
  readonly message: string;
  /** The last revision this stream delivered (or started from); resume with since=lastRevision. */
  readonly lastRevision: number;
  readonly oldestRevision?: number;
}

// The agent routes' wire shapes: whole store records and writes, times in epoch milliseconds.

/** One write of `POST /v1/hosts/{host}/writes`; `seq` is its journal entry's place. */
export interface ApiAgentWrite {
  readonly kind: 'create' | 'update';
  readonly uuid: string;
  readonly expectedVersion?: number;
  readonly fields?: InstanceFields;
  readonly patch?: Partial<InstanceFields>;
  readonly transition?: NewTransition;
  readonly seq?: number;
}

export interface ApiAgentWrites {
  /** The agent's journal id: with a seq on each write, an entry is applied at most once. */
  readonly journal?: string;
  readonly writes: readonly ApiAgentWrite[];
}

/** Each write's result, as the store gave it. */
export type ApiAgentWriteResult = WriteResult;

export interface ApiAgentWritesAnswer {
  readonly results: readonly ApiAgentWriteResult[];
}

/** The body of `PUT /v1/hosts/{host}/status`; the server adds lastSeenAt from its own clock. */
export interface ApiAgentStatus {
  readonly driver: string;
  readonly connected: boolean;
  readonly lastReconcileAt: number | null;
  readonly backlog: number;
  /** Why the hypervisor connection is down; null clears it; absent leaves it as it was. */
  readonly connectionError?: string | null;
}
