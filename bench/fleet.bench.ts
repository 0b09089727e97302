// A fleet against two control-plane replicas: FLEET_HOSTS simulated hosts (agents as `hvsync
// agent --sim` composes them, many to a process) of FLEET_INSTANCES instances each, writing half
// to one `hvsync server` replica and half to the other, both on one fresh PostgreSQL database.
// Phases: the first sync (every record created), rest (workload off: agent CPU and memory per
// 100 instances), load at a low and at the top rate (transitions committed per second, event →
// visible on the other replica's watch, GET /v1/instances?limit=100 under load, CPU of every
// process), then a control-plane outage and the time the agents take to drain their journals;
// last, the control plane's own ceiling: writer-only hosts (what agents send, without the engine
// and hypervisor behind them) at rising rates, the agents still connected and watching.
//
//   npm run bench:fleet
//   FLEET_HOSTS=1000 FLEET_INSTANCES=100   the fleet (100,000 instances)
//   FLEET_RATE=5000                        top rate: out-of-band operations per second, fleet-wide
//   FLEET_LOW_RATE=FLEET_RATE/5            the rate below saturation
//   FLEET_SECONDS=60  FLEET_REST=60  FLEET_OUTAGE=60   phase lengths, seconds
//   FLEET_PROCESSES=4                      processes the agents are spread over
//   FLEET_JOURNAL_DIR=/dev/shm             the agents' journals off the disk (default: the temp dir)
//   FLEET_CEILING_RATES=2500,5000,7500     writer-only rates for the ceiling ('' skips it)
//   FLEET_WRITER_PROCESSES=2               processes the writer-only hosts are spread over
//   FLEET_AGENT_NICE=0                     the agent processes' nice value (0..19; see the README)
//   FLEET_PROBE_HOSTS=10 FLEET_PROBE_RATE=1  hosts with an agent process each, as deployed, and
//                                          their operations/s each (0 hosts: none)
//   FLEET_GET_EVERY_MS=20                  pause between the GETs that measure the API's latency
//   HVSYNC_BENCH_PG=postgres://user@host:port/db names the server (default: the local one)
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { HvsyncClient } from '../src/cli/client.ts';
import { parseMetricsText, sumOf } from '../src/client/index.ts';
import { AgentProcess, machineBusySeconds, postgresBackends, Replica } from './fleet/fleet.ts';
import type { CommitSample, WorkerReport } from './fleet/messages.ts';
import {
  envNumber,
  MIB,
  processCpuSeconds,
  progress,
  round,
  runQueueWait,
  summarize,
  sumWaits,
} from './service/support.ts';
import type { RunQueueWait } from './service/support.ts';

const HOSTS = envNumber('FLEET_HOSTS', 1000);
const INSTANCES = envNumber('FLEET_INSTANCES', 100);
const TOP_RATE = envNumber('FLEET_RATE', 5000);
const LOW_RATE = envNumber('FLEET_LOW_RATE', TOP_RATE / 5);
const SECONDS = envNumber('FLEET_SECONDS', 60);
const REST_SECONDS = envNumber('FLEET_REST', 60);
const OUTAGE_SECONDS = envNumber('FLEET_OUTAGE', 60);
const PROCESSES = Math.max(1, Math.min(HOSTS, envNumber('FLEET_PROCESSES', 4)));
const SAMPLE_EVERY = envNumber('FLEET_SAMPLE_EVERY', 10);
const CEILING_RATES = (process.env.FLEET_CEILING_RATES ?? '2500,5000,7500')
  .split(',')
  .filter((rate) => rate.trim() !== '')
  .map((rate) => {
    const value = Number(rate);
    if (!Number.isFinite(value) || value <= 0) {
      throw new Error(`FLEET_CEILING_RATES: '${rate}' is not a positive number`);
    }
    return value;
  });
const WRITER_PROCESSES = Math.max(1, envNumber('FLEET_WRITER_PROCESSES', 2));
// On a real fleet each agent has a host of its own and the control plane machines of its own;
// here they share two cores. A positive nice value lets the replicas and PostgreSQL have a core
// first, as they would on their own machines, while the agents still wait behind them.
const AGENT_NICE = Math.min(19, Math.round(envNumber('FLEET_AGENT_NICE', 0)));
// The GETs probe the API's latency, one at a time, on the replica the watch reads. Every 20 ms
// they are about 25 lists of 100 records/s, some 4% of a core on that replica and as much in the
// bench; every 100 ms the watch's latency was the same within the runs' noise.
const GET_EVERY_MS = envNumber('FLEET_GET_EVERY_MS', 20);
const WARMUP_SECONDS = Math.min(10, SECONDS / 4);
const TOKEN = 'fleet-bench-admin-token';
const adminUrl = process.env.HVSYNC_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/postgres';

