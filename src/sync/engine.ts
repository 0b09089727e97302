// One sync engine per host: turns the driver's events (and a periodic listing) into record
// updates, one instance at a time per uuid and many uuids at once, always deciding on a state
// confirmed with the hypervisor, never on the event alone (Nova bug 1468431).
//
// An event's path: onDriverEvent → the queue (one pass per instance, coalescing, settle window)
// → the pass (confirm, decide, write) → the store. This file only composes the parts and keeps
// the connection state they share.
import { DEFAULT_TASK_TIMEOUT_MS } from '../model/index.ts';
import type { ActionName, Policy } from '../model/index.ts';
import { StoreError, type EngineStore, type InstanceRecord } from '../store/index.ts';
import type { DriverEvent, HypervisorDriver, LifecycleEvent } from '../virt/index.ts';
import { confirm } from './confirm.ts';
import { HostRecords } from './host-records.ts';
import type { ConfirmDeps } from './confirm.ts';
import { LOOK_AGAIN, mergeWork, passRunner, UNKNOWN } from './pass.ts';
import type { PassOutcome, Work } from './pass.ts';
import { WorkQueue } from './queue.ts';
import { Reconciler } from './reconciler.ts';
import { rebootSign } from './reboot.ts';
import type { RebootSign } from './reboot.ts';
import { TaskRunner } from './tasks.ts';
import { newCounters, silentLogger, SyncError } from './types.ts';
import type {
  Counters,
  ReconcileReport,
  SyncEngineOptions,
  SyncLogger,
  SyncStats,
  Task,
} from './types.ts';
import { recordWriter } from './write.ts';

export class SyncEngine {
  readonly policy: Policy;
  private readonly driver: HypervisorDriver;
  private readonly store: EngineStore;
  private readonly reconcileIntervalMs: number;
  private readonly log: SyncLogger;
  private readonly counters: Counters = newCounters();
  private readonly queue: WorkQueue<Work, PassOutcome>;
  private readonly reconciler: Reconciler;
  private readonly tasks: TaskRunner;
  private readonly records: HostRecords;

  private hostName: string | undefined;
  private state: 'new' | 'running' | 'stopping' | 'stopped' = 'new';
  private connected = false;
  /** Bumped on every disconnect, so a reconcile that spanned one does not count as fresh. */
  private connectionEpoch = 0;
  private unregister: (() => void) | null = null;
  /** Uuids whose last event was SHUTDOWN: their next STOPPED is a real stop. */
  private readonly shuttingDown = new Set<string>();
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(options: SyncEngineOptions) {
    this.driver = options.driver;
    this.store = options.store;
    this.hostName = options.host;
    this.policy = options.policy ?? 'observe';
    this.reconcileIntervalMs = options.reconcileIntervalMs ?? 60_000;
    this.log = options.logger ?? silentLogger;
    const now = options.now ?? Date.now;
    const taskTimeoutMs = options.taskTimeoutMs ?? DEFAULT_TASK_TIMEOUT_MS;
    const { driver, store, counters, log } = this;
    const host = (): string => this.host;
    const connected = (): boolean => this.connected;
    const touched = (uuid: string): void => this.reconciler.touch(uuid);
    const confirmDeps: ConfirmDeps = {
      driver,
      callTimeoutMs: options.callTimeoutMs ?? 10_000,
      counters,
      log,
      connected,
      touched,
    };
    const confirmState = (uuid: string, probe: boolean) => confirm(confirmDeps, uuid, probe);
    const records = new HostRecords({
      store,
      hostName: () => this.hostName,
      fullReadEvery: options.recordsFullReadEvery ?? 10,
    });
    this.records = records;
    const write = recordWriter({
      store,
      counters,
      log,
      now,
      onCommit: options.onCommit,
      touched,
      records,
    });
    const track = (work: Promise<unknown>): void => this.track(work);

    this.tasks = new TaskRunner({
      driver,
      store,
      taskTimeoutMs,
      counters,
      log,
      now,
      write,
      confirm: confirmState,
      host,
      unavailable: () => {
        if (this.state !== 'running')
          return new SyncError('not-running', `engine is ${this.state}`);
        if (!this.connected) {
          return new SyncError(
            'disconnected',
            'not connected to the hypervisor: nothing can be done',
          );
        }
        return null;
      },
      lookAgain: (uuid) => {
        if (this.state !== 'running' || !this.connected) return;
        void this.queue.push(uuid, LOOK_AGAIN);
      },
      track,
    });
    this.queue = new WorkQueue<Work, PassOutcome>({
      run: passRunner({
        store,
        policy: this.policy,
        counters,
        log,
        now,
        write,
        confirm: confirmState,
        host,
        connected,
        enforce: async (record, decision, transition, event) =>
          (await this.tasks.begin(record, 'force-stop', decision, transition, event)) !==
          'conflict',
      }),
      merge: mergeWork,
      failed: UNKNOWN,
      settleMs: options.stopSettleMs ?? 250,
      track,
      onRunError: (error, uuid) => {
        // A store that cannot write says so once itself (and in readiness and a metric); a line
        // per failed pass would be hundreds a second on a full disk.
        if (error instanceof StoreError && error.code !== 'closed') {
          log.debug({ err: error, uuid }, 'sync pass failed: the store cannot write');
        } else {
          log.error({ err: error, uuid }, 'sync pass failed');
        }
      },
      onCoalesced: (work) => {
        if (work.event) counters.coalesced++;
      },
      onFinished: (work) => {
        if (work.event) counters.eventsHandled++;
      },
    });
    this.reconciler = new Reconciler({
      driver,
      store,
      records,
      callTimeoutMs: confirmDeps.callTimeoutMs,
      policy: this.policy,
      counters,
      log,
      now,
      pass: (uuid, work) => this.queue.push(uuid, work),
      passPending: (uuid) => this.queue.has(uuid),
      taskRunning: (uuid) => this.tasks.has(uuid),
      expireTasks: (records) => this.tasks.expire(records),
      hostName: () => this.hostName,
      connected,
      connectionEpoch: () => this.connectionEpoch,
      notRunning: () =>
        this.state === 'running' ? null : new SyncError('not-running', `engine is ${this.state}`),
    });
  }

