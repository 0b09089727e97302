// The periodic reconcile at rest: a listing that matches every record costs no store reads (the
// host's records are kept in memory by the engine's own writes), a listing that does not still
// gets its full pass for exactly the instances that changed, and a record another writer changed
// is found by the full read the reconcile makes every few runs and after a disconnect.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Store } from '../../src/store/index.ts';
import { harness, waitFor, type Harness } from './harness.ts';

interface Reads {
  /** One-record reads, each full pass begins with one. */
  count: number;
  /** Reads of a whole host's records. */
  hostLists: number;
}

/** The real store, counting its reads. */
function countingReads(store: Store, reads: Reads): Store {
  return new Proxy(store, {
    get(target, property, receiver) {
      if (property === 'getInstance') {
        return (uuid: string) => {
          reads.count++;
          return target.getInstance(uuid);
        };
      }
      if (property === 'listInstances') {
        return (filter: Parameters<Store['listInstances']>[0]) => {
          if (filter?.host !== undefined) reads.hostLists++;
          return target.listInstances(filter);
        };
      }
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** Records a running instance as paused past the engine, as a second process on the database would. */
async function pausedPastTheEngine(h: Harness): Promise<string> {
  const [uuid] = h.sim.list().map((i) => i.uuid) as [string];
  const record = await h.record(uuid);
  const other = await h.store.write({
    kind: 'update',
    uuid,
    expectedVersion: record.version,
    patch: { powerState: 'paused', powerReason: 'user' },
  });
  assert.ok(other.ok);
  return uuid;
}

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

describe('engine: reconcile at rest', () => {
  test('a listing that matches every record reads nothing from the store', () => {
    const reads = { count: 0, hostLists: 0 };
    return withHarness(
      { instances: 40, wrapStore: (store) => countingReads(store, reads) },
      async (h) => {
        await h.quiesce();
        const passesBefore = h.engine.stats.passes;
        reads.count = 0;
        reads.hostLists = 0;
        for (let run = 0; run < 3; run++) {
          const report = await h.engine.reconcile();
          assert.equal(report.listed, 40);
          assert.equal(report.drift, 0);
        }
        assert.equal(reads.count, 0, 'no per-instance read for unchanged instances');
        assert.equal(reads.hostLists, 0, "the host's records come from memory");
        assert.equal(h.engine.stats.passes, passesBefore, 'no pass for unchanged instances');
      },
    );
  });

  test("the engine's own writes keep the reconcile's records current", () => {
    const reads = { count: 0, hostLists: 0 };
    return withHarness(
      {
        instances: 4,
        faults: { dropEventRate: 1 },
        wrapStore: (store) => countingReads(store, reads),
      },
      async (h) => {
        const [paused] = h.sim.list().map((i) => i.uuid) as [string];
        h.sim.pause(paused);
        const created = h.sim.define('created-later', { powerState: 'running' });
        await h.quiesce();
        reads.hostLists = 0;
        const found = await h.engine.reconcile();
        assert.equal(found.drift, 1);
        assert.equal(found.adopted, 1);
        // The drift's write and the adoption went through the engine: the next run knows them.
        reads.count = 0;
        const again = await h.engine.reconcile();
        assert.equal(again.listed, 5);
        assert.equal(again.drift + again.adopted, 0);
        assert.equal(reads.count, 0, 'no pass: the written records match');
        assert.equal(reads.hostLists, 0);
        assert.equal((await h.record(created)).powerState, 'running');
      },
    );
  });

  test('a record another writer changed is found by the full read every Nth run', () => {
    const reads = { count: 0, hostLists: 0 };
    return withHarness(
      {
        instances: 3,
        engine: { recordsFullReadEvery: 2 },
        wrapStore: (store) => countingReads(store, reads),
      },
      async (h) => {
        await h.quiesce();
        const uuid = await pausedPastTheEngine(h);
        reads.hostLists = 0;
        await h.engine.reconcile();
        await h.engine.reconcile();
        assert.equal(reads.hostLists, 1, 'one full read in two runs');
        assert.equal((await h.record(uuid)).powerState, 'running', 'corrected from the listing');
        assert.equal(h.engine.stats.driftFound, 1);
      },
    );
  });

  test("a record another writer changed and told of is the reconcile's at once; reread reads all", () => {
    const reads = { count: 0, hostLists: 0 };
    return withHarness(
      {
        instances: 3,
        engine: { recordsFullReadEvery: 1_000 },
        wrapStore: (store) => countingReads(store, reads),
      },
      async (h) => {
        await h.quiesce();
        // Not told: the copy in memory still matches the listing, nothing is found.
        const uuid = await pausedPastTheEngine(h);
        reads.hostLists = 0;
        const missed = await h.engine.reconcile();
        assert.equal(missed.drift, 0);
        assert.equal(reads.hostLists, 0);
        // Told (an agent's watch): the next reconcile compares the listing with it, no full read.
        h.engine.recordChanged((await h.record(uuid))!);
        const told = await h.engine.reconcile();
        assert.equal(told.drift, 1);
        assert.equal(reads.hostLists, 0);
        assert.equal((await h.record(uuid)).powerState, 'running', 'corrected from the listing');
        // Not told again, but asked to read afresh (after an agent's journal was replayed).
        const again = await pausedPastTheEngine(h);
        const reread = await h.engine.reconcile({ reread: true });
        assert.equal(reads.hostLists, 1);
        assert.equal(reread.drift, 1);
        assert.equal((await h.record(again)).powerState, 'running');
      },
    );
  });

  test('after a disconnect the next reconcile reads the store in full', () => {
    const reads = { count: 0, hostLists: 0 };
    return withHarness(
      { instances: 3, wrapStore: (store) => countingReads(store, reads) },
      async (h) => {
        await h.quiesce();
        const uuid = await pausedPastTheEngine(h);
        reads.hostLists = 0;
        h.sim.disconnect();
        h.sim.reconnect();
        await waitFor(
          'the reconcile after the reconnect',
          () => h.engine.ready && reads.hostLists > 0,
        );
        await h.quiesce();
        assert.equal((await h.record(uuid)).powerState, 'running');
      },
    );
  });

  test('only the instances that drifted get a pass, and their drift is written', () => {
    const reads = { count: 0, hostLists: 0 };
    return withHarness(
      {
        instances: 20,
        faults: { dropEventRate: 1 },
        wrapStore: (store) => countingReads(store, reads),
      },
      async (h) => {
        // Pauses: a stop-like drift would wait out the reboot-race window and read again.
        const [first, paused] = h.sim.list().map((i) => i.uuid) as [string, string];
        h.sim.pause(first);
        h.sim.pause(paused);
        await h.quiesce();
        assert.equal((await h.record(first)).powerState, 'running', 'no event got through');
        reads.count = 0;
        const report = await h.engine.reconcile();
        assert.equal(report.drift, 2);
        assert.equal(reads.count, 2, 'one read for each drifted instance, none for the rest');
        assert.equal((await h.record(first)).powerState, 'paused');
        assert.equal((await h.record(paused)).powerState, 'paused');
        assert.equal((await h.history(paused)).at(-1)!.cause, 'reconcile');
      },
    );
  });

  test('an unlisted record is still probed', () =>
    withHarness({ instances: 3, faults: { dropEventRate: 1 } }, async (h) => {
      const [gone] = h.sim.list().map((i) => i.uuid) as [string];
      h.sim.destroy(gone);
      h.sim.undefine(gone);
      await h.quiesce();
      const report = await h.engine.reconcile();
      assert.equal(report.listed, 2);
      assert.equal(report.gone, 1);
      assert.equal((await h.record(gone)).vmState, 'deleted');
    }));
});
