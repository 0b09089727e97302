// Turns a driver without lifecycle events into one with them, by diffing successive listings.
// Absent is not deleted: an instance missing from one listing is looked up on its own before it
// is reported gone, because listings can be partial (KubeVirt and CloudStack both acted on a
// partial listing and restarted or orphaned VMs). When the lookup fails, nothing is reported.
import type { PowerState } from '../model/index.ts';
import { Emitter } from '../lib/index.ts';
import { DriverError } from './types.ts';
import type {
  DriverEvent,
  DriverEventListener,
  DriverLogger,
  HypervisorDriver,
  LifecycleEvent,
  ObservedInstance,
  RebootOptions,
  StopOptions,
  Transition,
} from './types.ts';

export interface PollingOptions {
  readonly intervalMs: number;
  /** Lookups of missing instances run at most this many at a time; default 16. */
  readonly confirmConcurrency?: number;
  /** Wall clock for `observedAt`; default Date.now. */
  readonly now?: () => number;
  /** Where failed polls and listener errors are logged. */
  readonly logger?: DriverLogger;
}

/** The transition a poll reports for a change of power state, or null when there is none to report. */
export function transitionBetween(from: PowerState, to: PowerState): Transition | null {
  if (from === to) return null;
  switch (to) {
    case 'running':
      return from === 'paused' ? 'resumed' : 'started';
    case 'shutoff':
      return 'stopped';
    case 'paused':
      return 'suspended';
    case 'crashed':
      return 'crashed';
    case 'suspended':
      return 'pmsuspended';
    case 'shutdown':
      return 'shutdown';
    case 'nostate':
      return null;
  }
}

export class PollingDriver implements HypervisorDriver {
  readonly kind: string;
  readonly inner: HypervisorDriver;
  readonly intervalMs: number;

  readonly #confirmConcurrency: number;
  readonly #now: () => number;
  readonly #listeners: Emitter<[DriverEvent]>;
  readonly #logger: DriverLogger | undefined;
  readonly #unregisterInner: () => void;
  /** What the last successful poll saw; null until the first one, which only sets the baseline. */
  #known: Map<string, ObservedInstance> | null = null;
  #chain: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | null = null;
  #looping = false;
  #closed = false;

