// What the service benchmarks share: progress output, percentiles, pipelined calls, the
// test-driver domains they create (and always remove), and readings of this machine and libvirtd.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import {
  LibvirtClientError,
  LibvirtError,
  type Domain,
  type LibvirtClient,
} from '../../src/libvirt/index.ts';

export const MIB = 2 ** 20;

/** One live line on a terminal; plain lines (and no blank ones) in a log. */
export function progress(text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
  else if (text) process.stderr.write(`${text}\n`);
}

/** Progress for long loops: every update on a terminal, one line per `logEveryMs` in a log. */
export function throttledProgress(logEveryMs = 10_000): (text: string) => void {
  let last = 0;
  return (text) => {
    const now = Date.now();
    if (!process.stderr.isTTY && now - last < logEveryMs) return;
    last = now;
    progress(text);
  };
}

export function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) {
    throw new Error(`${name} must be a non-negative number, not '${raw}'`);
  }
  return value;
}

export interface Summary {
  readonly n: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

/** Nearest-rank percentiles; NaN everywhere for no samples, so an empty row cannot pass as fast. */
export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) return { n: 0, p50: NaN, p99: NaN, max: NaN, mean: NaN };
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number): number =>
    sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  const mean = sorted.reduce((a, b) => a + b, 0) / sorted.length;
  return { n: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted.at(-1)!, mean };
}

export function median(samples: readonly number[]): number {
  return summarize(samples).p50;
}

/** Rounds for JSON and tables: enough digits to compare, not float noise. */
export function round(value: number, digits = 1): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

export function mib(bytes: number): number {
  return round(bytes / MIB, 1);
}

/**
 * Runs `work` over `count` items with at most `inflight` calls outstanding: libvirt answers
 * pipelined calls on one socket far faster than a call-reply-call loop.
 */
export async function pipelined(
  count: number,
  inflight: number,
  work: (index: number) => Promise<void>,
  onDone?: (done: number) => void,
): Promise<void> {
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const index = next++;
      await work(index);
      done++;
      onDone?.(done);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(inflight, count)) }, worker));
}

/** Polls `condition` every `everyMs` until it holds or `timeoutMs` passes; true when it held. */
export async function waitFor(
  condition: () => boolean,
  timeoutMs: number,
  everyMs = 10,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  return true;
}

/** Samples this process's RSS on a timer and keeps the largest value seen. */
export class RssSampler {
  peak = process.memoryUsage().rss;
  private timer: NodeJS.Timeout | undefined;

  start(everyMs: number): this {
    this.peak = process.memoryUsage().rss;
    this.timer = setInterval(() => this.sample(), everyMs);
    return this;
  }

  sample(): number {
    const rss = process.memoryUsage().rss;
    if (rss > this.peak) this.peak = rss;
    return rss;
  }

  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.peak;
  }
}

function testDomainXml(name: string, uuid: string): string {
  return (
    `<domain type='test'><name>${name}</name><uuid>${uuid}</uuid>` +
    `<memory>8192</memory><os><type>hvm</type></os></domain>`
  );
}

/** Sets of domains that exist now, so that an interrupted run can still remove them. */
const liveSets = new Set<BenchDomains>();

/**
 * Test-driver domains a benchmark defines and starts, with names and uuids of its own, removed
 * (destroyed and undefined) afterwards. The test driver keeps them only while some connection to
 * it is open, so the caller's client must stay open until `remove` has run.
 */
export class BenchDomains {
  readonly domains: Domain[] = [];
  private constructor(
    private readonly client: LibvirtClient,
    readonly label: string,
  ) {}

  static async create(
    client: LibvirtClient,
    label: string,
    count: number,
    inflight: number,
  ): Promise<BenchDomains> {
    const set = new BenchDomains(client, label);
    liveSets.add(set);
    const prefix = `hvsync-bench-${label}-${process.pid}-${Date.now().toString(36)}`;
    const tick = throttledProgress();
    await pipelined(
      count,
      inflight,
      async (i) => {
        const defined = await client.defineXml(testDomainXml(`${prefix}-${i}`, randomUUID()));
        set.domains[i] = defined;
        set.domains[i] = await client.create(defined);
      },
      (done) => tick(`${label}: defining and starting ${count} test domains: ${done}/${count}`),
    );
    return set;
  }