const lines: string[] = [];
function say(line: string): void {
  lines.push(line);
  console.log(line);
}
const fmt = (value: number, digits = 1): string =>
  Number.isFinite(value) ? String(round(value, digits)) : '—';

/** Receive time (epoch ms) of each uuid/version a replica's full watch delivers, while asked. */
class Watcher {
  revisions = 0;
  recording = false;
  readonly received = new Map<string, number>();
  private readonly abort = new AbortController();
  private running: Promise<void> = Promise.resolve();

  constructor(private readonly client: HvsyncClient) {}

  async start(): Promise<void> {
    const stream = await this.client.watch({ signal: this.abort.signal });
    this.running = (async () => {
      try {
        for await (const message of stream) {
          if (message.kind === 'end') return;
          this.revisions += 1;
          if (this.recording) {
            const { uuid, version } = message.change.instance;
            this.received.set(`${uuid}/${version}`, Date.now());
          }
        }
      } catch {
        // The replica went away (the outage phase); a new watcher follows it back.
      }
    })();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
  }
}

interface CpuReading {
  readonly at: number;
  readonly replicas: number[];
  readonly agents: number;
  readonly probes: number;
  readonly postgres: number;
  readonly bench: number;
  /** Lifecycle events the simulated hosts emitted so far. */
  readonly events: number;
  readonly machine: number;
  /** Each part's main threads' wait for a CPU so far, by the names cpuShares gives them. */
  readonly waits: Record<string, RunQueueWait | null>;
}

const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
const dbName = `hvsync_bench_fleet_${process.pid}`;
await admin.unsafe(`CREATE DATABASE ${dbName}`);
const dbUrl = new URL(adminUrl);
dbUrl.pathname = `/${dbName}`;
const replicaArgs = [
  '--db',
  dbUrl.toString(),
  '--token',
  TOKEN,
  '--max-watchers',
  String(HOSTS + 100),
  '--log-level',
  'info',
];
const replicas = [new Replica(replicaArgs), new Replica(replicaArgs)];
const workers = Array.from({ length: PROCESSES }, () => new AgentProcess('agents', AGENT_NICE));
// A few more hosts, each with an agent process of its own at the default priority, as on a real
// host (its event loop its own), the fleet behind them: their events are timed apart, every one.
const PROBE_HOSTS = Math.round(envNumber('FLEET_PROBE_HOSTS', 10));
const PROBE_RATE = envNumber('FLEET_PROBE_RATE', 1);
const probes = Array.from({ length: PROBE_HOSTS }, () => new AgentProcess('agents'));
/** Commit samples the probe hosts handed over, for the phase under way. */
let probeCollected: CommitSample[] = [];

async function probeReports(): Promise<WorkerReport[]> {
  const all = await Promise.all(probes.map((probe) => probe.report()));
  for (const report of all) for (const sample of report.samples) probeCollected.push(sample);
  return all;
}

async function setProbeRate(perHost: number): Promise<void> {
  const tickMs = workloadTick(perHost);
  await Promise.all(probes.map((probe) => probe.ask({ kind: 'rate', perHost, tickMs })));
}

/**
 * How often a host's workload wakes up: often enough to keep its rate, rarely enough that a
 * thousand hosts' timers do not become the load.
 */
function workloadTick(perHost: number): number {
  return perHost > 0 ? Math.max(50, Math.min(1000, 1000 / perHost)) : 0;
}
const writers: AgentProcess[] = [];
/** The processes the phase under way loads and reads: the agents, or the writer-only hosts. */
let group = { name: 'agents', processes: workers };

/** Commit samples the agents handed over with their reports, for the phase under way. */
let collected: CommitSample[] = [];

async function reports(): Promise<WorkerReport[]> {
  const all = await Promise.all(group.processes.map((worker) => worker.report()));
  for (const report of all) for (const sample of report.samples) collected.push(sample);
  return all;
}

async function cpuNow(): Promise<CpuReading> {
  const all = await reports();
  const probed = await probeReports();
  const backends = postgresBackends(dbName);
  const replicaWait = (i: number): RunQueueWait | null => {
    const pid = replicas[i]!.pid;
    return pid === undefined ? null : runQueueWait(pid);
  };
  return {
    at: Date.now(),
    replicas: replicas.map((replica) =>
      replica.pid === undefined ? 0 : processCpuSeconds(replica.pid),
    ),
    agents: all.reduce((sum, report) => sum + report.cpuMs / 1000, 0),
    probes: probed.reduce((sum, report) => sum + report.cpuMs / 1000, 0),
    postgres: backends.cpuSeconds,
    bench: process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6,
    events: all.reduce((sum, report) => sum + report.events, 0),
    machine: machineBusySeconds(),
    waits: {
      'replica A': replicaWait(0),
      'replica B': replicaWait(1),
      [group.name]: sumWaits(all.map((report) => report.runQueue)),
      postgres: backends.runQueue,
    },
  };
}

