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
  HostRecord,
  InstanceFields,
  InstanceRecord,
  NewTransition,
  ReadStore,
  WriteResult,
} from '../store/index.ts';

export interface ActionPort {
  /** Validates and starts the action; resolves once taskState is recorded (not when done). */
  submit(uuid: string, action: ActionName): Promise<InstanceRecord>;
}

/**
 * Whether each host's agent is believed to be there. The control plane judges by the time of the
 * last report; the all-in-one also knows its own engine runs. Without one, every host is.
 */
export interface HostHealthPort {
  /** Whether the host's agent reports (or, in process, its engine runs). */
  reachable(host: HostRecord): boolean;
  /**
   * True when the power state recorded for an instance on this host is not to be believed: its
   * agent is gone or has lost its hypervisor. Synchronous: answered from what the port last saw.
   */
  powerStateStale(host: string): boolean;
}

/**
 * What the agent routes need of the store: an engine's writes, on behalf of a remote engine, and
 * for the per-write check, the change feed (whose each record is) and a read of what it lacks.
 */
export type AgentPort = Pick<EngineStore, 'write' | 'upsertHost'> &
  Pick<ReadStore, 'getInstances' | 'subscribe'>;

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
  'insecure-listen' | 'invalid-listen' | 'invalid-option' | 'invalid-tls' | 'listen-failed';

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
  /** The action of the task in flight; null with none. */
  readonly taskAction: ActionName | null;
  /** When the task in flight was recorded; null with none. */
  readonly taskStartedAt: string | null;
  readonly taskError: string | null;
  /** The last power state recorded; see powerStateStale. */
  readonly powerState: RecordedPowerState;
  /**
   * True when the host's agent is unreachable or has lost its hypervisor: powerState is the last
   * one known, not what the instance is now (never read it as stopped). In GET responses; a watch
   * event leaves it out (a host's reachability is in /v1/hosts).
   */
  readonly powerStateStale?: boolean;
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
  /** When the host's agent (or engine) last reported. */
  readonly lastSeenAt: string;
  /** Whether the agent reports: its last report is within the server's --host-timeout. */
  readonly reachable: boolean;
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

/** A host or reader credential as the admin sees it; the token itself is never shown again. */
export interface ApiCredential {
  readonly kind: 'host' | 'reader';
  readonly name: string;
  readonly createdAt: string;
  readonly revokedAt: string | null;
}

/** The answer to issuing a token: the only time the token is ever shown. */
export interface ApiIssuedToken extends ApiCredential {
  readonly token: string;
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
