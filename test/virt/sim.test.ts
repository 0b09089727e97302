import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DriverError, SimDriver, SimHypervisor } from '../../src/virt/index.ts';
import type { SimHypervisorOptions } from '../../src/virt/index.ts';
import { Recorder, turns, waitFor } from './recorder.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const UNKNOWN = '00000000-0000-4000-8000-000000000000';

async function setup(options: SimHypervisorOptions = {}) {
  const sim = new SimHypervisor({ instances: 3, seed: 42, ...options });
  const driver = new SimDriver(sim);
  const recorder = new Recorder(driver);
  await driver.connect();
  await sim.settled();
  const uuids = sim.list().map((instance) => instance.uuid);
  return { sim, driver, recorder, uuids, first: uuids[0]!, second: uuids[1]! };
}

function isDriverError(code: DriverError['code']) {
  return (error: unknown): boolean => error instanceof DriverError && error.code === code;
}

describe('SimHypervisor: the world', () => {
  test('creates running instances with names in order and uuids that follow from the seed', () => {
    const a = new SimHypervisor({ instances: 3, seed: 7 });
    const b = new SimHypervisor({ instances: 5, seed: 7 });
    const c = new SimHypervisor({ instances: 3, seed: 8 });
    assert.equal(a.size, 3);
    assert.deepEqual(
      a.list().map((i) => i.name),
      ['sim-00001', 'sim-00002', 'sim-00003'],
    );
    for (const instance of a.list()) {
      assert.match(instance.uuid, UUID);
      assert.equal(instance.powerState, 'running');
    }
    const uuidsA = a.list().map((i) => i.uuid);
    assert.deepEqual(
      b
        .list()
        .slice(0, 3)
        .map((i) => i.uuid),
      uuidsA,
    );
    assert.notDeepEqual(
      c.list().map((i) => i.uuid),
      uuidsA,
    );
    assert.equal(a.define('extra'), new SimHypervisor({ instances: 3, seed: 7 }).define('extra'));
    assert.notEqual(a.define('extra-2'), b.define('extra-2'));
  });

  test('10 000 instances: every one listed, uuids distinct, a driver lists them in one call', async () => {
    const sim = new SimHypervisor({ instances: 10_000, seed: 3 });
    assert.equal(sim.size, 10_000);
    assert.equal(new Set(sim.list().map((i) => i.uuid)).size, 10_000);
    const driver = new SimDriver(sim);
    await driver.connect();
    const listed = await driver.listInstances();
    assert.equal(listed.length, 10_000);
    assert.equal(listed.at(-1)!.name, 'sim-10000');
    const one = listed[5_000]!;
    assert.deepEqual(await driver.getPowerState(one.uuid), one);
    await driver.close();
  });
});

