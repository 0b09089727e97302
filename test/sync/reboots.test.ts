// Reboots in the history, on a real libvirtd: a hard reboot (off, then on again, from another
// connection) on the test driver, and libvirt's reboot event from a real QEMU guest. The test
// driver's own reboot emits no event at all (seen on libvirtd 9.0), so a soft reboot needs QEMU.
// Every engine here observes the whole shared daemon; only this file's domains are enforced
// (a per-instance policy), so nobody else's domains are ever acted on.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LibvirtClient, type Domain } from '../../src/libvirt/index.ts';
import {
  openSqliteStore,
  type InstanceRecord,
  type Store,
  type TransitionRecord,
} from '../../src/store/index.ts';
import { SyncEngine } from '../../src/sync/index.ts';
import { LibvirtDriver } from '../../src/virt/index.ts';
import { createIdleGuest } from '../support/guest.ts';
import { describeLibvirt, uniqueName } from '../support/libvirt.ts';

interface Running {
  readonly engine: SyncEngine;
  readonly store: Store;
  close(): Promise<void>;
}

// A window far longer than two calls take even on a loaded machine: the STARTED cuts it short.
async function runEngine(uri: string, stopSettleMs = 5_000): Promise<Running> {
  const dir = mkdtempSync(join(tmpdir(), 'hvsync-reboots-'));
  const store = await openSqliteStore(join(dir, 'hvsync.db'));
  const driver = new LibvirtDriver({ uri });
  const engine = new SyncEngine({
    driver,
    store,
    policy: 'observe',
    reconcileIntervalMs: 0,
    stopSettleMs,
  });
  await engine.start();
  return {
    engine,
    store,
    async close() {
      await engine.stop();
      await driver.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function until<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const value = await check();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.fail(`timed out waiting for ${what}`);
}

function recordOf(store: Store, uuid: string, done: (r: InstanceRecord) => boolean) {
  return until(`${uuid} in the expected state`, async () => {
    const record = await store.getInstance(uuid);
    return record && done(record) ? record : undefined;
  });
}

async function historyOf(store: Store, uuid: string): Promise<TransitionRecord[]> {
  return (await store.history(uuid, { limit: 100 })).reverse();
}

async function enforceOn(store: Store, uuid: string): Promise<void> {
  const record = await recordOf(store, uuid, (r) => r.powerState === 'running');
  const result = await store.write({
    kind: 'update',
    uuid,
    expectedVersion: record.version,
    patch: { policy: 'enforce' },
  });
  assert.ok(result.ok, 'the per-instance policy was set');
}

describeLibvirt('reboots in the history: libvirt test driver', () => {
  let running: Running;
  let other: LibvirtClient;
  const domains: Domain[] = [];

  before(async () => {
    // Also holds the test driver's state open for the whole file.
    other = await LibvirtClient.connect({ uri: 'test+unix:///default' });
    running = await runEngine('test+unix:///default');
  });
  after(async () => {
    await running.close();
    for (const domain of domains) {
      await other.destroy(domain).catch(() => undefined);
      await other.undefine(domain).catch(() => undefined);
    }
    await other.close();
  });

  async function runningDomain(prefix: string): Promise<Domain> {
    const defined = await other.defineXml(
      `<domain type='test'><name>${uniqueName(prefix)}</name><memory>8192</memory><os><type>hvm</type></os></domain>`,
    );
    domains.push(defined);
    const domain = await other.create(defined);
    await recordOf(running.store, domain.uuid, (r) => r.powerState === 'running');
    return domain;
  }

  test('enforce: off and on again within the window is one hard-reboot entry, nothing stopped', async () => {
    const { store } = running;
    const domain = await runningDomain('hvsync-hard-reboot');
    await running.engine.whenIdle();
    await enforceOn(store, domain.uuid);
    // Whether the domain was adopted running, or adopted shut off and then started, is timing;
    // only what follows the destroy is this test's business.
    const before = Math.max(0, ...(await historyOf(store, domain.uuid)).map((t) => t.id));
    const enforcementsBefore = running.engine.stats.enforcements;
    await other.destroy(domain);
    await other.create(domain);
    const entry = await until('the hard-reboot entry', async () =>
      (await historyOf(store, domain.uuid)).find((t) => t.cause === 'hard-reboot'),
    );
    assert.deepEqual(
      [entry.from, entry.to, entry.vmStateFrom, entry.vmStateTo, entry.detail, entry.outOfBand],
      ['running', 'running', 'active', 'active', 'destroyed', true],
    );
    await running.engine.whenIdle();
    const record = await recordOf(store, domain.uuid, () => true);
    assert.equal(record.vmState, 'active');
    assert.equal(record.powerState, 'running');
    assert.ok(
      (await historyOf(store, domain.uuid))
        .filter((t) => t.id > before)
        .every((t) => t.vmStateTo === 'active'),
      'never recorded stopped',
    );
    assert.equal(running.engine.stats.enforcements, enforcementsBefore, 'nothing powered off');
  });

  test('observe: a stop and a later start are shutoff → running, two entries', async () => {
    const { store } = running;
    const domain = await runningDomain('hvsync-cycle-observe');
    // How the domain came to be recorded running (adopted running, or adopted shut off and then
    // started) depends on timing; only what follows the destroy is this test's business.
    await recordOf(store, domain.uuid, (r) => r.powerState === 'running');
    await running.engine.whenIdle();
    const before = Math.max(0, ...(await historyOf(store, domain.uuid)).map((t) => t.id));
    await other.destroy(domain);
    await recordOf(store, domain.uuid, (r) => r.powerState === 'shutoff');
    await other.create(domain);
    await recordOf(store, domain.uuid, (r) => r.powerState === 'running');
    await running.engine.whenIdle();
    const entries = (await historyOf(store, domain.uuid)).filter((t) => t.id > before);
    assert.deepEqual(
      entries.map((t) => [t.cause, t.from, t.to, t.vmStateTo, t.detail]),
      [
        ['event', 'running', 'shutoff', 'stopped', 'destroyed'],
        ['event', 'shutoff', 'running', 'active', 'booted'],
      ],
    );
  });
});

describeLibvirt('reboots in the history: a real QEMU guest', () => {
  test("libvirt's reboot event (a reset) is an entry with cause reboot, running → running", async () => {
    const guest = await createIdleGuest({ name: uniqueName('hvsync-reboot') });
    const other = await LibvirtClient.connect({ uri: 'qemu+unix:///system' });
    let running: Running | undefined;
    try {
      running = await runEngine('qemu+unix:///system');
      const { store } = running;
      const domain = await other.create(await other.defineXml(guest.xml));
      await recordOf(store, domain.uuid, (r) => r.powerState === 'running');
      await running.engine.whenIdle();
      await other.reset(domain);
      const entry = await until('the reboot entry', async () =>
        (await historyOf(store, domain.uuid)).find((t) => t.cause === 'reboot'),
      );
      assert.deepEqual(
        [entry.from, entry.to, entry.vmStateFrom, entry.vmStateTo, entry.detail, entry.outOfBand],
        ['running', 'running', 'active', 'active', 'reboot', true],
      );
    } finally {
      await running?.close();
      await other.close();
      await guest.cleanup();
    }
  });
});
