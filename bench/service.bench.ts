// npm run bench — the all-in-one service against libvirt's test driver inside libvirtd:
//   1. detection latency of changes made behind hvsync's back,
//   2. a storm that changes every one of 10 000 domains at once,
//   3. a reconcile listing in one call vs one state call per domain (Nova's periodic task),
//   4. CPU and memory at rest against pollers (Proxmox every 10 s, CloudStack every 60 s).
// Prints a table per benchmark and writes bench/results/service.json. Not a test: numbers only.
//
// Environment (defaults in brackets): BENCH_URI [test+unix:///default], BENCH_ONLY [all; a
// comma list of latency, storm, rest], BENCH_LATENCY_DOMAINS [200], BENCH_LATENCY_CHANGES [320],
// BENCH_STOP_SETTLE_MS [250, the engine's default], BENCH_LATENCY_POLICY [observe; under enforce
// the engine powers the bench's out-of-band starts off again], BENCH_STORM_DOMAINS [10000],
// BENCH_SETUP_INFLIGHT [64], BENCH_STORM_INFLIGHT [256], BENCH_RECONCILE_RUNS [3],
// BENCH_REST_INSTANCES [1000], BENCH_REST_WINDOW_S [60], BENCH_REST_IDLE_S [10],
// BENCH_REST_WARMUP_S [102], BENCH_RECONCILE_INTERVAL_S [60], BENCH_REST_CONTENDERS [all; a comma
// list of libvirtd, node, service, engine, poll10, poll60], BENCH_REST_NODE_ARGS [none; extra node
// arguments for each contender, e.g. '--cpu-prof --cpu-prof-dir=prof'], BENCH_LIBVIRTD_PID [the
// first libvirtd in /proc; give the private daemon's when BENCH_URI names one with ?socket=, as a
// shared machine's daemon carries other people's domains and their events].
// `npm run bench:rest` runs the cost at rest alone.
import { mkdirSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Policy } from '../src/model/index.ts';
import { LibvirtClient } from '../src/libvirt/index.ts';
import { measureDetection, type DetectionGroup } from './service/latency.ts';
import { measureRest, REST_CONTENDERS, runningContenders } from './service/rest.ts';
import { measureStormAndReconcile } from './service/storm.ts';
import {
  envNumber,
  findLibvirtdPid,
  machineLine,
  progress,
  removeLiveDomains,
  round,
  type Summary,
} from './service/support.ts';

const uri = process.env.BENCH_URI ?? 'test+unix:///default';
function envList(name: string, fallback: string, allowed?: readonly string[]): Set<string> {
  const parts = (process.env[name] ?? fallback)
    .split(/[\s,]+/)
    .map((part) => part.trim())
    .filter(Boolean);
  const unknown = allowed ? parts.filter((part) => !allowed.includes(part)) : [];
  if (unknown.length > 0) {
    throw new Error(`${name}: unknown ${unknown.join(', ')}; one of ${allowed!.join(', ')}`);
  }
  return new Set(parts);
}

const only = envList('BENCH_ONLY', 'latency,storm,rest', ['latency', 'storm', 'rest']);
const settings = {
  uri,
  latencyDomains: envNumber('BENCH_LATENCY_DOMAINS', 200),
  latencyChanges: envNumber('BENCH_LATENCY_CHANGES', 320),
  stopSettleMs: envNumber('BENCH_STOP_SETTLE_MS', 250),
  latencyPolicy: (process.env.BENCH_LATENCY_POLICY === 'enforce' ? 'enforce' : 'observe') as Policy,
  stormDomains: envNumber('BENCH_STORM_DOMAINS', 10_000),
  setupInflight: envNumber('BENCH_SETUP_INFLIGHT', 64),
  stormInflight: envNumber('BENCH_STORM_INFLIGHT', 256),
  reconcileRuns: envNumber('BENCH_RECONCILE_RUNS', 3),
  restInstances: envNumber('BENCH_REST_INSTANCES', 1_000),
  restWindowS: envNumber('BENCH_REST_WINDOW_S', 60),
  restIdleS: envNumber('BENCH_REST_IDLE_S', 10),
  restWarmupS: envNumber('BENCH_REST_WARMUP_S', 102),
  reconcileIntervalS: envNumber('BENCH_RECONCILE_INTERVAL_S', 60),
  restContenders: [...envList('BENCH_REST_CONTENDERS', '', REST_CONTENDERS)],
  restNodeArgs: [...envList('BENCH_REST_NODE_ARGS', '')],
};