/**
 * How long each part's main threads waited for a CPU between two readings: in all (summed over
 * its processes, per cent of the time between the readings) and per time put on a CPU.
 */
function waitsBetween(from: CpuReading, to: CpuReading): Record<string, RunQueueShare> {
  const seconds = (to.at - from.at) / 1000;
  const out: Record<string, RunQueueShare> = {};
  for (const [name, before] of Object.entries(from.waits)) {
    const after = to.waits[name];
    if (before === null || after === null || after === undefined) continue;
    const waited = after.waitSeconds - before.waitSeconds;
    const runs = after.runs - before.runs;
    // A process that ended between the readings (a PostgreSQL backend) takes its wait with it.
    if (waited < 0 || runs <= 0) continue;
    out[name] = { percent: (waited / seconds) * 100, perRunMs: (waited / runs) * 1000 };
  }
  return out;
}

interface RunQueueShare {
  readonly percent: number;
  readonly perRunMs: number;
}

function waitsLine(waits: Record<string, RunQueueShare>): string {
  return Object.entries(waits)
    .map(([name, w]) => `${name} ${fmt(w.percent, 0)}% (${fmt(w.perRunMs, 2)} ms a time)`)
    .join(', ');
}

/** Per cent of one core each part used between two readings. */
function cpuShares(from: CpuReading, to: CpuReading): Record<string, number> {
  const seconds = (to.at - from.at) / 1000;
  const share = (a: number, b: number): number => ((b - a) / seconds) * 100;
  const ours =
    to.replicas.reduce((a, b) => a + b, 0) -
    from.replicas.reduce((a, b) => a + b, 0) +
    (to.agents - from.agents) +
    (to.probes - from.probes) +
    (to.postgres - from.postgres) +
    (to.bench - from.bench);
  return {
    'replica A': share(from.replicas[0]!, to.replicas[0]!),
    'replica B': share(from.replicas[1]!, to.replicas[1]!),
    [group.name]: share(from.agents, to.agents),
    ...(PROBE_HOSTS > 0 ? { 'probe hosts': share(from.probes, to.probes) } : {}),
    postgres: share(from.postgres, to.postgres),
    'bench (watchers, GETs)': share(from.bench, to.bench),
    "the machine's other work": share(ours, to.machine - from.machine),
  };
}

function sharesLine(shares: Record<string, number>): string {
  return Object.entries(shares)
    .map(([name, value]) => `${name} ${fmt(value, 0)}%`)
    .join(', ');
}

function loopBusy(all: readonly WorkerReport[]): string {
  return all.map((report) => `${Math.round(report.loopBusy * 100)}%`).join(' ');
}

/** Waits (at most `limitMs`) until no agent holds unsent observations; seconds taken, or NaN. */
async function drained(what: string, limitMs: number): Promise<number> {
  const from = Date.now();
  let last = 0;
  for (;;) {
    const all = await reports();
    const backlog = all.reduce((sum, report) => sum + report.backlog, 0);
    if (backlog === 0) return (Date.now() - from) / 1000;
    if (Date.now() - from > limitMs) return Number.NaN;
    if (Date.now() - last >= 5_000) {
      last = Date.now();
      const hosts = all.reduce((sum, report) => sum + report.hostsWithBacklog, 0);
      progress(
        `   ${what}: ${Math.round((Date.now() - from) / 1000)} s, backlog ${backlog} on ${hosts} hosts`,
      );
    }
    await sleep(250);
  }
}

/** Each host's own token, issued through the admin API as `hvsync hosts add` would. */
async function issueHostTokens(
  client: HvsyncClient,
  hosts: readonly string[],
): Promise<Map<string, string>> {
  const tokens = new Map<string, string>();
  for (let i = 0; i < hosts.length; i += 50) {
    const issued = await Promise.all(
      hosts.slice(i, i + 50).map((host) => client.issueToken('host', host)),
    );
    for (const credential of issued) tokens.set(credential.name, credential.token);
  }
  return tokens;
}

/** The replicas' own timing of agents' writes, summed over both: sums (seconds) and counts. */
type ReplicaTimes = Record<'request' | 'queued' | 'commit' | 'writes', { sum: number; n: number }>;

