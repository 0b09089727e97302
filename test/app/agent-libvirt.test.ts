// `hvsync agent` on the machine libvirtd's test driver, reporting to a control plane on the real
// PostgreSQL: domains changed with virsh on another connection are recorded with cause event;
// and an agent killed with SIGKILL in the middle of a storm of changes, then restarted on the same
// journal, leaves every domain's history whole: no transition lost from the chain, none twice.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startAgent, startControlPlane } from '../../src/app/index.ts';
import type { RunningAgent, RunningControlPlane } from '../../src/app/index.ts';
import { HvsyncClient } from '../../src/cli/client.ts';
import { nodeHttpTransport } from '../../src/cli/http-transport.ts';
import type { ApiInstance } from '../../src/server/index.ts';
import { createSelfStoppingGuest } from '../support/guest.ts';
import { describeLibvirt, holdDriverConnection, uniqueName, virsh } from '../support/libvirt.ts';
import type { HeldConnection } from '../support/libvirt.ts';
import { describePostgres } from '../support/postgres.ts';
import { until } from '../support/until.ts';
import { startHvsyncProcess, type ServerProcess } from '../support/server-process.ts';

const URI = 'test+unix:///default';
const dir = mkdtempSync(join(tmpdir(), 'hvsync-agent-libvirt-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const logger = pino({ level: process.env.HVSYNC_TEST_LOG ?? 'silent' });

const defined: string[] = [];
async function defineDomain(name: string): Promise<void> {
  const xml = join(dir, `${name}.xml`);
  writeFileSync(
    xml,
    `<domain type='test'><name>${name}</name><memory>8192</memory><os><type>hvm</type></os></domain>`,
  );
  await virsh(['define', xml]);
  defined.push(name);
}

async function byName(
  client: HvsyncClient,
  host: string,
  name: string,
): Promise<ApiInstance | undefined> {
  let after: string | undefined;
  for (;;) {
    const page = await client.listInstances({ host, limit: 1000, after, includeDeleted: true });
    const found = page.instances.find((i) => i.name === name);
    if (found !== undefined || page.next === null) return found;
    after = page.next;
  }
}

describeLibvirt('hvsync agent on the libvirt test driver', () => {
  describePostgres('with a control plane on PostgreSQL', (database) => {
    let plane: RunningControlPlane;
    let client: HvsyncClient;
    let held: HeldConnection;

    before(async () => {
      // The test driver forgets its domains when its last connection closes: between virsh
      // calls, and while no agent runs, this one keeps them.
      held = await holdDriverConnection();
      plane = await startControlPlane({ db: database.url, listen: '127.0.0.1:0', logger });
      client = new HvsyncClient({ server: plane.url });
    });
    after(async () => {
      await plane?.stop();
      for (const name of defined) {
        await virsh(['destroy', name]).catch(() => {});
        await virsh(['undefine', name]).catch(() => {});
      }
      held?.release();
    });

    /** An agent in this process for `host`, on the libvirt at `uri`. */
    const startOn = (host: string, uri: string): Promise<RunningAgent> =>
      startAgent({
        transport: nodeHttpTransport({ keepAlive: true }),
        hypervisor: { kind: 'libvirt', uri },
        server: plane.url,
        host,
        journal: join(dir, `${host}.journal`),
        journalLimit: 10_000,
        policy: 'observe',
        reconcileIntervalMs: 0,
        statusIntervalMs: 500,
        logger,
      });

    test('a domain changed with virsh is recorded in the control plane with cause event', async () => {
      const host = uniqueName('agent-host');
      const agent = await startOn(host, URI);
      try {
        const name = uniqueName('hvsync-agent');
        await defineDomain(name);
        await virsh(['start', name]);
        const running = await until('the started domain recorded', async () => {
          const found = await byName(client, host, name);
          return found?.powerState === 'running' ? found : null;
        });
        await virsh(['destroy', name]);
        const stopped = await until('the destroy recorded', async () => {
          const record = await client.getInstance(running.uuid);
          return record.powerState === 'shutoff' ? record : null;
        });
        assert.equal(stopped.vmState, 'stopped');
        assert.equal(stopped.powerReason, 'destroyed');
        const [last] = await client.history(running.uuid, 1);
        assert.equal(last!.cause, 'event');
        assert.equal(last!.detail, 'destroyed');
        assert.equal(last!.outOfBand, true);
        const hostRecord = (await client.hosts()).find((h) => h.name === host);
        assert.equal(hostRecord?.driver, 'libvirt');
        assert.equal(hostRecord?.connected, true);
      } finally {
        await agent.stop();
      }
    });

    test("two hosts' agents: a real QEMU guest powers itself off on one, a user's action reaches the other", async () => {
      const qemuHost = uniqueName('agent-qemu');
      const testHost = uniqueName('agent-test');
      const agents = [await startOn(qemuHost, 'qemu:///system'), await startOn(testHost, URI)];
      const guest = await createSelfStoppingGuest({
        name: uniqueName('hvsync-agent-qemu'),
        delayMs: 1500,
      });
      try {
        const name = uniqueName('hvsync-agent-b');
        await defineDomain(name);
        await virsh(['start', name]);
        await virsh(['define', guest.xmlPath], 'qemu:///system');
        await virsh(['start', guest.name], 'qemu:///system');

        // The guest's own poweroff, heard by the agent of its host and recorded as an event.
        const up = await until('the guest running on its host', async () => {
          const found = await byName(client, qemuHost, guest.name);
          return found?.powerState === 'running' ? found : null;
        });
        const stopped = await until(
          'the guest powered itself off',
          async () => {
            const record = await client.getInstance(up.uuid);
            return record.powerState === 'shutoff' ? record : null;
          },
          60_000,
        );
        assert.equal(stopped.host, qemuHost);
        assert.equal(stopped.vmState, 'stopped');
        assert.equal(stopped.powerReason, 'shutdown');
        const [poweroff] = await client.history(up.uuid, 1);
        assert.equal(poweroff!.cause, 'event');
        assert.equal(poweroff!.outOfBand, true);

        // A user's action on the control plane, performed by the other host's agent.
        const onTest = await until('the test domain running on its host', async () => {
          const found = await byName(client, testHost, name);
          return found?.powerState === 'running' ? found : null;
        });
        await client.act(onTest.uuid, 'pause');
        const paused = await until('the pause performed and finished', async () => {
          const record = await client.getInstance(onTest.uuid);
          return record.taskState === null && record.powerState === 'paused' ? record : null;
        });
        assert.equal(paused.taskError, null);
        assert.equal(paused.host, testHost);
        const [action] = await client.history(onTest.uuid, 1);
        assert.equal(action!.cause, 'action');
        assert.equal(action!.outOfBand, false);
      } finally {
        for (const agent of agents) await agent.stop();
        await guest.cleanup();
      }
    });

    test('an agent killed with SIGKILL mid-storm and restarted loses and doubles no transition', async () => {
      const host = uniqueName('agent-kill');
      const journal = join(dir, `${host}.journal`);
      const args = [
        '--hypervisor',
        URI,
        '--server',
        plane.url,
        '--host',
        host,
        '--journal',
        journal,
        '--reconcile-interval',
        '0',
        '--status-interval',
        '1',
        '--log-level',
        'debug',
      ];
      const spawnAgent = (): ServerProcess =>
        // Lists and adopts every domain of the shared test driver first: give it time on a busy
        // machine.
        startHvsyncProcess('agent', args, /agent for \S+ .*reporting to/, 90_000);
      const names = Array.from({ length: 6 }, () => uniqueName('hvsync-storm'));
      for (const name of names) {
        await defineDomain(name);
        await virsh(['start', name]);
      }
      let agent = spawnAgent();
      await agent.started();
      await until('every domain adopted', async () => {
        const all = await Promise.all(names.map((n) => byName(client, host, n)));
        return all.every((r) => r?.powerState === 'running');
      });

      // Each domain goes through pause/resume cycles and a stop/start, from its own sequence;
      // the agent is killed while they run and started again while they still run.
      const cycles = 8;
      let killed = false;
      const storm = Promise.all(
        names.map(async (name) => {
          for (let i = 0; i < cycles; i++) {
            await virsh(['suspend', name]);
            await virsh(['resume', name]);
            if (i % 3 === 1) {
              await virsh(['destroy', name]);
              await virsh(['start', name]);
            }
          }
        }),
      );
      const killer = (async () => {
        await new Promise((resolve) => setTimeout(resolve, 1_500));
        agent.child.kill('SIGKILL');
        await agent.exit();
        killed = true;
        await new Promise((resolve) => setTimeout(resolve, 500));
        agent = spawnAgent();
        await agent.started();
      })();
      await Promise.all([storm, killer]);
      assert.ok(killed);
      // One last known change per domain, after everything: the end state each must reach.
      for (const name of names.slice(0, 3)) await virsh(['suspend', name]);

      try {
        for (const name of names) {
          const expected = names.slice(0, 3).includes(name) ? 'paused' : 'running';
          let last: ApiInstance | undefined;
          const record = await until(`${name} ${expected} in the control plane`, async () => {
            last = await byName(client, host, name);
            return last?.powerState === expected ? last : null;
          }).catch(async (error: unknown) => {
            const history = last === undefined ? [] : await client.history(last.uuid, 1000);
            throw new Error(
              `${String(error)}; last seen ${JSON.stringify(last)}; history ${JSON.stringify(history)}`,
            );
          });
          const history = (await client.history(record.uuid, 1000)).reverse();
          // A chain: each transition starts where the one before it ended (nothing lost between
          // them, nothing applied twice), and none is recorded twice.
          for (let i = 1; i < history.length; i++) {
            assert.equal(
              history[i]!.from,
              history[i - 1]!.to,
              `${name}: transition ${i} does not follow on: ${JSON.stringify(history)}`,
            );
          }
          const keys = history.map((t) => `${t.from}>${t.to}@${t.observedAt}`);
          assert.equal(new Set(keys).size, keys.length, `${name}: a transition twice: ${keys}`);
          // Adopted running, and the last change there. How many of the storm's changes the
          // agent saw before the kill depends on the machine's load; what it missed while dead
          // shows only as the reconcile's net change.
          assert.equal(history[0]!.cause, 'adopt');
          assert.ok(history.length >= (expected === 'paused' ? 2 : 1), `${name}: ${keys}`);
        }
      } catch (error) {
        // What the restarted agent said is most of what there is to go on.
        console.error(`the restarted agent said:\n${agent.output()}`);
        throw error;
      } finally {
        await agent.stop();
      }
    });
  });
});
