// The storm (every domain changed at once, as fast as libvirtd emits) and the reconcile costs,
// over one set of test-driver domains: setting up 10 000 is the slow part, so both use it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { RecordedPowerState } from '../../src/model/index.ts';
import type { LibvirtClient } from '../../src/libvirt/index.ts';
import { openSqliteStore } from '../../src/store/index.ts';
import type { ChangeRecord, Store } from '../../src/store/index.ts';
import { SyncEngine, type SyncStats } from '../../src/sync/index.ts';
import { LibvirtDriver, powerStateOf } from '../../src/virt/index.ts';
import {
  BenchDomains,
  median,
  pipelined,
  progress,
  RssSampler,
  throttledProgress,
  waitFor,
} from './support.ts';

export interface StormOptions {
  readonly uri: string;
  readonly client: LibvirtClient;
  readonly domains: number;
  /** Calls in flight while setting up and cleaning up. */
  readonly setupInflight: number;
  /** Calls in flight during the storm itself. */
  readonly stormInflight: number;
  readonly reconcileRuns: number;
  readonly stopSettleMs: number;
  /** Longest wait for the store to catch up with one storm phase. */
  readonly convergeTimeoutMs: number;
}

export interface StormPhase {
  readonly phase: string;
  readonly target: RecordedPowerState;
  /** First call issued → last reply received. */
  readonly callsMs: number;
  /** First call issued → every domain's row holds the target state. */
  readonly convergedMs: number | null;
  /** Last reply → converged: what the engine needed beyond libvirtd's own pace. */
  readonly tailMs: number | null;
  readonly eventsReceived: number;
  /** Events received over the span from the first to the last one the engine got. */
  readonly eventsPerSecond: number;
  readonly commits: number;
  readonly coalesced: number;
  /** Domains whose stored state differed from a fresh all-domain listing after the phase. */
  readonly mismatches: number;
}

export interface StormResult {
  readonly domains: number;
  readonly stormInflight: number;
  readonly setupMs: number;
  /** engine.start(): connect and a first reconcile that adopts every domain. */
  readonly engineStartMs: number;
  readonly phases: StormPhase[];
  readonly rssBeforeMiB: number;
  readonly rssPeakMiB: number;
  readonly rssDeltaMiB: number;
  readonly settleNote: string;
}

export interface ReconcileResult {
  readonly domains: number;
  /** Domains the hypervisor listed (ours plus whatever else the shared test driver holds). */
  readonly listed: number;
  readonly runs: number;
  readonly allStatsMs: number;
  readonly driverListMs: number;
  readonly perDomainSequentialMs: number;
  readonly perDomainPipelinedMs: number;
  readonly pipelinedInflight: number;
  /** Nova-style sequential cost over one all-domain-stats call. */
  readonly ratio: number;
  readonly engineReconcileMs: number;
  readonly engineReconcileRunsMs: number[];
  readonly engineDrift: number;
}

function totalEvents(stats: SyncStats): number {
  return Object.values(stats.eventsReceived).reduce((a, b) => a + (b ?? 0), 0);
}

/** Compares the store's rows for `uuids` with one fresh listing; returns how many differ. */
async function countMismatches(
  client: LibvirtClient,
  store: Store,
  uuids: ReadonlySet<string>,
): Promise<number> {
  const live = new Map<string, RecordedPowerState>();
  for (const entry of await client.getAllDomainStates()) {
    if (uuids.has(entry.domain.uuid)) live.set(entry.domain.uuid, powerStateOf(entry));
  }
  let matched = 0;
  let after: string | undefined;
  for (;;) {
    const page = await store.listInstances({ limit: 1000, after });
    for (const record of page) {
      if (uuids.has(record.uuid) && live.get(record.uuid) === record.powerState) matched++;
    }
    if (page.length < 1000) break;
    after = page.at(-1)!.uuid;
  }
  return uuids.size - matched;
}