describe('SimHypervisor: out-of-band changes emit what libvirt emits', () => {
  test('events are never delivered inside the call that caused them', async () => {
    const { sim, recorder, first } = await setup();
    recorder.clear();
    sim.pause(first);
    assert.equal(recorder.events.length, 0);
    assert.deepEqual(await recorder.waitForTrail(first, 1), ['suspended/paused/paused']);
  });

  test('define and undefine', async () => {
    const { sim, recorder } = await setup();
    const uuid = sim.define('web-1');
    assert.match(uuid, UUID);
    assert.equal(sim.get(uuid)?.powerState, 'shutoff');
    const running = sim.define('web-2', {
      uuid: 'AAAAAAAA-0000-4000-8000-000000000001',
      powerState: 'running',
    });
    assert.equal(running, 'aaaaaaaa-0000-4000-8000-000000000001');
    assert.throws(() => sim.define('web-3', { uuid: running }), isDriverError('invalid-state'));
    assert.throws(() => sim.define('web-1'), isDriverError('invalid-state'));
    assert.throws(() => sim.undefine(running), isDriverError('invalid-state'));
    sim.undefine(uuid);
    assert.equal(sim.get(uuid), undefined);
    assert.throws(() => sim.undefine(uuid), isDriverError('not-found'));
    await sim.settled();
    assert.deepEqual(recorder.trail(uuid), ['defined/added/-', 'undefined/removed/-']);
    assert.deepEqual(recorder.trail(running), ['defined/added/-', 'started/booted/running']);
    assert.equal(recorder.lifecycle[0]!.name, 'web-1');
  });

  test('guest shutdown passes through the shutdown state', async () => {
    const { sim, recorder, first } = await setup({ timing: { shutdownGapMs: 20 } });
    const done = sim.guestShutdown(first);
    assert.equal(sim.get(first)?.powerState, 'shutdown');
    await done;
    assert.deepEqual(sim.get(first), {
      ...sim.get(first)!,
      powerState: 'shutoff',
      reason: 'shutdown',
    });
    await sim.settled();
    assert.deepEqual(recorder.trail(first), [
      'shutdown/finished/shutdown',
      'stopped/shutdown/shutoff',
    ]);
    assert.throws(() => sim.guestShutdown(first), isDriverError('invalid-state'));
  });

  test('crash: stopped by default, or panicked and left crashed', async () => {
    const { sim, recorder, first, second } = await setup();
    sim.crash(first);
    sim.crash(second, { mode: 'panicked' });
    assert.equal(sim.get(first)?.powerState, 'shutoff');
    assert.equal(sim.get(first)?.reason, 'crashed');
    assert.equal(sim.get(second)?.powerState, 'crashed');
    await sim.settled();
    assert.deepEqual(recorder.trail(first), ['stopped/crashed/shutoff']);
    assert.deepEqual(recorder.trail(second), ['crashed/panicked/crashed']);
  });

  test('destroy, start, pause, resume, pm-suspend, pm-wakeup', async () => {
    const { sim, recorder, first } = await setup();
    sim.destroy(first);
    assert.throws(() => sim.destroy(first), isDriverError('invalid-state'));
    assert.throws(() => sim.pause(first), isDriverError('invalid-state'));
    sim.start(first);
    sim.pause(first);
    sim.resume(first);
    sim.pmSuspend(first);
    sim.pmWakeup(first);
    await sim.settled();
    assert.deepEqual(recorder.trail(first), [
      'stopped/destroyed/shutoff',
      'started/booted/running',
      'suspended/paused/paused',
      'resumed/unpaused/running',
      'pmsuspended/memory/suspended',
      'started/wakeup/running',
    ]);
  });

  test('hard reboot really is shut off between STOPPED and STARTED', async () => {
    const { sim, recorder, first, second } = await setup({ timing: { rebootGapMs: 20 } });
    const plain = sim.hardReboot(first);
    const nova = sim.hardReboot(second, { withResumed: true });
    assert.equal(sim.get(first)?.powerState, 'shutoff');
    assert.equal(sim.get(first)?.reason, 'destroyed');
    await Promise.all([plain, nova]);
    assert.equal(sim.get(first)?.powerState, 'running');
    await sim.settled();
    assert.deepEqual(recorder.trail(first), [
      'stopped/destroyed/shutoff',
      'started/booted/running',
    ]);
    assert.deepEqual(recorder.trail(second), [
      'stopped/destroyed/shutoff',
      'resumed/unpaused/running',
      'started/booted/running',
    ]);
  });

  test('a change made during a hard reboot overtakes its second step', async () => {
    const { sim, recorder, first } = await setup({ timing: { rebootGapMs: 30 } });
    const reboot = sim.hardReboot(first);
    sim.undefine(first);
    await reboot;
    await sim.settled();
    assert.equal(sim.get(first), undefined);
    assert.deepEqual(recorder.trail(first), ['stopped/destroyed/shutoff', 'undefined/removed/-']);
  });

  test('soft reboot: one rebooted event, still running', async () => {
    const { sim, recorder, first } = await setup();
    sim.softReboot(first);
    await sim.settled();
    assert.equal(sim.get(first)?.powerState, 'running');
    assert.deepEqual(recorder.trail(first), ['rebooted/reboot/-']);
  });

  test('migration away, failed migration, migration in', async () => {
    const { sim, driver, recorder, first, second } = await setup();
    sim.migrateAway(first);
    assert.equal(sim.get(first), undefined);
    assert.equal(sim.size, 2);
    assert.equal(await driver.getPowerState(first), null);
    await sim.failedMigration(second);
    assert.equal(sim.get(second)?.powerState, 'running');
    const arrived = sim.migrateIn('arrival');
    await sim.settled();
    assert.deepEqual(recorder.trail(first), ['stopped/migrated/shutoff']);
    assert.deepEqual(recorder.trail(second), [
      'suspended/migrated/paused',
      'resumed/migrated/running',
    ]);
    assert.deepEqual(recorder.trail(arrived), [
      'started/migrated/running',
      'resumed/migrated/running',
      'defined/added/-',
    ]);
  });

  test('unknown uuids are not found; observedAt is when the change happened', async () => {
    let clock = 1_000;
    const { sim, recorder, first } = await setup({ now: () => clock });
    assert.throws(() => sim.start(UNKNOWN), isDriverError('not-found'));
    clock = 5_000;
    sim.pause(first);
    clock = 9_000;
    await sim.settled();
    assert.equal(recorder.lifecycle[0]!.observedAt, 5_000);
  });

  test('every connected driver gets every event; a throwing listener hurts no one', async () => {
    const { sim, driver, recorder, first } = await setup();
    driver.registerEventListener(() => {
      throw new Error('listener bug');
    });
    const late = new Recorder(driver);
    const other = new SimDriver(sim);
    const otherRecorder = new Recorder(other);
    await other.connect();
    sim.pause(first);
    await sim.settled();
    assert.deepEqual(recorder.trail(first), ['suspended/paused/paused']);
    assert.deepEqual(late.trail(first), ['suspended/paused/paused']);
    assert.deepEqual(otherRecorder.trail(first), ['suspended/paused/paused']);
    assert.equal(driver.listenerErrors, 1);
    late.unregister();
    sim.resume(first);
    await sim.settled();
    assert.equal(late.trail(first).length, 1);
    assert.equal(recorder.trail(first).length, 2);
  });
});