  /** This host's name; known once started. */
  get host(): string {
    if (this.hostName === undefined) throw new SyncError('not-running', 'engine not started');
    return this.hostName;
  }

  /** Connected, and a full reconcile has completed since the connection was made. */
  get ready(): boolean {
    return (
      this.state === 'running' && this.connected && this.reconciler.freshFor(this.connectionEpoch)
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
      await this.reconciler.markHost();
      await this.tasks.clearLeftovers([...(await this.records.readAll()).values()]);
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
    this.reconciler.startTimer(this.reconcileIntervalMs);
  }

  /** Resolves once no pass, task or background write is in flight (at that moment). */
  async whenIdle(): Promise<void> {
    while (this.inflight.size > 0 || this.reconciler.running) {
      await Promise.allSettled([...this.inflight, this.reconciler.running]);
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
    this.tasks.stop();
    await this.reconciler.stop();
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    this.state = 'stopped';
  }

  /** A full pass over the listing and this host's records. Passes never overlap: a call during one gets the next. */
  reconcile(options: { readonly reread?: boolean } = {}): Promise<ReconcileReport> {
    // After writes made by others that may not all have been told (an agent's journal replayed
    // after an outage), the records are read afresh rather than trusted from memory.
    if (options.reread === true) this.records.forget();
    return this.reconciler.reconcile();
  }

  /**
   * Starts an action: checks it makes sense for the record, marks the task with a conditional
   * write, and returns once marked. The hypervisor call, the confirmation and the clearing of
   * the task follow in the background; `done` tells how it ended.
   */
  act(uuid: string, action: ActionName): Promise<Task> {
    return this.tasks.act(uuid, action);
  }

  /**
   * A record of this host changed by someone else (the agent's watch of the control plane brings
   * it). When it carries a task in flight that this engine is not running — a user's action
   * recorded by a control-plane replica — the engine performs it and finishes it, as if `act`
   * had started it. Repeated or stale notices are harmless: a task is run at most once, and only
   * while the record still carries it. Tasks recorded while the engine was stopped or
   * disconnected are picked up by the start and by the reconcile after reconnecting.
   */
  recordChanged(record: InstanceRecord): void {
    if (this.state !== 'running') return;
    // Kept in the reconcile's copy of this host's records, or dropped from it when it moved.
    this.records.changedElsewhere(record);
    if (record.host !== this.hostName) return;
    if (record.taskState === null || this.tasks.has(record.uuid)) return;
    this.track(this.tasks.pickUp(record));
  }

  private onDriverEvent(event: DriverEvent): void {
    if (this.state !== 'running') return;
    if (event.kind === 'disconnected') {
      // Nothing can be confirmed until the connection is back, and what happens meanwhile is
      // never told: remember to reconcile.
      this.connected = false;
      this.reconciler.needed = true;
      this.connectionEpoch++;
      this.log.warn({ reason: event.reason }, 'hypervisor disconnected');
      this.track(this.reconciler.markHost());
      return;
    }
    if (event.kind === 'connected') {
      this.connected = true;
      this.track(this.reconciler.markHost());
      if (this.reconciler.needed) {
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
    this.reconciler.touch(event.uuid);
    this.tasks.wake(event.uuid);
    // A guest that powers itself off says SHUTDOWN (guest finished) before STOPPED; a hard
    // reboot never does. So a STOPPED right after a SHUTDOWN needs no settle window.
    const realStop = event.transition === 'stopped' && this.shuttingDown.has(event.uuid);
    if (event.transition === 'shutdown') this.shuttingDown.add(event.uuid);
    else this.shuttingDown.delete(event.uuid);
    if (!this.connected || this.hostName === undefined) return;
    void this.queue.push(event.uuid, {
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
    const asked = this.tasks.takeRebootAsked(event.uuid);
    if (this.tasks.has(event.uuid) || (asked && sign.cause === 'reboot')) return undefined;
    return sign;
  }

  private track(work: Promise<unknown>): void {
    const tracked = work.catch((error: unknown) => {
      this.log.error({ err: error }, 'background work failed');
    });
    this.inflight.add(tracked);
    void tracked.finally(() => this.inflight.delete(tracked));
  }
}
