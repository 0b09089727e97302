// One contender of the cost-at-rest benchmark, in a process of its own so that its CPU and
// memory are its own: the all-in-one hvsync service, its engine alone, or a poller that asks
// every instance for its state once per period (Proxmox every 10 s, CloudStack every 60 s), or
// an idle Node process as the floor they all stand on. Each loads only the modules it runs, so the
// floor is a bare process and a poller does not carry hvsync's. The parent compiles this file to
// JavaScript and runs it with plain `node`: no loader, and hvsync's modules come from the
// compiled build (dist/), as users run them.
//
//   node <compiled contender.js> '<ContenderConfig as JSON>'   (with IPC)
import { join } from 'node:path';
import { constants, performance, PerformanceObserver } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import type { Store } from '../../src/store/index.ts';
import type { SyncEngine } from '../../src/sync/index.ts';
import {
  isParentMessage,
  type ChildMessage,
  type ContenderConfig,
  type ParentMessage,
} from './contender-messages.ts';

interface Contender {
  /** Counters of the work done so far; the window reports their growth. */
  work(): Record<string, number>;
  /** Resolves once no poll or reconcile is under way: the window does not end inside one. */
  quiesce(): Promise<void>;
  stop(): Promise<void>;
}

/** Imports a module of the compiled build by its path under dist/, typed as its source. */
function fromDist<T>(dist: string, path: string): Promise<T> {
  return import(pathToFileURL(join(dist, path)).href) as Promise<T>;
}

function send(message: ChildMessage): void {
  process.send?.(message);
}

async function countInstances(store: Store): Promise<number> {
  let instances = 0;
  let after: string | undefined;
  for (;;) {
    const page = await store.listInstances({ limit: 1000, after });
    instances += page.length;
    if (page.length < 1000) return instances;
    after = page.at(-1)!.uuid;
  }
}

async function startHvsync(
  config: Extract<ContenderConfig, { kind: 'service' | 'engine' }>,
): Promise<{ contender: Contender; instances: number }> {
  const { pino } = await import('pino');
  const { dist } = config;
  const { startService } = await fromDist<typeof import('../../src/app/index.ts')>(
    dist,
    'app/index.js',
  );
  const { openSqliteStore } = await fromDist<typeof import('../../src/store/index.ts')>(
    dist,
    'store/index.js',
  );
  const { SyncEngine } = await fromDist<typeof import('../../src/sync/index.ts')>(
    dist,
    'sync/index.js',
  );
  const { LibvirtDriver } = await fromDist<typeof import('../../src/virt/index.ts')>(
    dist,
    'virt/index.js',
  );
  let engine: SyncEngine;
  let store: Store;
  let stop: () => Promise<void>;
  if (config.kind === 'service') {
    const service = await startService({
      hypervisor: { kind: 'libvirt', uri: config.uri },
      db: config.db,
      listen: '127.0.0.1:0',
      policy: 'observe',
      reconcileIntervalMs: config.reconcileIntervalMs,
      // Silent rather than the default info: log volume would measure the log sink, not the sync.
      logger: pino({ level: 'silent' }),
    });
    ({ engine, store } = service);
    stop = () => service.stop();
  } else {
    const driver = new LibvirtDriver({ uri: config.uri });
    const sqlite = await openSqliteStore(config.db);
    const bare = new SyncEngine({
      driver,
      store: sqlite,
      reconcileIntervalMs: config.reconcileIntervalMs,
    });
    await bare.start();
    engine = bare;
    store = sqlite;
    stop = async () => {
      await bare.stop();
      await driver.close();
      await sqlite.close();
    };
  }
  const instances = await countInstances(store);
  return {
    instances,
    contender: {
      work: () => {
        const stats = engine.stats;
        const events = Object.values(stats.eventsReceived).reduce((a, b) => a + (b ?? 0), 0);
        return { reconciles: stats.reconcileRuns, events, writes: stats.writes };
      },
      quiesce: () => engine.whenIdle(),
      stop,
    },
  };
}

