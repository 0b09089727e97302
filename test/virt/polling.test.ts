import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DriverError,
  PollingDriver,
  SimDriver,
  SimHypervisor,
  transitionBetween,
} from '../../src/virt/index.ts';
import type { ObservedInstance, SimHypervisorOptions } from '../../src/virt/index.ts';
import { Recorder, waitFor } from './recorder.ts';

/** A sim connection that counts listings and how many ran at once. */
class CountingDriver extends SimDriver {
  listings = 0;
  inFlight = 0;
  maxInFlight = 0;

  override async listInstances(): Promise<ObservedInstance[]> {
    this.listings++;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      return await super.listInstances();
    } finally {
      this.inFlight--;
    }
  }
}

// A long interval by default: most tests poll by hand, so what a poll sees is exactly what the
// test did before it.
async function setup(intervalMs = 60_000, options: SimHypervisorOptions = {}) {
  const sim = new SimHypervisor({ instances: 3, seed: 9, ...options });
  const inner = new CountingDriver(sim);
  const driver = new PollingDriver(inner, { intervalMs });
  const recorder = new Recorder(driver);
  await driver.connect();
  await sim.settled();
  const [first, second] = sim.list().map((i) => i.uuid) as [string, string];
  return { sim, inner, driver, recorder, first, second };
}

describe('transitionBetween', () => {
  test('maps power-state changes to the transitions an event would have reported', () => {
    assert.equal(transitionBetween('running', 'shutoff'), 'stopped');
    assert.equal(transitionBetween('running', 'paused'), 'suspended');
    assert.equal(transitionBetween('paused', 'running'), 'resumed');
    assert.equal(transitionBetween('shutoff', 'running'), 'started');
    assert.equal(transitionBetween('suspended', 'running'), 'started');
    assert.equal(transitionBetween('running', 'crashed'), 'crashed');
    assert.equal(transitionBetween('running', 'suspended'), 'pmsuspended');
    assert.equal(transitionBetween('running', 'shutdown'), 'shutdown');
    assert.equal(transitionBetween('running', 'running'), null);
    assert.equal(transitionBetween('running', 'nostate'), null);
  });
});

