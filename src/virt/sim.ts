// A simulated hypervisor, in-process, for demos, scenario tests and load. It behaves the way
// libvirt does where the engine can tell the difference: the same lifecycle events with the same
// details, events that arrive after the reply of the call that caused them, multi-step changes
// (guest shutdown, hard reboot, failed migration) that really pass through their intermediate
// states, connections that drop and lose events, listings that can be partial. Every random
// choice comes from a seeded generator so a scenario replays.
import { POWER_STATES } from '../model/index.ts';
import type { PowerState } from '../model/index.ts';
import { IndexedSet, Scheduler, canonicalUuid, createRandom, randomUuid } from './sim-support.ts';
import { SimFabric } from './sim-fabric.ts';
import type { Random } from './sim-support.ts';
import { Emitter } from '../lib/index.ts';
import { DriverError } from './types.ts';
import type {
  DriverEvent,
  DriverEventListener,
  HypervisorDriver,
  LifecycleEvent,
  ObservedInstance,
  RebootOptions,
  StopOptions,
  Transition,
} from './types.ts';

export interface SimTiming {
  /** How long a driver action takes before it changes the world. */
  actionLatencyMs: number;
  /** How long a listing, lookup or hostname call takes. */
  callLatencyMs: number;
  /** Gap between SHUTDOWN/finished and STOPPED/shutdown in a guest shutdown (real QEMU: ~2 s). */
  shutdownGapMs: number;
  /** How long a hard-rebooting instance stays shut off between STOPPED and STARTED. */
  rebootGapMs: number;
  /** Gap between the steps of a migration (and SUSPENDED/migrated and RESUMED/migrated in a failed one). */
  migrationGapMs: number;
  /** A graceful stop's timeout when the caller gives none. */
  stopTimeoutMs: number;
}

const DEFAULT_SIM_TIMING: Readonly<SimTiming> = {
  actionLatencyMs: 1,
  callLatencyMs: 0,
  shutdownGapMs: 5,
  rebootGapMs: 5,
  migrationGapMs: 5,
  stopTimeoutMs: 1000,
};

export interface SimFaults {
  /** Probability that a lifecycle event is lost on its way to one connection. */
  dropEventRate: number;
  /** Delay of each lifecycle event's delivery, drawn uniformly from [min, max]. */
  eventDelayMs: readonly [number, number];
  /** Lets events overtake one another within the delay window; otherwise order is kept. */
  reorder: boolean;
  /** Probability that a listing silently leaves out an instance. */
  listingOmitRate: number;
  /** Probability that getPowerState fails with DriverError('disconnected'). */
  lookupFailRate: number;
  /** Driver actions on these uuids (all, if true) never complete until the fault is cleared. */
  hangActions: boolean | ReadonlySet<string>;
  /** Probability that a driver action fails with DriverError('failed') and changes nothing. */
  actionFailRate: number;
}

function noFaults(): SimFaults {
  return {
    dropEventRate: 0,
    eventDelayMs: [0, 0],
    reorder: false,
    listingOmitRate: 0,
    lookupFailRate: 0,
    hangActions: false,
    actionFailRate: 0,
  };
}

/** `stopped`: STOPPED/crashed; `failed`: STOPPED/failed; `panicked`: CRASHED/panicked, left crashed. */
export type CrashMode = 'stopped' | 'failed' | 'panicked';

export type ShutdownDetail = 'finished' | 'guest' | 'host';

export type WorkloadAction =
  | 'guestShutdown'
  | 'hardReboot'
  | 'softReboot'
  | 'crash'
  | 'panic'
  | 'pause'
  | 'resume'
  | 'outOfBandStart'
  | 'destroy'
  | 'pmSuspend'
  | 'pmWakeup'
  | 'failedMigration'
  /** A live migration to another host of the fabric (none without one). */
  | 'migrate';

/** Relative weights; actions left out (or weighted 0) never happen. */
export type WorkloadMix = Partial<Record<WorkloadAction, number>>;

const DEFAULT_WORKLOAD_MIX: Readonly<WorkloadMix> = {
  guestShutdown: 3,
  outOfBandStart: 3,
  hardReboot: 1,
  softReboot: 1,
  crash: 0.5,
  pause: 1,
  resume: 1,
};

export interface WorkloadOptions {
  /** Out-of-band operations per second, across all instances. */
  readonly ratePerSecond: number;
  readonly mix?: WorkloadMix;
  /** How often the workload wakes up to catch up with its rate; default 10 ms. */
  readonly tickMs?: number;
  /**
   * The workload leaves an instance alone this long after a driver action on it (a user's stop
   * is not undone a moment later by a simulated boot); default 60 s.
   */
  readonly leaveActedOnMs?: number;
}

const DEFAULT_LEAVE_ACTED_ON_MS = 60_000;

export interface SimStats {
  /** Changes made to the world, out of band or by a driver action. */
  operations: number;
  /** Of those, the ones the workload made. */
  workloadOperations: number;
  eventsEmitted: number;
  eventsDelivered: number;
  /** Lost to dropEventRate. */
  eventsDropped: number;
  /** Lost because a connection was down when they happened or before they arrived. */
  eventsLost: number;
}

export interface SimHypervisorOptions {
  readonly hostname?: string;
  /** Instances that exist from the start (running, no events): sim-00001, sim-00002... (on a fabric, HOSTNAME-00001...) */
  readonly instances?: number;
  readonly seed?: number;
  /** Wall clock for `observedAt`; default Date.now. */
  readonly now?: () => number;
  readonly timing?: Partial<SimTiming>;
  readonly faults?: Partial<SimFaults>;
  /** Hosts this one can migrate to (and receive from); it joins on construction. */
  readonly fabric?: SimFabric<SimHypervisor>;
}

