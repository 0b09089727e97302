// Two agents on simulated hosts through a 60 s outage of their control plane (`hvsync server`,
// its own process, killed and started again on the same database and port) while guests change:
// every change is recorded once, in order, with the time it was observed rather than the time it
// was sent; both backlogs grow during the outage and drain after it; the records end equal to
// the hosts' truth.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { pino } from 'pino';
import type { RunningAgent } from '../../src/app/index.ts';
import { HvsyncClient } from '../../src/cli/client.ts';
import type { ApiInstance } from '../../src/server/index.ts';
import type { PowerState } from '../../src/model/index.ts';
import { startSimAgent } from '../support/agent.ts';
import { describePostgres } from '../support/postgres.ts';
import { startServerProcess, type ServerProcess } from '../support/server-process.ts';
import { until } from '../support/until.ts';

const dir = mkdtempSync(join(tmpdir(), 'hvsync-agent-outage-test-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const logger = pino({ level: process.env.HVSYNC_TEST_LOG ?? 'silent' });

const OUTAGE_MS = 60_000;
const INSTANCES = 20;
/** Each host changes one of its first CHANGED instances every CHANGE_EVERY_MS, in turn. */
const CHANGED = 7;
const CHANGE_EVERY_MS = 2_000;
/** Longest an agent may take to observe a change (the sim emits its event at once). */
const OBSERVE_SLACK_MS = 2_000;
/** What happens to each changed instance, one step per round: it ends running, as it began. */
const CYCLE = ['pause', 'resume', 'destroy', 'start', 'pause', 'destroy', 'start'] as const;
type Change = (typeof CYCLE)[number];

interface MadeChange {
  readonly host: string;
  readonly uuid: string;
  readonly change: Change;
  readonly from: PowerState;
  readonly to: PowerState;
  /** Wall-clock time just before the change was made. */
  readonly at: number;
}

interface SimHost {
  readonly name: string;
  readonly agent: RunningAgent;
  /** Its instances by name, the ones changed first. */
  readonly uuids: readonly string[];
  /** Journal sizes seen before each change, and at the end of the outage. */
  readonly backlogs: number[];
}

describePostgres('hvsync agents through a 60 s control-plane outage', (database) => {
  test(
    'nothing is lost: each transition keeps its observation time, and both backlogs drain',
    { timeout: 180_000 },
    async () => {
      const servers: ServerProcess[] = [];
      const agents: RunningAgent[] = [];
      const serve = async (listen: string): Promise<string> => {
        const server = startServerProcess(['--db', database.url, '--listen', listen]);
        servers.push(server);
        return server.started();
      };
      try {
        const url = await serve('127.0.0.1:0');
        const port = Number(new URL(url).port);
        const client = new HvsyncClient({ server: url });
        const hosts: SimHost[] = [];
        for (const name of ['outage-a', 'outage-b']) {
          const agent = await startSimAgent({
            instances: INSTANCES,
            server: url,
            host: name,
            journal: join(dir, `${name}.journal`),
            journalLimit: 10_000,
            retryMaxMs: 1_000,
            metricsListen: '127.0.0.1:0',
            logger,
          });
          agents.push(agent);
          const listed = await until(`${INSTANCES} running instances of ${name} recorded`, () =>
            listedRunning(client, name),
          );
          const uuids = listed.sort((x, y) => x.name.localeCompare(y.name)).map((i) => i.uuid);
          hosts.push({ name, agent, uuids, backlogs: [] });
        }
        await Promise.all(agents.map((agent) => agent.store.whenDrained()));
        const baseline = new Map<string, number>();
        for (const host of hosts) {
          for (const uuid of host.uuids) baseline.set(uuid, (await client.history(uuid)).length);
        }

        const first = servers[0]!;
        first.child.kill('SIGKILL');
        await first.exit();
        const outageFrom = Date.now();

        // Host i changes at i s + 0.5 s, then every 2 s: one change a second between them.
        const schedule: { offset: number; host: SimHost; step: number }[] = [];
        hosts.forEach((host, i) => {
          for (let step = 0; ; step++) {
            const offset = 500 + i * 1_000 + step * CHANGE_EVERY_MS;
            if (offset > OUTAGE_MS - 1_500) break;
            schedule.push({ offset, host, step });
          }
        });
        schedule.sort((x, y) => x.offset - y.offset);
        const made: MadeChange[] = [];
        for (const { offset, host, step } of schedule) {
          await delay(Math.max(0, outageFrom + offset - Date.now()));
          host.backlogs.push(host.agent.store.stats.backlog);
          const uuid = host.uuids[step % CHANGED]!;
          const change = CYCLE[Math.floor(step / CHANGED) % CYCLE.length]!;
          const sim = host.agent.sim!;
          const from = sim.get(uuid)!.powerState;
          const at = Date.now();
          sim[change](uuid);
          made.push({ host: host.name, uuid, change, from, to: sim.get(uuid)!.powerState, at });
        }
        for (const host of hosts) {
          const count = made.filter((m) => m.host === host.name).length;
          await until(`${host.name} to journal its ${count} changes`, async () =>
            host.agent.store.stats.backlog >= count ? true : null,
          );
          host.backlogs.push(host.agent.store.stats.backlog);
          assert.equal(host.agent.store.stats.reachable, false);
          for (let i = 1; i < host.backlogs.length; i++) {
            assert.ok(
              host.backlogs[i]! >= host.backlogs[i - 1]!,
              `${host.name}'s backlog shrank during the outage: ${host.backlogs.join(' ')}`,
            );
          }
          const metrics = await (await fetch(host.agent.metricsUrl!)).text();
          assert.match(metrics, /^hvsync_agent_control_plane_reachable 0$/m);
          const entries = Number(/^hvsync_agent_journal_entries (\d+)$/m.exec(metrics)?.[1]);
          assert.ok(entries >= count, `${host.name}: ${entries} journal entries, ${count} changes`);
        }
        await delay(Math.max(0, outageFrom + OUTAGE_MS - Date.now()));

        const restartedAt = Date.now();
        await serve(`127.0.0.1:${port}`);
        const servingAt = Date.now();
        const drainedAt = await Promise.all(
          hosts.map(async (host) => {
            await until(
              `${host.name}'s backlog to drain`,
              async () => host.agent.store.stats.backlog === 0,
              60_000,
            );
            return Date.now();
          }),
        );
        const since = new Date(restartedAt).toISOString();
        await until(
          'backlog 0 reported for both hosts',
          async () => {
            const reported = await client.hosts();
            return hosts.every((host) =>
              reported.some(
                (h) => h.name === host.name && h.backlog === 0 && h.lastSeenAt >= since,
              ),
            );
          },
          60_000,
        );
        const reportedAt = Date.now();
        console.log(
          `# outage ${OUTAGE_MS / 1000} s, ${made.length} changes; backlog peaks ` +
            hosts.map((h) => `${h.name} ${Math.max(...h.backlogs)}`).join(', '),
        );
        console.log(
          `# control plane serving ${servingAt - restartedAt} ms after its restart; backlog 0 at ` +
            hosts
              .map(
                (h, i) =>
                  `${h.name} +${drainedAt[i]! - restartedAt} ms (+${drainedAt[i]! - servingAt} ms after it served)`,
              )
              .join(', ') +
            `; reported 0 by /v1/hosts +${reportedAt - restartedAt} ms`,
        );

        for (const host of hosts) {
          for (const uuid of host.uuids) {
            const expected = made.filter((m) => m.uuid === uuid && m.host === host.name);
            const during = (await client.history(uuid, 100)).reverse().slice(baseline.get(uuid));
            const where = `${host.name} ${uuid}: ${JSON.stringify(during)}`;
            assert.deepEqual(
              during.map((t) => [t.from, t.to]),
              expected.map((m) => [m.from, m.to]),
              where,
            );
            during.forEach((t, i) => {
              const change = expected[i]!;
              assert.equal(t.cause, 'event', where);
              assert.equal(t.outOfBand, true, where);
              const observedAt = Date.parse(t.observedAt);
              assert.ok(
                observedAt >= change.at &&
                  observedAt <= change.at + OBSERVE_SLACK_MS &&
                  observedAt < restartedAt,
                `${change.change} made at ${new Date(change.at).toISOString()}, control plane ` +
                  `back at ${since}; ${where}`,
              );
              assert.ok(Date.parse(t.recordedAt) >= restartedAt, where);
            });
          }
          const records = await client.listInstances({ host: host.name });
          assert.deepEqual(
            new Map(records.instances.map((i) => [i.uuid, i.powerState])),
            new Map(host.agent.sim!.list().map((i) => [i.uuid, i.powerState])),
          );
          assert.equal(host.agent.store.stats.outages, 1);
        }
      } finally {
        for (const agent of agents) await agent.stop();
        for (const server of servers) await server.stop();
      }
    },
  );
});

async function listedRunning(client: HvsyncClient, host: string): Promise<ApiInstance[] | null> {
  const page = await client.listInstances({ host });
  const running = page.instances.filter((i) => i.powerState === 'running');
  return running.length === INSTANCES ? running : null;
}
