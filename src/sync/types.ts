// The engine's public shapes (options, reports, tasks, stats, its error) and the counters its
// parts share. No behaviour here.
import type {
  ActionName,
  Policy,
  RecordedPowerState,
  TaskState,
  TransitionCause,
  VmState,
} from '../model/index.ts';
import type { InstanceRecord, EngineStore } from '../store/index.ts';
import type { HypervisorDriver, Transition } from '../virt/index.ts';

export type SyncErrorCode =
  | 'not-found'
  | 'wrong-host'
  | 'task-in-flight'
  | 'invalid-action'
  | 'conflict'
  | 'disconnected'
  | 'not-running';

export class SyncError extends Error {
  override readonly name = 'SyncError';
  constructor(
    readonly code: SyncErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** pino's shape, so a pino logger (or a child of one) fits; anything else with these four works. */
export interface SyncLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** One committed write, for metrics (detection latency) and tests. */
export interface CommitInfo {
  readonly uuid: string;
  readonly cause: TransitionCause;
  readonly from: RecordedPowerState | null;
  readonly to: RecordedPowerState;
  readonly vmStateFrom: VmState | null;
  readonly vmStateTo: VmState;
  readonly outOfBand: boolean;
  /** Commit time minus the triggering event's observedAt; null when no event prompted it. */
  readonly latencyMs: number | null;
}

export interface SyncEngineOptions {
  readonly driver: HypervisorDriver;
  readonly store: EngineStore;
  /** This host's name in the store; default: what the driver says. */
  readonly host?: string;
  readonly policy?: Policy;
  /** Full reconcile period; 0 disables the periodic pass (start and reconnect still reconcile). */
  readonly reconcileIntervalMs?: number;
  /**
   * The reconcile reads this host's records from the store in full every this many runs (and
   * after a disconnect or a failure); in between it trusts the engine's own writes. Default 10;
   * 1 reads every time. Only writers other than this engine make the difference.
   */
  readonly recordsFullReadEvery?: number;
  /** How long a stop-like observation waits for a following event before it is believed. */
  readonly stopSettleMs?: number;
  /** A task still in flight after this long is cleared with an error. */
  readonly taskTimeoutMs?: number;
  /** Longest wait for one hypervisor call during sync; a hung call costs its own instance only. */
  readonly callTimeoutMs?: number;
  readonly logger?: SyncLogger;
  /** Epoch-ms clock for recorded timestamps. Timers always use real time. */
  readonly now?: () => number;
  readonly onCommit?: (commit: CommitInfo) => void;
}

export interface ReconcileReport {
  readonly startedAt: number;
  readonly durationMs: number;
  /** Instances the hypervisor listed. */
  readonly listed: number;
  /** Records that had to change: drift the events did not fix. */
  readonly drift: number;
  readonly adopted: number;
  /** Unlisted records a lookup found nothing about either way. */
  readonly missing: number;
  /** Unlisted records the hypervisor confirmed gone. */
  readonly gone: number;
  /** Listing entries not used because the instance changed while the listing was taken. */
  readonly reconfirmed: number;
  /** Instances whose state could not be confirmed this time. */
  readonly unconfirmed: number;
  readonly tasksExpired: number;
}

export type TaskOutcome =
  | { readonly ok: true; readonly instance: InstanceRecord }
  | { readonly ok: false; readonly error: string; readonly instance: InstanceRecord | null };

export interface Task {
  readonly uuid: string;
  readonly action: ActionName;
  readonly taskState: TaskState;
  readonly startedAt: number;
  /** Settles when the task is cleared from the record, successfully or not; never rejects. */
  readonly done: Promise<TaskOutcome>;
}

export interface SyncStats {
  readonly eventsReceived: Readonly<Partial<Record<Transition, number>>>;
  /** Event-caused passes completed (coalesced events share one). */
  readonly eventsHandled: number;
  /** Events folded into a pass already queued for their instance. */
  readonly coalesced: number;
  /** Events whose implied state the confirmed state contradicted (decided on the confirmed one). */
  readonly staleSkipped: number;
  readonly passes: number;
  readonly writes: number;
  readonly conflicts: number;
  readonly confirmFailures: number;
  readonly reconcileRuns: number;
  readonly reconcileFailures: number;
  readonly reconcileLastDurationMs: number;
  readonly reconcileTotalDurationMs: number;
  readonly driftFound: number;
  readonly adopted: number;
  readonly enforcements: number;
  readonly actions: Readonly<Record<'ok' | 'failed' | 'timeout' | 'rejected', number>>;
  readonly tasksExpired: number;
}

/** The counters behind SyncStats; each part bumps its own. */
export interface Counters {
  eventsReceived: Partial<Record<Transition, number>>;
  eventsHandled: number;
  coalesced: number;
  staleSkipped: number;
  passes: number;
  writes: number;
  conflicts: number;
  confirmFailures: number;
  reconcileRuns: number;
  reconcileFailures: number;
  reconcileLastDurationMs: number;
  reconcileTotalDurationMs: number;
  driftFound: number;
  adopted: number;
  enforcements: number;
  actions: Record<'ok' | 'failed' | 'timeout' | 'rejected', number>;
  tasksExpired: number;
}

export function newCounters(): Counters {
  return {
    eventsReceived: {},
    eventsHandled: 0,
    coalesced: 0,
    staleSkipped: 0,
    passes: 0,
    writes: 0,
    conflicts: 0,
    confirmFailures: 0,
    reconcileRuns: 0,
    reconcileFailures: 0,
    reconcileLastDurationMs: 0,
    reconcileTotalDurationMs: 0,
    driftFound: 0,
    adopted: 0,
    enforcements: 0,
    actions: { ok: 0, failed: 0, timeout: 0, rejected: 0 },
    tasksExpired: 0,
  };
}

export const silentLogger: SyncLogger = { debug() {}, info() {}, warn() {}, error() {} };

/** Conditional writes retried after a version conflict before a part gives up. */
export const MAX_WRITE_ATTEMPTS = 5;