async function startPoller(config: Extract<ContenderConfig, { kind: 'poller' }>): Promise<{
  contender: Contender;
  instances: number;
}> {
  const { LibvirtClient, LibvirtError } = await fromDist<
    typeof import('../../src/libvirt/index.ts')
  >(config.dist, 'libvirt/index.js');
  const client = await LibvirtClient.connect({ uri: config.uri });
  const known = new Map<string, number>();
  const counts = { polls: 0, calls: 0, changes: 0 };
  let polling = false;
  // One sequential loop, as the polling systems run it: list, then one state call per instance.
  const poll = async (): Promise<void> => {
    if (polling) return;
    polling = true;
    try {
      const domains = await client.listAllDomains();
      counts.calls++;
      for (const domain of domains) {
        counts.calls++;
        const state = await client.getState(domain).catch((error: unknown) => {
          // Removed since the listing (the daemon is shared): a poller moves on, as real ones do.
          if (error instanceof LibvirtError && error.isNoDomain) return null;
          throw error;
        });
        if (state === null) continue;
        if (known.get(domain.uuid) !== state.stateCode) {
          known.set(domain.uuid, state.stateCode);
          counts.changes++;
        }
      }
      counts.polls++;
    } finally {
      polling = false;
    }
  };
  await poll();
  const timer = setInterval(() => {
    poll().catch((error: unknown) => send({ type: 'error', message: String(error) }));
  }, config.periodMs);
  return {
    instances: known.size,
    contender: {
      work: () => ({ ...counts }),
      quiesce: async () => {
        while (polling) await new Promise((resolve) => setTimeout(resolve, 10));
      },
      stop: async () => {
        clearInterval(timer);
        await client.close();
      },
    },
  };
}

function startIdle(): { contender: Contender; instances: number } {
  return {
    instances: 0,
    contender: { work: () => ({}), quiesce: async () => undefined, stop: async () => undefined },
  };
}

/** Longest wait past the warm-up for start-up's heap to be shrunk. */
const SHRINK_WAIT_MS = 120_000;

/**
 * hvsync's heap grows while it adopts every instance, and V8's memory reducer shrinks it with a
 * few major collections once the process goes quiet: 25-80 s after start here, later on a loaded
 * machine. That is start-up, not rest. Watches from ready for that first major collection; the
 * returned wait resolves a moment after it (at once if it came during the warm-up), or after
 * SHRINK_WAIT_MS, and stops watching so the window pays nothing for it.
 */
function heapShrunk(): () => Promise<void> {
  let lastMajorAt: number | null = null;
  const watch = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = (entry as { detail?: { kind?: number } | null }).detail?.kind;
      if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) lastMajorAt = performance.now();
    }
  });
  watch.observe({ entryTypes: ['gc'] });
  return async () => {
    const deadline = performance.now() + SHRINK_WAIT_MS;
    // The reducer's collections come in a burst about a second apart.
    while (
      performance.now() < deadline &&
      (lastMajorAt === null || performance.now() - lastMajorAt < 5_000)
    ) {
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
    watch.disconnect();
  };
}

function nextMessage(): Promise<ParentMessage> {
  return new Promise((resolve) => {
    const onMessage = (message: unknown): void => {
      if (!isParentMessage(message)) return;
      process.off('message', onMessage);
      resolve(message);
    };
    process.on('message', onMessage);
  });
}

async function main(): Promise<void> {
  if (!process.send) throw new Error('contender.ts is started by service.bench.ts, with IPC');
  const config = JSON.parse(process.argv[2] ?? '') as ContenderConfig;
  const began = performance.now();
  const { contender, instances } =
    config.kind === 'idle'
      ? startIdle()
      : config.kind === 'poller'
        ? await startPoller(config)
        : await startHvsync(config);
  send({ type: 'ready', instances, setupMs: performance.now() - began });
  const shrunk = config.kind === 'service' || config.kind === 'engine' ? heapShrunk() : null;

  await nextMessage();
  await shrunk?.();
  const workBefore = contender.work();
  const cpuBefore = process.cpuUsage();
  const windowBegan = performance.now();
  await new Promise((resolve) => setTimeout(resolve, config.windowMs));
  // A period's work that began inside the window is counted whole.
  await contender.quiesce();
  const cpu = process.cpuUsage(cpuBefore);
  const windowS = (performance.now() - windowBegan) / 1000;
  const memory = process.memoryUsage();
  const workAfter = contender.work();
  send({
    type: 'result',
    windowS,
    cpuUserS: cpu.user / 1e6,
    cpuSystemS: cpu.system / 1e6,
    rssEndBytes: memory.rss,
    // The kernel's high-water mark: a sampling timer would wake the process it measures.
    rssPeakBytes: process.resourceUsage().maxRSS * 1024,
    heapUsedBytes: memory.heapUsed,
    work: Object.fromEntries(
      Object.entries(workAfter).map(([key, value]) => [key, value - (workBefore[key] ?? 0)]),
    ),
  });

  await nextMessage();
  await contender.stop();
  process.disconnect();
}

main().catch((error: unknown) => {
  send({
    type: 'error',
    message: error instanceof Error ? (error.stack ?? error.message) : String(error),
  });
  process.exitCode = 1;
  process.disconnect?.();
});