/** How a live migration (`SimHypervisor.migrate`) goes. */
export interface MigrateOptions {
  /**
   * `before-switchover`: the destination gives up while copying (STOPPED/failed there; the source
   * never paused). `at-switchover`: the source paused for the switch-over, the destination
   * failed to finish (STOPPED/failed), and the source resumes (RESUMED/migrated). Default: none.
   */
  readonly fail?: 'none' | 'before-switchover' | 'at-switchover';
  /**
   * What stays on the source: `keep` the persistent definition, shut off with reason `migrated`
   * (`virsh migrate --live` without `--undefinesource`); `remove` it (a transient domain, or
   * `--undefinesource`; libvirt emits no UNDEFINED for it). Default: keep.
   */
  readonly source?: 'keep' | 'remove';
  /** Gap between steps; default timing.migrationGapMs. */
  readonly gapMs?: number;
}

interface SimRecord {
  readonly uuid: string;
  readonly name: string;
  powerState: PowerState;
  reason: string;
  /** Bumped by every change, so that a later step of a sequence sees it was overtaken. */
  epoch: number;
  /** A multi-step change is under way. */
  busy: boolean;
  ignoresShutdown: boolean;
  /** Scheduler time of the last driver action on it; the workload leaves it alone for a while. */
  actedAt: number;
}

interface SubscriptionHandlers {
  deliver(event: DriverEvent): void;
  lost(reason: string): void;
  restored(): void;
}

interface Subscription {
  readonly handlers: SubscriptionHandlers;
  open: boolean;
  up: boolean;
  /** Bumped on every disconnect: deliveries from before it are lost. */
  epoch: number;
  /** Latest delivery time handed out, so that order holds unless reordering is asked for. */
  lastDue: number;
}

type DriverAction = 'start' | 'stop' | 'forceStop' | 'reboot' | 'pause' | 'resume';

interface ActionOptions {
  readonly timeoutMs?: number;
  readonly hard?: boolean;
}

/** What SimDriver needs from its hypervisor beyond the public surface. */
interface SimPort {
  readonly timing: Readonly<SimTiming>;
  subscribe(handlers: SubscriptionHandlers): { readonly up: boolean; close(): void };
  after(delayMs: number, run: () => void): void;
  chance(p: number): boolean;
  isHung(uuid: string): boolean;
  holdWhileHung(uuid: string, live: () => boolean, release: () => void): void;
  act(action: DriverAction, uuid: string, options: ActionOptions): Promise<void>;
  listing(): ObservedInstance[];
  lookup(uuid: string): ObservedInstance | null;
}

let portOf: (sim: SimHypervisor) => SimPort;

const ACTIVE: readonly PowerState[] = ['running', 'paused', 'shutdown', 'crashed', 'suspended'];

const WORKLOAD_CANDIDATES: Record<WorkloadAction, readonly PowerState[]> = {
  guestShutdown: ['running'],
  hardReboot: ['running', 'paused', 'crashed'],
  softReboot: ['running'],
  crash: ['running'],
  panic: ['running'],
  pause: ['running'],
  resume: ['paused'],
  outOfBandStart: ['shutoff'],
  destroy: ['running', 'paused', 'crashed', 'suspended'],
  pmSuspend: ['running'],
  pmWakeup: ['suspended'],
  failedMigration: ['running'],
  migrate: ['running'],
};

const HUNG_CHECK_MS = 5;

export class SimHypervisor {
  readonly hostname: string;
  readonly fabric: SimFabric<SimHypervisor> | null;
  /** Adjustable at any time; applies to what happens next. */
  faults: SimFaults;
  readonly timing: SimTiming;
  /** Whether a hard reboot by a driver emits RESUMED/unpaused between STOPPED and STARTED (Nova's path does). */
  hardRebootEmitsResumed = false;

