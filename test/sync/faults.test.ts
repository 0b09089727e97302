// The engine when the hypervisor misbehaves: lost, late and reordered events, a dropped
// connection, partial listings, failing and hanging lookups, and writers racing on one record.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openSqliteStore } from '../../src/store/index.ts';
import type { Store, WriteResult, InstanceWrite } from '../../src/store/index.ts';
import { adopt, SyncEngine } from '../../src/sync/index.ts';
import { SimDriver } from '../../src/virt/index.ts';
import type {
  DriverEventListener,
  HypervisorDriver,
  ObservedInstance,
  RebootOptions,
  StopOptions,
} from '../../src/virt/index.ts';
import { HOST, adoptRunning, assertChained, harness, waitFor, waitForRecord } from './harness.ts';
import type { Harness } from './harness.ts';

async function withHarness(
  options: Parameters<typeof harness>[0],
  body: (h: Harness) => Promise<void>,
): Promise<void> {
  const h = await harness(options);
  try {
    await body(h);
  } finally {
    await h.close();
  }
}

/** Every record says what the hypervisor says, the way observe maps it. */
async function assertMatchesTruth(h: Harness, store: Store = h.store): Promise<void> {
  for (const truth of h.sim.list()) {
    const record = await store.getInstance(truth.uuid);
    assert.ok(record, `a record for ${truth.name}`);
    const expected = adopt(truth);
    assert.equal(record.powerState, expected.powerState, `${truth.name} powerState`);
    assert.equal(record.vmState, expected.vmState, `${truth.name} vmState`);
    assertChained(await store.history(truth.uuid, { limit: 1000 }).then((h) => h.reverse()));
  }
}

/** A driver whose lookups of chosen instances hang until released. */
class HangingLookups implements HypervisorDriver {
  readonly kind = 'sim';
  readonly hung = new Set<string>();
  pendingHung = 0;
  private releases: (() => void)[] = [];

  constructor(private readonly inner: SimDriver) {}

  get connected(): boolean {
    return this.inner.connected;
  }
  connect(): Promise<void> {
    return this.inner.connect();
  }
  close(): Promise<void> {
    this.release();
    return this.inner.close();
  }
  hostname(): Promise<string> {
    return this.inner.hostname();
  }
  registerEventListener(listener: DriverEventListener): () => void {
    return this.inner.registerEventListener(listener);
  }
  listInstances(): Promise<ObservedInstance[]> {
    return this.inner.listInstances();
  }
  async getPowerState(uuid: string): Promise<ObservedInstance | null> {
    if (this.hung.has(uuid)) {
      this.pendingHung++;
      await new Promise<void>((resolve) => this.releases.push(resolve));
      this.pendingHung--;
    }
    return this.inner.getPowerState(uuid);
  }
  release(): void {
    this.hung.clear();
    for (const release of this.releases.splice(0)) release();
  }
  start(uuid: string): Promise<void> {
    return this.inner.start(uuid);
  }
  stop(uuid: string, options?: StopOptions): Promise<void> {
    return this.inner.stop(uuid, options);
  }
  forceStop(uuid: string): Promise<void> {
    return this.inner.forceStop(uuid);
  }
  reboot(uuid: string, options?: RebootOptions): Promise<void> {
    return this.inner.reboot(uuid, options);
  }
  pause(uuid: string): Promise<void> {
    return this.inner.pause(uuid);
  }
  resume(uuid: string): Promise<void> {
    return this.inner.resume(uuid);
  }
}