async function replicaTimes(clients: readonly HvsyncClient[]): Promise<ReplicaTimes> {
  const times: ReplicaTimes = {
    request: { sum: 0, n: 0 },
    queued: { sum: 0, n: 0 },
    commit: { sum: 0, n: 0 },
    writes: { sum: 0, n: 0 },
  };
  const names = {
    request: 'hvsync_http_request_duration_seconds',
    queued: 'hvsync_store_write_queue_seconds',
    commit: 'hvsync_store_commit_seconds',
    writes: 'hvsync_store_commit_writes',
  } as const;
  const route = { method: 'POST', route: '/v1/hosts/:host/writes' };
  for (const client of clients) {
    const samples = parseMetricsText(await client.metricsText());
    for (const key of Object.keys(names) as (keyof ReplicaTimes)[]) {
      const match = key === 'request' ? route : {};
      times[key].sum += sumOf(samples, `${names[key]}_sum`, match) ?? 0;
      times[key].n += sumOf(samples, `${names[key]}_count`, match) ?? 0;
    }
  }
  return times;
}

/** Means over a phase: ms for the times, writes per commit for `writes`. */
function replicaMeans(from: ReplicaTimes, to: ReplicaTimes): Record<keyof ReplicaTimes, number> {
  const mean = (key: keyof ReplicaTimes, scale: number): number =>
    ((to[key].sum - from[key].sum) / Math.max(1, to[key].n - from[key].n)) * scale;
  return {
    request: mean('request', 1000),
    queued: mean('queued', 1000),
    commit: mean('commit', 1000),
    writes: mean('writes', 1),
  };
}

async function setRate(opsPerSecond: number): Promise<void> {
  const perHost = opsPerSecond / HOSTS;
  const tickMs = workloadTick(perHost);
  await Promise.all(group.processes.map((worker) => worker.ask({ kind: 'rate', perHost, tickMs })));
}

/** Sampled commits matched with the other replica's watch (see CommitSample). */
interface Matched {
  /** Event → the commit's event on the watch of the replica the agent did not write to. */
  readonly latency: ReturnType<typeof summarize>;
  /**
   * The same, apart: events that came while nothing of their instance was unanswered, and events
   * that came while an earlier write of their instance was (they wait for its answer first).
   */
  readonly alone: ReturnType<typeof summarize>;
  readonly queued: ReturnType<typeof summarize>;
  /** Event → the agent holds the control plane's answer; answer → the other replica's watch. */
  readonly acked: ReturnType<typeof summarize>;
  readonly afterAck: ReturnType<typeof summarize>;
  readonly unmatched: number;
}

function matchSamples(
  samples: readonly CommitSample[],
  from: number,
  watchers: readonly Watcher[],
): Matched {
  const latencies: number[] = [];
  const alone: number[] = [];
  const queued: number[] = [];
  const acked: number[] = [];
  const afterAck: number[] = [];
  let unmatched = 0;
  for (const [uuid, version, observedAt, , wroteTo, ackedAt, behind] of samples) {
    if (observedAt < from) continue;
    const seen = watchers[1 - wroteTo]!.received.get(`${uuid}/${version}`);
    if (seen === undefined) {
      unmatched += 1;
      continue;
    }
    latencies.push(seen - observedAt);
    (behind ? queued : alone).push(seen - observedAt);
    acked.push(ackedAt - observedAt);
    afterAck.push(seen - ackedAt);
  }
  return {
    latency: summarize(latencies),
    alone: summarize(alone),
    queued: summarize(queued),
    acked: summarize(acked),
    afterAck: summarize(afterAck),
    unmatched,
  };
}

interface PhaseResult extends Matched {
  readonly name: string;
  readonly offered: number;
  readonly committedPerSecond: number;
  readonly eventsPerSecond: number;
  /** Event → other replica's watch for the probe hosts' events; null without probe hosts. */
  readonly probe: Matched | null;
  /** The replicas' means: a writes request, a write's wait for its transaction, a commit. */
  readonly replica: Record<keyof ReplicaTimes, number>;
  readonly get: ReturnType<typeof summarize>;
  readonly shares: Record<string, number>;
  /** Each part's wait for a CPU over the window (see waitsBetween). */
  readonly waits: Record<string, RunQueueShare>;
  readonly backlogAtEnd: number;
  readonly load: number;
  /** Mean event loop utilisation of the agent processes over the window. */
  readonly loopBusy: number;
}

