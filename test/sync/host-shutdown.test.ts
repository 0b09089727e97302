// Host shutdown (Nova 1444630): the host's shutdown stops every guest; an engine still listening
// would record them stopped, and under enforce power them off again once the host has booted and
// brought them back. hvsync stops listening first (SIGTERM: `stop()` unregisters before anything
// else) and is started after the guests are resumed at boot (contrib/hvsync.service orders it
// after libvirt-guests), so the record never learns a stop nobody asked for.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SyncEngine } from '../../src/sync/index.ts';
import { SimDriver } from '../../src/virt/index.ts';
import { adoptRunning, harness } from './harness.ts';

test('host shutdown and boot under enforce: nothing recorded stopped, nothing powered off', async () => {
  const h = await harness({ policy: 'enforce' });
  const rebooted = new SimDriver(h.sim);
  let engine: SyncEngine | undefined;
  try {
    const uuids = [];
    for (const name of ['db-1', 'web-1', 'web-2']) uuids.push(await adoptRunning(h, name));
    const before = await Promise.all(uuids.map((uuid) => h.record(uuid)));

    // Shutdown: the service goes first, then the host stops its guests.
    await h.engine.stop();
    await Promise.all(uuids.map((uuid) => h.sim.guestShutdown(uuid)));
    await h.sim.settled();
    for (const [i, uuid] of uuids.entries()) {
      assert.deepEqual(await h.record(uuid), before[i], 'a stopped engine records nothing');
    }

    // Boot: the guests are resumed, then the service starts and reconciles.
    for (const uuid of uuids) h.sim.start(uuid);
    await h.sim.settled();
    engine = new SyncEngine({
      driver: rebooted,
      store: h.store,
      host: h.engine.host,
      policy: 'enforce',
      reconcileIntervalMs: 0,
    });
    await engine.start();
    await engine.whenIdle();
    await h.sim.settled();

    assert.equal(engine.stats.enforcements, 0);
    for (const uuid of uuids) {
      assert.equal(h.sim.get(uuid)?.powerState, 'running', 'the guest was not powered off');
      const record = await h.record(uuid);
      assert.equal(record.vmState, 'active');
      assert.equal(record.powerState, 'running');
      assert.ok(
        (await h.history(uuid)).every((t) => t.vmStateTo !== 'stopped'),
        'no history entry says the instance was stopped',
      );
    }
  } finally {
    await engine?.stop();
    await rebooted.close();
    await h.close();
  }
});

test('guests not brought back at boot are found shut off by the reconcile, with no action', async () => {
  const h = await harness({ policy: 'enforce' });
  const rebooted = new SimDriver(h.sim);
  let engine: SyncEngine | undefined;
  try {
    const uuid = await adoptRunning(h, 'batch-1');
    await h.engine.stop();
    await h.sim.guestShutdown(uuid);
    await h.sim.settled();
    engine = new SyncEngine({
      driver: rebooted,
      store: h.store,
      host: h.engine.host,
      policy: 'enforce',
      reconcileIntervalMs: 0,
    });
    await engine.start();
    await engine.whenIdle();
    const record = await h.record(uuid);
    assert.equal(record.powerState, 'shutoff');
    assert.equal(record.vmState, 'stopped');
    assert.equal((await h.history(uuid)).at(-1)?.cause, 'reconcile');
    assert.equal(engine.stats.enforcements, 0);
  } finally {
    await engine?.stop();
    await rebooted.close();
    await h.close();
  }
});