/** A store where another writer commits first, once, on the chosen instance's next update. */
function competingWriter(store: Store, target: { uuid?: string; fired?: boolean }): Store {
  const write = async (w: InstanceWrite): Promise<WriteResult> => {
    if (!target.fired && w.kind === 'update' && w.uuid === target.uuid) {
      target.fired = true;
      const current = (await store.getInstance(w.uuid))!;
      const competing = await store.write({
        kind: 'update',
        uuid: w.uuid,
        expectedVersion: current.version,
        patch: { powerState: 'paused', powerReason: 'user', vmState: 'paused' },
        transition: {
          from: current.powerState,
          to: 'paused',
          vmStateFrom: current.vmState,
          vmStateTo: 'paused',
          cause: 'event',
          detail: 'paused',
          outOfBand: true,
          observedAt: Date.now(),
        },
      });
      assert.ok(competing.ok);
    }
    return store.write(w);
  };
  return {
    getInstance: (uuid) => store.getInstance(uuid),
    getInstances: (uuids) => store.getInstances(uuids),
    listInstances: (filter) => store.listInstances(filter),
    write,
    history: (uuid, options) => store.history(uuid, options),
    changesSince: (since, limit) => store.changesSince(since, limit),
    subscribe: (listener) => store.subscribe(listener),
    upsertHost: (host) => store.upsertHost(host),
    recordConnectionError: (host, error) => store.recordConnectionError(host, error),
    listHosts: () => store.listHosts(),
    credentials: store.credentials,
    get writeFailure() {
      return store.writeFailure;
    },
    get stats() {
      return store.stats;
    },
    close: () => store.close(),
  };
}

describe('engine: lost and disordered events', () => {
  test('dropped events are healed by reconcile, with cause reconcile and drift counted', () =>
    withHarness({ instances: 5, faults: { dropEventRate: 1 } }, async (h) => {
      const [a, b, c, d, e] = h.sim.list().map((i) => i.uuid) as [
        string,
        string,
        string,
        string,
        string,
      ];
      await h.sim.guestShutdown(a);
      h.sim.crash(b);
      h.sim.pause(c);
      h.sim.destroy(d);
      await h.quiesce();
      assert.equal((await h.record(a)).vmState, 'active', 'no event reached the engine');
      const report = await h.engine.reconcile();
      assert.equal(report.drift, 4);
      assert.equal(report.listed, 5);
      assert.equal(h.engine.stats.driftFound, 4);
      await assertMatchesTruth(h);
      for (const uuid of [a, b, c, d]) {
        const last = (await h.history(uuid)).at(-1)!;
        assert.equal(last.cause, 'reconcile');
        assert.equal(last.outOfBand, true);
      }
      assert.equal((await h.history(b)).at(-1)!.to, 'crashed');
      assert.equal((await h.history(e)).length, 1, 'the untouched one only has its adoption');
      const again = await h.engine.reconcile();
      assert.equal(again.drift, 0);
    }));

  test('delayed and reordered events under a random workload end in the right state', () =>
    withHarness(
      { instances: 30, seed: 11, faults: { eventDelayMs: [0, 30], reorder: true } },
      async (h) => {
        h.sim.startWorkload({ ratePerSecond: 400 });
        await waitFor('a busy workload', () => h.sim.stats.workloadOperations >= 200);
        h.sim.stopWorkload();
        await h.quiesce();
        assert.ok(h.engine.stats.coalesced + h.engine.stats.staleSkipped > 0, 'disorder was seen');
        assert.equal(h.engine.stats.reconcileRuns, 1, 'events alone got there');
        await assertMatchesTruth(h);
      },
    ));

  test('disconnect, changes while away, reconnect: the reconcile fixes them', () =>
    withHarness({ instances: 5 }, async (h) => {
      const [a, b, c, d, e] = h.sim.list().map((i) => i.uuid) as [
        string,
        string,
        string,
        string,
        string,
      ];
      h.sim.disconnect('libvirtd restarted');
      await waitFor('not ready', () => !h.engine.ready);
      await waitFor('host marked disconnected', async () =>
        (await h.store.listHosts()).find((x) => x.name === HOST && !x.connected),
      );
      await h.sim.guestShutdown(a);
      h.sim.destroy(b);
      h.sim.pause(c);
      h.sim.crash(d);
      h.sim.destroy(e);
      h.sim.undefine(e);
      const newcomer = h.sim.define('while-away', { powerState: 'running' });
      await h.sim.settled();
      assert.equal((await h.record(a)).vmState, 'active', 'nothing was known while away');
      const runsBefore = h.engine.stats.reconcileRuns;
      h.sim.reconnect();
      await waitFor('ready again', () => h.engine.ready);
      await h.quiesce();
      assert.equal(h.engine.stats.reconcileRuns, runsBefore + 1);
      await assertMatchesTruth(h);
      assert.equal((await h.record(e)).vmState, 'deleted');
      assert.equal((await h.history(newcomer))[0]!.cause, 'adopt');
      for (const uuid of [a, b, c, d])
        assert.equal((await h.history(uuid)).at(-1)!.cause, 'reconcile');
      const host = (await h.store.listHosts()).find((x) => x.name === HOST)!;
      assert.equal(host.connected, true);
      assert.ok(host.lastReconcileAt !== null);
    }));
});