describe('SimDriver: actions', () => {
  test('connect emits connected; calls before connect reject as disconnected', async () => {
    const sim = new SimHypervisor({ instances: 1 });
    const driver = new SimDriver(sim);
    const recorder = new Recorder(driver);
    assert.equal(driver.kind, 'sim');
    assert.equal(driver.connected, false);
    await assert.rejects(driver.listInstances(), isDriverError('disconnected'));
    await driver.connect();
    assert.equal(driver.connected, true);
    assert.equal(await driver.hostname(), 'sim-host');
    await waitFor(() => recorder.count('connected') === 1, 'connected event');
    await driver.close();
    assert.equal(driver.connected, false);
    await assert.rejects(driver.listInstances(), isDriverError('disconnected'));
  });

  test('start, pause, resume, force stop, soft and hard reboot change the world and emit', async () => {
    const { sim, driver, recorder, first } = await setup();
    await driver.pause(first);
    assert.equal(sim.get(first)?.powerState, 'paused');
    await driver.pause(first); // already paused: done, as in libvirt
    await driver.resume(first);
    await driver.resume(first);
    await driver.reboot(first);
    await driver.reboot(first, { hard: true });
    assert.equal(sim.get(first)?.powerState, 'running');
    await driver.forceStop(first);
    assert.equal(sim.get(first)?.powerState, 'shutoff');
    await driver.start(first);
    assert.equal(sim.get(first)?.powerState, 'running');
    await sim.settled();
    assert.deepEqual(recorder.trail(first), [
      'suspended/paused/paused',
      'resumed/unpaused/running',
      'rebooted/reboot/-',
      'stopped/destroyed/shutoff',
      'started/booted/running',
      'stopped/destroyed/shutoff',
      'started/booted/running',
    ]);
  });

  test('graceful stop: the guest shuts down; a guest that ignores it is forced off', async () => {
    const { sim, driver, recorder, first, second } = await setup();
    sim.setIgnoresShutdown(second);
    await driver.stop(first);
    assert.equal(sim.get(first)?.powerState, 'shutoff');
    await driver.stop(second, { timeoutMs: 30 });
    assert.equal(sim.get(second)?.powerState, 'shutoff');
    await sim.settled();
    assert.deepEqual(recorder.trail(first), [
      'shutdown/finished/shutdown',
      'stopped/shutdown/shutoff',
    ]);
    assert.deepEqual(recorder.trail(second), ['stopped/destroyed/shutoff']);
  });

  test('hard reboot via the driver can emit RESUMED between, as Nova does', async () => {
    const { sim, driver, recorder, first } = await setup();
    sim.hardRebootEmitsResumed = true;
    await driver.reboot(first, { hard: true });
    await sim.settled();
    assert.deepEqual(recorder.trail(first), [
      'stopped/destroyed/shutoff',
      'resumed/unpaused/running',
      'started/booted/running',
    ]);
  });

  test('actions that make no sense reject invalid-state; unknown uuids not-found', async () => {
    const { sim, driver, first } = await setup();
    await assert.rejects(driver.start(first), isDriverError('invalid-state'));
    await driver.forceStop(first);
    await assert.rejects(driver.pause(first), isDriverError('invalid-state'));
    await assert.rejects(driver.resume(first), isDriverError('invalid-state'));
    await assert.rejects(driver.stop(first), isDriverError('invalid-state'));
    await assert.rejects(driver.forceStop(first), isDriverError('invalid-state'));
    await assert.rejects(driver.reboot(first), isDriverError('invalid-state'));
    await assert.rejects(driver.reboot(first, { hard: true }), isDriverError('invalid-state'));
    for (const action of [
      () => driver.start(UNKNOWN),
      () => driver.stop(UNKNOWN),
      () => driver.forceStop(UNKNOWN),
      () => driver.reboot(UNKNOWN),
      () => driver.pause(UNKNOWN),
      () => driver.resume(UNKNOWN),
    ]) {
      await assert.rejects(action(), isDriverError('not-found'));
    }
    assert.equal(await driver.getPowerState(UNKNOWN), null);
    assert.equal(sim.get(first)?.powerState, 'shutoff');
  });
});