async function loadPhase(
  name: string,
  rate: number,
  watchers: readonly Watcher[],
  /** The replicas' clients; GETs go to the second. */
  replicaClients: readonly HvsyncClient[],
): Promise<PhaseResult> {
  const getClient = replicaClients[1]!;
  say(`-- ${name}: ${rate} operations/s for ${SECONDS} s`);
  // The probe hosts run beside the agents, not beside the writer-only hosts of the ceiling.
  const probing = PROBE_HOSTS > 0 && group.processes === workers;
  await setRate(rate);
  if (probing) await setProbeRate(PROBE_RATE);
  await sleep(WARMUP_SECONDS * 1000);
  for (const watcher of watchers) {
    watcher.received.clear();
    watcher.recording = true;
  }
  const fromCpu = await cpuNow();
  const fromTimes = await replicaTimes(replicaClients);
  collected = [];
  probeCollected = [];
  const fromRevisions = watchers[1]!.revisions;
  const getLatencies: number[] = [];
  let running = true;
  const getter = (async () => {
    while (running) {
      const started = performance.now();
      await getClient.listInstances({ limit: 100 });
      getLatencies.push(performance.now() - started);
      await sleep(GET_EVERY_MS);
    }
  })();
  const window = SECONDS - WARMUP_SECONDS;
  let lastRevisions = fromRevisions;
  let lastAt = Date.now();
  const loopBusyAll: number[] = [];
  for (let elapsed = 0; elapsed < window; elapsed += 5) {
    const step = Math.min(5, window - elapsed);
    await sleep(step * 1000);
    const now = watchers[1]!.revisions;
    const seconds = (Date.now() - lastAt) / 1000;
    lastAt = Date.now();
    const latest = await reports();
    const backlog = latest.reduce((sum, report) => sum + report.backlog, 0);
    loopBusyAll.push(...latest.map((report) => report.loopBusy));
    progress(
      `   ${name}: ${elapsed + step}/${window} s, ${Math.round((now - lastRevisions) / seconds)} commits/s, ` +
        `backlog ${backlog}, ${group.name}' event loops busy ${loopBusy(latest)}, ` +
        `load ${loadavg()[0]!.toFixed(1)}`,
    );
    lastRevisions = now;
  }
  const toCpu = await cpuNow();
  const replica = replicaMeans(fromTimes, await replicaTimes(replicaClients));
  const committed = watchers[1]!.revisions - fromRevisions;
  running = false;
  await getter;
  await setRate(0);
  if (probing) await setProbeRate(0);
  await sleep(2_000); // let the last commits reach the watchers
  const all = await reports();
  await probeReports();
  const backlog = all.reduce((sum, report) => sum + report.backlog, 0);
  for (const watcher of watchers) watcher.recording = false;
  // Samples: taken by the agents from commits they made while the watchers were recording.
  const samples = collected;
  collected = [];
  const matched = matchSamples(samples, fromCpu.at, watchers);
  const probe = probing ? matchSamples(probeCollected, fromCpu.at, watchers) : null;
  probeCollected = [];
  for (const watcher of watchers) watcher.received.clear();
  const catchUp = await drained(`${name}, catching up`, 300_000);
  say(`   backlog at the end of the phase: ${backlog} observations, sent ${fmt(catchUp)} s later`);
  const result: PhaseResult = {
    name,
    offered: rate,
    committedPerSecond: committed / ((toCpu.at - fromCpu.at) / 1000),
    eventsPerSecond: (toCpu.events - fromCpu.events) / ((toCpu.at - fromCpu.at) / 1000),
    ...matched,
    probe,
    replica,
    get: summarize(getLatencies),
    shares: cpuShares(fromCpu, toCpu),
    waits: waitsBetween(fromCpu, toCpu),
    backlogAtEnd: backlog,
    load: loadavg()[0]!,
    loopBusy: loopBusyAll.reduce((a, b) => a + b, 0) / Math.max(1, loopBusyAll.length),
  };
  say(
    `   hypervisor events ${fmt(result.eventsPerSecond, 0)}/s, ` +
      `committed ${fmt(result.committedPerSecond, 0)}/s; event → other replica's watch ` +
      `p50 ${fmt(result.latency.p50)} ms p99 ${fmt(result.latency.p99)} ms ` +
      `(${result.latency.n} samples, ${result.unmatched} unmatched); GET p99 ${fmt(result.get.p99)} ms (${result.get.n} GETs)`,
  );
  say(
    `   events alone on their instance p50 ${fmt(result.alone.p50)} ms p99 ` +
      `${fmt(result.alone.p99)} ms (${result.alone.n}); events behind an unanswered write of their ` +
      `instance p50 ${fmt(result.queued.p50)} ms p99 ${fmt(result.queued.p99)} ms (${result.queued.n})`,
  );
  say(
    `   of which event → answer at the ${group.name} p50 ${fmt(result.acked.p50)} ms p99 ` +
      `${fmt(result.acked.p99)} ms, answer → other replica's watch p50 ` +
      `${fmt(result.afterAck.p50)} ms p99 ${fmt(result.afterAck.p99)} ms`,
  );
  if (probe !== null) {
    say(
      `   probe hosts (${PROBE_HOSTS}, an agent process each, ${PROBE_RATE} operations/s each): ` +
        `event → other replica's watch p50 ${fmt(probe.latency.p50)} ms p99 ` +
        `${fmt(probe.latency.p99)} ms (${probe.latency.n} events, ${probe.unmatched} unmatched); ` +
        `event → answer p50 ${fmt(probe.acked.p50)} ms p99 ${fmt(probe.acked.p99)} ms`,
    );
  }
  say(
    `   at the replicas, means: a writes request ${fmt(replica.request)} ms, of which each write ` +
      `waited ${fmt(replica.queued)} ms for its transaction, which committed in ` +
      `${fmt(replica.commit)} ms (${fmt(replica.writes)} writes each)`,
  );
  say(
    `   CPU (% of one core): ${sharesLine(result.shares)}; ${group.name}' event loops ` +
      `${fmt(result.loopBusy * 100, 0)}% busy; load ${fmt(result.load)}`,
  );
  if (Object.keys(result.waits).length > 0) {
    say(`   waiting for a CPU (main threads): ${waitsLine(result.waits)}`);
  }
  return result;
}

