// Building blocks of the simulated hypervisor: a seeded random source (scenarios must replay),
// one timer shared by any number of pending tasks (10 000 instances and thousands of operations
// per second must not mean thousands of timers), and a set that hands out a random member in
// constant time (the workload picks instances by power state).

export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform 32-bit unsigned integer. */
  uint32(): number;
  /** Integer in [0, n). */
  below(n: number): number;
  /** True with probability p. Draws nothing for p <= 0 or p >= 1, so an unused fault leaves the sequence alone. */
  chance(p: number): boolean;
  /** Uniform in [min, max]. */
  between(min: number, max: number): number;
}

/** sfc32 seeded through splitmix32: small, fast, and good enough for simulations. */
export function createRandom(seed: number, stream = 0): Random {
  let state = (seed ^ Math.imul(stream + 1, 0x9e3779b9)) >>> 0;
  const splitmix = (): number => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let d = splitmix();
  const uint32 = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  // The first outputs of sfc32 still echo the seed.
  for (let i = 0; i < 12; i++) uint32();
  const next = (): number => uint32() / 4294967296;
  return {
    next,
    uint32,
    below: (n) => Math.floor(next() * n),
    chance: (p) => (p <= 0 ? false : p >= 1 ? true : next() < p),
    between: (min, max) => (max <= min ? min : min + next() * (max - min)),
  };
}

/** A version-4 UUID drawn from `random`, lower-case and canonical. */
export function randomUuid(random: Random): string {
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 16; i += 4) {
    const word = random.uint32();
    bytes[i] = word >>> 24;
    bytes[i + 1] = (word >>> 16) & 0xff;
    bytes[i + 2] = (word >>> 8) & 0xff;
    bytes[i + 3] = word & 0xff;
  }
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The canonical form of a UUID, or null when it is not one. */
export function canonicalUuid(uuid: string): string | null {
  const lower = uuid.toLowerCase();
  return UUID_PATTERN.test(lower) ? lower : null;
}

interface Task {
  readonly at: number;
  readonly seq: number;
  readonly run: () => void;
  cancelled: boolean;
}

export interface ScheduledTask {
  /** Forgets the task if it has not run yet. */
  cancel(): void;
}

/**
 * Runs callbacks at given times on a monotonic clock with a single Node timer. Tasks due at the
 * same time run in the order they were added. A task added while tasks are running never runs
 * in that same turn, so work scheduled "now" is still asynchronous to whoever scheduled it.
 */
export class Scheduler {
  readonly #heap: Task[] = [];
  #seq = 0;
  /** Tasks neither run nor cancelled; cancelled ones stay in the heap until they surface. */
  #live = 0;
  #timeout: NodeJS.Timeout | null = null;
  #immediate: NodeJS.Immediate | null = null;
  #armedAt = Infinity;
  #firing = false;
  #idleWaiters: (() => void)[] = [];

  now(): number {
    return performance.now();
  }

  get size(): number {
    return this.#live;
  }

  after(delayMs: number, run: () => void): ScheduledTask {
    return this.at(this.now() + Math.max(0, delayMs), run);
  }

  at(time: number, run: () => void): ScheduledTask {
    const task: Task = { at: time, seq: this.#seq++, run, cancelled: false };
    heapPush(this.#heap, task);
    this.#live++;
    if (!this.#firing && time < this.#armedAt) this.#arm();
    return {
      cancel: () => {
        if (task.cancelled) return;
        task.cancelled = true;
        this.#live--;
        if (this.#live === 0 && !this.#firing) this.clear();
      },
    };
  }

  /** Resolves once nothing is pending (immediately, but asynchronously, when nothing is). */
  whenIdle(): Promise<void> {
    return new Promise((resolve) => {
      if (this.#live === 0) setImmediate(resolve);
      else this.#idleWaiters.push(resolve);
    });
  }

  /** Forgets every pending task. */
  clear(): void {
    for (const task of this.#heap) task.cancelled = true;
    this.#heap.length = 0;
    this.#live = 0;
    this.#disarm();
    this.#wakeIdle();
  }

  #disarm(): void {
    if (this.#timeout) clearTimeout(this.#timeout);
    if (this.#immediate) clearImmediate(this.#immediate);
    this.#timeout = null;
    this.#immediate = null;
    this.#armedAt = Infinity;
  }

  #arm(): void {
    this.#disarm();
    const next = this.#heap[0];
    if (!next) return;
    const delay = next.at - this.now();
    if (delay <= 0) {
      this.#immediate = setImmediate(() => this.#fire());
      this.#armedAt = -Infinity;
    } else {
      this.#timeout = setTimeout(() => this.#fire(), Math.ceil(delay));
      this.#armedAt = next.at;
    }
  }

  #fire(): void {
    this.#timeout = null;
    this.#immediate = null;
    this.#armedAt = Infinity;
    const now = this.now();
    const limit = this.#seq;
    this.#firing = true;
    try {
      for (let next = this.#heap[0]; next; next = this.#heap[0]) {
        if (next.at > now || next.seq >= limit) break;
        heapPop(this.#heap);
        if (next.cancelled) continue;
        next.cancelled = true;
        this.#live--;
        try {
          next.run();
        } catch (error) {
          // A task that throws is a bug in the simulator: make it loud, but keep the clock going.
          setImmediate(() => {
            throw error;
          });
        }
      }
    } finally {
      this.#firing = false;
    }
    if (this.#live > 0) this.#arm();
    else this.clear();
  }

  #wakeIdle(): void {
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const wake of waiters) wake();
  }
}

function before(a: Task, b: Task): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

function heapPush(heap: Task[], task: Task): void {
  heap.push(task);
  let i = heap.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (!before(heap[i]!, heap[parent]!)) break;
    [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
    i = parent;
  }
}

function heapPop(heap: Task[]): Task | undefined {
  const top = heap[0];
  const last = heap.pop();
  if (heap.length === 0 || !last) return top;
  heap[0] = last;
  let i = 0;
  for (;;) {
    const left = 2 * i + 1;
    const right = left + 1;
    let smallest = i;
    if (left < heap.length && before(heap[left]!, heap[smallest]!)) smallest = left;
    if (right < heap.length && before(heap[right]!, heap[smallest]!)) smallest = right;
    if (smallest === i) break;
    [heap[i], heap[smallest]] = [heap[smallest]!, heap[i]!];
    i = smallest;
  }
  return top;
}

/** A set with constant-time add, delete and indexed access (for picking a random member). */
export class IndexedSet<T> {
  readonly #items: T[] = [];
  readonly #index = new Map<T, number>();

  get size(): number {
    return this.#items.length;
  }

  has(item: T): boolean {
    return this.#index.has(item);
  }

  add(item: T): void {
    if (this.#index.has(item)) return;
    this.#index.set(item, this.#items.length);
    this.#items.push(item);
  }

  delete(item: T): void {
    const i = this.#index.get(item);
    if (i === undefined) return;
    const last = this.#items.pop()!;
    this.#index.delete(item);
    if (i < this.#items.length) {
      this.#items[i] = last;
      this.#index.set(last, i);
    }
  }

  at(i: number): T | undefined {
    return this.#items[i];
  }
}