  readonly #records = new Map<string, SimRecord>();
  readonly #names = new Set<string>();
  readonly #byState = new Map<PowerState, IndexedSet<SimRecord>>();
  readonly #waiters = new Map<string, Set<() => void>>();
  readonly #subscriptions = new Set<Subscription>();
  readonly #scheduler = new Scheduler();
  readonly #uuidRandom: Random;
  readonly #faultRandom: Random;
  readonly #workloadRandom: Random;
  readonly #now: () => number;
  readonly #stats: SimStats = {
    operations: 0,
    workloadOperations: 0,
    eventsEmitted: 0,
    eventsDelivered: 0,
    eventsDropped: 0,
    eventsLost: 0,
  };
  readonly #port: SimPort;
  /** Migrations from this host under way. */
  readonly #migrating = new Set<Promise<boolean>>();
  #up = true;
  #hung: { uuid: string; live: () => boolean; release: () => void }[] = [];
  #hungTimer: NodeJS.Timeout | null = null;
  #workloadTimer: NodeJS.Timeout | null = null;
  #leaveActedOnMs = DEFAULT_LEAVE_ACTED_ON_MS;

  static {
    portOf = (sim) => sim.#port;
  }

  constructor(options: SimHypervisorOptions = {}) {
    const seed = options.seed ?? 1;
    this.hostname = options.hostname ?? 'sim-host';
    this.fabric = options.fabric ?? null;
    this.timing = { ...DEFAULT_SIM_TIMING, ...options.timing };
    this.faults = { ...noFaults(), ...options.faults };
    this.#now = options.now ?? Date.now;
    this.#uuidRandom = createRandom(seed, 0);
    this.#faultRandom = createRandom(seed, 1);
    this.#workloadRandom = createRandom(seed, 2);
    for (const state of POWER_STATES) {
      this.#byState.set(state, new IndexedSet());
    }
    const count = options.instances ?? 0;
    // Names must stay unique where instances can move: on a fabric they carry the host's name.
    const prefix = options.fabric ? this.hostname : 'sim';
    for (let i = 1; i <= count; i++) {
      this.#insert(
        this.#freshUuid(),
        `${prefix}-${String(i).padStart(5, '0')}`,
        'running',
        'booted',
      );
    }
    this.#port = {
      timing: this.timing,
      subscribe: (handlers) => this.#subscribe(handlers),
      after: (delayMs, run) => {
        this.#scheduler.after(delayMs, run);
      },
      chance: (p) => this.#faultRandom.chance(p),
      isHung: (uuid) => this.#isHung(uuid),
      holdWhileHung: (uuid, live, release) => this.#holdWhileHung(uuid, live, release),
      act: (action, uuid, opts) => this.#act(action, uuid, opts),
      listing: () => this.#listing(),
      lookup: (uuid) => this.#lookup(uuid),
    };
    this.fabric?.join(this);
  }

  // ---- introspection -----------------------------------------------------------------------

  get size(): number {
    return this.#records.size;
  }

  get stats(): Readonly<SimStats> {
    return this.#stats;
  }

  /** Whether connections are up (see disconnect/reconnect). */
  get connectionUp(): boolean {
    return this.#up;
  }

  /** The truth about one instance, faults ignored. */
  get(uuid: string): ObservedInstance | undefined {
    const record = this.#records.get(uuid.toLowerCase());
    return record ? observe(record) : undefined;
  }

  /** The truth about every instance, faults ignored. */
  list(): ObservedInstance[] {
    return Array.from(this.#records.values(), observe);
  }

  /** Resolves once no multi-step change, migration, delayed action or event delivery is pending. */
  async settled(): Promise<void> {
    for (;;) {
      await this.#scheduler.whenIdle();
      // A migration's next step is scheduled only once the one before has run.
      if (this.#migrating.size === 0) return;
      await Promise.all(this.#migrating);
    }
  }

  // ---- out-of-band changes: what a guest, or an admin with virsh, does --------------------
  // Each throws DriverError('not-found' | 'invalid-state') at once when it cannot happen. The
  // multi-step ones return a promise that resolves (never rejects) when the last step is done
  // or another change overtook it.

  define(name: string, options: { uuid?: string; powerState?: PowerState } = {}): string {
    const uuid = options.uuid === undefined ? this.#freshUuid() : canonicalUuid(options.uuid);
    if (uuid === null) throw new DriverError('failed', `not a uuid: ${options.uuid}`);
    if (this.#records.has(uuid)) throw invalid(`${uuid} is already defined`);
    if (this.#names.has(name)) throw invalid(`the name ${name} is already taken`);
    this.#stats.operations++;
    const record = this.#insert(uuid, name, 'shutoff', 'unknown');
    this.#emit(record, 'defined', 'added', null);
    this.#bringUp(record, options.powerState ?? 'shutoff');
    return uuid;
  }

  /** UNDEFINED/removed. Shut off first: libvirt would merely make a running domain transient. */
  undefine(uuid: string): void {
    const record = this.#expect(uuid, ['shutoff'], 'undefine');
    this.#stats.operations++;
    this.#emit(record, 'undefined', 'removed', null);
    this.#remove(record);
  }

  /** SHUTDOWN/<detail> (state shutdown), then after a gap STOPPED/shutdown. */
  guestShutdown(
    uuid: string,
    options: { detail?: ShutdownDetail; gapMs?: number } = {},
  ): Promise<void> {
    const record = this.#expect(uuid, ['running'], 'guest shutdown');
    this.#stats.operations++;
    return this.#guestShutdown(record, options.detail ?? 'finished', options.gapMs).then(noop);
  }

  crash(uuid: string, options: { mode?: CrashMode } = {}): void {
    const record = this.#expect(uuid, ['running', 'paused', 'shutdown', 'suspended'], 'crash');
    this.#stats.operations++;
    this.#crash(record, options.mode ?? 'stopped');
  }

  /** STOPPED/destroyed, as `virsh destroy`. */
  destroy(uuid: string): void {
    const record = this.#expect(uuid, ACTIVE, 'destroy');
    this.#stats.operations++;
    this.#destroy(record);
  }

  /** STARTED/booted, as `virsh start`. */
  start(uuid: string): void {
    const record = this.#expect(uuid, ['shutoff'], 'start');
    this.#stats.operations++;
    this.#start(record);
  }

  /** SUSPENDED/paused. */
  pause(uuid: string): void {
    const record = this.#expect(uuid, ['running'], 'pause');
    this.#stats.operations++;
    this.#pause(record);
  }

  /** RESUMED/unpaused. */
  resume(uuid: string): void {
    const record = this.#expect(uuid, ['paused'], 'resume');
    this.#stats.operations++;
    this.#resume(record);
  }

  /** STOPPED/destroyed, [RESUMED/unpaused,] STARTED/booted, shut off in between for a gap. */
  hardReboot(uuid: string, options: { withResumed?: boolean; gapMs?: number } = {}): Promise<void> {
    const record = this.#expect(uuid, ACTIVE, 'hard reboot');
    this.#stats.operations++;
    return this.#hardReboot(record, options.withResumed ?? false, options.gapMs).then(noop);
  }

  /** Only a `rebooted` event: the guest restarts inside the same QEMU process and stays running. */
  softReboot(uuid: string): void {
    const record = this.#expect(uuid, ['running'], 'soft reboot');
    this.#stats.operations++;
    this.#emit(record, 'rebooted', 'reboot', null);
  }

  /** STOPPED/migrated, and the instance is gone from this host. */
  migrateAway(uuid: string): void {
    const record = this.#expect(uuid, ['running', 'paused'], 'migrate');
    this.#stats.operations++;
    this.#emit(record, 'stopped', 'migrated', 'shutoff');
    this.#remove(record);
  }

  /** An instance arriving by migration: STARTED/migrated, RESUMED/migrated, DEFINED/added. */
  migrateIn(name: string, options: { uuid?: string } = {}): string {
    const uuid = options.uuid === undefined ? this.#freshUuid() : canonicalUuid(options.uuid);
    if (uuid === null) throw new DriverError('failed', `not a uuid: ${options.uuid}`);
    if (this.#records.has(uuid)) throw invalid(`${uuid} is already on this host`);
    if (this.#names.has(name)) throw invalid(`the name ${name} is already taken`);
    this.#stats.operations++;
    const record = this.#insert(uuid, name, 'running', 'migrated');
    this.#emit(record, 'started', 'migrated', 'running');
    this.#emit(record, 'resumed', 'migrated', 'running');
    this.#emit(record, 'defined', 'added', null);
    return uuid;
  }

  /**
   * A live migration to `destination` (a host, or a host's name in this one's fabric), with
   * libvirt's events on both hosts, each step `gapMs` after the one before (qemu_migration.c):
   * destination STARTED/migrated (paused, reason migration); source SUSPENDED/migrated (the
   * switch-over); destination RESUMED/migrated (running, reason migrated); source
   * STOPPED/migrated (shut off, reason migrated; kept or removed as `options.source` says).
   * Failures as `options.fail` says. Resolves true once it runs on the destination, false when
   * it failed or another change to it on the source overtook the migration.
   */
  migrate(
    uuid: string,
    destination: SimHypervisor | string,
    options: MigrateOptions = {},
  ): Promise<boolean> {
    const target = typeof destination === 'string' ? this.fabric?.host(destination) : destination;
    if (!target) throw new DriverError('not-found', `no host ${String(destination)} to migrate to`);
    if (target === this) throw invalid(`cannot migrate ${uuid} to the host it is on`);
    const record = this.#expect(uuid, ['running'], 'migrate');
    if (target.#records.has(record.uuid)) {
      throw invalid(`${record.uuid} is already on ${target.hostname}`);
    }
    if (target.#names.has(record.name)) {
      throw invalid(`the name ${record.name} is already taken on ${target.hostname}`);
    }
    this.#stats.operations++;
    return this.#migrate(record, target, options);
  }

  /** SUSPENDED/migrated, then after a gap RESUMED/migrated: the migration failed, it stays here, running. */
  failedMigration(uuid: string, options: { gapMs?: number } = {}): Promise<void> {
    const record = this.#expect(uuid, ['running'], 'migrate');
    this.#stats.operations++;
    return this.#failedMigration(record, options.gapMs).then(noop);
  }

  /** PMSUSPENDED/memory: the guest suspended itself to RAM. */
  pmSuspend(uuid: string): void {
    const record = this.#expect(uuid, ['running'], 'pm-suspend');
    this.#stats.operations++;
    this.#pmSuspend(record);
  }

  /** STARTED/wakeup. */
  pmWakeup(uuid: string): void {
    const record = this.#expect(uuid, ['suspended'], 'pm-wakeup');
    this.#stats.operations++;
    this.#pmWakeup(record);
  }

  /** A guest that ignores shutdown requests: a driver's graceful stop ends forced after its timeout. */
  setIgnoresShutdown(uuid: string, ignores = true): void {
    this.#require(uuid).ignoresShutdown = ignores;
  }

  setFaults(faults: Partial<SimFaults>): void {
    this.faults = { ...this.faults, ...faults };
  }

  clearFaults(): void {
    this.faults = noFaults();
  }

  // ---- connection faults -------------------------------------------------------------------

  /** Every connection drops: `disconnected` events, pending calls reject, events are lost until reconnect. */
  disconnect(reason = 'connection reset by simulation'): void {
    if (!this.#up) return;
    this.#up = false;
    for (const subscription of this.#subscriptions) {
      subscription.up = false;
      subscription.epoch++;
      subscription.lastDue = this.#scheduler.now();
      subscription.handlers.lost(reason);
      this.#enqueue(subscription, { kind: 'disconnected', reason, observedAt: this.#now() });
    }
  }

  /** Connections come back: `connected` events. What happened meanwhile is not replayed. */
  reconnect(): void {
    if (this.#up) return;
    this.#up = true;
    for (const subscription of this.#subscriptions) {
      subscription.up = true;
      subscription.handlers.restored();
      this.#enqueue(subscription, { kind: 'connected', observedAt: this.#now() });
    }
  }

  // ---- workload ----------------------------------------------------------------------------

  /** Random out-of-band operations at a steady rate, each on an instance where it makes sense. */
  startWorkload(options: WorkloadOptions): void {
    this.stopWorkload();
    const rate = options.ratePerSecond;
    if (!(rate > 0)) throw new DriverError('failed', `ratePerSecond must be positive, got ${rate}`);
    const mix = Object.entries(options.mix ?? DEFAULT_WORKLOAD_MIX).filter(
      (entry): entry is [WorkloadAction, number] =>
        entry[0] in WORKLOAD_CANDIDATES && typeof entry[1] === 'number' && entry[1] > 0,
    );
    if (mix.length === 0)
      throw new DriverError('failed', 'the workload mix has no positive weight');
    this.#leaveActedOnMs = options.leaveActedOnMs ?? DEFAULT_LEAVE_ACTED_ON_MS;
    const startedAt = this.#scheduler.now();
    // After a stall, catch up by at most a second's worth rather than in one huge burst.
    const maxBurst = Math.max(1, Math.ceil(rate));
    const tickMs = options.tickMs ?? 10;
    // Each simulator runs on a phase of its own (seeded), both in its operations and in its
    // ticks: many hosts started together would otherwise all act in the same instant, a burst
    // no real fleet makes (at 0.2 operations/s per host, 1,000 hosts every 5 s at once).
    const phase = this.#workloadRandom.next();
    let done = 0;
    const tick = (): void => {
      const elapsedSeconds = (this.#scheduler.now() - startedAt) / 1000;
      let due = Math.floor(elapsedSeconds * rate + phase) - done;
      if (due > maxBurst) {
        done += due - maxBurst;
        due = maxBurst;
      }
      for (let i = 0; i < due; i++) {
        done++;
        this.#workloadStep(mix);
      }
    };
    this.#workloadTimer = setTimeout(() => {
      this.#workloadTimer = setInterval(tick, tickMs);
    }, phase * tickMs);
  }

  stopWorkload(): void {
    // clearTimeout clears the first wait and the ticks alike.
    if (this.#workloadTimer) clearTimeout(this.#workloadTimer);
    this.#workloadTimer = null;
  }

  get workloadRunning(): boolean {
    return this.#workloadTimer !== null;
  }

  /** Stops the workload and every timer; connections are dropped and pending calls reject. */
  close(): void {
    this.fabric?.leave(this);
    this.stopWorkload();
    for (const subscription of this.#subscriptions) {
      subscription.open = false;
      subscription.handlers.lost('hypervisor closed');
    }
    this.#subscriptions.clear();
    this.#scheduler.clear();
    this.#hung = [];
    if (this.#hungTimer) clearInterval(this.#hungTimer);
    this.#hungTimer = null;
    for (const waiters of this.#waiters.values()) for (const wake of waiters) wake();
    this.#waiters.clear();
  }

  // ---- the world ---------------------------------------------------------------------------

  #freshUuid(): string {
    for (;;) {
      const uuid = randomUuid(this.#uuidRandom);
      if (!this.#records.has(uuid)) return uuid;
    }
  }

  #insert(uuid: string, name: string, powerState: PowerState, reason: string): SimRecord {
    const record: SimRecord = {
      uuid,
      name,
      powerState,
      reason,
      epoch: 0,
      busy: false,
      ignoresShutdown: false,
      actedAt: Number.NEGATIVE_INFINITY,
    };
    this.#records.set(uuid, record);
    this.#names.add(name);
    this.#byState.get(powerState)!.add(record);
    return record;
  }

  #remove(record: SimRecord): void {
    this.#records.delete(record.uuid);
    this.#names.delete(record.name);
    this.#byState.get(record.powerState)!.delete(record);
    record.epoch++;
    record.busy = false;
    this.#notify(record.uuid);
  }

  #require(uuid: string): SimRecord {
    const record = this.#records.get(uuid.toLowerCase());
    if (!record) throw new DriverError('not-found', `no instance ${uuid} on ${this.hostname}`);
    return record;
  }

  #expect(uuid: string, states: readonly PowerState[], what: string): SimRecord {
    const record = this.#require(uuid);
    if (!states.includes(record.powerState)) {
      throw invalid(`cannot ${what} ${uuid}: it is ${record.powerState}`);
    }
    return record;
  }

  #setState(record: SimRecord, powerState: PowerState, reason: string): void {
    if (record.powerState !== powerState) {
      this.#byState.get(record.powerState)!.delete(record);
      this.#byState.get(powerState)!.add(record);
    }
    record.powerState = powerState;
    record.reason = reason;
    record.epoch++;
    record.busy = false;
    this.#notify(record.uuid);
  }

  #change(
    record: SimRecord,
    powerState: PowerState,
    reason: string,
    transition: Transition,
    detail: string,
  ): void {
    this.#setState(record, powerState, reason);
    this.#emit(record, transition, detail, powerState);
  }

  /** Runs `step` after a delay unless something else changed the instance first; true if it ran. */
  #later(record: SimRecord, delayMs: number, step: () => void): Promise<boolean> {
    const epoch = record.epoch;
    record.busy = true;
    return new Promise((resolve) => {
      this.#scheduler.after(delayMs, () => {
        if (this.#records.get(record.uuid) !== record || record.epoch !== epoch) {
          resolve(false);
          return;
        }
        step();
        resolve(true);
      });
    });
  }

  /** Resolves true once `done` holds for the instance (or it is gone), false after the timeout. */
  #waitUntil(uuid: string, done: () => boolean, timeoutMs: number): Promise<boolean> {
    if (done()) return Promise.resolve(true);
    return new Promise((resolve) => {
      let waiters = this.#waiters.get(uuid);
      if (!waiters) this.#waiters.set(uuid, (waiters = new Set()));
      const set = waiters;
      let cancelTimeout = noop;
      const finish = (result: boolean): void => {
        cancelTimeout();
        set.delete(check);
        if (set.size === 0 && this.#waiters.get(uuid) === set) this.#waiters.delete(uuid);
        resolve(result);
      };
      const check = (): void => {
        if (done() || !this.#records.has(uuid)) finish(true);
      };
      set.add(check);
      // Cancelled when the wait ends early, so that a finished stop does not hold settled().
      const timeout = this.#scheduler.after(timeoutMs, () => {
        if (set.has(check)) finish(false);
      });
      cancelTimeout = () => timeout.cancel();
    });
  }

  #notify(uuid: string): void {
    const waiters = this.#waiters.get(uuid);
    if (waiters) for (const check of [...waiters]) check();
  }

  #start(record: SimRecord): void {
    this.#change(record, 'running', 'booted', 'started', 'booted');
  }

  #destroy(record: SimRecord): void {
    this.#change(record, 'shutoff', 'destroyed', 'stopped', 'destroyed');
  }

  #pause(record: SimRecord): void {
    this.#change(record, 'paused', 'user', 'suspended', 'paused');
  }

  #resume(record: SimRecord): void {
    this.#change(record, 'running', 'unpaused', 'resumed', 'unpaused');
  }

  #pmSuspend(record: SimRecord): void {
    this.#change(record, 'suspended', 'unknown', 'pmsuspended', 'memory');
  }

  #pmWakeup(record: SimRecord): void {
    this.#change(record, 'running', 'wakeup', 'started', 'wakeup');
  }

  #crash(record: SimRecord, mode: CrashMode): void {
    if (mode === 'panicked') this.#change(record, 'crashed', 'panicked', 'crashed', 'panicked');
    else if (mode === 'failed') this.#change(record, 'shutoff', 'failed', 'stopped', 'failed');
    else this.#change(record, 'shutoff', 'crashed', 'stopped', 'crashed');
  }

  #guestShutdown(record: SimRecord, detail: string, gapMs?: number): Promise<boolean> {
    this.#change(record, 'shutdown', 'unknown', 'shutdown', detail);
    return this.#later(record, gapMs ?? this.timing.shutdownGapMs, () =>
      this.#change(record, 'shutoff', 'shutdown', 'stopped', 'shutdown'),
    );
  }

  #hardReboot(record: SimRecord, withResumed: boolean, gapMs?: number): Promise<boolean> {
    this.#destroy(record);
    return this.#later(record, gapMs ?? this.timing.rebootGapMs, () => {
      if (withResumed) this.#resume(record);
      this.#start(record);
    });
  }

  #migrate(record: SimRecord, target: SimHypervisor, options: MigrateOptions): Promise<boolean> {
    const run = this.#migrateSteps(record, target, options).finally(() =>
      this.#migrating.delete(run),
    );
    this.#migrating.add(run);
    return run;
  }

  async #migrateSteps(
    record: SimRecord,
    target: SimHypervisor,
    options: MigrateOptions,
  ): Promise<boolean> {
    const gap = options.gapMs ?? this.timing.migrationGapMs;
    const fail = options.fail ?? 'none';
    target.#stats.operations++;
    const incoming = target.#insert(record.uuid, record.name, 'paused', 'migration');
    incoming.busy = true;
    // libvirt's driver implies `running` from any STARTED; the state says paused until finished.
    target.#emit(incoming, 'started', 'migrated', 'running');
    const failIncoming = (): false => {
      if (target.#records.get(incoming.uuid) === incoming) {
        target.#change(incoming, 'shutoff', 'failed', 'stopped', 'failed');
        target.#remove(incoming);
      }
      return false;
    };

    const switchedOver = await this.#later(record, gap, () => {
      if (fail !== 'before-switchover') {
        this.#change(record, 'paused', 'migration', 'suspended', 'migrated');
        record.busy = true; // nothing else happens to it until the migration ends
      }
    });
    if (!switchedOver || fail === 'before-switchover') {
      record.busy = false;
      return failIncoming();
    }
    const finished = await this.#later(record, gap, () => {
      if (fail === 'at-switchover' || target.#records.get(incoming.uuid) !== incoming) {
        failIncoming();
        return;
      }
      target.#change(incoming, 'running', 'migrated', 'resumed', 'migrated');
    });
    if (!finished) return failIncoming();
    if (target.#records.get(incoming.uuid) !== incoming || incoming.powerState !== 'running') {
      await this.#later(record, gap, () =>
        this.#change(record, 'running', 'migration-canceled', 'resumed', 'migrated'),
      );
      return false;
    }
    await this.#later(record, gap, () => {
      this.#change(record, 'shutoff', 'migrated', 'stopped', 'migrated');
      if (options.source === 'remove') this.#remove(record);
    });
    return true;
  }

  #failedMigration(record: SimRecord, gapMs?: number): Promise<boolean> {
    this.#change(record, 'paused', 'migration', 'suspended', 'migrated');
    return this.#later(record, gapMs ?? this.timing.migrationGapMs, () =>
      this.#change(record, 'running', 'migration-canceled', 'resumed', 'migrated'),
    );
  }

  /** The events libvirt would emit taking a freshly defined domain to `target`. */
  #bringUp(record: SimRecord, target: PowerState): void {
    if (target === 'shutoff') return;
    if (target === 'nostate') {
      this.#setState(record, 'nostate', 'unknown');
      return;
    }
    this.#start(record);
    if (target === 'paused') this.#pause(record);
    else if (target === 'crashed') this.#crash(record, 'panicked');
    else if (target === 'suspended') this.#pmSuspend(record);
    else if (target === 'shutdown')
      this.#change(record, 'shutdown', 'unknown', 'shutdown', 'finished');
  }

  // ---- events ------------------------------------------------------------------------------

  #emit(
    record: SimRecord,
    transition: Transition,
    detail: string,
    powerState: PowerState | null,
  ): void {
    const event: LifecycleEvent = {
      kind: 'lifecycle',
      uuid: record.uuid,
      name: record.name,
      transition,
      detail,
      powerState,
      observedAt: this.#now(),
    };
    this.#stats.eventsEmitted++;
    for (const subscription of this.#subscriptions) {
      if (!subscription.up) {
        this.#stats.eventsLost++;
      } else if (this.#faultRandom.chance(this.faults.dropEventRate)) {
        this.#stats.eventsDropped++;
      } else {
        this.#enqueue(subscription, event);
      }
    }
  }

  #enqueue(subscription: Subscription, event: DriverEvent): void {
    const lifecycle = event.kind === 'lifecycle';
    const [min, max] = lifecycle ? this.faults.eventDelayMs : [0, 0];
    let due = this.#scheduler.now() + Math.max(0, this.#faultRandom.between(min, max));
    if (!(lifecycle && this.faults.reorder)) due = Math.max(due, subscription.lastDue);
    subscription.lastDue = Math.max(subscription.lastDue, due);
    const epoch = subscription.epoch;
    this.#scheduler.at(due, () => {
      if (!subscription.open) return;
      if (lifecycle && (!subscription.up || subscription.epoch !== epoch)) {
        this.#stats.eventsLost++;
        return;
      }
      if (lifecycle) this.#stats.eventsDelivered++;
      subscription.handlers.deliver(event);
    });
  }

  #subscribe(handlers: SubscriptionHandlers): { readonly up: boolean; close(): void } {
    const subscription: Subscription = {
      handlers,
      open: true,
      up: this.#up,
      epoch: 0,
      lastDue: this.#scheduler.now(),
    };
    this.#subscriptions.add(subscription);
    if (this.#up) this.#enqueue(subscription, { kind: 'connected', observedAt: this.#now() });
    return {
      get up() {
        return subscription.up;
      },
      close: () => {
        subscription.open = false;
        this.#subscriptions.delete(subscription);
      },
    };
  }

  // ---- what drivers see --------------------------------------------------------------------

  #listing(): ObservedInstance[] {
    const rate = this.faults.listingOmitRate;
    const result: ObservedInstance[] = [];
    for (const record of this.#records.values()) {
      if (!this.#faultRandom.chance(rate)) result.push(observe(record));
    }
    return result;
  }

  #lookup(uuid: string): ObservedInstance | null {
    if (this.#faultRandom.chance(this.faults.lookupFailRate)) {
      throw new DriverError('disconnected', `lookup of ${uuid} failed (simulated)`);
    }
    const record = this.#records.get(uuid.toLowerCase());
    return record ? observe(record) : null;
  }

  #isHung(uuid: string): boolean {
    const hang = this.faults.hangActions;
    return hang === true || (typeof hang === 'object' && hang.has(uuid));
  }

  // Clearing the fault is a plain assignment or Set.delete, which nothing announces: hung actions
  // are re-examined on a short timer that only runs while some are held.
  #holdWhileHung(uuid: string, live: () => boolean, release: () => void): void {
    this.#hung.push({ uuid, live, release });
    this.#hungTimer ??= setInterval(() => {
      const held = this.#hung;
      this.#hung = [];
      for (const entry of held) {
        if (!entry.live()) continue;
        if (this.#isHung(entry.uuid)) this.#hung.push(entry);
        else entry.release();
      }
      if (this.#hung.length === 0 && this.#hungTimer) {
        clearInterval(this.#hungTimer);
        this.#hungTimer = null;
      }
    }, HUNG_CHECK_MS);
  }

  async #act(action: DriverAction, uuid: string, options: ActionOptions): Promise<void> {
    const record = this.#require(uuid);
    record.actedAt = this.#scheduler.now();
    switch (action) {
      case 'start':
        this.#expect(uuid, ['shutoff'], 'start');
        this.#stats.operations++;
        this.#start(record);
        return;
      case 'forceStop':
        this.#expect(uuid, ACTIVE, 'force-stop');
        this.#stats.operations++;
        this.#destroy(record);
        return;
      case 'pause':
        // libvirt treats pausing a paused domain as done, not as an error.
        if (record.powerState === 'paused') return;
        this.#expect(uuid, ['running'], 'pause');
        this.#stats.operations++;
        this.#pause(record);
        return;
      case 'resume':
        if (record.powerState === 'running') return;
        this.#expect(uuid, ['paused'], 'resume');
        this.#stats.operations++;
        this.#resume(record);
        return;
      case 'reboot':
        if (!options.hard) {
          this.#expect(uuid, ['running'], 'reboot');
          this.#stats.operations++;
          this.#emit(record, 'rebooted', 'reboot', null);
          return;
        }
        this.#expect(uuid, ACTIVE, 'hard-reboot');
        this.#stats.operations++;
        if (!(await this.#hardReboot(record, this.hardRebootEmitsResumed))) {
          throw new DriverError('failed', `hard reboot of ${uuid} was overtaken by another change`);
        }
        return;
      case 'stop':
        this.#expect(uuid, ACTIVE, 'stop');
        this.#stats.operations++;
        await this.#gracefulStop(record, options.timeoutMs ?? this.timing.stopTimeoutMs);
        return;
    }
  }

  async #gracefulStop(record: SimRecord, timeoutMs: number): Promise<void> {
    // A crashed guest cannot answer; a paused or pm-suspended one cannot until it runs again,
    // so for those the request just waits out its timeout, as with a real guest.
    if (record.powerState === 'crashed') {
      this.#destroy(record);
      return;
    }
    if (record.powerState === 'running' && !record.ignoresShutdown) {
      void this.#guestShutdown(record, 'finished');
    }
    const off = await this.#waitUntil(
      record.uuid,
      () => record.powerState === 'shutoff',
      timeoutMs,
    );
    if (this.#records.get(record.uuid) !== record) {
      throw new DriverError('not-found', `${record.uuid} left ${this.hostname} while stopping`);
    }
    if (!off && record.powerState !== 'shutoff') this.#destroy(record);
  }

  #workloadStep(mix: readonly (readonly [WorkloadAction, number])[]): void {
    const random = this.#workloadRandom;
    const total = mix.reduce((sum, [, weight]) => sum + weight, 0);
    // An action with no candidate right now (no paused instance to resume) gives way to another.
    for (let attempt = 0; attempt < mix.length * 2; attempt++) {
      let pick = random.next() * total;
      let action = mix[mix.length - 1]![0];
      for (const [name, weight] of mix) {
        pick -= weight;
        if (pick < 0) {
          action = name;
          break;
        }
      }
      const record = this.#pickIdle(WORKLOAD_CANDIDATES[action]);
      if (!record) continue;
      this.#stats.operations++;
      this.#stats.workloadOperations++;
      this.#applyWorkload(action, record);
      return;
    }
  }

  #pickIdle(states: readonly PowerState[]): SimRecord | undefined {
    const buckets = states.map((state) => this.#byState.get(state)!);
    const total = buckets.reduce((sum, bucket) => sum + bucket.size, 0);
    if (total === 0) return undefined;
    for (let attempt = 0; attempt < 4; attempt++) {
      let i = this.#workloadRandom.below(total);
      for (const bucket of buckets) {
        if (i < bucket.size) {
          const record = bucket.at(i);
          if (record && !record.busy && !this.#recentlyActedOn(record)) return record;
          break;
        }
        i -= bucket.size;
      }
    }
    return undefined;
  }

  #recentlyActedOn(record: SimRecord): boolean {
    return this.#scheduler.now() - record.actedAt < this.#leaveActedOnMs;
  }

  #applyWorkload(action: WorkloadAction, record: SimRecord): void {
    switch (action) {
      case 'guestShutdown':
        void this.#guestShutdown(record, 'finished');
        return;
      case 'hardReboot':
        void this.#hardReboot(record, false);
        return;
      case 'softReboot':
        this.#emit(record, 'rebooted', 'reboot', null);
        return;
      case 'crash':
        this.#crash(record, 'stopped');
        return;
      case 'panic':
        this.#crash(record, 'panicked');
        return;
      case 'pause':
        this.#pause(record);
        return;
      case 'resume':
        this.#resume(record);
        return;
      case 'outOfBandStart':
        this.#start(record);
        return;
      case 'destroy':
        this.#destroy(record);
        return;
      case 'pmSuspend':
        this.#pmSuspend(record);
        return;
      case 'pmWakeup':
        this.#pmWakeup(record);
        return;
      case 'failedMigration':
        void this.#failedMigration(record);
        return;
      case 'migrate': {
        const targets = (this.fabric?.hosts ?? []).filter(
          (host) =>
            host !== this && !host.#records.has(record.uuid) && !host.#names.has(record.name),
        );
        const target = targets[this.#workloadRandom.below(targets.length)];
        if (target) void this.#migrate(record, target, {});
        return;
      }
    }
  }
}