describe('PollingDriver', () => {
  test('is named after its inner driver and forwards connection events only', async () => {
    const { sim, driver, recorder, first } = await setup();
    assert.equal(driver.kind, 'polling(sim)');
    assert.equal(driver.connected, true);
    sim.pause(first);
    await sim.settled();
    assert.deepEqual(
      recorder.events.map((e) => e.kind),
      ['connected'],
    );
    await driver.close();
  });

  test('the first listing is a baseline: no events for what already exists', async () => {
    const { driver, recorder } = await setup();
    await driver.pollNow();
    assert.equal(recorder.lifecycle.length, 0);
    await driver.close();
  });

  test('detects a guest shutdown and a start, with the state reason as detail', async () => {
    const { sim, driver, recorder, first, second } = await setup();
    await sim.guestShutdown(first);
    sim.crash(second);
    await driver.pollNow();
    assert.deepEqual(recorder.trail(first), ['stopped/shutdown/shutoff']);
    assert.deepEqual(recorder.trail(second), ['stopped/crashed/shutoff']);
    sim.start(first);
    await driver.pollNow();
    assert.deepEqual(recorder.trail(first), ['stopped/shutdown/shutoff', 'started/booted/running']);
    await driver.pollNow();
    assert.equal(recorder.trail(first).length, 2, 'no change, no event');
    await driver.close();
  });

  test('detects pause, resume, panic and pm-suspend', async () => {
    const { sim, driver, recorder, first, second } = await setup();
    sim.pause(first);
    sim.crash(second, { mode: 'panicked' });
    await driver.pollNow();
    sim.resume(first);
    await driver.pollNow();
    sim.pmSuspend(first);
    await driver.pollNow();
    assert.deepEqual(recorder.trail(first), [
      'suspended/user/paused',
      'resumed/unpaused/running',
      'pmsuspended/polled/suspended',
    ]);
    assert.deepEqual(recorder.trail(second), ['crashed/panicked/crashed']);
    await driver.close();
  });

  test('detects an out-of-band define, and a confirmed undefine', async () => {
    const { sim, driver, recorder, first } = await setup();
    const running = sim.define('new-running', { powerState: 'running' });
    const off = sim.define('new-off');
    sim.destroy(first);
    sim.undefine(first);
    await driver.pollNow();
    assert.deepEqual(recorder.trail(running), ['defined/polled/-', 'started/booted/running']);
    assert.deepEqual(recorder.trail(off), ['defined/polled/-']);
    assert.deepEqual(recorder.trail(first), ['undefined/polled/-']);
    assert.equal(recorder.lifecycle.find((e) => e.uuid === first)?.name, 'sim-00001');
    await driver.close();
  });

  test('an instance left out of a listing is not reported undefined', async () => {
    const { sim, inner, driver, recorder, first, second } = await setup();
    sim.faults.listingOmitRate = 1;
    sim.pause(second);
    await driver.pollNow();
    assert.equal((await inner.listInstances()).length, 0);
    // Omitted but confirmed by lookup: alive, and its change still seen.
    assert.deepEqual(recorder.trail(first), []);
    assert.deepEqual(recorder.trail(second), ['suspended/user/paused']);
    sim.clearFaults();
    await driver.pollNow();
    assert.equal(recorder.lifecycle.length, 1);
    await driver.close();
  });

  test('a missing instance whose lookup fails is neither reported nor forgotten', async () => {
    const { sim, driver, recorder, first } = await setup();
    sim.setFaults({ listingOmitRate: 1, lookupFailRate: 1 });
    sim.destroy(first);
    sim.undefine(first);
    await driver.pollNow();
    assert.equal(recorder.lifecycle.length, 0);
    sim.clearFaults();
    await driver.pollNow();
    assert.deepEqual(recorder.trail(first), ['undefined/polled/-']);
    await driver.close();
  });

  test('a failing poll emits nothing; after reconnect a poll catches up by itself', async () => {
    const { sim, inner, driver, recorder, first } = await setup();
    sim.disconnect('libvirtd restarted');
    await waitFor(() => recorder.count('disconnected') === 1, 'disconnected forwarded');
    assert.equal(driver.connected, false);
    sim.destroy(first);
    const listingsBefore = inner.listings;
    await driver.pollNow();
    assert.equal(inner.listings, listingsBefore + 1);
    assert.equal(recorder.lifecycle.length, 0);
    sim.reconnect();
    await waitFor(() => recorder.trail(first).length === 1, 'the catch-up poll');
    assert.deepEqual(recorder.trail(first), ['stopped/destroyed/shutoff']);
    assert.deepEqual(
      recorder.events.map((e) => e.kind),
      ['connected', 'disconnected', 'connected', 'lifecycle'],
    );
    await driver.close();
  });

  test('polls on its own timer, never two at once, and stops on close', async () => {
    const { sim, inner, driver, recorder, first } = await setup(5, {
      timing: { callLatencyMs: 15 },
    });
    sim.pause(first);
    await waitFor(() => recorder.trail(first).length === 1, 'a timed poll to see the pause');
    await Promise.all([driver.pollNow(), driver.pollNow(), driver.pollNow()]);
    await waitFor(() => inner.listings >= 8, 'several timed polls');
    assert.equal(inner.maxInFlight, 1);
    await driver.close();
    assert.equal(inner.connected, false);
    const listingsAtClose = inner.listings;
    await new Promise((resolve) => setTimeout(resolve, 40));
    assert.equal(inner.listings, listingsAtClose);
  });

  test('forwards actions and lookups to the inner driver', async () => {
    const { sim, driver, first } = await setup();
    await driver.pause(first);
    assert.equal(sim.get(first)?.powerState, 'paused');
    assert.equal((await driver.getPowerState(first))?.powerState, 'paused');
    await driver.resume(first);
    await driver.stop(first);
    await assert.rejects(
      driver.pause(first),
      (error: unknown) => error instanceof DriverError && error.code === 'invalid-state',
    );
    await driver.start(first);
    await driver.reboot(first, { hard: true });
    await driver.forceStop(first);
    assert.equal(sim.get(first)?.powerState, 'shutoff');
    assert.equal(await driver.hostname(), 'sim-host');
    assert.equal((await driver.listInstances()).length, 3);
    await driver.close();
  });

  test('rejects a non-positive interval', () => {
    const sim = new SimHypervisor();
    assert.throws(
      () => new PollingDriver(new SimDriver(sim), { intervalMs: 0 }),
      (error: unknown) => error instanceof DriverError,
    );
  });
});