describe('engine: reconcile', () => {
  test('reconcile passes never overlap: a call during one gets the next', () =>
    withHarness({ instances: 3 }, async (h) => {
      let concurrent = 0;
      let most = 0;
      const list = h.driver.listInstances.bind(h.driver);
      h.driver.listInstances = async () => {
        most = Math.max(most, ++concurrent);
        try {
          await new Promise((resolve) => setTimeout(resolve, 20));
          return await list();
        } finally {
          concurrent--;
        }
      };
      const runsBefore = h.engine.stats.reconcileRuns;
      const reports = await Promise.all([
        h.engine.reconcile(),
        h.engine.reconcile(),
        h.engine.reconcile(),
      ]);
      assert.equal(most, 1);
      assert.equal(h.engine.stats.reconcileRuns, runsBefore + 2, 'the running one and one more');
      assert.equal(reports[1], reports[2], 'callers during a run share the next');
    }));

  test('periodic reconciles racing a workload that loses events converge', () =>
    withHarness(
      {
        instances: 20,
        seed: 3,
        faults: { dropEventRate: 0.3, eventDelayMs: [0, 20], reorder: true },
        engine: { reconcileIntervalMs: 40 },
      },
      async (h) => {
        h.sim.startWorkload({ ratePerSecond: 300 });
        await waitFor('a busy workload', () => h.sim.stats.workloadOperations >= 150);
        h.sim.stopWorkload();
        await h.sim.settled();
        await h.engine.reconcile();
        await h.engine.whenIdle();
        assert.ok(h.engine.stats.reconcileRuns > 3, 'periodic reconciles ran');
        assert.ok(h.engine.stats.driftFound > 0, 'lost events were found as drift');
        await assertMatchesTruth(h);
      },
    ));
});

describe('engine: absent is not stopped', () => {
  test('a listing that omits instances never marks them stopped or deleted', () =>
    withHarness({ policy: 'enforce', instances: 5 }, async (h) => {
      const uuids = h.sim.list().map((i) => i.uuid);
      h.sim.setFaults({ listingOmitRate: 1 });
      const found = await h.engine.reconcile();
      assert.equal(found.listed, 0);
      assert.equal(found.missing, 0, 'the lookups found every one');
      assert.equal(found.drift, 0);

      // Found by the lookup: handled normally, so a real change is still seen.
      h.sim.setFaults({ dropEventRate: 1 });
      h.sim.destroy(uuids[0]!);
      await h.sim.settled();
      const changed = await h.engine.reconcile();
      assert.equal(changed.drift, 1);
      assert.equal((await h.record(uuids[0]!)).vmState, 'stopped');

      // Nothing confirmed either way: `missing`, vmState untouched, nothing done.
      h.sim.setFaults({ lookupFailRate: 1 });
      const unknown = await h.engine.reconcile();
      assert.equal(unknown.missing, 5);
      assert.equal(unknown.gone, 0);
      for (const uuid of uuids) {
        const record = await h.record(uuid);
        assert.equal(record.powerState, 'missing');
        assert.notEqual(record.vmState, 'deleted');
      }
      assert.equal((await h.record(uuids[1]!)).vmState, 'active');
      assert.equal(h.engine.stats.enforcements, 0);
      assert.equal(h.sim.get(uuids[1]!)?.powerState, 'running');

      h.sim.clearFaults();
      const healed = await h.engine.reconcile();
      assert.equal(healed.drift, 5);
      await assertMatchesTruth(h);
    }));

  test('an unlisted instance confirmed gone is marked deleted', () =>
    withHarness({ instances: 2, faults: { dropEventRate: 1 } }, async (h) => {
      const [a] = h.sim.list().map((i) => i.uuid) as [string];
      h.sim.destroy(a);
      h.sim.undefine(a);
      await h.sim.settled();
      const report = await h.engine.reconcile();
      assert.equal(report.gone, 1);
      const record = await h.record(a);
      assert.equal(record.vmState, 'deleted');
      assert.equal((await h.history(a)).at(-1)!.cause, 'reconcile');
    }));
});

