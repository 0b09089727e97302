// One process of the fleet benchmark's control-plane ceiling: each host is only what an agent
// sends, without a hypervisor or an engine behind it. It flips its instances' power state at the
// asked rate with the writes an agent makes for an out-of-band change (conditional on the version,
// with the transition and a journal seq), one request in flight per host, everything that came
// up meanwhile in the next. On a real fleet every agent has a machine of its own; here the agents'
// own work would take the cores the control plane needs, so this measures what the replicas and
// PostgreSQL sustain with the writers' cost shown beside them.
import { createHash, randomUUID } from 'node:crypto';
import { HvsyncClient } from '../../src/cli/client.ts';
import type { ApiAgentWrite } from '../../src/server/index.ts';
import { instanceFields } from '../../test/support/records.ts';
import { runQueueWait } from '../service/support.ts';
import type { CommitSample, WorkerReport } from './messages.ts';
import { serveParent } from './worker.ts';

interface Instance {
  version: number;
  running: boolean;
}

interface Host {
  readonly name: string;
  readonly client: HvsyncClient;
  readonly serverIndex: number;
  readonly journal: string;
  readonly instances: Map<string, Instance>;
  readonly uuids: string[];
  nextSeq: number;
  /** Changes made but not sent yet: at most one per instance, the newest. */
  readonly due: Set<string>;
  sending: boolean;
  timer: NodeJS.Timeout | undefined;
  carry: number;
}

const hosts: Host[] = [];
let elu = performance.eventLoopUtilization();
let samples: CommitSample[] = [];
let sampleEvery = 10;
let counter = 0;
let generated = 0;

async function startOne(
  host: string,
  server: string,
  serverIndex: number,
  token: string,
  count: number,
): Promise<void> {
  const client = new HvsyncClient({ server, token, timeoutMs: 10_000, keepAlive: true });
  // Hosts of their own, so that no agent's engine sees these changes as its host's. A request
  // that timed out may have committed: created before (`exists`) counts.
  for (let attempt = 1; ; attempt++) {
    try {
      await createInstances(client, host, count);
      break;
    } catch (error) {
      if (attempt >= 5) throw error;
      await new Promise((resolve) => setTimeout(resolve, 1_000 * attempt));
    }
  }
  const instances = new Map<string, Instance>();
  let after: string | undefined;
  for (;;) {
    const page = await client.listInstances({ host, limit: 1_000, after });
    for (const record of page.instances) {
      instances.set(record.uuid, {
        version: record.version,
        running: record.powerState === 'running',
      });
    }
    if (page.next === null) break;
    after = page.next;
  }
  hosts.push({
    name: host,
    client,
    serverIndex,
    journal: randomUUID(),
    instances,
    uuids: [...instances.keys()],
    nextSeq: 1,
    due: new Set(),
    sending: false,
    timer: undefined,
    carry: 0,
  });
}

/** Sends what is due, one request at a time; the observation time is when it was made. */
async function send(host: Host): Promise<void> {
  if (host.sending || host.due.size === 0) return;
  host.sending = true;
  const now = Date.now();
  const uuids = [...host.due];
  host.due.clear();
  const writes: ApiAgentWrite[] = uuids.map((uuid) => {
    const instance = host.instances.get(uuid)!;
    const from = instance.running ? 'running' : 'paused';
    const to = instance.running ? 'paused' : 'running';
    return {
      kind: 'update',
      uuid,
      expectedVersion: instance.version,
      patch: { powerState: to, powerReason: to === 'paused' ? 'user' : 'unpaused' },
      transition: {
        from,
        to,
        vmStateFrom: instance.running ? 'active' : 'paused',
        vmStateTo: to === 'running' ? 'active' : 'paused',
        cause: 'event',
        detail: 'fleet ceiling',
        outOfBand: true,
        observedAt: now,
      },
      seq: host.nextSeq++,
    };
  });
  try {
    const { results } = await host.client.agentWrites(host.name, {
      journal: host.journal,
      writes,
    });
    results.forEach((result, i) => {
      const uuid = uuids[i]!;
      const instance = host.instances.get(uuid)!;
      const record = result.ok ? result.instance : result.current;
      if (record !== null) {
        instance.version = record.version;
        instance.running = record.powerState === 'running';
      }
      if (result.ok && ++counter % sampleEvery === 0) {
        samples.push([
          uuid,
          record!.version,
          now,
          record!.powerState,
          host.serverIndex,
          Date.now(),
          0, // observed as it is sent: it waits behind no earlier write
        ]);
      }
    });
  } catch {
    // Not committed: the instances are changed again at their next turn.
  }
  host.sending = false;
  void send(host);
}

/** `count` records of `host`, with uuids that follow from the host's name (a retry repeats them). */
async function createInstances(client: HvsyncClient, host: string, count: number): Promise<void> {
  const { results } = await client.agentWrites(host, {
    writes: Array.from({ length: count }, (_, i) => ({
      kind: 'create' as const,
      uuid: uuidFor(host, i),
      fields: instanceFields({ name: `${host}-${i}`, host }),
    })),
  });
  if (!results.every((result) => result.ok || result.reason === 'exists')) {
    throw new Error(`${host}: creates refused`);
  }
}

function uuidFor(host: string, i: number): string {
  const hex = createHash('sha256').update(`${host}/${i}`).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

function setRate(perHost: number, tickMs: number): void {
  for (const host of hosts) {
    clearInterval(host.timer);
    host.timer = undefined;
    if (perHost <= 0) continue;
    host.carry = Math.random();
    host.timer = setInterval(() => {
      host.carry += (perHost * tickMs) / 1000;
      for (; host.carry >= 1; host.carry -= 1) {
        const uuid = host.uuids[Math.floor(Math.random() * host.uuids.length)]!;
        if (!host.due.has(uuid)) generated++;
        host.due.add(uuid);
      }
      void send(host);
    }, tickMs);
  }
}

function report(): WorkerReport {
  const cpu = process.cpuUsage();
  let backlog = 0;
  let hostsWithBacklog = 0;
  for (const host of hosts) {
    backlog += host.due.size;
    if (host.due.size > 0) hostsWithBacklog++;
  }
  const loop = performance.eventLoopUtilization(elu);
  elu = performance.eventLoopUtilization();
  const out: WorkerReport = {
    kind: 'report',
    runQueue: runQueueWait('self'),
    agents: hosts.length,
    cpuMs: (cpu.user + cpu.system) / 1000,
    rss: process.memoryUsage().rss,
    backlog,
    hostsWithBacklog,
    reachable: hosts.length,
    events: generated,
    loopBusy: loop.utilization,
    samples,
  };
  samples = [];
  return out;
}

serveParent({
  sampleEvery: (n) => (sampleEvery = n),
  startHost: startOne,
  setRate,
  report,
  async stop() {
    setRate(0, 0);
  },
});