let failed = false;
try {
  say(
    `fleet: ${HOSTS} hosts × ${INSTANCES} instances = ${HOSTS * INSTANCES} instances in ` +
      `${PROCESSES} agent processes${AGENT_NICE > 0 ? ` at nice ${AGENT_NICE}` : ''}, 2 replicas ` +
      'on PostgreSQL; ' +
      `${cpus().length} × ${cpus()[0]?.model.trim()}, ${Math.round(totalmem() / 2 ** 30)} GiB, ` +
      `Node ${process.version}; load average ${loadavg()
        .map((value) => value.toFixed(1))
        .join(' ')} at the start`,
  );
  const urls = await Promise.all(replicas.map((replica) => replica.start()));
  const clients = urls.map((server) => new HvsyncClient({ server, token: TOKEN, keepAlive: true }));

  // The processes' own memory before any agent, so that RSS per instance is the agents' share.
  const baseRss = (await reports()).reduce((sum, report) => sum + report.rss, 0);

  const hostNames = Array.from({ length: HOSTS }, (_, i) => `fleet-${String(i).padStart(5, '0')}`);
  const probeNames = probes.map((_, i) => `probe-${String(i).padStart(3, '0')}`);
  const hostTokens = await issueHostTokens(clients[0]!, [...hostNames, ...probeNames]);

  // ---- first sync: every agent lists its (empty) records and creates its instances' ----------
  const started = Date.now();
  const firstSync = Promise.all(
    workers.map((worker, w) =>
      worker.ask({
        kind: 'start',
        hosts: hostNames
          .map((host, i) => [host, i % 2, hostTokens.get(host)!] as const)
          .filter((_, i) => i % PROCESSES === w),
        servers: urls,
        instances: INSTANCES,
        sampleEvery: SAMPLE_EVERY,
      }),
    ),
  );
  let synced = false;
  void firstSync.then(() => (synced = true));
  while (!synced) {
    await Promise.race([firstSync, sleep(5_000)]);
    const all = await reports();
    progress(
      `   first sync: ${all.reduce((sum, report) => sum + report.agents, 0)}/${HOSTS} agents ` +
        `started after ${Math.round((Date.now() - started) / 1000)} s`,
    );
  }
  const syncSeconds = (Date.now() - started) / 1000;
  say(
    `first sync: ${HOSTS * INSTANCES} records created in ${fmt(syncSeconds)} s ` +
      `(${fmt((HOSTS * INSTANCES) / syncSeconds, 0)} creates/s)`,
  );

  // The probe hosts, started once the fleet's records are there.
  await Promise.all(
    probes.map((probe, i) =>
      probe.ask({
        kind: 'start',
        hosts: [[probeNames[i]!, i % 2, hostTokens.get(probeNames[i]!)!]],
        servers: urls,
        instances: INSTANCES,
        sampleEvery: 1,
      }),
    ),
  );

  // ---- rest: no workload ------------------------------------------------------------------
  await sleep(2_000);
  const restFrom = await cpuNow();
  await sleep(REST_SECONDS * 1000);
  const restTo = await cpuNow();
  const restReports = await reports();
  const rss = restReports.reduce((sum, report) => sum + report.rss, 0);
  const restShares = cpuShares(restFrom, restTo);
  const per100 = (HOSTS * INSTANCES) / 100;
  const agentCpuPer100 = restShares.agents! / per100;
  const agentRssPer100 = (rss - baseRss) / per100 / MIB;
  say(
    `rest (${REST_SECONDS} s, no workload): agents ${fmt(restShares.agents!, 1)}% of a core and ` +
      `${fmt(rss / MIB, 0)} MiB RSS in all (${fmt(baseRss / MIB, 0)} MiB before any agent) → ` +
      `per 100 instances ${fmt(agentCpuPer100, 3)}% CPU, ${fmt(agentRssPer100, 2)} MiB RSS`,
  );
  say(`   CPU (% of one core): ${sharesLine(restShares)}`);

  // ---- load ---------------------------------------------------------------------------------
  const watchers = clients.map((client) => new Watcher(client));
  await Promise.all(watchers.map((watcher) => watcher.start()));
  const low = await loadPhase('low rate', LOW_RATE, watchers, clients);
  const top = await loadPhase('top rate', TOP_RATE, watchers, clients);
  await Promise.all(watchers.map((watcher) => watcher.stop()));

  // ---- outage -------------------------------------------------------------------------------
  say(`-- outage: both replicas stopped for ${OUTAGE_SECONDS} s under the low rate`);
  await setRate(LOW_RATE);
  await Promise.all(replicas.map((replica) => replica.stop()));
  const outageStart = Date.now();
  while (Date.now() - outageStart < OUTAGE_SECONDS * 1000) {
    await sleep(Math.min(5_000, OUTAGE_SECONDS * 1000 - (Date.now() - outageStart)));
    const all = await reports();
    progress(
      `   outage: ${Math.round((Date.now() - outageStart) / 1000)} s, journal backlog ` +
        `${all.reduce((sum, report) => sum + report.backlog, 0)}`,
    );
  }
  await setRate(0);
  const backlogPeak = (await reports()).reduce((sum, report) => sum + report.backlog, 0);
  await Promise.all(replicas.map((replica) => replica.start()));
  const drainSeconds = await drained('drain', 600_000);
  say(
    `outage: ${backlogPeak} journalled observations at the restart (workload stopped then); ` +
      (Number.isNaN(drainSeconds)
        ? `NOT drained after 600 s (${(await reports()).reduce((sum, report) => sum + report.backlog, 0)} left)`
        : `every agent's backlog 0 after ${fmt(drainSeconds)} s`),
  );

  // ---- the control plane's ceiling -----------------------------------------------------------
  const ceiling: PhaseResult[] = [];
  if (CEILING_RATES.length > 0) {
    say(
      `-- control-plane ceiling: ${HOSTS} writer-only hosts × ${INSTANCES} instances in ` +
        `${WRITER_PROCESSES} processes; the agents stay connected`,
    );
    for (let i = 0; i < WRITER_PROCESSES; i += 1) writers.push(new AgentProcess('writers'));
    group = { name: 'writers', processes: writers };
    const ceilingHosts = hostNames.map((host) => host.replace('fleet-', 'ceiling-'));
    const ceilingTokens = await issueHostTokens(clients[0]!, ceilingHosts);
    const createdFrom = Date.now();
    await Promise.all(
      writers.map((writer, w) =>
        writer.ask({
          kind: 'start',
          hosts: ceilingHosts
            .map((host, i) => [host, i % 2, ceilingTokens.get(host)!] as const)
            .filter((_, i) => i % WRITER_PROCESSES === w),
          servers: urls,
          instances: INSTANCES,
          sampleEvery: SAMPLE_EVERY,
        }),
      ),
    );
    say(
      `   ${HOSTS * INSTANCES} more records created, ${INSTANCES} to a request, in ` +
        `${fmt((Date.now() - createdFrom) / 1000)} s`,
    );
    const ceilingWatchers = clients.map((client) => new Watcher(client));
    await Promise.all(ceilingWatchers.map((watcher) => watcher.start()));
    for (const rate of CEILING_RATES) {
      ceiling.push(await loadPhase(`ceiling ${rate}`, rate, ceilingWatchers, clients));
    }
    await Promise.all(ceilingWatchers.map((watcher) => watcher.stop()));
    group = { name: 'agents', processes: workers };
  }

  // ---- the table -----------------------------------------------------------------------------
  const others = "the machine's other work";
  const busiest = Object.entries(top.shares)
    .filter(([name]) => name !== others)
    .sort((x, y) => y[1] - x[1]);
  const total = busiest.reduce((sum, [, value]) => sum + value, 0);
  const ratio = (phase: PhaseResult): number => phase.committedPerSecond / phase.eventsPerSecond;
  const saturated = ratio(top) < 0.9 * ratio(low) || top.latency.p99 > 3 * low.latency.p99;
  const rows: [string, string][] = [
    ['instances (hosts × per host)', `${HOSTS * INSTANCES} (${HOSTS} × ${INSTANCES})`],
    ['first sync (all records created)', `${fmt(syncSeconds)} s`],
    [
      `transitions committed/s at ${LOW_RATE} / ${TOP_RATE} operations/s`,
      `${fmt(low.committedPerSecond, 0)} / ${fmt(top.committedPerSecond, 0)}`,
    ],
    [
      'event → other replica watch p50 / p99, low rate',
      `${fmt(low.latency.p50)} / ${fmt(low.latency.p99)} ms`,
    ],
    [
      'event → other replica watch p50 / p99, top rate',
      `${fmt(top.latency.p50)} / ${fmt(top.latency.p99)} ms`,
    ],
    ...(low.probe === null
      ? []
      : [
          [
            `probe hosts (${PROBE_HOSTS}, an agent process each, ${PROBE_RATE} operations/s each) ` +
              'event → other replica watch p50 / p99, low / top rate',
            `${fmt(low.probe.latency.p50)} / ${fmt(low.probe.latency.p99)} ms; ` +
              `${fmt(top.probe!.latency.p50)} / ${fmt(top.probe!.latency.p99)} ms`,
          ] as [string, string],
        ]),
    [
      'of which events alone on their instance / behind its unanswered write, low rate',
      `${fmt(low.alone.p50)} / ${fmt(low.alone.p99)} ms (${low.alone.n}); ` +
        `${fmt(low.queued.p50)} / ${fmt(low.queued.p99)} ms (${low.queued.n})`,
    ],
    [
      'replicas at the low rate, means: writes request; write waits for its transaction; commit',
      `${fmt(low.replica.request)} ms; ${fmt(low.replica.queued)} ms; ${fmt(low.replica.commit)} ` +
        `ms (${fmt(low.replica.writes)} writes each)`,
    ],
    [
      `GET /v1/instances?limit=100 p99, low / top rate (one at a time, ${GET_EVERY_MS} ms apart)`,
      `${fmt(low.get.p99)} / ${fmt(top.get.p99)} ms`,
    ],
    [
      `backlog drain after a ${OUTAGE_SECONDS} s outage`,
      `${Number.isNaN(drainSeconds) ? 'not within 600 s' : `${fmt(drainSeconds)} s`} (${backlogPeak} entries)`,
    ],
    ['agent CPU at rest per 100 instances', `${fmt(agentCpuPer100, 3)}% of a core`],
    ["agent RSS per 100 instances (processes' own base left out)", `${fmt(agentRssPer100, 2)} MiB`],
    ['load average (1 min) at the top rate', fmt(top.load)],
    ...(Object.keys(low.waits).length === 0
      ? []
      : [
          [
            'waiting for a CPU at the low rate (main threads, % of the time; a wait each time put on a CPU)',
            waitsLine(low.waits),
          ] as [string, string],
        ]),
    ...ceiling.map((phase): [string, string] => [
      `control plane alone, writes offered ${phase.offered}/s: committed/s; sent → other ` +
        'replica watch p50 / p99; GET p99',
      `${fmt(phase.committedPerSecond, 0)}/s; ${fmt(phase.latency.p50)} / ` +
        `${fmt(phase.latency.p99)} ms; ${fmt(phase.get.p99)} ms (load ${fmt(phase.load)})`,
    ]),
  ];
  mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
  writeFileSync(
    new URL('./results/fleet.json', import.meta.url),
    `${JSON.stringify({ lines, rows: Object.fromEntries(rows) }, null, 2)}\n`,
  );
  console.log('');
  console.log('| measure | result |');
  console.log('|---|---|');
  for (const [label, value] of rows) console.log(`| ${label} | ${value} |`);
  console.log('');
  const agentCpuPerProcess = top.shares.agents! / PROCESSES;
  const verdict = [
    `At the top rate this fleet used ${fmt(total, 0)}% of one core in all (the machine has ` +
      `${cpus().length * 100}%; its other work took ${fmt(top.shares[others]!, 0)}%): ` +
      `${busiest.map(([name, value]) => `${name} ${fmt(value, 0)}%`).join(', ')}.`,
    saturated
      ? `Saturated at the top rate: commits per hypervisor event fell from ${fmt(ratio(low), 2)} ` +
        `to ${fmt(ratio(top), 2)} or the latency p99 more than tripled.`
      : 'The committed rate followed the hypervisor events: not saturated at the top rate.',
    top.loopBusy > 0.8 && agentCpuPerProcess < 60
      ? `The agent processes' event loops were ${fmt(top.loopBusy * 100, 0)}% busy on ` +
        `${fmt(agentCpuPerProcess, 0)}% of a core each: runnable but waiting for a core ` +
        `(load ${fmt(top.load)} on ${cpus().length}), ${HOSTS / PROCESSES} hosts' engines, ` +
        'simulators and journals to a thread.'
      : `Agent event loops ${fmt(top.loopBusy * 100, 0)}% busy, ${fmt(agentCpuPerProcess, 0)}% ` +
        'of a core per agent process.',
  ];
  for (const line of verdict) say(line);
  console.log('written to bench/results/fleet.json');
} catch (error) {
  failed = true;
  console.error(error);
} finally {
  await Promise.all([...workers, ...probes, ...writers].map((worker) => worker.stop()));
  await Promise.all(replicas.map((replica) => replica.stop()));
  await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await admin.end({ timeout: 5 });
}
process.exit(failed ? 1 : 0);