interface CallContext<T> {
  live(): boolean;
  resolve(value: T): void;
  reject(error: unknown): void;
}

/**
 * A connection to a SimHypervisor, as a libvirt connection is to libvirtd. Several may share one
 * hypervisor; each sees every event (subject to the hypervisor's faults) and each loses its
 * pending calls when the connection drops.
 */
export class SimDriver implements HypervisorDriver {
  readonly kind = 'sim';
  readonly hypervisor: SimHypervisor;

  readonly #port: SimPort;
  readonly #listeners = new Emitter<[DriverEvent]>();
  readonly #pending = new Set<(error: DriverError) => void>();
  #subscription: { readonly up: boolean; close(): void } | null = null;
  #connected = false;
  #closed = false;
  #connectWaiters: { resolve: () => void; reject: (error: DriverError) => void }[] = [];

  constructor(hypervisor: SimHypervisor) {
    this.hypervisor = hypervisor;
    this.#port = portOf(hypervisor);
  }

  /** Exceptions thrown by listeners; they are contained, never passed on. */
  get listenerErrors(): number {
    return this.#listeners.listenerErrors;
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Resolves once connected; while the hypervisor's connections are down, waits for reconnect. */
  connect(): Promise<void> {
    if (this.#closed) return Promise.reject(new DriverError('disconnected', 'driver is closed'));
    if (this.#connected) return Promise.resolve();
    if (!this.#subscription) {
      this.#subscription = this.#port.subscribe({
        deliver: (event) => this.#deliver(event),
        lost: (reason) => this.#lost(reason),
        restored: () => this.#restored(),
      });
      if (this.#subscription.up) {
        this.#connected = true;
        return Promise.resolve();
      }
    }
    return new Promise((resolve, reject) => this.#connectWaiters.push({ resolve, reject }));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#connected = false;
    this.#subscription?.close();
    this.#subscription = null;
    const error = new DriverError('disconnected', 'driver closed');
    this.#rejectPending(error);
    for (const waiter of this.#connectWaiters.splice(0)) waiter.reject(error);
  }

  registerEventListener(listener: DriverEventListener): () => void {
    return this.#listeners.on(listener);
  }

  hostname(): Promise<string> {
    return this.#call((ctx) =>
      this.#port.after(this.#port.timing.callLatencyMs, () =>
        ctx.resolve(this.hypervisor.hostname),
      ),
    );
  }

  listInstances(): Promise<ObservedInstance[]> {
    return this.#call((ctx) =>
      this.#port.after(this.#port.timing.callLatencyMs, () => {
        if (ctx.live()) ctx.resolve(this.#port.listing());
      }),
    );
  }

  getPowerState(uuid: string): Promise<ObservedInstance | null> {
    return this.#call((ctx) =>
      this.#port.after(this.#port.timing.callLatencyMs, () => {
        if (!ctx.live()) return;
        try {
          ctx.resolve(this.#port.lookup(uuid));
        } catch (error) {
          ctx.reject(error);
        }
      }),
    );
  }

  start(uuid: string): Promise<void> {
    return this.#action('start', uuid, {});
  }

  /** Resolves when the instance is off: by the guest, or forced after the timeout. */
  stop(uuid: string, options: StopOptions = {}): Promise<void> {
    return this.#action('stop', uuid, options);
  }

  forceStop(uuid: string): Promise<void> {
    return this.#action('forceStop', uuid, {});
  }

  /** Soft: a `rebooted` event. Hard: resolves once the instance runs again. */
  reboot(uuid: string, options: RebootOptions = {}): Promise<void> {
    return this.#action('reboot', uuid, options);
  }

  /** Pausing a paused instance succeeds without an event, as in libvirt. */
  pause(uuid: string): Promise<void> {
    return this.#action('pause', uuid, {});
  }

  /** Resuming a running instance succeeds without an event, as in libvirt. */
  resume(uuid: string): Promise<void> {
    return this.#action('resume', uuid, {});
  }

  #action(action: DriverAction, given: string, options: ActionOptions): Promise<void> {
    const uuid = given.toLowerCase();
    return this.#call<void>((ctx) => {
      const perform = (): void =>
        this.#port.after(this.#port.timing.actionLatencyMs, () => {
          if (!ctx.live()) return;
          if (this.#port.chance(this.hypervisor.faults.actionFailRate)) {
            ctx.reject(new DriverError('failed', `${action} of ${uuid} failed (simulated)`));
            return;
          }
          this.#port.act(action, uuid, options).then(
            () => ctx.resolve(),
            (error: unknown) => ctx.reject(error),
          );
        });
      if (this.#port.isHung(uuid)) this.#port.holdWhileHung(uuid, ctx.live, perform);
      else perform();
    });
  }

  /** Tracks a call so that a lost connection rejects it; `work` settles it through the context. */
  #call<T>(work: (ctx: CallContext<T>) => void): Promise<T> {
    if (!this.#connected) {
      return Promise.reject(
        new DriverError('disconnected', `not connected to ${this.hypervisor.hostname}`),
      );
    }
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const abort = (error: DriverError): void => {
        if (settled) return;
        settled = true;
        reject(error);
      };
      this.#pending.add(abort);
      const finish = (): boolean => {
        if (settled) return false;
        settled = true;
        this.#pending.delete(abort);
        return true;
      };
      work({
        live: () => !settled,
        resolve: (value) => {
          if (finish()) resolve(value);
        },
        reject: (error) => {
          if (finish()) reject(error);
        },
      });
    });
  }

  #rejectPending(error: DriverError): void {
    const pending = [...this.#pending];
    this.#pending.clear();
    for (const abort of pending) abort(error);
  }

  #deliver(event: DriverEvent): void {
    this.#listeners.emit(event);
  }

  #lost(reason: string): void {
    this.#connected = false;
    this.#rejectPending(new DriverError('disconnected', `connection lost: ${reason}`));
  }

  #restored(): void {
    if (this.#closed) return;
    this.#connected = true;
    for (const waiter of this.#connectWaiters.splice(0)) waiter.resolve();
  }
}

function observe(record: SimRecord): ObservedInstance {
  return {
    uuid: record.uuid,
    name: record.name,
    powerState: record.powerState,
    reason: record.reason,
  };
}

function invalid(message: string): DriverError {
  return new DriverError('invalid-state', message);
}

function noop(): void {}