describe('SimHypervisor: faults', () => {
  test('drop rate 1 drops every event', async () => {
    const { sim, recorder, first, second } = await setup({ faults: { dropEventRate: 1 } });
    sim.pause(first);
    sim.destroy(second);
    await sim.settled();
    assert.equal(recorder.lifecycle.length, 0);
    assert.equal(sim.stats.eventsDropped, 2);
    sim.setFaults({ dropEventRate: 0 });
    sim.resume(first);
    assert.deepEqual(await recorder.waitForTrail(first, 1), ['resumed/unpaused/running']);
  });

  test('a partial listing omits instances; the truth still has them', async () => {
    const { sim, driver } = await setup({ instances: 400 });
    sim.faults.listingOmitRate = 0.5;
    const listed = await driver.listInstances();
    assert.ok(listed.length > 100 && listed.length < 300, `listed ${listed.length} of 400`);
    assert.equal(sim.list().length, 400);
    sim.faults.listingOmitRate = 1;
    assert.equal((await driver.listInstances()).length, 0);
  });

  test('lookups can fail as disconnected', async () => {
    const { sim, driver, first } = await setup({ faults: { lookupFailRate: 1 } });
    await assert.rejects(driver.getPowerState(first), isDriverError('disconnected'));
    sim.clearFaults();
    assert.equal((await driver.getPowerState(first))?.powerState, 'running');
  });

  test('actions can fail and change nothing', async () => {
    const { sim, driver, first } = await setup({ faults: { actionFailRate: 1 } });
    await assert.rejects(driver.pause(first), isDriverError('failed'));
    assert.equal(sim.get(first)?.powerState, 'running');
  });

  test('hung actions never resolve until the fault is cleared', async () => {
    const { sim, driver, first, second } = await setup();
    const hung = new Set([first]);
    sim.faults.hangActions = hung;
    let settled = false;
    const pausing = driver.pause(first).then(() => (settled = true));
    await driver.pause(second);
    await driver.resume(second);
    await turns(20);
    assert.equal(settled, false);
    assert.equal(sim.get(first)?.powerState, 'running');
    hung.delete(first);
    await pausing;
    assert.equal(sim.get(first)?.powerState, 'paused');
  });

  test('delayed events keep their order unless reordering is asked for', async () => {
    const emitAll = async (reorder: boolean) => {
      const { sim, recorder, uuids } = await setup({
        instances: 40,
        faults: { eventDelayMs: [0, 40], reorder },
      });
      for (const uuid of uuids) sim.pause(uuid);
      await waitFor(() => recorder.lifecycle.length === 40, '40 events');
      return { arrived: recorder.lifecycle.map((e) => e.uuid), uuids };
    };
    const ordered = await emitAll(false);
    assert.deepEqual(ordered.arrived, ordered.uuids);
    const shuffled = await emitAll(true);
    assert.notDeepEqual(shuffled.arrived, shuffled.uuids);
    assert.deepEqual([...shuffled.arrived].sort(), [...shuffled.uuids].sort());
  });

  test('disconnect rejects pending calls, loses events; reconnect emits connected', async () => {
    const { sim, driver, recorder, first, second } = await setup();
    sim.faults.hangActions = true;
    const pending = driver.pause(first);
    sim.faults.hangActions = false;
    // Queued before the drop, not yet delivered: lost with the connection.
    sim.pause(second);
    sim.disconnect('libvirtd restarted');
    await assert.rejects(pending, isDriverError('disconnected'));
    assert.equal(driver.connected, false);
    await assert.rejects(driver.listInstances(), isDriverError('disconnected'));
    await assert.rejects(driver.start(first), isDriverError('disconnected'));
    sim.destroy(first);
    await sim.settled();
    assert.equal(recorder.count('disconnected'), 1);
    assert.equal(recorder.lifecycle.length, 0);
    assert.equal(sim.get(first)?.powerState, 'shutoff');

    const late = new SimDriver(sim);
    let lateConnected = false;
    const lateConnecting = late.connect().then(() => (lateConnected = true));
    await turns();
    assert.equal(lateConnected, false);

    sim.reconnect();
    await lateConnecting;
    assert.equal(driver.connected, true);
    await waitFor(() => recorder.count('connected') === 2, 'connected after reconnect');
    const kinds = recorder.events.map((e) => e.kind);
    assert.deepEqual(kinds, ['connected', 'disconnected', 'connected']);
    assert.equal((await driver.getPowerState(first))?.powerState, 'shutoff');
    sim.start(first);
    assert.deepEqual(await recorder.waitForTrail(first, 1), ['started/booted/running']);
    await late.close();
  });

  test('closing a driver rejects its pending calls', async () => {
    const { sim, driver, first } = await setup();
    sim.faults.hangActions = true;
    const pending = driver.resume(first);
    await driver.close();
    await assert.rejects(pending, isDriverError('disconnected'));
    await assert.rejects(driver.connect(), isDriverError('disconnected'));
  });
});

