// Prometheus metrics of one host's sync engine. The engine keeps plain counters (it knows
// nothing of Prometheus); they are read at scrape time, and detection latency, which needs every
// sample, is fed from the engine's commit hook.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { CommitInfo, SyncStats } from '../sync/index.ts';

export interface EngineMetricsSource {
  readonly stats: SyncStats;
  readonly ready: boolean;
}

export interface EngineMetrics {
  /** Pass to the engine as `onCommit`. */
  readonly onCommit: (commit: CommitInfo) => void;
}

export function registerEngineMetrics(
  registry: Registry,
  source: () => EngineMetricsSource | undefined,
  connected: () => boolean,
): EngineMetrics {
  // Counters mirror the engine's cumulative numbers: each scrape adds what grew since the last.
  const mirrored = <L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    read: (stats: SyncStats) => Iterable<[Partial<Record<L, string>>, number]>,
  ) => {
    const seen = new Map<string, number>();
    return new Counter<L>({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        const stats = source()?.stats;
        if (!stats) return;
        for (const [labels, value] of read(stats)) {
          const key = JSON.stringify(labels);
          const grown = value - (seen.get(key) ?? 0);
          if (grown > 0) this.inc(labels, grown);
          seen.set(key, value);
        }
      },
    });
  };
  const single = (value: (s: SyncStats) => number) => (s: SyncStats) =>
    [[{}, value(s)]] as Iterable<[Partial<Record<never, string>>, number]>;

  mirrored(
    'hvsync_events_received_total',
    'Lifecycle events received, by transition.',
    ['transition'],
    (s) => Object.entries(s.eventsReceived).map(([transition, n]) => [{ transition }, n ?? 0]),
  );
  mirrored(
    'hvsync_events_handled_total',
    'Event-caused passes completed.',
    [],
    single((s) => s.eventsHandled),
  );
  mirrored(
    'hvsync_events_coalesced_total',
    'Events folded into a pass already queued for their instance.',
    [],
    single((s) => s.coalesced),
  );
  mirrored(
    'hvsync_events_stale_total',
    'Events the confirmed state contradicted.',
    [],
    single((s) => s.staleSkipped),
  );
  mirrored(
    'hvsync_reconcile_runs_total',
    'Full reconcile passes.',
    [],
    single((s) => s.reconcileRuns),
  );
  mirrored(
    'hvsync_reconcile_failures_total',
    'Reconcile passes that failed.',
    [],
    single((s) => s.reconcileFailures),
  );
  mirrored(
    'hvsync_reconcile_drift_total',
    'Records only a reconcile corrected: drift events missed.',
    [],
    single((s) => s.driftFound),
  );
  mirrored(
    'hvsync_reconcile_seconds_total',
    'Time spent reconciling.',
    [],
    single((s) => s.reconcileTotalDurationMs / 1000),
  );
  mirrored(
    'hvsync_adopted_total',
    'Instances adopted from the hypervisor.',
    [],
    single((s) => s.adopted),
  );
  mirrored(
    'hvsync_enforcements_total',
    'Actions taken to enforce vmState.',
    [],
    single((s) => s.enforcements),
  );
  mirrored(
    'hvsync_write_conflicts_total',
    'Conditional writes refused because the record moved.',
    [],
    single((s) => s.conflicts),
  );
  mirrored('hvsync_actions_total', 'Actions by outcome.', ['outcome'], (s) =>
    Object.entries(s.actions).map(([outcome, n]) => [{ outcome }, n]),
  );
  mirrored(
    'hvsync_tasks_expired_total',
    'Tasks cleared with an error after timing out.',
    [],
    single((s) => s.tasksExpired),
  );

  new Gauge({
    name: 'hvsync_reconcile_last_duration_seconds',
    help: 'Duration of the last reconcile pass.',
    registers: [registry],
    collect() {
      const stats = source()?.stats;
      if (stats) this.set(stats.reconcileLastDurationMs / 1000);
    },
  });
  new Gauge({
    name: 'hvsync_hypervisor_connected',
    help: '1 while the connection to the hypervisor is up.',
    registers: [registry],
    collect() {
      this.set(connected() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'hvsync_ready',
    help: '1 once connected and the first reconcile is done.',
    registers: [registry],
    collect() {
      this.set(source()?.ready ? 1 : 0);
    },
  });
  const latency = new Histogram({
    name: 'hvsync_detection_latency_seconds',
    help: 'From the hypervisor observing a change to the store committing it.',
    labelNames: ['cause'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  return {
    onCommit(commit) {
      if (commit.latencyMs !== null)
        latency.observe({ cause: commit.cause }, commit.latencyMs / 1000);
    },
  };
}
