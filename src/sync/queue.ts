// A keyed serial work queue: one run at a time per key, many keys at once. Work arriving for a
// key already queued is merged into the pending work (coalescing), and work arriving while a
// run waits out its settle window cuts the wait short so the run starts over with it.

/** What a run returns when newer work for its key cut it short: it is redone merged with that work. */
export const SUPERSEDED = Symbol('superseded');

export type RunResult<O> = O | typeof SUPERSEDED;

/**
 * Runs one piece of work. `settle()` waits out the settle window; it resolves true (and the run
 * should return SUPERSEDED) when newer work for the key arrived meanwhile.
 */
export type Runner<W, O> = (
  key: string,
  work: W,
  settle: () => Promise<boolean>,
) => Promise<RunResult<O>>;

export interface QueueOptions<W, O> {
  readonly run: Runner<W, O>;
  /** Folds newer work into older work still pending for the same key. */
  readonly merge: (older: W, newer: W) => W;
  /** The outcome waiters get when a run throws or ends superseded with nothing newer to do. */
  readonly failed: O;
  readonly settleMs: number;
  /** Keeps the drain of each key in flight for whenIdle and stop. */
  readonly track: (work: Promise<unknown>) => void;
  readonly onRunError: (error: unknown, key: string) => void;
  /** Told when work was merged into work already pending. */
  readonly onCoalesced?: (work: W) => void;
  /** Told once per run that completed, with the work it did. */
  readonly onFinished?: (work: W) => void;
}

interface Slot<W, O> {
  pending: W | null;
  waiters: ((outcome: O) => void)[];
  /** Set while a run waits out the settle window: newer work for the key cuts it short. */
  interrupt: (() => void) | null;
}

export class WorkQueue<W, O> {
  private readonly slots = new Map<string, Slot<W, O>>();

  constructor(private readonly options: QueueOptions<W, O>) {}

  /** True while work for the key is queued or running. */
  has(key: string): boolean {
    return this.slots.has(key);
  }

  /** Queues work for a key; resolves with the outcome of the run that took it. */
  push(key: string, work: W): Promise<O> {
    return new Promise((resolve) => {
      let slot = this.slots.get(key);
      if (!slot) {
        slot = { pending: work, waiters: [resolve], interrupt: null };
        this.slots.set(key, slot);
        this.options.track(this.drain(key, slot));
        return;
      }
      if (slot.pending) {
        slot.pending = this.options.merge(slot.pending, work);
        this.options.onCoalesced?.(work);
      } else {
        slot.pending = work;
      }
      slot.waiters.push(resolve);
      slot.interrupt?.();
    });
  }

  /** Runs work for one key until nothing is pending; one drain per key at a time. */
  private async drain(key: string, slot: Slot<W, O>): Promise<void> {
    const { run, merge, failed } = this.options;
    try {
      while (slot.pending) {
        const work = slot.pending;
        const waiters = slot.waiters;
        slot.pending = null;
        slot.waiters = [];
        let outcome: RunResult<O>;
        try {
          outcome = await run(key, work, () => this.settle(slot));
        } catch (error) {
          this.options.onRunError(error, key);
          outcome = failed;
        }
        if (outcome === SUPERSEDED && slot.pending) {
          slot.pending = merge(work, slot.pending);
          slot.waiters.unshift(...waiters);
          continue;
        }
        const result = outcome === SUPERSEDED ? failed : outcome;
        this.options.onFinished?.(work);
        for (const waiter of waiters) waiter(result);
      }
    } finally {
      this.slots.delete(key);
    }
  }

  /**
   * Waits out the settle window. A hard reboot is STOPPED then STARTED (maybe RESUMED between):
   * believing the STOPPED alone stops the instance for good (Nova 1293480). Nova waits 15 s on
   * every STOPPED; here any further work for the instance ends the wait at once and the run
   * starts over with it, so a real stop costs only the window plus one lookup.
   */
  private settle(slot: Slot<W, O>): Promise<boolean> {
    if (slot.pending) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        slot.interrupt = null;
        resolve(false);
      }, this.options.settleMs);
      slot.interrupt = () => {
        clearTimeout(timer);
        slot.interrupt = null;
        resolve(true);
      };
    });
  }
}