describe('SimHypervisor: workload', () => {
  test('runs at roughly the asked rate, each operation emitting events', async () => {
    const { sim, recorder } = await setup({ instances: 1_000 });
    const rate = 2_000;
    const startedAt = performance.now();
    sim.startWorkload({ ratePerSecond: rate });
    assert.equal(sim.workloadRunning, true);
    await waitFor(() => performance.now() - startedAt >= 500, 'half a second of workload');
    sim.stopWorkload();
    const elapsedSeconds = (performance.now() - startedAt) / 1000;
    const operations = sim.stats.workloadOperations;
    const expected = rate * elapsedSeconds;
    assert.ok(
      operations > expected * 0.4 && operations < expected * 1.6,
      `${operations} operations in ${elapsedSeconds.toFixed(2)} s at ${rate}/s`,
    );
    await sim.settled();
    assert.ok(recorder.lifecycle.length >= operations, 'every operation emits at least one event');
    const transitions = new Set(recorder.lifecycle.map((e) => e.transition));
    for (const t of ['shutdown', 'stopped', 'started', 'suspended', 'resumed', 'rebooted']) {
      assert.ok(transitions.has(t as never), `workload produced ${t}`);
    }
    // The world stays consistent with what was emitted: replaying the events per instance ends
    // in each instance's current state.
    const last = new Map<string, string>();
    for (const e of recorder.lifecycle) if (e.powerState) last.set(e.uuid, e.powerState);
    for (const [uuid, state] of last) assert.equal(sim.get(uuid)?.powerState, state, uuid);
  });

  test('picks only instances where the action makes sense', async () => {
    const { sim, recorder } = await setup({ instances: 20 });
    sim.startWorkload({ ratePerSecond: 1_000, mix: { pause: 1, resume: 1, outOfBandStart: 1 } });
    await waitFor(() => sim.stats.workloadOperations >= 200, '200 operations');
    sim.stopWorkload();
    await sim.settled();
    // Nothing is ever shut off, so nothing is started; each instance alternates pause, resume.
    for (const uuid of sim.list().map((i) => i.uuid)) {
      recorder.trail(uuid).forEach((step, i) => {
        assert.equal(step, i % 2 === 0 ? 'suspended/paused/paused' : 'resumed/unpaused/running');
      });
    }
    assert.equal(recorder.lifecycle.length, sim.stats.workloadOperations);
    assert.throws(
      () => sim.startWorkload({ ratePerSecond: 10, mix: { pause: 0 } }),
      isDriverError('failed'),
    );
  });
});

