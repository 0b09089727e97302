// Live migration between simulated hosts: libvirt's event sequence on both sides (see
// docs/decisions.md, Migration), its failures, and the fabric that lets hosts find each other.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DriverError, SimDriver, SimFabric, SimHypervisor } from '../../src/virt/index.ts';
import type { SimHypervisorOptions } from '../../src/virt/index.ts';
import { waitFor } from './recorder.ts';

/** Two hosts on one fabric, each with a connected driver; every lifecycle event in arrival order. */
async function pair(options: Partial<SimHypervisorOptions> = {}) {
  const fabric = new SimFabric<SimHypervisor>();
  const a = new SimHypervisor({ hostname: 'host-a', instances: 2, seed: 1, fabric, ...options });
  const b = new SimHypervisor({ hostname: 'host-b', instances: 1, seed: 2, fabric, ...options });
  const trail: string[] = [];
  const drivers = [a, b].map((sim) => {
    const driver = new SimDriver(sim);
    driver.registerEventListener((event) => {
      if (event.kind === 'lifecycle') {
        trail.push(`${sim.hostname} ${event.transition}/${event.detail}`);
      }
    });
    return driver;
  });
  for (const driver of drivers) await driver.connect();
  await Promise.all([a.settled(), b.settled()]);
  const uuid = a.list()[0]!.uuid;
  const close = async (): Promise<void> => {
    for (const driver of drivers) await driver.close();
    a.close();
    b.close();
  };
  return { fabric, a, b, drivers, trail, uuid, close };
}

const settled = (...sims: SimHypervisor[]) => Promise.all(sims.map((sim) => sim.settled()));

