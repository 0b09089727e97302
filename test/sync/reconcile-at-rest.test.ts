// The periodic reconcile at rest: a listing that matches every record costs no per-instance store
// reads, and a listing that does not still gets its full pass for exactly the instances that
// changed.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Store } from '../../src/store/index.ts';
import { harness, type Harness } from './harness.ts';

/** The real store, counting the one-record reads that each full pass begins with. */
function countingReads(store: Store, reads: { count: number }): Store {
  return new Proxy(store, {
    get(target, property, receiver) {
      if (property === 'getInstance') {
        return (uuid: string) => {
          reads.count++;
          return target.getInstance(uuid);
        };
      }
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
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
  test('a listing that matches every record reads no record one by one', () => {
    const reads = { count: 0 };
    return withHarness(
      { instances: 40, wrapStore: (store) => countingReads(store, reads) },
      async (h) => {
        await h.quiesce();
        const passesBefore = h.engine.stats.passes;
        reads.count = 0;
        const report = await h.engine.reconcile();
        assert.equal(report.listed, 40);
        assert.equal(report.drift, 0);
        assert.equal(reads.count, 0, 'no per-instance read for unchanged instances');
        assert.equal(h.engine.stats.passes, passesBefore, 'no pass for unchanged instances');
      },
    );
  });

  test('only the instances that drifted get a pass, and their drift is written', () => {
    const reads = { count: 0 };
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