  get uuids(): Set<string> {
    return new Set(this.domains.map((d) => d.uuid));
  }

  /** Destroys (when running) and undefines every domain; failures for one do not stop the rest. */
  async remove(inflight: number): Promise<void> {
    liveSets.delete(this);
    const tick = throttledProgress();
    const count = this.domains.length;
    await pipelined(
      count,
      inflight,
      async (i) => {
        const domain = this.domains[i];
        if (!domain) return;
        await ignoreLibvirtError(this.client.destroy(domain));
        await ignoreLibvirtError(this.client.undefine(domain));
      },
      (done) => tick(`${this.label}: removing ${count} test domains: ${done}/${count}`),
    );
  }
}

async function ignoreLibvirtError(call: Promise<void>): Promise<void> {
  try {
    await call;
  } catch (error) {
    // Already shut off, or already gone: either way it is what removal wants. A lost connection
    // (libvirtd restarted) took the test driver's domains with it.
    if (!(error instanceof LibvirtError) && !(error instanceof LibvirtClientError)) throw error;
  }
}

/** Removes whatever sets are still defined; for an interrupted run. */
export async function removeLiveDomains(inflight: number): Promise<void> {
  for (const set of [...liveSets]) await set.remove(inflight).catch(() => undefined);
}

export function machineLine(libvirtVersion: string): string {
  const model = cpus()[0]?.model.trim() ?? 'cpu';
  const memory = Math.round(totalmem() / 2 ** 30);
  const node = `Node ${process.version}`;
  return `${cpus().length} × ${model}, ${memory} GiB, ${node}, libvirt ${libvirtVersion}`;
}

// ---- libvirtd's CPU time (polling costs the daemon too) ----------------------------------

function clockTicksPerSecond(): number {
  try {
    const ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    if (Number.isFinite(ticks) && ticks > 0) return ticks;
  } catch {
    // getconf missing: Linux's user-visible tick rate is 100 on every common architecture.
  }
  return 100;
}

const CLOCK_TICKS = clockTicksPerSecond();

/** The pid of the running libvirtd, or null when none is found in /proc. */
export function findLibvirtdPid(): number | null {
  // A private daemon (BENCH_URI with ?socket=) is not necessarily the first libvirtd in /proc.
  const given = Number(process.env.BENCH_LIBVIRTD_PID);
  if (Number.isInteger(given) && given > 0) return given;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === 'libvirtd') return Number(entry);
    } catch {
      // The process ended while we looked.
    }
  }
  return null;
}

/**
 * How long a process's main thread (for Node, its event loop) has waited runnable for a CPU, and
 * how many times it was put on one (/proc/<pid>/schedstat), since it started; null where the
 * kernel does not tell. On a machine with fewer cores than busy processes, every hop of a
 * request from one process to the next pays such a wait.
 */
export interface RunQueueWait {
  readonly waitSeconds: number;
  readonly runs: number;
}

export function runQueueWait(pid: number | 'self'): RunQueueWait | null {
  try {
    const [, wait, runs] = readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(/\s+/);
    return { waitSeconds: Number(wait) / 1e9, runs: Number(runs) };
  } catch {
    return null;
  }
}

/** The sum of several processes' waits; null when none could be read. */
export function sumWaits(waits: readonly (RunQueueWait | null)[]): RunQueueWait | null {
  const known = waits.filter((w): w is RunQueueWait => w !== null);
  if (known.length === 0) return null;
  return {
    waitSeconds: known.reduce((sum, w) => sum + w.waitSeconds, 0),
    runs: known.reduce((sum, w) => sum + w.runs, 0),
  };
}

/** User plus system CPU seconds a process has used so far (utime + stime of /proc/<pid>/stat). */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may contain spaces and parentheses: fields are counted after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (utime + stime) / CLOCK_TICKS;
}