describe('SimHypervisor.migrate', () => {
  test('success: libvirt order on both hosts; the source keeps its definition shut off', async () => {
    const { a, b, drivers, trail, uuid, close } = await pair();
    try {
      assert.equal(await a.migrate(uuid, b, { gapMs: 20 }), true);
      await settled(a, b);
      assert.deepEqual(trail, [
        'host-b started/migrated',
        'host-a suspended/migrated',
        'host-b resumed/migrated',
        'host-a stopped/migrated',
      ]);
      assert.deepEqual(b.get(uuid), {
        uuid,
        name: 'host-a-00001',
        powerState: 'running',
        reason: 'migrated',
      });
      assert.equal(a.get(uuid)?.powerState, 'shutoff');
      assert.equal(a.get(uuid)?.reason, 'migrated');
      assert.equal((await drivers[1]!.getPowerState(uuid))?.powerState, 'running');
    } finally {
      await close();
    }
  });

  test('the destination is paused, reason migration, until the switch-over is done', async () => {
    const { a, b, uuid, close } = await pair();
    try {
      const done = a.migrate(uuid, 'host-b', { gapMs: 30 });
      await waitFor(() => b.get(uuid) !== undefined, 'the incoming domain');
      assert.equal(b.get(uuid)?.powerState, 'paused');
      assert.equal(b.get(uuid)?.reason, 'migration');
      await waitFor(() => a.get(uuid)?.powerState === 'paused', 'the switch-over');
      assert.equal(a.get(uuid)?.reason, 'migration');
      assert.equal(await done, true);
    } finally {
      await close();
    }
  });

  test('source `remove`: the source no longer has it, and says so without an UNDEFINED', async () => {
    const { a, b, drivers, trail, uuid, close } = await pair();
    try {
      assert.equal(await a.migrate(uuid, b, { source: 'remove' }), true);
      await settled(a, b);
      assert.equal(a.get(uuid), undefined);
      assert.equal(await drivers[0]!.getPowerState(uuid), null);
      assert.equal(trail.at(-1), 'host-a stopped/migrated');
      assert.ok(!trail.some((line) => line.includes('undefined')));
      assert.equal(a.size, 1);
      assert.equal(b.size, 2);
    } finally {
      await close();
    }
  });

  test('failed at the switch-over: the destination stops (failed), the source resumes', async () => {
    const { a, b, trail, uuid, close } = await pair();
    try {
      assert.equal(await a.migrate(uuid, b, { fail: 'at-switchover', gapMs: 10 }), false);
      await settled(a, b);
      assert.deepEqual(trail, [
        'host-b started/migrated',
        'host-a suspended/migrated',
        'host-b stopped/failed',
        'host-a resumed/migrated',
      ]);
      assert.equal(b.get(uuid), undefined);
      assert.equal(a.get(uuid)?.powerState, 'running');
      assert.equal(a.get(uuid)?.reason, 'migration-canceled');
    } finally {
      await close();
    }
  });

  test('failed before the switch-over: only the destination sees anything', async () => {
    const { a, b, trail, uuid, close } = await pair();
    try {
      assert.equal(await a.migrate(uuid, b, { fail: 'before-switchover' }), false);
      await settled(a, b);
      assert.deepEqual(trail, ['host-b started/migrated', 'host-b stopped/failed']);
      assert.equal(a.get(uuid)?.powerState, 'running');
      assert.equal(a.get(uuid)?.reason, 'booted');
      assert.equal(b.get(uuid), undefined);
    } finally {
      await close();
    }
  });

  test('overtaken on the source mid-migration: the destination gives up', async () => {
    const { a, b, trail, uuid, close } = await pair();
    try {
      const done = a.migrate(uuid, b, { gapMs: 30 });
      await waitFor(() => a.get(uuid)?.powerState === 'paused', 'the switch-over');
      a.destroy(uuid);
      assert.equal(await done, false);
      await settled(a, b);
      assert.equal(b.get(uuid), undefined);
      assert.equal(a.get(uuid)?.powerState, 'shutoff');
      assert.ok(trail.includes('host-b stopped/failed'));
    } finally {
      await close();
    }
  });

  test('refused at once: its own host, an unknown host, a taken name, an instance not running', async () => {
    const { a, b, uuid, close } = await pair();
    try {
      const code = (c: DriverError['code']) => (error: unknown) =>
        error instanceof DriverError && error.code === c;
      assert.throws(() => a.migrate(uuid, a), code('invalid-state'));
      assert.throws(() => a.migrate(uuid, 'host-z'), code('not-found'));
      const other = a.list()[1]!.uuid;
      b.define(a.get(other)!.name);
      assert.throws(() => a.migrate(other, b), code('invalid-state'));
      a.destroy(other);
      assert.throws(() => a.migrate(other, b), code('invalid-state'));
      assert.throws(() => a.migrate('00000000-0000-4000-8000-000000000000', b), code('not-found'));
    } finally {
      await close();
    }
  });
});

describe('SimFabric', () => {
  test('a second host of the same name is refused; a closed host leaves', () => {
    const fabric = new SimFabric<SimHypervisor>();
    const a = new SimHypervisor({ hostname: 'h', fabric });
    assert.throws(() => new SimHypervisor({ hostname: 'h', fabric }), DriverError);
    a.close();
    const again = new SimHypervisor({ hostname: 'h', fabric });
    assert.equal(fabric.host('h'), again);
    again.close();
  });

  test('the workload migrates instances between the hosts of its fabric', async () => {
    const fabric = new SimFabric<SimHypervisor>();
    const a = new SimHypervisor({ hostname: 'w-a', instances: 20, seed: 5, fabric });
    const b = new SimHypervisor({ hostname: 'w-b', instances: 0, seed: 6, fabric });
    try {
      a.startWorkload({ ratePerSecond: 200, mix: { migrate: 1 }, tickMs: 5 });
      await waitFor(() => b.size >= 5, 'five instances moved');
      a.stopWorkload();
      await settled(a, b);
      const running = (sim: SimHypervisor) =>
        sim.list().filter((i) => i.powerState === 'running').length;
      // Every instance runs on exactly one host; the source keeps a shut-off definition.
      assert.equal(running(a) + running(b), 20);
      for (const instance of b.list()) {
        assert.equal(a.get(instance.uuid)?.reason, 'migrated');
      }
    } finally {
      a.close();
      b.close();
    }
  });
});
