// Cost at rest: CPU and memory of hvsync with idle instances against pollers that check every
// instance every 10 s (Proxmox) and every 60 s (CloudStack), one contender at a time so that the
// daemon's CPU time in each window is that contender's (polling costs libvirtd too).
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { LibvirtClient } from '../../src/libvirt/index.ts';
import { assertBuildCurrent, compileContender, DIST } from './compiled.ts';
import {
  isChildMessage,
  type ChildMessage,
  type ContenderConfig,
  type ContenderResult,
} from './contender-messages.ts';
import {
  BenchDomains,
  findLibvirtdPid,
  processCpuSeconds,
  progress,
  throttledProgress,
} from './support.ts';

export interface RestOptions {
  readonly uri: string;
  readonly client: LibvirtClient;
  readonly instances: number;
  readonly windowMs: number;
  /** The no-contender window that shows what libvirtd spends with nobody asking. */
  readonly idleWindowMs: number;
  readonly reconcileIntervalMs: number;
  /**
   * From a contender's ready to its window: start-up is not rest. hvsync's heap grows while it
   * adopts every instance, and V8's memory reducer collects it some 25-60 s after start (later
   * on a loaded machine; about 0.15 CPU s for 1,000 instances), so the window opens after that.
   * 102 s also puts the 10 s poller's ticks at 110..160 s and the 60 s ticks (and hvsync's
   * reconcile) at 120 s, inside a 60 s window from 102 s. An hvsync contender whose heap has not
   * been shrunk yet by then opens its window a few seconds after that collection instead (see
   * heapShrunk in contender.ts); any 60 s window holds one of its reconciles.
   */
  readonly warmupMs: number;
  readonly inflight: number;
  /** Which rows to measure (`RestContender`); all when empty. */
  readonly contenders: ReadonlySet<string>;
  /** Extra `node` arguments for each contender process, e.g. `--cpu-prof`. */
  readonly nodeArgs: readonly string[];
}

/** The rows of the cost-at-rest table, by the name BENCH_REST_CONTENDERS selects them with. */
export const REST_CONTENDERS = [
  'libvirtd',
  'node',
  'service',
  'engine',
  'poll10',
  'poll60',
] as const;
export type RestContender = (typeof REST_CONTENDERS)[number];

export interface RestRow {
  readonly contender: string;
  readonly windowS: number;
  readonly instancesSeen: number | null;
  readonly cpuS: number | null;
  readonly cpuPercentOfCore: number | null;
  readonly rssMiB: number | null;
  readonly rssPeakMiB: number | null;
  readonly libvirtdCpuS: number | null;
  readonly libvirtdCpuPercentOfCore: number | null;
  readonly work: Readonly<Record<string, number>>;
}

export interface RestResult {
  readonly instances: number;
  readonly windowS: number;
  readonly libvirtdPid: number | null;
  readonly rows: RestRow[];
}

const CHILD_TIMEOUT_MS = 120_000;

/** Reads libvirtd's CPU seconds, or null when it cannot be found (remote daemon, other pid ns). */
function daemonCpu(pid: number | null): number | null {
  if (pid === null) return null;
  try {
    return processCpuSeconds(pid);
  } catch {
    return null;
  }
}

/** Children that are running now, so that an interrupted run can end them. */
export const runningContenders = new Set<ChildProcess>();

class Contender {
  private readonly child: ChildProcess;
  private readonly inbox: ChildMessage[] = [];
  private wake: (() => void) | null = null;
  private exited = false;