/** A cell: fixed digits, or a dash for what was not measured. */
function cell(value: number | null | undefined, digits = 1): string {
  if (value === null || value === undefined || Number.isNaN(value)) return '—';
  return value.toLocaleString('en', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function summaryRow(summary: Summary): Record<string, string | number> {
  return {
    n: summary.n,
    'p50 ms': cell(summary.p50),
    'p99 ms': cell(summary.p99),
    'max ms': cell(summary.max),
    'mean ms': cell(summary.mean),
  };
}

function roundSummary(summary: Summary): Summary {
  return {
    n: summary.n,
    p50: round(summary.p50),
    p99: round(summary.p99),
    max: round(summary.max),
    mean: round(summary.mean),
  };
}

function roundGroup(group: DetectionGroup): DetectionGroup {
  return {
    changes: group.changes,
    callToCommitMs: roundSummary(group.callToCommitMs),
    eventToCommitMs: roundSummary(group.eventToCommitMs),
  };
}

// The test driver forgets its domains when its last connection closes: this one stays open for
// the whole run. It is also the second connection: every change behind hvsync's back uses it.
const client = await LibvirtClient.connect({ uri, callTimeoutMs: 120_000 });
let interrupted = false;
let closing = false;
let connectionLost: string | null = null;
client.onClose((reason, error) => {
  if (closing) return;
  // The test driver's domains died with the connection (libvirtd restarted, most likely): every
  // number from here on would be about something else.
  connectionLost = error ? `${reason}: ${error.message}` : reason;
  interrupted = true;
});
const libvirtdPidAtStart = findLibvirtdPid();
process.once('SIGINT', () => {
  interrupted = true;
  progress('interrupted: removing the benchmark domains...');
  for (const child of runningContenders) child.kill('SIGTERM');
  void removeLiveDomains(settings.setupInflight).finally(() => process.exit(130));
});

const began = performance.now();
const machine = machineLine(await client.getLibVersion());
const results: Record<string, unknown> = { machine, settings };
console.log(`machine: ${machine}`);

try {
  if (only.has('latency')) {
    const detection = await measureDetection({
      uri,
      client,
      domains: settings.latencyDomains,
      changes: settings.latencyChanges,
      stopSettleMs: settings.stopSettleMs,
      policy: settings.latencyPolicy,
      inflight: settings.setupInflight,
    });
    progress('');
    results.detection = {
      ...detection,
      stopLike: roundGroup(detection.stopLike),
      other: roundGroup(detection.other),
      byChange: Object.fromEntries(
        Object.entries(detection.byChange).map(([name, s]) => [
          name,
          {
            callToCommitMs: roundSummary(s.callToCommitMs),
            eventToCommitMs: roundSummary(s.eventToCommitMs),
          },
        ]),
      ),
    };
    const held =
      detection.policy === 'enforce'
        ? `Stop-like changes wait out stopSettleMs = ${detection.stopSettleMs} ms (the ` +
          'reboot-race guard) before their lookup.'
        : 'Stop-like changes are recorded at once: nothing acts on the record, so there is ' +
          'no reboot race to guard against.';
    console.log(
      `\n1. Detection latency under ${detection.policy}: ${detection.changes} changes, one at ` +
        `a time, from a second connection over ${detection.domains} domains. ${held} ` +
        `Missed: ${detection.missed}; without an engine latency: ` +
        `${detection.withoutEngineLatency}.`,
    );
    console.table({
      [`change call → row committed, stop-like (${detection.stopLike.changes})`]: summaryRow(
        detection.stopLike.callToCommitMs,
      ),
      [`change call → row committed, other (${detection.other.changes})`]: summaryRow(
        detection.other.callToCommitMs,
      ),
      'engine latencyMs (event → commit), stop-like': summaryRow(
        detection.stopLike.eventToCommitMs,
      ),
      'engine latencyMs (event → commit), other': summaryRow(detection.other.eventToCommitMs),
    });
  }

  if (only.has('storm') && !interrupted) {
    const { storm, reconcile } = await measureStormAndReconcile({
      uri,
      client,
      domains: settings.stormDomains,
      setupInflight: settings.setupInflight,
      stormInflight: settings.stormInflight,
      reconcileRuns: settings.reconcileRuns,
      stopSettleMs: settings.stopSettleMs,
      convergeTimeoutMs: 120_000,
    });
    progress('');
    results.storm = {
      ...storm,
      setupMs: round(storm.setupMs),
      engineStartMs: round(storm.engineStartMs),
      rssBeforeMiB: round(storm.rssBeforeMiB),
      rssPeakMiB: round(storm.rssPeakMiB),
      rssDeltaMiB: round(storm.rssDeltaMiB),
      phases: storm.phases.map((p) => ({
        ...p,
        callsMs: round(p.callsMs),
        convergedMs: p.convergedMs === null ? null : round(p.convergedMs),
        tailMs: p.tailMs === null ? null : round(p.tailMs),
        eventsPerSecond: round(p.eventsPerSecond, 0),
      })),
    };
    console.log(
      `\n2. Storm: ${storm.domains} domains defined and started in ` +
        `${cell(storm.setupMs / 1000, 2)} s (${settings.setupInflight} calls in flight); engine ` +
        `start with its first reconcile (adopting all) ${cell(storm.engineStartMs / 1000, 2)} s; ` +
        `storm calls ${storm.stormInflight} in flight from the second connection. ` +
        `${storm.settleNote}.`,
    );
    console.table(
      Object.fromEntries(
        storm.phases.map((p) => [
          p.phase,
          {
            'calls answered s': cell(p.callsMs / 1000, 2),
            'store matches s': cell(p.convergedMs === null ? null : p.convergedMs / 1000, 2),
            'after last reply ms': cell(p.tailMs, 0),
            'events received': p.eventsReceived,
            'events/s': cell(p.eventsPerSecond, 0),
            commits: p.commits,
            coalesced: p.coalesced,
            mismatches: p.mismatches,
          },
        ]),
      ),
    );
    console.table({
      'RSS before the storm': { MiB: cell(storm.rssBeforeMiB) },
      'RSS peak (sampled every 100 ms)': { MiB: cell(storm.rssPeakMiB) },
      'RSS delta': { MiB: cell(storm.rssDeltaMiB) },
    });

    results.reconcile = {
      ...reconcile,
      allStatsMs: round(reconcile.allStatsMs),
      driverListMs: round(reconcile.driverListMs),
      perDomainSequentialMs: round(reconcile.perDomainSequentialMs),
      perDomainPipelinedMs: round(reconcile.perDomainPipelinedMs),
      ratio: round(reconcile.ratio),
      engineReconcileMs: round(reconcile.engineReconcileMs),
      engineReconcileRunsMs: reconcile.engineReconcileRunsMs.map((ms) => round(ms)),
    };
    const ratioTo = (ms: number): string => `${cell(ms / reconcile.allStatsMs, 1)}×`;
    console.log(
      `\n3. Reconcile over ${reconcile.domains} domains (${reconcile.listed} listed by the ` +
        `shared test driver), median of ${reconcile.runs} runs. Per-domain state calls cost ` +
        `${cell(reconcile.ratio, 1)}× one all-domain-stats call. Engine drift found: ` +
        `${reconcile.engineDrift}.`,
    );
    console.table({
      'one all-domain-stats call': {
        ms: cell(reconcile.allStatsMs),
        'vs all-stats': ratioTo(reconcile.allStatsMs),
      },
      'LibvirtDriver.listInstances()': {
        ms: cell(reconcile.driverListMs),
        'vs all-stats': ratioTo(reconcile.driverListMs),
      },
      'list + get-state per domain, sequential (Nova)': {
        ms: cell(reconcile.perDomainSequentialMs),
        'vs all-stats': ratioTo(reconcile.perDomainSequentialMs),
      },
      [`list + get-state per domain, ${reconcile.pipelinedInflight} in flight`]: {
        ms: cell(reconcile.perDomainPipelinedMs),
        'vs all-stats': ratioTo(reconcile.perDomainPipelinedMs),
      },
      'engine reconcile(), unchanged records': {
        ms: cell(reconcile.engineReconcileMs),
        'vs all-stats': ratioTo(reconcile.engineReconcileMs),
      },
    });
  }

  if (only.has('rest') && !interrupted) {
    const rest = await measureRest({
      uri,
      client,
      instances: settings.restInstances,
      windowMs: settings.restWindowS * 1000,
      idleWindowMs: settings.restIdleS * 1000,
      reconcileIntervalMs: settings.reconcileIntervalS * 1000,
      warmupMs: settings.restWarmupS * 1000,
      inflight: settings.setupInflight,
      contenders: new Set(settings.restContenders),
      nodeArgs: settings.restNodeArgs,
    });
    progress('');
    results.rest = {
      ...rest,
      rows: rest.rows.map((row) => ({
        ...row,
        windowS: round(row.windowS, 2),
        cpuS: row.cpuS === null ? null : round(row.cpuS, 3),
        cpuPercentOfCore: row.cpuPercentOfCore === null ? null : round(row.cpuPercentOfCore, 2),
        rssMiB: row.rssMiB === null ? null : round(row.rssMiB),
        rssPeakMiB: row.rssPeakMiB === null ? null : round(row.rssPeakMiB),
        libvirtdCpuS: row.libvirtdCpuS === null ? null : round(row.libvirtdCpuS, 2),
        libvirtdCpuPercentOfCore:
          row.libvirtdCpuPercentOfCore === null ? null : round(row.libvirtdCpuPercentOfCore, 2),
      })),
    };
    console.log(
      `\n4. Cost at rest: ${rest.instances} idle instances, ${rest.windowS} s window per ` +
        `contender, each in its own process, one after another, measured from ` +
        `${settings.restWarmupS} s after it was ready. libvirtd CPU is read from /proc ` +
        `(pid ${rest.libvirtdPid ?? 'not found'}) and includes anything else using the daemon.`,
    );
    console.table(
      Object.fromEntries(
        rest.rows.map((row) => [
          row.contender,
          {
            'window s': cell(row.windowS, 1),
            'CPU s': cell(row.cpuS, 3),
            'CPU % of a core': cell(row.cpuPercentOfCore, 2),
            'RSS MiB': cell(row.rssMiB),
            'RSS peak MiB': cell(row.rssPeakMiB),
            'libvirtd CPU s': cell(row.libvirtdCpuS, 2),
            'libvirtd % of a core': cell(row.libvirtdCpuPercentOfCore, 2),
            'work in window': Object.entries(row.work)
              .map(([key, value]) => `${value} ${key}`)
              .join(', '),
          },
        ]),
      ),
    );
  }
} catch (error) {
  if (connectionLost === null) throw error;
} finally {
  await removeLiveDomains(settings.setupInflight);
  closing = true;
  await client.close();
}

const libvirtdPidAtEnd = findLibvirtdPid();
if (connectionLost !== null || libvirtdPidAtEnd !== libvirtdPidAtStart) {
  console.error(
    `\nlibvirtd went away during the run (connection: ${connectionLost ?? 'kept'}; pid ` +
      `${libvirtdPidAtStart ?? '?'} → ${libvirtdPidAtEnd ?? '?'}): results are void and were not ` +
      'written. Run again while nothing else restarts libvirtd.',
  );
  process.exit(1);
}

results.totalSeconds = round((performance.now() - began) / 1000);
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(
  new URL('./results/service.json', import.meta.url),
  `${JSON.stringify(results, null, 2)}\n`,
);
console.log(
  `\ntotal ${cell((performance.now() - began) / 1000, 0)} s; written to bench/results/service.json`,
);