  constructor(inner: HypervisorDriver, options: PollingOptions) {
    if (!(options.intervalMs > 0)) {
      throw new DriverError('failed', `intervalMs must be positive, got ${options.intervalMs}`);
    }
    this.inner = inner;
    this.kind = `polling(${inner.kind})`;
    this.intervalMs = options.intervalMs;
    this.#confirmConcurrency = Math.max(1, options.confirmConcurrency ?? 16);
    this.#now = options.now ?? Date.now;
    this.#logger = options.logger;
    const logger = options.logger;
    this.#listeners = new Emitter(
      logger && ((err) => logger.error({ err }, 'a driver event listener threw')),
    );
    this.#unregisterInner = inner.registerEventListener((event) => this.#onInner(event));
  }

  get connected(): boolean {
    return this.inner.connected;
  }

  /** Connects the inner driver, takes the first listing as the baseline, then polls on a timer. */
  async connect(): Promise<void> {
    if (this.#closed) throw new DriverError('disconnected', 'driver is closed');
    await this.inner.connect();
    if (this.#closed || this.#looping) return;
    this.#looping = true;
    const startedAt = performance.now();
    await this.pollNow();
    this.#schedule(startedAt);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#looping = false;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#unregisterInner();
    await this.inner.close();
  }

  registerEventListener(listener: DriverEventListener): () => void {
    return this.#listeners.on(listener);
  }

  /** Polls once, after any poll in progress; never rejects (a failed poll emits nothing). */
  pollNow(): Promise<void> {
    const poll = this.#chain.then(() => this.#poll());
    this.#chain = poll;
    return poll;
  }

  hostname(): Promise<string> {
    return this.inner.hostname();
  }

  listInstances(): Promise<ObservedInstance[]> {
    return this.inner.listInstances();
  }

  getPowerState(uuid: string): Promise<ObservedInstance | null> {
    return this.inner.getPowerState(uuid);
  }

  start(uuid: string): Promise<void> {
    return this.inner.start(uuid);
  }

  stop(uuid: string, options?: StopOptions): Promise<void> {
    return this.inner.stop(uuid, options);
  }

  forceStop(uuid: string): Promise<void> {
    return this.inner.forceStop(uuid);
  }

  reboot(uuid: string, options?: RebootOptions): Promise<void> {
    return this.inner.reboot(uuid, options);
  }

  pause(uuid: string): Promise<void> {
    return this.inner.pause(uuid);
  }

  resume(uuid: string): Promise<void> {
    return this.inner.resume(uuid);
  }

  #schedule(lastStartedAt: number): void {
    if (!this.#looping || this.#closed) return;
    const wait = Math.max(0, this.intervalMs - (performance.now() - lastStartedAt));
    this.#timer = setTimeout(() => {
      this.#timer = null;
      const startedAt = performance.now();
      void this.pollNow().then(() => this.#schedule(startedAt));
    }, wait);
  }

  #onInner(event: DriverEvent): void {
    // The inner driver's own lifecycle events are not ours to pass on: this adapter exists for
    // drivers that have none, and mixing both would report every change twice.
    if (event.kind === 'lifecycle' || this.#closed) return;
    this.#emit(event);
    // Whatever changed while the connection was down shows up in the next listing; do not wait
    // a whole interval for it.
    if (event.kind === 'connected' && this.#known) void this.pollNow();
  }

  async #poll(): Promise<void> {
    if (this.#closed) return;
    let listing: ObservedInstance[];
    try {
      listing = await this.inner.listInstances();
    } catch (error) {
      // Nothing is reported from a failed poll, but why it failed must not go unseen. While the
      // inner driver is disconnected it logs its own reconnect failures: one line per retry
      // there, not one per interval here.
      if (this.inner.connected) {
        const reason = error instanceof Error ? error.message : String(error);
        this.#logger?.warn({ reason }, `poll of ${this.inner.kind} failed: ${reason}`);
      }
      return;
    }
    const observedAt = this.#now();
    if (this.#closed) return;
    const current = new Map(listing.map((instance) => [instance.uuid, instance]));
    const known = this.#known;
    if (!known) {
      this.#known = current;
      return;
    }

    const events: LifecycleEvent[] = [];
    const next = new Map(current);
    for (const instance of listing) {
      const before = known.get(instance.uuid);
      if (!before) {
        events.push(lifecycle(instance, 'defined', 'polled', null, observedAt));
        const transition = transitionBetween('shutoff', instance.powerState);
        if (transition) events.push(change(instance, transition, observedAt));
      } else {
        const transition = transitionBetween(before.powerState, instance.powerState);
        if (transition) events.push(change(instance, transition, observedAt));
      }
    }

    const missing = [...known.values()].filter((instance) => !current.has(instance.uuid));
    const confirmed = await this.#confirm(missing);
    for (const [before, outcome] of confirmed) {
      if (outcome === 'unknown') {
        // Nothing is known: keep the last state so the next poll compares against it again.
        next.set(before.uuid, before);
      } else if (outcome === null) {
        events.push(lifecycle(before, 'undefined', 'polled', null, this.#now()));
      } else {
        next.set(before.uuid, outcome);
        const transition = transitionBetween(before.powerState, outcome.powerState);
        if (transition) events.push(change(outcome, transition, this.#now()));
      }
    }

    if (this.#closed) return;
    this.#known = next;
    for (const event of events) this.#emit(event);
  }

  /** Looks up each missing instance: its state, null when confirmed gone, 'unknown' when the lookup failed. */
  async #confirm(
    missing: readonly ObservedInstance[],
  ): Promise<[ObservedInstance, ObservedInstance | null | 'unknown'][]> {
    // Indexed by position so that events come out in a stable order whatever the lookups' timing.
    const results: [ObservedInstance, ObservedInstance | null | 'unknown'][] = missing.map(
      (before) => [before, 'unknown'],
    );
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < missing.length && !this.#closed) {
        const i = next++;
        try {
          results[i] = [missing[i]!, await this.inner.getPowerState(missing[i]!.uuid)];
        } catch {
          // Left 'unknown'.
        }
      }
    };
    const workers = Math.min(this.#confirmConcurrency, missing.length);
    await Promise.all(Array.from({ length: workers }, worker));
    return results;
  }

  #emit(event: DriverEvent): void {
    this.#listeners.emit(event);
  }
}

function change(
  instance: ObservedInstance,
  transition: Transition,
  observedAt: number,
): LifecycleEvent {
  // The state's reason (`shutdown`, `destroyed`, `crashed`...) mostly uses the same words as the
  // matching event's detail, and it is what tells a crash from a shutdown.
  const detail = instance.reason && instance.reason !== 'unknown' ? instance.reason : 'polled';
  return lifecycle(instance, transition, detail, instance.powerState, observedAt);
}

function lifecycle(
  instance: ObservedInstance,
  transition: Transition,
  detail: string,
  powerState: PowerState | null,
  observedAt: number,
): LifecycleEvent {
  return {
    kind: 'lifecycle',
    uuid: instance.uuid,
    name: instance.name,
    transition,
    detail,
    powerState,
    observedAt,
  };
}