  constructor(script: string, config: ContenderConfig, nodeArgs: readonly string[]) {
    this.child = fork(script, [JSON.stringify(config)], {
      // Plain node, no loader: the contender is compiled and hvsync runs from dist/.
      execArgv: [...nodeArgs],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    runningContenders.add(this.child);
    this.child.on('message', (message: unknown) => {
      if (isChildMessage(message)) this.inbox.push(message);
      this.wake?.();
    });
    this.child.on('exit', () => {
      this.exited = true;
      runningContenders.delete(this.child);
      this.wake?.();
    });
  }

  async next<T extends ChildMessage['type']>(
    type: T,
    onWait?: () => void,
  ): Promise<Extract<ChildMessage, { type: T }>> {
    const deadline = Date.now() + CHILD_TIMEOUT_MS;
    for (;;) {
      const index = this.inbox.findIndex((m) => m.type === type || m.type === 'error');
      if (index >= 0) {
        const [message] = this.inbox.splice(index, 1);
        if (message!.type === 'error') throw new Error(`contender failed: ${message!.message}`);
        return message as Extract<ChildMessage, { type: T }>;
      }
      if (this.exited) throw new Error(`contender exited before sending '${type}'`);
      if (Date.now() > deadline) throw new Error(`contender sent no '${type}' in time`);
      onWait?.();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1_000);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  tell(type: 'measure' | 'finish'): void {
    // A child that failed may be gone already: its own error message is the one worth showing.
    if (this.child.connected) this.child.send({ type }, () => undefined);
  }

  async finish(): Promise<void> {
    if (this.exited) return;
    this.tell('finish');
    const ended = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 30_000);
      this.child.once('exit', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!ended) this.child.kill('SIGKILL');
  }
}

async function measureContender(
  script: string,
  name: string,
  config: ContenderConfig,
  libvirtdPid: number | null,
  options: RestOptions,
): Promise<RestRow> {
  const { warmupMs } = options;
  progress(`rest: ${name}: starting...`);
  const contender = new Contender(script, config, options.nodeArgs);
  try {
    const ready = await contender.next('ready');
    progress(`rest: ${name}: ready; warming up for ${Math.round(warmupMs / 1000)} s...`);
    await new Promise((resolve) => setTimeout(resolve, warmupMs));
    const daemonBefore = daemonCpu(libvirtdPid);
    const began = performance.now();
    contender.tell('measure');
    const tick = throttledProgress(15_000);
    const result: ContenderResult = await contender.next('result', () =>
      tick(
        `rest: ${name}: ${Math.round((performance.now() - began) / 1000)}/` +
          `${Math.round(config.windowMs / 1000)} s`,
      ),
    );
    const spanS = (performance.now() - began) / 1000;
    const daemonAfter = daemonCpu(libvirtdPid);
    const daemonS =
      daemonBefore === null || daemonAfter === null ? null : daemonAfter - daemonBefore;
    const cpuS = result.cpuUserS + result.cpuSystemS;
    return {
      contender: name,
      windowS: result.windowS,
      instancesSeen: ready.instances,
      cpuS,
      cpuPercentOfCore: (cpuS / result.windowS) * 100,
      rssMiB: result.rssEndBytes / 2 ** 20,
      rssPeakMiB: result.rssPeakBytes / 2 ** 20,
      libvirtdCpuS: daemonS,
      libvirtdCpuPercentOfCore: daemonS === null ? null : (daemonS / spanS) * 100,
      work: result.work,
    };
  } finally {
    await contender.finish();
  }
}

async function measureIdle(windowMs: number, libvirtdPid: number | null): Promise<RestRow> {
  const before = daemonCpu(libvirtdPid);
  const began = performance.now();
  const tick = throttledProgress(15_000);
  while (performance.now() - began < windowMs) {
    tick(
      `rest: libvirtd with no contender: ${Math.round((performance.now() - began) / 1000)}/` +
        `${Math.round(windowMs / 1000)} s`,
    );
    await new Promise((resolve) => setTimeout(resolve, Math.min(1_000, windowMs)));
  }
  const spanS = (performance.now() - began) / 1000;
  const after = daemonCpu(libvirtdPid);
  const daemonS = before === null || after === null ? null : after - before;
  return {
    contender: 'nobody (libvirtd alone)',
    windowS: spanS,
    instancesSeen: null,
    cpuS: null,
    cpuPercentOfCore: null,
    rssMiB: null,
    rssPeakMiB: null,
    libvirtdCpuS: daemonS,
    libvirtdCpuPercentOfCore: daemonS === null ? null : (daemonS / spanS) * 100,
    work: {},
  };
}

export async function measureRest(options: RestOptions): Promise<RestResult> {
  assertBuildCurrent();
  const script = compileContender();
  const set = await BenchDomains.create(
    options.client,
    'rest',
    options.instances,
    options.inflight,
  );
  const dir = mkdtempSync(join(tmpdir(), 'hvsync-bench-rest-'));
  const libvirtdPid = findLibvirtdPid();
  const { uri, windowMs } = options;
  const rows: RestRow[] = [];
  const wanted = (name: RestContender): boolean =>
    options.contenders.size === 0 || options.contenders.has(name);
  const reconcileS = options.reconcileIntervalMs / 1000;
  const contenders: [RestContender, string, ContenderConfig][] = [
    ['node', 'idle node process (the floor)', { kind: 'idle', windowMs }],
    [
      'service',
      `hvsync all-in-one: engine + API + metrics (reconcile every ${reconcileS} s)`,
      {
        kind: 'service',
        dist: DIST,
        uri,
        db: join(dir, 'service.db'),
        reconcileIntervalMs: options.reconcileIntervalMs,
        windowMs,
      },
    ],
    [
      'engine',
      `hvsync engine + SQLite only (reconcile every ${reconcileS} s)`,
      {
        kind: 'engine',
        dist: DIST,
        uri,
        db: join(dir, 'engine.db'),
        reconcileIntervalMs: options.reconcileIntervalMs,
        windowMs,
      },
    ],
    [
      'poll10',
      'poller every 10 s (Proxmox)',
      { kind: 'poller', dist: DIST, uri, periodMs: 10_000, windowMs },
    ],
    [
      'poll60',
      'poller every 60 s (CloudStack)',
      { kind: 'poller', dist: DIST, uri, periodMs: 60_000, windowMs },
    ],
  ];
  try {
    if (options.idleWindowMs > 0 && wanted('libvirtd')) {
      rows.push(await measureIdle(options.idleWindowMs, libvirtdPid));
    }
    for (const [key, name, config] of contenders) {
      if (wanted(key))
        rows.push(await measureContender(script, name, config, libvirtdPid, options));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await set.remove(options.inflight);
  }
  return { instances: options.instances, windowS: windowMs / 1000, libvirtdPid, rows };
}
