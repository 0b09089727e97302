// One sync engine per host: turns the driver's events (and a periodic listing) into record
// updates, one instance at a time per uuid and many uuids at once, always deciding on a state
// confirmed with the hypervisor, never on the event alone (Nova bug 1468431).
import { performance } from 'node:perf_hooks';
import { DriverError } from '../virt/index.ts';
import type {
  DriverEvent,
  HypervisorDriver,
  LifecycleEvent,
  ObservedInstance,
  PowerState,
  Transition,
} from '../virt/index.ts';
import type {
  InstanceRecord,
  InstanceWrite,
  NewTransition,
  Policy,
  RecordedPowerState,
  EngineStore,
  TaskState,
  TransitionCause,
  VmState,
  WriteResult,
} from '../store/index.ts';
import { adopt, decide, effectivePower } from './decide.ts';
import type { Decision, Observation } from './decide.ts';
import { rebootSeen, rebootSign, strongerSign } from './reboot.ts';
import type { RebootSign } from './reboot.ts';
import { settleWindowFor } from './settle.ts';

export type ActionName =
  'start' | 'stop' | 'force-stop' | 'reboot' | 'hard-reboot' | 'pause' | 'resume';

export const ACTIONS: readonly ActionName[] = [
  'start',
  'stop',
  'force-stop',
  'reboot',
  'hard-reboot',
  'pause',
  'resume',
];

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

const TASK_STATE: Record<ActionName, TaskState> = {
  start: 'powering-on',
  stop: 'powering-off',
  'force-stop': 'powering-off',
  reboot: 'rebooting',
  'hard-reboot': 'rebooting',
  pause: 'pausing',
  resume: 'unpausing',
};

const INTENT: Record<ActionName, VmState> = {
  start: 'active',
  stop: 'stopped',
  'force-stop': 'stopped',
  reboot: 'active',
  'hard-reboot': 'active',
  pause: 'paused',
  resume: 'active',
};

/** The power states in which an action's result shows. */
const EXPECTED_POWER: Record<ActionName, readonly PowerState[]> = {
  start: ['running'],
  stop: ['shutoff', 'crashed'],
  'force-stop': ['shutoff', 'crashed'],
  reboot: ['running'],
  'hard-reboot': ['running'],
  pause: ['paused'],
  resume: ['running'],
};

const ALLOWED_FROM: Record<ActionName, readonly VmState[]> = {
  start: ['stopped'],
  stop: ['active', 'paused', 'suspended', 'error'],
  'force-stop': ['active', 'paused', 'suspended', 'error'],
  reboot: ['active'],
  'hard-reboot': ['active', 'paused', 'suspended', 'error'],
  pause: ['active'],
  resume: ['paused'],
};

const MAX_WRITE_ATTEMPTS = 5;
const CONFIRM_RETRIES = 2;
const PAGE = 1_000;

const silentLogger: SyncLogger = { debug() {}, info() {}, warn() {}, error() {} };