describe('SimHypervisor: workload and a user', () => {
  test("leaves alone what a driver action touched: a user's stop is not undone", async () => {
    const { sim, driver } = await setup({ instances: 20 });
    const uuids = sim.list().map((i) => i.uuid);
    const byUser = uuids.slice(0, 10);
    const outOfBand = uuids.slice(10);
    await Promise.all(byUser.map((uuid) => driver.forceStop(uuid)));
    for (const uuid of outOfBand) sim.destroy(uuid);
    await sim.settled();
    sim.startWorkload({ ratePerSecond: 1_000, mix: { outOfBandStart: 1 } });
    // The workload boots every instance it may: all the ones shut off behind the driver's back.
    await waitFor(
      () => outOfBand.every((uuid) => sim.get(uuid)?.powerState === 'running'),
      'the out-of-band ones booted again',
    );
    sim.stopWorkload();
    await sim.settled();
    assert.deepEqual(
      byUser.map((uuid) => sim.get(uuid)?.powerState),
      byUser.map(() => 'shutoff'),
      'every instance the user stopped is still stopped',
    );
    assert.equal(sim.stats.workloadOperations, outOfBand.length);
    await driver.close();
    sim.close();
  });

  test('once the quiet time is over, the workload may touch it again', async () => {
    const { sim, driver, first } = await setup({ instances: 1 });
    await driver.forceStop(first);
    await sim.settled();
    sim.startWorkload({ ratePerSecond: 1_000, mix: { outOfBandStart: 1 }, leaveActedOnMs: 0 });
    await waitFor(() => sim.get(first)?.powerState === 'running', 'booted by the workload');
    sim.stopWorkload();
    await driver.close();
    sim.close();
  });
});
