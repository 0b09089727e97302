// Actions across processes on a real PostgreSQL: two `hvsync server` replicas in process, a sync
// engine on a simulated host with its own store connection standing in for that host's agent
// (its store subscription plays the agent's watch and calls recordChanged), and hosts whose
// reports the test writes the way the agent's status route does. A user's action on one replica
// reaches the other's watch and is performed by the host's engine; a host that falls silent turns
// unreachable, its instances' power states stale (never stopped), its tasks end with a clear
// error, and all of it comes back when it reports again.
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { startControlPlane, type RunningControlPlane } from '../../src/app/index.ts';
import { ClientError, HvsyncClient, type WatchMessage } from '../../src/cli/client.ts';
import { instancesTable } from '../../src/cli/format.ts';
import type { ApiInstance } from '../../src/server/index.ts';
import { openPostgresStore, type PostgresStore } from '../../src/store/index.ts';
import { SyncEngine } from '../../src/sync/index.ts';
import { SimDriver, SimHypervisor } from '../../src/virt/index.ts';
import { describePostgres } from '../support/postgres.ts';
import { instanceFields } from '../support/records.ts';

const HOST_TIMEOUT_MS = 1_500;

/** Polls `check` (bounded) until it returns something other than undefined/false. */
async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what} (${String(last)})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

type Messages = AsyncIterator<WatchMessage>;

/** A sample's value from a replica's /metrics (0 when absent). */
async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

/** Reads the watch until an event satisfies `done`; that instance. The stream stays open. */
async function until(
  messages: Messages,
  done: (instance: ApiInstance) => boolean,
): Promise<ApiInstance> {
  for (;;) {
    const next = await messages.next();
    if (next.done === true) assert.fail('stream closed');
    const message = next.value;
    if (message.kind === 'end') assert.fail(`stream ended: ${JSON.stringify(message.error)}`);
    if (done(message.change.instance)) return message.change.instance;
  }
}

