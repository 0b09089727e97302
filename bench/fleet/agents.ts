// One process of the fleet benchmark's simulated hosts: each host is an agent as `hvsync agent
// --sim` composes it (its own simulated hypervisor, outage journal, RemoteStore and SyncEngine),
// many side by side in one process. The parent drives it over IPC (see messages.ts) and reads
// back its CPU time, memory, journal backlog and a sample of commits for the latency match.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Journal, RemoteStore } from '../../src/agent/index.ts';
import { HvsyncClient } from '../../src/cli/client.ts';
import type { InstanceWrite, WriteResult } from '../../src/store/index.ts';
import { SyncEngine } from '../../src/sync/index.ts';
import { SimDriver, SimHypervisor } from '../../src/virt/index.ts';
import { runQueueWait } from '../service/support.ts';
import type { CommitSample, WorkerReport } from './messages.ts';
import { serveParent } from './worker.ts';

interface Agent {
  readonly host: string;
  readonly sim: SimHypervisor;
  readonly driver: SimDriver;
  readonly remote: RemoteStore;
  readonly engine: SyncEngine;
  readonly journal: Journal;
}

const logger = pino({ level: process.env.FLEET_AGENT_LOG ?? 'silent' });
// Journals on the disk by default, as on a host; FLEET_JOURNAL_DIR=/dev/shm takes the fsyncs out.
const dir = mkdtempSync(join(process.env.FLEET_JOURNAL_DIR ?? tmpdir(), 'hvsync-fleet-'));
let elu = performance.eventLoopUtilization();
const agents: Agent[] = [];
let samples: CommitSample[] = [];
let sampleEvery = 10;
let counter = 0;
// When the agent last had an answer for each instance's write: an event observed before it came
// while that write was unanswered. One entry per instance of this process's hosts.
const answeredAt = new Map<string, number>();

function seedOf(host: string): number {
  let hash = 2166136261;
  for (let i = 0; i < host.length; i += 1) hash = Math.imul(hash ^ host.charCodeAt(i), 16777619);
  return hash >>> 0;
}

async function startOne(
  host: string,
  server: string,
  serverIndex: number,
  token: string,
  instances: number,
): Promise<void> {
  const sim = new SimHypervisor({ hostname: host, instances, seed: seedOf(host) });
  const driver = new SimDriver(sim);
  await driver.connect();
  const journal = Journal.open(join(dir, `${host}.journal`), { host, maxEntries: 100_000 });
  const client = new HvsyncClient({ server, token, timeoutMs: 10_000, keepAlive: true });
  const remote = new RemoteStore({ client, host, journal, logger, retryMaxMs: 2_000 });
  // Every commit the control plane acknowledged for an event: its version and the event's time,
  // sampled, so the parent can match it with the other replica's watch.
  const write = remote.write.bind(remote);
  remote.write = async (change: InstanceWrite): Promise<WriteResult> => {
    const result = await write(change);
    const now = Date.now();
    const previousAnswer = answeredAt.get(change.uuid) ?? 0;
    answeredAt.set(change.uuid, now);
    if (result.ok && change.transition !== undefined && ++counter % sampleEvery === 0) {
      samples.push([
        result.instance.uuid,
        result.instance.version,
        change.transition.observedAt,
        change.transition.to,
        serverIndex,
        now,
        previousAnswer > change.transition.observedAt ? 1 : 0,
      ]);
    }
    return result;
  };
  await remote.start();
  const engine = new SyncEngine({
    driver,
    store: remote,
    host,
    policy: 'observe',
    reconcileIntervalMs: 300_000,
    logger,
  });
  await engine.start();
  agents.push({ host, sim, driver, remote, engine, journal });
}

function report(): WorkerReport {
  const cpu = process.cpuUsage();
  let backlog = 0;
  let hostsWithBacklog = 0;
  let reachable = 0;
  let events = 0;
  for (const agent of agents) {
    events += agent.sim.stats.eventsEmitted;
    const stats = agent.remote.stats;
    backlog += stats.backlog;
    if (stats.backlog > 0) hostsWithBacklog += 1;
    if (stats.reachable) reachable += 1;
  }
  // Busy share of the event loop since the last report: near 1 with little CPU time means the
  // thread waits in synchronous calls (the journals' fsyncs), not in JavaScript.
  const loop = performance.eventLoopUtilization(elu);
  elu = performance.eventLoopUtilization();
  const out: WorkerReport = {
    loopBusy: loop.utilization,
    kind: 'report',
    runQueue: runQueueWait('self'),
    agents: agents.length,
    cpuMs: (cpu.user + cpu.system) / 1000,
    rss: process.memoryUsage().rss,
    backlog,
    hostsWithBacklog,
    reachable,
    events,
    samples,
  };
  samples = [];
  return out;
}

serveParent({
  sampleEvery: (n) => (sampleEvery = n),
  startHost: startOne,
  setRate(perHost, tickMs) {
    for (const agent of agents) {
      if (perHost > 0) {
        agent.sim.startWorkload({ ratePerSecond: perHost, tickMs, leaveActedOnMs: 0 });
      } else agent.sim.stopWorkload();
    }
  },
  report,
  async stop() {
    await Promise.all(
      agents.map(async (agent) => {
        agent.sim.stopWorkload();
        await agent.engine.stop();
        await agent.driver.close();
        await agent.remote.close();
        agent.journal.close();
        agent.sim.close();
      }),
    );
    rmSync(dir, { recursive: true, force: true });
  },
});