/** What one pass needs to know; later work for the same instance merges into it. */
interface Work {
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

interface PassOutcome {
  readonly wrote: boolean;
  readonly cause: TransitionCause | null;
  readonly observed: Observation['kind'] | 'unknown';
}

interface Slot {
  pending: Work | null;
  waiters: ((outcome: PassOutcome) => void)[];
  /** Set while a pass waits out the settle window: newer work for the instance cuts it short. */
  interrupt: (() => void) | null;
}

interface RunningTask {
  readonly startedAt: number;
  readonly done: Promise<TaskOutcome>;
}

const SUPERSEDED = Symbol('superseded');

/** Later work wins, but an event's information is never dropped for an event-less pass. */
function merge(older: Work, newer: Work): Work {
  const sign = strongerSign(older.rebootSign, newer.rebootSign);
  if (newer.event || !older.event) return { ...newer, rebootSign: sign };
  return { ...older, listed: null, probe: false, rebootSign: sign };
}

function present(observed: ObservedInstance): Observation {
  return { kind: 'present', powerState: observed.powerState, reason: observed.reason };
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function isTimeout(error: unknown): boolean {
  return error instanceof DriverError && error.code === 'timeout';
}

function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new DriverError('timeout', `${what} did not answer within ${ms} ms`)),
      Math.max(0, ms),
    );
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class SyncEngine {
  readonly policy: Policy;
  private readonly driver: HypervisorDriver;
  private readonly store: EngineStore;
  private readonly reconcileIntervalMs: number;
  private readonly stopSettleMs: number;
  private readonly taskTimeoutMs: number;
  private readonly callTimeoutMs: number;
  private readonly log: SyncLogger;
  private readonly now: () => number;
  private readonly onCommit: ((commit: CommitInfo) => void) | undefined;

  private hostName: string | undefined;
  private state: 'new' | 'running' | 'stopping' | 'stopped' = 'new';
  private connected = false;
  /** Set when events may have been lost (a disconnect, a failed reconcile): reconcile on connect. */
  private needsReconcile = false;
  /** Bumped on every disconnect, so a reconcile that spanned one does not count as fresh. */
  private connectionEpoch = 0;
  private reconciledEpoch = -1;
  private lastReconcileAt: number | null = null;
  private unregister: (() => void) | null = null;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private readonly leftoverTimers = new Set<NodeJS.Timeout>();

  private readonly slots = new Map<string, Slot>();
  private readonly tasks = new Map<string, RunningTask>();
  /** Wakes a task waiting for its result to show when an event for its instance arrives. */
  private readonly taskWakers = new Map<string, () => void>();
  /** Uuids something happened to since the current reconcile's listing began. */
  private readonly touched = new Set<string>();
  /** Uuids whose last event was SHUTDOWN: their next STOPPED is a real stop. */
  private readonly shuttingDown = new Set<string>();
  /** Uuids a reboot action asked to reboot whose reboot event has not arrived yet. */
  private readonly rebootsAsked = new Set<string>();
  private readonly inflight = new Set<Promise<unknown>>();
  private reconcileRunning: Promise<ReconcileReport> | null = null;
  private reconcileNext: Promise<ReconcileReport> | null = null;

  private readonly counters = {
    eventsReceived: {} as Partial<Record<Transition, number>>,
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

  constructor(options: SyncEngineOptions) {
    this.driver = options.driver;
    this.store = options.store;
    this.hostName = options.host;
    this.policy = options.policy ?? 'observe';
    this.reconcileIntervalMs = options.reconcileIntervalMs ?? 60_000;
    this.stopSettleMs = options.stopSettleMs ?? 250;
    this.taskTimeoutMs = options.taskTimeoutMs ?? 120_000;
    this.callTimeoutMs = options.callTimeoutMs ?? 10_000;
    this.log = options.logger ?? silentLogger;
    this.now = options.now ?? Date.now;
    this.onCommit = options.onCommit;
  }

  /** This host's name; known once started. */
  get host(): string {
    if (this.hostName === undefined) throw new SyncError('not-running', 'engine not started');
    return this.hostName;
  }

  /** Connected, and a full reconcile has completed since the connection was made. */
  get ready(): boolean {
    return (
      this.state === 'running' && this.connected && this.reconciledEpoch === this.connectionEpoch
    );
  }

  get stats(): SyncStats {
    const c = this.counters;
    return { ...c, eventsReceived: { ...c.eventsReceived }, actions: { ...c.actions } };
  }

  /**
   * Registers for events, connects the driver if it is not, clears tasks a previous process left
   * behind, and runs the first reconcile. Resolves after that first reconcile, even a failed one
   * (`ready` then stays false and the engine retries on the next connect or period).
   */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new SyncError('not-running', `engine is ${this.state}`);
    this.state = 'running';
    // Listen before connecting and listing: a change during the first listing must arrive as an
    // event, or it would be lost (the registration-order pitfall).
    this.unregister = this.driver.registerEventListener((event) => this.onDriverEvent(event));
    try {
      if (!this.driver.connected) await this.driver.connect();
      this.connected = this.driver.connected;
      this.hostName ??= await this.driver.hostname();
      await this.markHost();
      await this.clearLeftoverTasks();
    } catch (error) {
      // Nothing is running yet: leave the engine as it was, so that start can be tried again.
      this.unregister();
      this.unregister = null;
      this.state = 'new';
      throw error;
    }
    await this.reconcile().catch((error: unknown) => {
      this.log.error({ err: error }, 'first reconcile failed');
    });
    if (this.reconcileIntervalMs > 0) {
      this.reconcileTimer = setInterval(() => {
        if (this.reconcileRunning || !this.connected) return;
        this.reconcile().catch((error: unknown) => {
          this.log.warn({ err: error }, 'periodic reconcile failed');
        });
      }, this.reconcileIntervalMs);
    }
  }

  /** Resolves once no pass, task or background write is in flight (at that moment). */
  async whenIdle(): Promise<void> {
    while (this.inflight.size > 0 || this.reconcileRunning) {
      await Promise.allSettled([...this.inflight, this.reconcileRunning]);
    }
  }

  /** Stops taking events and timers, then waits for work in flight (tasks included) to finish. */
  async stop(): Promise<void> {
    if (this.state !== 'running') {
      this.state = 'stopped';
      return;
    }
    this.state = 'stopping';
    this.unregister?.();
    clearInterval(this.reconcileTimer);
    for (const timer of this.leftoverTimers) clearTimeout(timer);
    this.leftoverTimers.clear();
    await Promise.allSettled([this.reconcileRunning, this.reconcileNext]);
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    this.state = 'stopped';
  }

  // ---- events ---------------------------------------------------------------------------

  private onDriverEvent(event: DriverEvent): void {
    if (this.state !== 'running') return;
    if (event.kind === 'disconnected') {
      // Nothing can be confirmed until the connection is back, and what happens meanwhile is
      // never told: remember to reconcile.
      this.connected = false;
      this.needsReconcile = true;
      this.connectionEpoch++;
      this.log.warn({ reason: event.reason }, 'hypervisor disconnected');
      this.track(this.markHost());
      return;
    }
    if (event.kind === 'connected') {
      this.connected = true;
      this.track(this.markHost());
      if (this.needsReconcile) {
        this.reconcile().catch((error: unknown) => {
          this.log.warn({ err: error }, 'reconcile after reconnect failed');
        });
      }
      return;
    }
    this.onLifecycle(event);
  }

  private onLifecycle(event: LifecycleEvent): void {
    const received = this.counters.eventsReceived;
    received[event.transition] = (received[event.transition] ?? 0) + 1;
    this.touch(event.uuid);
    this.taskWakers.get(event.uuid)?.();
    // A guest that powers itself off says SHUTDOWN (guest finished) before STOPPED; a hard
    // reboot never does. So a STOPPED right after a SHUTDOWN needs no settle window.
    const realStop = event.transition === 'stopped' && this.shuttingDown.has(event.uuid);
    if (event.transition === 'shutdown') this.shuttingDown.add(event.uuid);
    else this.shuttingDown.delete(event.uuid);
    if (!this.connected || this.hostName === undefined) return;
    void this.enqueue(event.uuid, {
      cause: 'event',
      event,
      listed: null,
      probe: false,
      realStop,
      rebootSign: this.rebootSignOf(event),
    });
  }

  /** A reboot sign, unless the event is a task's own: the task's end records that reboot. */
  private rebootSignOf(event: LifecycleEvent): RebootSign | undefined {
    const sign = rebootSign(event);
    if (sign === null) return undefined;
    // A guest reboots when it gets to it, often after the task that asked has ended.
    const asked = this.rebootsAsked.delete(event.uuid);
    if (this.tasks.has(event.uuid) || (asked && sign.cause === 'reboot')) return undefined;
    return sign;
  }

  // ---- per-instance handling ------------------------------------------------------------

  /** Queues a pass for one instance; resolves when the pass that took this work has ended. */
  private enqueue(uuid: string, work: Work): Promise<PassOutcome> {
    return new Promise((resolve) => {
      let slot = this.slots.get(uuid);
      if (!slot) {
        slot = { pending: null, waiters: [], interrupt: null };
        this.slots.set(uuid, slot);
        slot.pending = work;
        slot.waiters.push(resolve);
        this.track(this.drain(uuid, slot));
        return;
      }
      if (slot.pending) {
        slot.pending = merge(slot.pending, work);
        if (work.event) this.counters.coalesced++;
      } else {
        slot.pending = work;
      }
      slot.waiters.push(resolve);
      slot.interrupt?.();
    });
  }

  /** Runs passes for one instance until nothing is pending; one drain per uuid at a time. */
  private async drain(uuid: string, slot: Slot): Promise<void> {
    try {
      while (slot.pending) {
        const work = slot.pending;
        const waiters = slot.waiters;
        slot.pending = null;
        slot.waiters = [];
        let outcome: PassOutcome | typeof SUPERSEDED;
        try {
          outcome = await this.pass(uuid, work, slot);
        } catch (error) {
          this.log.error({ err: error, uuid }, 'sync pass failed');
          outcome = { wrote: false, cause: null, observed: 'unknown' };
        }
        if (outcome === SUPERSEDED && slot.pending) {
          slot.pending = merge(work, slot.pending);
          slot.waiters.unshift(...waiters);
          continue;
        }
        const result =
          outcome === SUPERSEDED
            ? { wrote: false, cause: null, observed: 'unknown' as const }
            : outcome;
        if (work.event) this.counters.eventsHandled++;
        for (const waiter of waiters) waiter(result);
      }
    } finally {
      this.slots.delete(uuid);
    }
  }

  /**
   * Waits out the settle window. A hard reboot is STOPPED then STARTED (maybe RESUMED between):
   * believing the STOPPED alone stops the instance for good (Nova 1293480). Nova waits 15 s on
   * every STOPPED; here any further event for the instance ends the wait at once and the pass
   * starts over with it, so a real stop costs only the window plus one lookup.
   * True when newer work cut it short.
   */
  private settle(slot: Slot): Promise<boolean> {
    if (slot.pending) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        slot.interrupt = null;
        resolve(false);
      }, this.stopSettleMs);
      slot.interrupt = () => {
        clearTimeout(timer);
        slot.interrupt = null;
        resolve(true);
      };
    });
  }

  private async pass(
    uuid: string,
    work: Work,
    slot: Slot,
  ): Promise<PassOutcome | typeof SUPERSEDED> {
    const unknown: PassOutcome = { wrote: false, cause: null, observed: 'unknown' };
    if (!this.connected) return unknown;
    this.counters.passes++;
    const { event } = work;
    let settled = work.realStop;
    let listed = work.listed;
    let checkedStale = false;
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      // Read before confirming: a write conditional on this version then carries a state at
      // least as new as anything already written, so the record never goes backwards.
      const record = await this.store.getInstance(uuid);
      const policy = record?.policy ?? this.policy;
      if (event && !settled && settleWindowFor(policy, { kind: 'event', event }).hold) {
        // Wait before the lookup: the window is for the events that follow, and one lookup after
        // it is enough.
        if (await this.settle(slot)) return SUPERSEDED;
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
        const confirmed = await this.confirm(uuid, work.probe);
        if (!confirmed) return unknown;
        ({ observed, observation } = confirmed);
      }
      if (event && !checkedStale) {
        checkedStale = true;
        const actual = observation.kind === 'present' ? observation.powerState : null;
        if (event.powerState !== null && event.powerState !== actual) this.counters.staleSkipped++;
      }

      if (!record) {
        if (!observed) return { wrote: false, cause: null, observed: observation.kind };
        const adopted = await this.adoptInstance(observed, event);
        if (adopted) return adopted;
        continue;
      }

      const decision = decide({
        record,
        observation,
        event: event ? { transition: event.transition, detail: event.detail } : null,
        thisHost: this.host,
        policy,
        cause: work.cause,
      });
      if (!settled && settleWindowFor(policy, { kind: 'decision', observation, decision }).hold) {
        // A listing (or a late lookup) can catch an instance mid-reboot too: settle and look again.
        if (await this.settle(slot)) return SUPERSEDED;
        settled = true;
        continue;
      }
      if (decision.warn) {
        this.log.warn(
          { uuid, reason: decision.reason, vmState: record.vmState, observation },
          'instance needs attention',
        );
      }

      const transition = decision.write
        ? this.transitionFor(record, decision, work, observation)
        : undefined;
      if (decision.action === 'force-stop') {
        const task = await this.beginTask(record, 'force-stop', decision, transition, event);
        if (task === 'conflict') continue;
        this.counters.enforcements++;
        this.log.info({ uuid, reason: decision.reason }, 'enforcing: powering off');
        return { wrote: true, cause: work.cause, observed: observation.kind };
      }
      const reboot = rebootSeen({
        record,
        observation,
        sign: work.rebootSign ?? null,
        decision,
      });
      if (!decision.write && !reboot) {
        return { wrote: false, cause: null, observed: observation.kind };
      }
      const result = await this.write(
        {
          kind: 'update',
          uuid,
          expectedVersion: record.version,
          patch: decision.write ?? {},
          transition: reboot ? this.rebootTransition(record, reboot, work) : transition,
        },
        event,
      );
      if (result.ok) return { wrote: true, cause: work.cause, observed: observation.kind };
      if (result.reason !== 'conflict')
        return { wrote: false, cause: null, observed: observation.kind };
    }
    this.log.warn({ uuid }, 'gave up after repeated write conflicts');
    return unknown;
  }

  private transitionFor(
    record: InstanceRecord,
    decision: Decision,
    work: Work,
    observation: Observation,
  ): NewTransition | undefined {
    const write = decision.write;
    if (!write) return undefined;
    const { event } = work;
    // The event's own detail only when the confirmed state is the one it announced; otherwise
    // the event was stale and the engine's reason says more.
    const eventFits =
      event !== null &&
      (observation.kind === 'present'
        ? event.powerState === null ||
          event.powerState === observation.powerState ||
          event.powerState === effectivePower(observation, event).powerState
        : observation.kind === 'gone' && event.transition === 'undefined');
    return {
      from: record.powerState,
      to: write.powerState,
      vmStateFrom: record.vmState,
      vmStateTo: write.vmState ?? record.vmState,
      cause: work.cause,
      detail: eventFits ? event.detail : decision.reason,
      outOfBand: decision.outOfBand,
      observedAt: event?.observedAt ?? this.now(),
    };
  }

  /** A reboot leaves the power state where it was: only this entry tells it happened. */
  private rebootTransition(record: InstanceRecord, reboot: RebootSign, work: Work): NewTransition {
    return {
      from: record.powerState,
      to: record.powerState,
      vmStateFrom: record.vmState,
      vmStateTo: record.vmState,
      cause: reboot.cause,
      detail: reboot.detail,
      outOfBand: true,
      observedAt: work.event?.observedAt ?? this.now(),
    };
  }

  private async adoptInstance(
    observed: ObservedInstance,
    event: LifecycleEvent | null,
  ): Promise<PassOutcome | null> {
    const adopted = adopt(observed);
    const result = await this.write(
      {
        kind: 'create',
        uuid: observed.uuid,
        fields: {
          name: observed.name,
          host: this.host,
          vmState: adopted.vmState,
          taskState: null,
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
          observedAt: event?.observedAt ?? this.now(),
        },
      },
      event,
    );
    if (!result.ok) return null; // someone created it meanwhile: handle it as known
    this.counters.adopted++;
    this.log.debug(
      { uuid: observed.uuid, name: observed.name, vmState: adopted.vmState },
      'adopted',
    );
    return { wrote: true, cause: 'adopt', observed: 'present' };
  }

  /**
   * One instance's state from the hypervisor. Null when nothing could be learned: the pass then
   * leaves the record alone. For a probe (the listing lacked it), a failed lookup while connected
   * is `missing`: known to be unlisted, not known to be gone.
   */
  private async confirm(
    uuid: string,
    probe: boolean,
  ): Promise<{ observed: ObservedInstance | null; observation: Observation } | null> {
    for (let attempt = 0; ; attempt++) {
      try {
        const found = await withTimeout(
          this.driver.getPowerState(uuid),
          this.callTimeoutMs,
          'getPowerState',
        );
        this.touch(uuid);
        return found
          ? { observed: found, observation: present(found) }
          : { observed: null, observation: { kind: 'gone' } };
      } catch (error) {
        if (error instanceof DriverError && error.code === 'not-found') {
          this.touch(uuid);
          return { observed: null, observation: { kind: 'gone' } };
        }
        // A timeout already cost a full call timeout: retrying a hung lookup only adds more.
        // Anything else may be a blip, unless the connection is known to be down.
        if (!isTimeout(error) && attempt < CONFIRM_RETRIES && this.connected) {
          await sleep(50 * (attempt + 1));
          continue;
        }
        this.counters.confirmFailures++;
        this.log.debug({ err: error, uuid }, 'could not confirm power state');
        if (probe && this.connected) return { observed: null, observation: { kind: 'missing' } };
        return null;
      }
    }
  }

  private async write(write: InstanceWrite, event: LifecycleEvent | null): Promise<WriteResult> {
    const result = await this.store.write(write);
    this.touch(write.uuid);
    if (!result.ok) {
      if (result.reason === 'conflict') this.counters.conflicts++;
      return result;
    }
    this.counters.writes++;
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
        latencyMs: event ? this.now() - event.observedAt : null,
      };
      this.log.debug({ ...commit }, 'committed');
      try {
        this.onCommit?.(commit);
      } catch (error) {
        this.log.warn({ err: error }, 'onCommit hook threw');
      }
    }
    return result;
  }

  // ---- reconcile ------------------------------------------------------------------------

  /** A full pass over the listing and this host's records. Passes never overlap: a call during one gets the next. */
  reconcile(): Promise<ReconcileReport> {
    if (this.state !== 'running') {
      return Promise.reject(new SyncError('not-running', `engine is ${this.state}`));
    }
    if (this.reconcileRunning) {
      this.reconcileNext ??= this.reconcileRunning
        .catch(() => undefined)
        .then(() => {
          this.reconcileNext = null;
          return this.reconcile();
        });
      return this.reconcileNext;
    }
    const run = this.runReconcile().finally(() => {
      this.reconcileRunning = null;
      this.touched.clear();
    });
    this.reconcileRunning = run;
    return run;
  }

  private async runReconcile(): Promise<ReconcileReport> {
    const began = performance.now();
    const startedAt = this.now();
    const epoch = this.connectionEpoch;
    this.needsReconcile = false;
    this.counters.reconcileRuns++;
    try {
      if (!this.connected) throw new SyncError('disconnected', 'not connected to the hypervisor');
      // Whatever is touched from here on may be newer than the listing.
      this.touched.clear();
      const listing = await withTimeout(
        this.driver.listInstances(),
        this.callTimeoutMs,
        'listInstances',
      );
      const records = await this.hostRecords();
      const tasksExpired = await this.expireTasks(records);

      let reconfirmed = 0;
      const listedUuids = new Set<string>();
      const passes: Promise<PassOutcome>[] = [];
      for (const instance of listing) {
        listedUuids.add(instance.uuid);
        const fresh =
          !this.touched.has(instance.uuid) &&
          !this.slots.has(instance.uuid) &&
          !this.tasks.has(instance.uuid);
        if (!fresh) reconfirmed++;
        passes.push(
          this.enqueue(instance.uuid, {
            cause: 'reconcile',
            event: null,
            listed: fresh ? instance : null,
            probe: false,
            realStop: false,
          }),
        );
      }
      for (const record of records) {
        // Deleted is final; probing it every period would only cost a lookup each time.
        if (listedUuids.has(record.uuid) || record.vmState === 'deleted') continue;
        passes.push(
          this.enqueue(record.uuid, {
            cause: 'reconcile',
            event: null,
            listed: null,
            probe: true,
            realStop: false,
          }),
        );
      }
      const outcomes = await Promise.all(passes);

      const count = (test: (outcome: PassOutcome) => boolean): number =>
        outcomes.filter(test).length;
      const probes = outcomes.slice(listing.length);
      const durationMs = performance.now() - began;
      const report: ReconcileReport = {
        startedAt,
        durationMs,
        listed: listing.length,
        drift: count((o) => o.wrote && o.cause === 'reconcile'),
        adopted: count((o) => o.wrote && o.cause === 'adopt'),
        missing: probes.filter((o) => o.observed === 'missing').length,
        gone: probes.filter((o) => o.observed === 'gone').length,
        reconfirmed,
        unconfirmed: count((o) => o.observed === 'unknown'),
        tasksExpired,
      };
      this.counters.driftFound += report.drift;
      this.counters.reconcileLastDurationMs = durationMs;
      this.counters.reconcileTotalDurationMs += durationMs;
      if (this.connectionEpoch === epoch && this.connected) this.reconciledEpoch = epoch;
      else this.needsReconcile = true;
      this.lastReconcileAt = this.now();
      await this.markHost();
      // The first reconcile is the start-up's one summary line; each adoption is logged at debug.
      const message =
        this.counters.reconcileRuns === 1
          ? `adopted ${report.adopted} instances, ${report.drift} changed since last run`
          : 'reconciled';
      this.log.info({ ...report }, message);
      return report;
    } catch (error) {
      this.counters.reconcileFailures++;
      this.needsReconcile = true;
      throw error;
    }
  }

  /** Notes that an instance may be newer than the listing of the reconcile under way, if any. */
  private touch(uuid: string): void {
    // Only a running reconcile reads the set: outside one it would only grow.
    if (this.reconcileRunning) this.touched.add(uuid);
  }

  private async hostRecords(): Promise<InstanceRecord[]> {
    const all: InstanceRecord[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.store.listInstances({ host: this.host, limit: PAGE, after });
      all.push(...page);
      if (page.length < PAGE) return all;
      after = page[page.length - 1]!.uuid;
    }
  }

  private async markHost(): Promise<void> {
    if (this.hostName === undefined) return;
    try {
      await this.store.upsertHost({
        name: this.hostName,
        driver: this.driver.kind,
        connected: this.connected,
        lastSeenAt: this.now(),
        lastReconcileAt: this.lastReconcileAt,
      });
    } catch (error) {
      this.log.error({ err: error }, 'could not record host state');
    }
  }

  // ---- tasks ----------------------------------------------------------------------------

  /**
   * Starts an action: checks it makes sense for the record, marks the task with a conditional
   * write, and returns once marked. The hypervisor call, the confirmation and the clearing of
   * the task follow in the background; `done` tells how it ended.
   */
  async act(uuid: string, action: ActionName): Promise<Task> {
    try {
      if (this.state !== 'running') throw new SyncError('not-running', `engine is ${this.state}`);
      if (!this.connected) {
        throw new SyncError('disconnected', 'not connected to the hypervisor: nothing can be done');
      }
      for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
        const record = await this.store.getInstance(uuid);
        this.checkAction(uuid, record, action);
        const task = await this.beginTask(record!, action, null, undefined, null);
        if (task !== 'conflict') return task;
      }
      throw new SyncError('conflict', `instance ${uuid} kept changing; try again`);
    } catch (error) {
      this.counters.actions.rejected++;
      throw error;
    }
  }

  private checkAction(uuid: string, record: InstanceRecord | null, action: ActionName): void {
    if (!record) throw new SyncError('not-found', `no instance ${uuid}`);
    if (record.host !== this.host) {
      throw new SyncError('wrong-host', `instance ${uuid} is on ${record.host}, not ${this.host}`);
    }
    if (record.taskState !== null) {
      throw new SyncError('task-in-flight', `instance ${uuid} is ${record.taskState}`);
    }
    if (!ALLOWED_FROM[action].includes(record.vmState)) {
      throw new SyncError(
        'invalid-action',
        `cannot ${action} an instance that is ${record.vmState}`,
      );
    }
  }

  /** Marks the task (with a policy's write, for enforcement) and runs it in the background. */
  private async beginTask(
    record: InstanceRecord,
    action: ActionName,
    decision: Decision | null,
    transition: NewTransition | undefined,
    event: LifecycleEvent | null,
  ): Promise<Task | 'conflict'> {
    const startedAt = this.now();
    const taskState = TASK_STATE[action];
    const result = await this.write(
      {
        kind: 'update',
        uuid: record.uuid,
        expectedVersion: record.version,
        patch: { ...decision?.write, taskState, taskStartedAt: startedAt, taskError: null },
        transition,
      },
      event,
    );
    if (!result.ok) {
      if (result.reason === 'conflict') return 'conflict';
      throw new SyncError('not-found', `no instance ${record.uuid}`);
    }
    if (action === 'reboot') this.rebootsAsked.add(record.uuid);
    const done = this.runTask(record.uuid, action, startedAt).catch(
      (error: unknown): TaskOutcome => {
        this.log.error({ err: error, uuid: record.uuid, action }, 'task could not be finished');
        return { ok: false, error: errorText(error), instance: null };
      },
    );
    const running: RunningTask = { startedAt, done };
    this.tasks.set(record.uuid, running);
    this.track(
      done.finally(() => {
        if (this.tasks.get(record.uuid) === running) this.tasks.delete(record.uuid);
      }),
    );
    return { uuid: record.uuid, action, taskState, startedAt, done };
  }

  private callDriver(uuid: string, action: ActionName): Promise<void> {
    switch (action) {
      case 'start':
        return this.driver.start(uuid);
      case 'stop':
        // The driver forces the guest off after this, well before the task would time out.
        return this.driver.stop(uuid, { timeoutMs: Math.floor(this.taskTimeoutMs / 2) });
      case 'force-stop':
        return this.driver.forceStop(uuid);
      case 'reboot':
        return this.driver.reboot(uuid, { hard: false });
      case 'hard-reboot':
        return this.driver.reboot(uuid, { hard: true });
      case 'pause':
        return this.driver.pause(uuid);
      case 'resume':
        return this.driver.resume(uuid);
    }
  }

  private async runTask(uuid: string, action: ActionName, startedAt: number): Promise<TaskOutcome> {
    const deadline = performance.now() + this.taskTimeoutMs;
    const remaining = (): number => deadline - performance.now();
    let error: string | null = null;
    let timedOut = false;
    let refused = false;
    let observation: Observation | null;
    const reached = (seen: Observation | null): boolean =>
      seen?.kind === 'present' &&
      EXPECTED_POWER[action].includes(effectivePower(seen, null).powerState);
    try {
      await withTimeout(
        Promise.resolve().then(() => this.callDriver(uuid, action)),
        remaining(),
        action,
      );
    } catch (failure) {
      error = errorText(failure);
      timedOut = isTimeout(failure);
      refused = failure instanceof DriverError && failure.code === 'invalid-state';
    }
    if (error === null) {
      // A call may return before its result shows (libvirt's shutdown only asks the guest): the
      // task is done when the hypervisor confirms it, or times out.
      for (let delay = 25; ; delay = Math.min(delay * 2, 500)) {
        observation = (await this.confirm(uuid, false))?.observation ?? null;
        if (observation?.kind === 'gone') {
          error = 'the instance no longer exists';
          break;
        }
        if (reached(observation)) break;
        if (remaining() <= 0) {
          error = `${action} did not take effect within ${this.taskTimeoutMs} ms`;
          timedOut = true;
          break;
        }
        await this.waitForInstance(uuid, Math.min(delay, remaining()));
      }
    } else {
      observation = (await this.confirm(uuid, false))?.observation ?? null;
      // Refused because it is already so (a stop racing the guest's own shutdown): done.
      if (refused && reached(observation)) error = null;
    }
    if (error === null) this.counters.actions.ok++;
    else if (timedOut) this.counters.actions.timeout++;
    else this.counters.actions.failed++;
    return this.finishTask(uuid, action, startedAt, error, observation);
  }

  /** Resolves after `ms`, or sooner when an event for the instance arrives. */
  private waitForInstance(uuid: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        if (this.taskWakers.get(uuid) === done) this.taskWakers.delete(uuid);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.taskWakers.set(uuid, done);
    });
  }

  /** Clears the task: vmState becomes the intent on success; the error is kept on failure. */
  private async finishTask(
    uuid: string,
    action: ActionName,
    startedAt: number,
    error: string | null,
    firstObservation: Observation | null,
  ): Promise<TaskOutcome> {
    let observation = firstObservation;
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      if (attempt > 0) observation = (await this.confirm(uuid, false))?.observation ?? null;
      const record = await this.store.getInstance(uuid);
      if (!record || record.taskState === null || record.taskStartedAt !== startedAt) {
        // Cleared meanwhile (by the leftover sweep of another engine, say): not ours to touch.
        return { ok: false, error: error ?? 'task was cleared elsewhere', instance: record };
      }
      let powerState: RecordedPowerState = record.powerState;
      let powerReason = record.powerReason;
      let vmState: VmState = error === null ? INTENT[action] : record.vmState;
      if (observation?.kind === 'present') {
        ({ powerState, reason: powerReason } = effectivePower(observation, null));
      } else if (observation?.kind === 'gone') {
        powerState = 'nostate';
        powerReason = 'undefined';
        vmState = 'deleted';
      }
      // A reboot ends where it began: without its own entry it would leave no trace.
      const rebooted = error === null && (action === 'reboot' || action === 'hard-reboot');
      const changed = rebooted || powerState !== record.powerState || vmState !== record.vmState;
      const result = await this.write(
        {
          kind: 'update',
          uuid,
          expectedVersion: record.version,
          patch: {
            taskState: null,
            taskStartedAt: null,
            taskError: error,
            vmState,
            powerState,
            powerReason,
          },
          transition: changed
            ? {
                from: record.powerState,
                to: powerState,
                vmStateFrom: record.vmState,
                vmStateTo: vmState,
                cause: 'action',
                detail: error === null ? action : `${action} failed`,
                outOfBand: false,
                observedAt: this.now(),
              }
            : undefined,
        },
        null,
      );
      if (!result.ok) {
        if (result.reason === 'conflict') continue;
        return { ok: false, error: error ?? 'instance record vanished', instance: null };
      }
      if (error !== null) {
        this.rebootsAsked.delete(uuid);
        this.log.warn({ uuid, action, error }, 'task failed');
        // The task no longer shields the instance: let the policy look at what is there now.
        this.followUp(uuid);
        return { ok: false, error, instance: result.instance };
      }
      return { ok: true, instance: result.instance };
    }
    this.followUp(uuid);
    return { ok: false, error: error ?? 'could not clear the task', instance: null };
  }

  private followUp(uuid: string): void {
    if (this.state !== 'running' || !this.connected) return;
    void this.enqueue(uuid, {
      cause: 'reconcile',
      event: null,
      listed: null,
      probe: false,
      realStop: false,
    });
  }

  /** Clears tasks this engine is not running whose time is up; returns how many. */
  private async expireTasks(records: readonly InstanceRecord[]): Promise<number> {
    let expired = 0;
    for (const record of records) {
      if (record.taskState === null || this.tasks.has(record.uuid)) continue;
      if (this.now() - (record.taskStartedAt ?? 0) < this.taskTimeoutMs) continue;
      if (await this.expireTask(record)) expired++;
    }
    return expired;
  }

  private async expireTask(record: InstanceRecord): Promise<boolean> {
    const result = await this.write(
      {
        kind: 'update',
        uuid: record.uuid,
        expectedVersion: record.version,
        patch: {
          taskState: null,
          taskStartedAt: null,
          taskError: `${record.taskState} did not complete within ${this.taskTimeoutMs} ms`,
        },
      },
      null,
    );
    if (!result.ok) return false;
    this.counters.tasksExpired++;
    this.log.warn({ uuid: record.uuid, taskState: record.taskState }, 'task expired');
    this.followUp(record.uuid);
    return true;
  }

  /**
   * Tasks a previous process left in the record have nobody to finish them: clear the expired
   * ones now and the others when their time is up (unless something cleared them meanwhile).
   */
  private async clearLeftoverTasks(): Promise<void> {
    const records = await this.hostRecords();
    await this.expireTasks(records);
    for (const record of records) {
      if (record.taskState === null || this.tasks.has(record.uuid)) continue;
      const dueIn = (record.taskStartedAt ?? 0) + this.taskTimeoutMs - this.now();
      if (dueIn < 0) continue;
      const timer = setTimeout(() => {
        this.leftoverTimers.delete(timer);
        this.track(
          (async () => {
            const current = await this.store.getInstance(record.uuid);
            if (
              current &&
              current.taskState !== null &&
              current.taskStartedAt === record.taskStartedAt &&
              !this.tasks.has(record.uuid)
            ) {
              await this.expireTask(current);
            }
          })(),
        );
      }, dueIn + 1);
      this.leftoverTimers.add(timer);
    }
  }

  private track(work: Promise<unknown>): void {
    const tracked = work.catch((error: unknown) => {
      this.log.error({ err: error }, 'background work failed');
    });
    this.inflight.add(tracked);
    void tracked.finally(() => this.inflight.delete(tracked));
  }
}