describePostgres('actions across processes and host health', (database) => {
  const logger = pino({ level: 'silent' });
  let replica1: RunningControlPlane;
  let replica2: RunningControlPlane;
  let client1: HvsyncClient;
  let client2: HvsyncClient;
  /** The test's own connection: writes hosts' reports and instances as an agent would. */
  let store: PostgresStore;
  const reporters = new Map<string, NodeJS.Timeout>();

  async function report(host: string, connected = true): Promise<void> {
    await store.upsertHost({
      name: host,
      driver: 'sim',
      connected,
      lastSeenAt: Date.now(),
      lastReconcileAt: null,
    });
  }
  /** Reports for `host` every 200 ms, as its agent would (every 10 s against a 30 s timeout). */
  async function keepReporting(host: string): Promise<void> {
    await report(host);
    reporters.set(
      host,
      setInterval(() => void report(host).catch(() => undefined), 200),
    );
  }
  function stopReporting(host: string): void {
    clearInterval(reporters.get(host));
    reporters.delete(host);
  }
  async function createInstance(host: string, name: string): Promise<string> {
    const uuid = randomUUID();
    const created = await store.write({
      kind: 'create',
      uuid,
      fields: instanceFields({ name, host }),
    });
    assert.ok(created.ok);
    return uuid;
  }

  before(async () => {
    const config = {
      db: database.url,
      listen: '127.0.0.1:0',
      logger,
      hostTimeoutMs: HOST_TIMEOUT_MS,
      taskTimeoutMs: 20_000,
    };
    replica1 = await startControlPlane(config);
    replica2 = await startControlPlane(config);
    client1 = new HvsyncClient({ server: replica1.url });
    client2 = new HvsyncClient({ server: replica2.url });
    store = await openPostgresStore(database.url);
  });
  after(async () => {
    for (const host of [...reporters.keys()]) stopReporting(host);
    await Promise.all([replica1?.stop(), replica2?.stop()]);
    await store?.close();
  });

  test("an action on replica 1 reaches replica 2's watch and the host's engine performs it", async () => {
    const host = 'tasks-sim-host';
    const sim = new SimHypervisor({ hostname: host, instances: 0, seed: 3 });
    const driver = new SimDriver(sim);
    const engineStore = await openPostgresStore(database.url);
    const engine = new SyncEngine({ driver, store: engineStore, reconcileIntervalMs: 0 });
    // The agent's watch: every committed change of this host's records goes to recordChanged.
    const unsubscribe = engineStore.subscribe((changes) => {
      for (const change of changes) engine.recordChanged(change.instance);
    });
    try {
      await keepReporting(host);
      await engine.start();
      const uuid = sim.define('tasks-app-1', { powerState: 'running' });
      await eventually('the engine adopts the instance', async () => {
        const record = await store.getInstance(uuid);
        return record?.powerState === 'running';
      });
      const watch = await client2.watch({ signal: AbortSignal.timeout(20_000) });
      const messages = watch[Symbol.asyncIterator]();

      const accepted = await client1.act(uuid, 'stop');
      assert.equal(accepted.task.action, 'stop');
      assert.equal(accepted.instance.taskState, 'powering-off');
      assert.equal(accepted.instance.taskAction, 'stop');

      const recorded = await until(messages, (i) => i.uuid === uuid && i.taskState !== null);
      assert.equal(
        recorded.taskState,
        'powering-off',
        'replica 2 streams the task replica 1 recorded',
      );
      assert.equal(recorded.taskAction, 'stop');
      const finished = await until(messages, (i) => i.uuid === uuid && i.taskState === null);
      watch.close();
      assert.equal(finished.taskError, null);
      assert.equal(finished.vmState, 'stopped');
      assert.equal(finished.powerState, 'shutoff');

      // Believed once replica 2 has read the host's reports (it re-reads them every interval).
      const shown = await eventually('believed on replica 2', async () => {
        const instance = await client2.getInstance(uuid);
        return instance.powerStateStale === false ? instance : undefined;
      });
      assert.equal(shown.taskAction, null);
      const [last] = await client2.history(uuid);
      assert.equal(last?.cause, 'action');
      assert.equal(last?.detail, 'stop');
      assert.equal(engine.stats.actions.ok, 1);
    } finally {
      unsubscribe();
      stopReporting(host);
      await engine.stop();
      await driver.close();
      sim.close();
      await engineStore.close();
    }
  });

  test('a task whose host stops reporting ends with a clear error; the host then refuses actions', async () => {
    const host = 'tasks-silent-host';
    await keepReporting(host);
    const uuid = await createInstance(host, 'tasks-silent-1');
    const accepted = await client1.act(uuid, 'reboot');
    assert.equal(accepted.instance.taskState, 'rebooting');
    // Its agent goes away before doing anything.
    stopReporting(host);
    const ended = await eventually('the task is ended by a replica', async () => {
      const instance = await client2.getInstance(uuid);
      return instance.taskState === null ? instance : undefined;
    });
    assert.match(
      ended.taskError ?? '',
      /host tasks-silent-host's agent has not reported since \d{4}-/,
    );
    assert.equal(ended.vmState, 'active', 'a task that did not happen changes no intent');
    assert.equal(ended.powerState, 'running', 'absent is not stopped');
    // The replica that ended it judged the host silent; the other does within an interval.
    await eventually('stale on replica 2', async () => {
      return (await client2.getInstance(uuid)).powerStateStale === true;
    });

    await assert.rejects(client2.act(uuid, 'stop'), (error: unknown) => {
      assert.ok(error instanceof ClientError);
      assert.equal(error.status, 503);
      assert.equal(error.apiError, 'unavailable');
      assert.match(error.message, /host tasks-silent-host's agent has not reported since \d{4}-/);
      return true;
    });
    const record = await store.getInstance(uuid);
    assert.equal(record?.taskState, null, 'a refused action records nothing');
    // Both replicas sweep; the write is conditional, so the task was ended once.
    const { changes } = await store.changesSince(0, 10_000);
    const ofIt = changes.filter((change) => change.instance.uuid === uuid);
    assert.deepEqual(
      ofIt.map((change) => change.instance.taskState),
      [null, 'rebooting', null],
      'created, task recorded, task ended: nothing more',
    );
    const swept = await Promise.all(
      [replica1, replica2].map((r) => metric(r.url, 'hvsync_tasks_swept_total')),
    );
    assert.equal(swept[0]! + swept[1]!, 1, `one replica ended it: ${swept.join(' + ')}`);
  });

  test('a host that stops reporting turns unreachable and its instances stale, and back', async () => {
    const host = 'tasks-flaky-host';
    await keepReporting(host);
    const uuid = await createInstance(host, 'tasks-flaky-1');
    const hostOf = async (client: HvsyncClient) =>
      (await client.hosts()).find((h) => h.name === host);

    await eventually('reachable, power state believed', async () => {
      const shown = await client1.getInstance(uuid);
      return (await hostOf(client1))?.reachable === true && shown.powerStateStale === false;
    });

    stopReporting(host);
    for (const client of [client1, client2]) {
      const shown = await eventually('unreachable, power state stale', async () => {
        const instance = (await client.listInstances({ host })).instances[0];
        return (await hostOf(client))?.reachable === false && instance?.powerStateStale
          ? instance
          : undefined;
      });
      assert.equal(shown.powerState, 'running', 'the last known state, never stopped');
      assert.match(instancesTable([shown]), /running\?/);
    }
    assert.ok((await metric(replica1.url, 'hvsync_hosts_unreachable')) >= 1);
    assert.equal((await store.getInstance(uuid))?.powerState, 'running', 'nothing was written');

    await keepReporting(host);
    await eventually('reachable again, power state believed again', async () => {
      const shown = await client2.getInstance(uuid);
      return (await hostOf(client2))?.reachable === true && shown.powerStateStale === false;
    });
    // A host whose agent reports but lost its hypervisor: the power state is not believed either.
    stopReporting(host);
    await report(host, false);
    await eventually('stale while the agent has no hypervisor', async () => {
      const shown = await client1.getInstance(uuid);
      return (await hostOf(client1))?.reachable === true && shown.powerStateStale === true;
    });
  });
});
