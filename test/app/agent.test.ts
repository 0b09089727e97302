// `hvsync agent` against a control plane (`hvsync server`'s composition, in this process) on the
// real PostgreSQL: a simulated host's changes reach the control plane's records through the API,
// an outage of the control plane loses nothing and records each change at the time it was
// observed, and the same journal entries sent twice are applied once.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startControlPlane } from '../../src/app/index.ts';
import type { RunningAgent, RunningControlPlane } from '../../src/app/index.ts';
import { HvsyncClient } from '../../src/cli/client.ts';
import { Journal, RemoteStore } from '../../src/agent/index.ts';
import type { WriteResult } from '../../src/store/index.ts';
import { instanceFields } from '../support/records.ts';
import type { ApiTransition } from '../../src/server/index.ts';
import { startSimAgent } from '../support/agent.ts';
import { describePostgres } from '../support/postgres.ts';
import { until } from '../support/until.ts';
import { startHvsyncProcess } from '../support/server-process.ts';

const dir = mkdtempSync(join(tmpdir(), 'hvsync-agent-test-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const logger = pino({ level: process.env.HVSYNC_TEST_LOG ?? 'silent' });

test('hvsync agent refuses bad options with one line and exit code 1, before connecting', async () => {
  for (const [args, message] of [
    [['--sim', '--server', '127.0.0.1:8080'], /needs a scheme, e\.g\. http:\/\/127\.0\.0\.1:8080/],
    [['--sim', '--journal', ' '], /--journal \(or HVSYNC_JOURNAL\) is empty/],
    [['--sim', '--journal-limit', '0'], /--journal-limit must be a positive integer/],
    [['--sim', '--hypervisor', 'test:///default'], /either --hypervisor or --sim/],
  ] as const) {
    const agent = startHvsyncProcess('agent', args, /never/);
    assert.equal(await agent.exit(), 1, agent.output());
    assert.match(agent.output(), message);
    assert.equal(agent.output().trim().split('\n').length, 1, agent.output());
  }
});

describePostgres('hvsync agent on a simulated host', (database) => {
  let plane: RunningControlPlane;
  let client: HvsyncClient;
  let agent: RunningAgent;
  let port: number;

  before(async () => {
    plane = await startControlPlane({ db: database.url, listen: '127.0.0.1:0', logger });
    port = Number(new URL(plane.url).port);
    client = new HvsyncClient({ server: plane.url });
    agent = await startSimAgent({
      instances: 4,
      server: plane.url,
      host: 'sim-a',
      journal: join(dir, 'sim-a.journal'),
      logger,
    });
  });
  after(async () => {
    await agent?.stop();
    await plane?.stop();
  });

  test("the host's instances and status reach the control plane; a change is recorded with cause event", async () => {
    const sim = agent.sim!;
    const listed = await until('4 instances on sim-a', async () => {
      const page = await client.listInstances({ host: 'sim-a' });
      return page.instances.length === 4 ? page.instances : null;
    });
    assert.ok(listed.every((i) => i.powerState === 'running' && i.vmState === 'active'));
    const uuid = listed[0]!.uuid;
    const before = Date.now();
    sim.destroy(uuid);
    const stopped = await until('the destroy recorded', async () => {
      const record = await client.getInstance(uuid);
      return record.powerState === 'shutoff' ? record : null;
    });
    assert.equal(stopped.vmState, 'stopped');
    const [latest] = await client.history(uuid, 1);
    assert.equal(latest!.cause, 'event');
    assert.equal(latest!.detail, 'destroyed');
    assert.ok(Date.parse(latest!.observedAt) >= before);
    // A report may catch a write in flight; the next one, its backlog acknowledged.
    const host = await until('the host status with nothing unacknowledged', async () =>
      (await client.hosts()).find(
        (h) => h.name === 'sim-a' && h.lastReconcileAt !== null && h.backlog === 0,
      ),
    );
    assert.equal(host.driver, 'sim');
    assert.equal(host.connected, true);
    assert.equal(host.connectionError, null);
  });

  test('a control-plane outage loses nothing: each transition keeps its observation time, the backlog drains', async () => {
    const sim = agent.sim!;
    const instances = (await client.listInstances({ host: 'sim-a' })).instances;
    const running = instances.filter((i) => i.powerState === 'running').map((i) => i.uuid);
    assert.ok(running.length >= 3);
    const [a, b, c] = running as [string, string, string];
    await agent.store.whenDrained();

    // A second of outage, with the control plane in this process; agent-outage.test.ts holds
    // the 60 s with a control plane of its own process and two hosts.
    await plane.stop();
    const observedFrom = Date.now();
    sim.destroy(a);
    sim.pause(b);
    await new Promise((resolve) => setTimeout(resolve, 50));
    sim.resume(b);
    sim.destroy(c);
    await new Promise((resolve) => setTimeout(resolve, 50));
    sim.start(c);
    await until('the agent to journal 5 observations', async () => agent.store.stats.backlog >= 5);
    assert.equal(agent.store.stats.reachable, false);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const restartedAt = Date.now();
    plane = await startControlPlane({ db: database.url, listen: `127.0.0.1:${port}`, logger });

    await until('the backlog to drain', async () => agent.store.stats.backlog === 0);
    const reported = await until('backlog 0 reported', async () =>
      (await client.hosts()).find(
        (h) =>
          h.name === 'sim-a' &&
          h.backlog === 0 &&
          h.lastSeenAt >= new Date(restartedAt).toISOString(),
      ),
    );
    assert.equal(reported.backlog, 0);

    const during = async (uuid: string): Promise<ApiTransition[]> =>
      (await client.history(uuid, 100))
        .filter((t) => Date.parse(t.recordedAt) >= restartedAt)
        .reverse();
    const expectations: [string, [string, string][]][] = [
      [a, [['running', 'shutoff']]],
      [
        b,
        [
          ['running', 'paused'],
          ['paused', 'running'],
        ],
      ],
      [
        c,
        [
          ['running', 'shutoff'],
          ['shutoff', 'running'],
        ],
      ],
    ];
    for (const [uuid, steps] of expectations) {
      const transitions = await during(uuid);
      assert.deepEqual(
        transitions.map((t) => [t.from, t.to]),
        steps,
        `history of ${uuid}: ${JSON.stringify(transitions)}`,
      );
      for (const t of transitions) {
        assert.equal(t.cause, 'event');
        const observed = Date.parse(t.observedAt);
        assert.ok(
          observed >= observedFrom && observed < restartedAt,
          `observed ${t.observedAt}, outage ${new Date(observedFrom).toISOString()}..${new Date(restartedAt).toISOString()}`,
        );
      }
      assert.equal((await client.getInstance(uuid)).powerState, sim.get(uuid)!.powerState);
    }
    assert.equal(agent.store.stats.outages, 1);
  });

  test('with nothing to send, a broken watch alone tells the agent the control plane is gone; back, it reconciles', async () => {
    await agent.store.whenDrained();
    assert.equal(agent.store.stats.reachable, true);
    const outages = agent.store.stats.outages;
    await plane.stop();
    // No change on the host, so no write fails: only the watch can tell.
    await until(
      'the agent to see the control plane gone',
      async () => !agent.store.stats.reachable,
    );
    assert.equal(agent.store.stats.backlog, 0);
    assert.equal(agent.store.stats.outages, outages + 1);
    const runs = agent.engine.stats.reconcileRuns;
    plane = await startControlPlane({ db: database.url, listen: `127.0.0.1:${port}`, logger });
    await until('the agent to see it back', async () => agent.store.stats.reachable);
    // What changed on the control plane meanwhile is read, not assumed: a reconcile follows.
    await until(
      'a reconcile after the outage',
      async () => agent.engine.stats.reconcileRuns > runs,
    );
  });

  test("a user's action on the control plane is performed by the host's agent and finished", async () => {
    // Whatever the tests before left: a stop of a running one, else a start or a resume.
    const target = await until('an instance on sim-a with no task', async () =>
      (await client.listInstances({ host: 'sim-a' })).instances.find(
        (i) => i.taskState === null && ['running', 'shutoff', 'paused'].includes(i.powerState),
      ),
    );
    const [action, expected] =
      target.powerState === 'running'
        ? (['stop', 'shutoff'] as const)
        : target.powerState === 'shutoff'
          ? (['start', 'running'] as const)
          : (['resume', 'running'] as const);
    const accepted = await client.act(target.uuid, action);
    assert.equal(accepted.task.action, action);
    const done = await until(`the ${action} performed and its task finished`, async () => {
      const record = await client.getInstance(target.uuid);
      return record.taskState === null && record.powerState === expected ? record : null;
    });
    assert.equal(done.taskError, null);
    const [latest] = await client.history(target.uuid, 1);
    assert.equal(latest!.to, expected);
    assert.equal(latest!.outOfBand, false, "the change was hvsync's own");
  });

  test('writes made together travel in one request; those made while one travels, in the next', async () => {
    const host = 'sim-batch';
    const journal = Journal.open(join(dir, `${host}.journal`), { host, maxEntries: 1_000 });
    const remote = new RemoteStore({ client, host, journal, logger });
    await remote.start();
    const uuids = [1, 2, 3, 4, 5].map((n) => `00000000-0000-4000-8000-0000000b${n}000`);
    const accepted = (results: readonly WriteResult[]): void =>
      assert.deepEqual(
        results.map((r) => r.ok),
        results.map(() => true),
      );
    try {
      const before = remote.stats.requests;
      accepted(
        await Promise.all(
          uuids.map((uuid, i) =>
            remote.write({ kind: 'create', uuid, fields: instanceFields({ name: `b${i}`, host }) }),
          ),
        ),
      );
      assert.equal(remote.stats.requests - before, 1, 'five writes made together: one request');

      const travelling = remote.stats.requests;
      const first = remote.write({
        kind: 'update',
        uuid: uuids[0]!,
        expectedVersion: 1,
        patch: { powerReason: 'first' },
      });
      // A later turn of the event loop: the first write's request is on its way by then.
      const rest = await new Promise<Promise<WriteResult>[]>((resolve) =>
        setImmediate(() =>
          resolve(
            uuids.slice(1).map((uuid) =>
              remote.write({
                kind: 'update',
                uuid,
                expectedVersion: 1,
                patch: { powerReason: 'next' },
              }),
            ),
          ),
        ),
      );
      accepted(await Promise.all([first, ...rest]));
      assert.equal(
        remote.stats.requests - travelling,
        2,
        'the first alone, the four after it together',
      );
      assert.equal(remote.stats.backlog, 0);
    } finally {
      await remote.close();
      journal.close();
    }
  });

  test('the same journal entries sent twice are applied once', async () => {
    const uuid = '00000000-0000-4000-8000-00000000abcd';
    const fields = {
      name: 'replayed',
      host: 'sim-z',
      vmState: 'active' as const,
      taskState: null,
      taskAction: null,
      taskStartedAt: null,
      taskError: null,
      powerState: 'running' as const,
      powerReason: 'booted',
      policy: null,
    };
    const body = {
      journal: 'journal-of-a-test',
      writes: [
        { kind: 'create' as const, uuid, fields, seq: 1 },
        {
          kind: 'update' as const,
          uuid,
          expectedVersion: 1,
          patch: { powerState: 'shutoff' as const, powerReason: 'destroyed' },
          transition: {
            from: 'running' as const,
            to: 'shutoff' as const,
            vmStateFrom: 'active' as const,
            vmStateTo: 'active' as const,
            cause: 'event' as const,
            detail: 'destroyed',
            outOfBand: true,
            observedAt: 1_700_000_000_000,
          },
          seq: 2,
        },
      ],
    };
    const first = await client.agentWrites('sim-z', body);
    assert.deepEqual(
      first.results.map((r) => r.ok),
      [true, true],
    );
    const second = await client.agentWrites('sim-z', body);
    assert.deepEqual(
      second.results.map((r) => (r.ok ? 'ok' : r.reason)),
      ['duplicate', 'duplicate'],
    );
    const record = await client.getInstance(uuid);
    assert.equal(record.version, 2);
    const history = await client.history(uuid);
    assert.equal(history.length, 1);
    assert.equal(history[0]!.observedAt, new Date(1_700_000_000_000).toISOString());
  });
});

describePostgres('hvsync agent with a small journal', (database) => {
  test('at its bound the journal keeps the newest observation of each instance, and says so', async () => {
    const lines: { level: number; msg: string }[] = [];
    const captured = pino(
      { level: 'info' },
      { write: (line: string) => lines.push(JSON.parse(line) as { level: number; msg: string }) },
    );
    let plane = await startControlPlane({ db: database.url, listen: '127.0.0.1:0', logger });
    const port = Number(new URL(plane.url).port);
    const client = new HvsyncClient({ server: plane.url });
    const agent = await startSimAgent({
      instances: 2,
      server: plane.url,
      host: 'sim-small',
      journal: join(dir, 'sim-small.journal'),
      journalLimit: 6,
      metricsListen: '127.0.0.1:0',
      logger: captured,
    });
    try {
      const sim = agent.sim!;
      const [x] = await until('2 instances', async () => {
        const page = await client.listInstances({ host: 'sim-small' });
        return page.instances.length === 2 ? page.instances.map((i) => i.uuid) : null;
      });
      await agent.store.whenDrained();
      await plane.stop();
      for (let i = 0; i < 6; i++) {
        sim.pause(x!);
        await new Promise((resolve) => setTimeout(resolve, 20));
        sim.resume(x!);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      sim.destroy(x!);
      await until('the last observation journaled', async () => {
        const latest = agent.store.cache.get(x!);
        return latest?.powerState === 'shutoff';
      });
      assert.ok(agent.store.stats.backlog <= 6);
      assert.ok(agent.store.stats.compacted > 0);
      const metrics = await (await fetch(agent.metricsUrl!)).text();
      assert.match(metrics, /^hvsync_agent_journal_limit 6$/m);
      assert.match(metrics, /^hvsync_agent_journal_entries [1-6]$/m);
      assert.match(metrics, /^hvsync_agent_journal_compacted_total [1-9]\d*$/m);
      const warnings = lines.filter((l) => l.level === 40).map((l) => l.msg);
      assert.equal(warnings.filter((m) => /holds \d+ of at most 6/.test(m)).length, 1);
      assert.ok(warnings.some((m) => /at its bound: dropping the oldest observations/.test(m)));

      plane = await startControlPlane({ db: database.url, listen: `127.0.0.1:${port}`, logger });
      await until('the backlog to drain', async () => agent.store.stats.backlog === 0);
      const record = await until('the newest state recorded', async () => {
        const found = await client.getInstance(x!);
        return found.powerState === 'shutoff' ? found : null;
      });
      assert.equal(record.powerReason, 'destroyed');
      const history = (await client.history(x!, 100)).reverse();
      for (let i = 1; i < history.length; i++) {
        assert.equal(history[i]!.from, history[i - 1]!.to, JSON.stringify(history));
      }
    } finally {
      await agent.stop();
      await plane.stop();
    }
  });
});