export async function measureStormAndReconcile(
  options: StormOptions,
): Promise<{ storm: StormResult; reconcile: ReconcileResult }> {
  const { client } = options;
  const setupBegan = performance.now();
  const set = await BenchDomains.create(client, 'storm', options.domains, options.setupInflight);
  const setupMs = performance.now() - setupBegan;
  const uuids = set.uuids;

  const dir = mkdtempSync(join(tmpdir(), 'hvsync-bench-storm-'));
  const store = await openSqliteStore(join(dir, 'hvsync.db'));
  const driver = new LibvirtDriver({ uri: options.uri });
  const engine = new SyncEngine({ driver, store, stopSettleMs: options.stopSettleMs });

  // What the store says about our domains, kept current from its commits.
  const stored = new Map<string, RecordedPowerState>();
  let target: RecordedPowerState | null = null;
  let atTarget = 0;
  const recount = (): void => {
    atTarget = 0;
    for (const state of stored.values()) if (state === target) atTarget++;
  };
  const unsubscribe = store.subscribe((changes: readonly ChangeRecord[]) => {
    for (const { instance } of changes) {
      if (!uuids.has(instance.uuid)) continue;
      const before = stored.get(instance.uuid);
      stored.set(instance.uuid, instance.powerState);
      if (before === target) atTarget--;
      if (instance.powerState === target) atTarget++;
    }
  });
  // The engine's driver is ours to listen to as well: when the events arrived, not just how many.
  let firstEventAt = 0;
  let lastEventAt = 0;
  const unlisten = driver.registerEventListener((event) => {
    if (event.kind !== 'lifecycle' || !uuids.has(event.uuid)) return;
    const now = performance.now();
    if (firstEventAt === 0) firstEventAt = now;
    lastEventAt = now;
  });

  const rss = new RssSampler();
  try {
    progress(`storm: starting the engine over ${options.domains} domains (adopting them all)...`);
    const startBegan = performance.now();
    await engine.start();
    await engine.whenIdle();
    const engineStartMs = performance.now() - startBegan;

    const rssBefore = process.memoryUsage().rss;
    rss.start(100);
    const phases: StormPhase[] = [];
    const runPhase = async (
      phase: string,
      want: RecordedPowerState,
      call: (index: number) => Promise<unknown>,
    ): Promise<void> => {
      target = want;
      recount();
      firstEventAt = 0;
      lastEventAt = 0;
      const statsBefore = engine.stats;
      const tick = throttledProgress(5_000);
      const began = performance.now();
      await pipelined(
        set.domains.length,
        options.stormInflight,
        async (i) => {
          await call(i);
        },
        (done) => tick(`storm: ${phase}: ${done}/${set.domains.length} calls answered`),
      );
      const callsDoneAt = performance.now();
      const converged = await waitFor(
        () => {
          tick(`storm: ${phase}: ${atTarget}/${uuids.size} rows ${want}`);
          return atTarget === uuids.size;
        },
        options.convergeTimeoutMs,
        5,
      );
      const convergedAt = performance.now();
      await engine.whenIdle();
      const statsAfter = engine.stats;
      const events = totalEvents(statsAfter) - totalEvents(statsBefore);
      const eventSpanS = (lastEventAt - firstEventAt) / 1000;
      phases.push({
        phase,
        target: want,
        callsMs: callsDoneAt - began,
        convergedMs: converged ? convergedAt - began : null,
        tailMs: converged ? Math.max(0, convergedAt - callsDoneAt) : null,
        eventsReceived: events,
        eventsPerSecond: eventSpanS > 0 ? events / eventSpanS : NaN,
        commits: statsAfter.writes - statsBefore.writes,
        coalesced: statsAfter.coalesced - statsBefore.coalesced,
        mismatches: await countMismatches(client, store, uuids),
      });
    };

    await runPhase('destroy all', 'shutoff', (i) => client.destroy(set.domains[i]!));
    await runPhase('start all', 'running', async (i) => {
      set.domains[i] = await client.create(set.domains[i]!);
    });
    const rssPeak = rss.stop();

    const storm: StormResult = {
      domains: options.domains,
      stormInflight: options.stormInflight,
      setupMs,
      engineStartMs,
      phases,
      rssBeforeMiB: rssBefore / 2 ** 20,
      rssPeakMiB: rssPeak / 2 ** 20,
      rssDeltaMiB: (rssPeak - rssBefore) / 2 ** 20,
      settleNote:
        'the engine runs under observe: destroys are recorded at once (the ' +
        `${options.stopSettleMs} ms settle window applies under enforce only)`,
    };
    const reconcile = await measureReconcile(options, client, driver, engine);
    return { storm, reconcile };
  } finally {
    rss.stop();
    unsubscribe();
    unlisten();
    await engine.stop();
    await driver.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
    await set.remove(options.setupInflight);
  }
}

async function measureReconcile(
  options: StormOptions,
  client: LibvirtClient,
  driver: LibvirtDriver,
  engine: SyncEngine,
): Promise<ReconcileResult> {
  const runs = Math.max(1, options.reconcileRuns);
  const timed = async (work: () => Promise<unknown>): Promise<number> => {
    const began = performance.now();
    await work();
    return performance.now() - began;
  };
  const allStats: number[] = [];
  const driverList: number[] = [];
  const sequential: number[] = [];
  const pipelinedRuns: number[] = [];
  const engineRuns: number[] = [];
  let listed = 0;
  let drift = 0;
  for (let run = 1; run <= runs; run++) {
    progress(`reconcile: run ${run}/${runs}: one all-domain-stats call...`);
    allStats.push(
      await timed(async () => {
        listed = (await client.getAllDomainStates()).length;
      }),
    );
    driverList.push(await timed(() => driver.listInstances()));
    progress(`reconcile: run ${run}/${runs}: list, then one get-state call per domain...`);
    // Nova's periodic task: list the domains, then ask each for its state, one call at a time.
    sequential.push(
      await timed(async () => {
        for (const domain of await client.listAllDomains()) await client.getState(domain);
      }),
    );
    pipelinedRuns.push(
      await timed(async () => {
        const domains = await client.listAllDomains();
        await pipelined(domains.length, options.setupInflight, async (i) => {
          await client.getState(domains[i]!);
        });
      }),
    );
    progress(`reconcile: run ${run}/${runs}: engine reconcile over unchanged records...`);
    const report = await engine.reconcile();
    engineRuns.push(report.durationMs);
    drift += report.drift;
  }
  const allStatsMs = median(allStats);
  const perDomainSequentialMs = median(sequential);
  return {
    domains: options.domains,
    listed,
    runs,
    allStatsMs,
    driverListMs: median(driverList),
    perDomainSequentialMs,
    perDomainPipelinedMs: median(pipelinedRuns),
    pipelinedInflight: options.setupInflight,
    ratio: perDomainSequentialMs / allStatsMs,
    engineReconcileMs: median(engineRuns),
    engineReconcileRunsMs: engineRuns,
    engineDrift: drift,
  };
}