describe('engine: isolation and races', () => {
  test('a hung lookup for one instance does not delay another', async () => {
    let hanging: HangingLookups | undefined;
    await withHarness(
      {
        engine: { callTimeoutMs: 60_000 },
        wrapDriver: (driver) => (hanging = new HangingLookups(driver)),
      },
      async (h) => {
        const a = await adoptRunning(h, 'stuck');
        const b = await adoptRunning(h, 'free');
        hanging!.hung.add(a);
        h.sim.pause(a);
        await waitFor('a lookup of the stuck one hanging', () => hanging!.pendingHung === 1);
        h.sim.pause(b);
        await waitForRecord(h, b, 'the free one paused', (r) => r.vmState === 'paused');
        assert.equal(hanging!.pendingHung, 1, 'the stuck lookup is still hanging');
        assert.equal((await h.record(a)).vmState, 'active');
        hanging!.release();
        await waitForRecord(h, a, 'the stuck one paused', (r) => r.vmState === 'paused');
      },
    );
  });

  test('a write that lost a race is re-read, re-confirmed and retried, never going backwards', async () => {
    const target: { uuid?: string; fired?: boolean } = {};
    await withHarness({ wrapStore: (store) => competingWriter(store, target) }, async (h) => {
      const uuid = await adoptRunning(h, 'contended');
      target.uuid = uuid;
      h.sim.destroy(uuid);
      await waitFor('the competing write', () => target.fired);
      const record = await waitForRecord(h, uuid, 'stopped', (r) => r.vmState === 'stopped');
      assert.equal(record.powerState, 'shutoff');
      assert.ok(h.engine.stats.conflicts >= 1);
      const history = await h.history(uuid);
      assertChained(history);
      assert.deepEqual(
        history.map((t) => t.vmStateTo),
        ['active', 'paused', 'stopped'],
      );
    });
  });

  test('two engines on one store (a handover) never write over each other', () =>
    withHarness(
      { instances: 20, seed: 5, faults: { eventDelayMs: [0, 10], reorder: true } },
      async (h) => {
        const secondStore = await openSqliteStore(join(h.dir, 'hvsync.db'), { exclusive: false });
        const secondDriver = new SimDriver(h.sim);
        const second = new SyncEngine({
          driver: secondDriver,
          store: secondStore,
          reconcileIntervalMs: 0,
        });
        try {
          await second.start();
          h.sim.startWorkload({ ratePerSecond: 300 });
          await waitFor('a busy workload', () => h.sim.stats.workloadOperations >= 150);
          h.sim.stopWorkload();
          await h.quiesce();
          await second.whenIdle();
          await h.quiesce();
          await assertMatchesTruth(h);
          await assertMatchesTruth(h, secondStore);
        } finally {
          await second.stop();
          await secondDriver.close();
          await secondStore.close();
        }
      },
    ));
});
