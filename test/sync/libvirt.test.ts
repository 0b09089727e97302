// The engine end to end on a real libvirtd: test-driver domains changed behind its back with
// virsh, a real QEMU guest that powers itself off, and (on a private libvirtd of the test's own)
// libvirtd dying while a guest shuts down and events arriving again after a restart.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore, type InstanceRecord, type Store } from '../../src/store/index.ts';
import { taskMark } from '../../src/model/index.ts';
import { SyncEngine } from '../../src/sync/index.ts';
import { LibvirtDriver } from '../../src/virt/index.ts';
import { createSelfStoppingGuest } from '../support/guest.ts';
import { describeLibvirt, uniqueName, virsh } from '../support/libvirt.ts';
import { describePrivateLibvirtd } from '../support/private-libvirtd.ts';

interface Running {
  readonly engine: SyncEngine;
  readonly driver: LibvirtDriver;
  readonly store: Store;
  close(): Promise<void>;
}

async function runEngine(uri: string, reconnectMinMs = 200): Promise<Running> {
  const dir = mkdtempSync(join(tmpdir(), 'hvsync-e2e-'));
  const store = await openSqliteStore(join(dir, 'hvsync.db'));
  const driver = new LibvirtDriver({ uri, reconnectMinMs, reconnectMaxMs: reconnectMinMs });
  await driver.connect();
  const engine = new SyncEngine({ driver, store, policy: 'observe', reconcileIntervalMs: 0 });
  await engine.start();
  return {
    engine,
    driver,
    store,
    async close() {
      await engine.stop();
      await driver.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls the store (bounded) until the record for `name` satisfies `done`. */
async function until(
  store: Store,
  name: string,
  done: (r: InstanceRecord) => boolean,
  timeoutMs = 15_000,
): Promise<InstanceRecord> {
  const deadline = Date.now() + timeoutMs;
  let last: InstanceRecord | undefined;
  while (Date.now() < deadline) {
    last = (await store.listInstances({ limit: 1000 })).find((r) => r.name === name);
    if (last && done(last)) return last;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`${name} never reached the expected state; last seen ${JSON.stringify(last)}`);
}

/** Polls (bounded) until `done` holds. */
async function waitFor(done: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() >= deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describeLibvirt('sync engine on the libvirt test driver', () => {
  let running: Running;
  let dir: string;
  before(async () => {
    running = await runEngine('test+unix:///default');
    dir = mkdtempSync(join(tmpdir(), 'hvsync-xml-'));
  });
  after(async () => {
    await running.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('changes made with virsh on another connection are recorded with state, detail and cause', async () => {
    const { store } = running;
    const name = uniqueName('hvsync-e2e');
    const xml = join(dir, `${name}.xml`);
    writeFileSync(
      xml,
      `<domain type='test'><name>${name}</name><memory>8192</memory><os><type>hvm</type></os></domain>`,
    );
    await virsh(['define', xml]);
    const defined = await until(store, name, (r) => r.powerState === 'shutoff');
    assert.equal(defined.vmState, 'stopped');

    await virsh(['start', name]);
    const started = await until(store, name, (r) => r.powerState === 'running');
    assert.equal(started.vmState, 'active', 'an out-of-band start makes it active (observe)');

    await virsh(['suspend', name]);
    await until(store, name, (r) => r.powerState === 'paused');
    await virsh(['resume', name]);
    await until(store, name, (r) => r.powerState === 'running' && r.powerReason === 'unpaused');

    await virsh(['destroy', name]);
    const stopped = await until(store, name, (r) => r.powerState === 'shutoff');
    assert.equal(stopped.vmState, 'stopped');
    assert.equal(stopped.powerReason, 'destroyed');

    const history = await store.history(stopped.uuid);
    const [last] = history;
    assert.equal(last?.cause, 'event');
    assert.equal(last?.from, 'running');
    assert.equal(last?.to, 'shutoff');
    assert.equal(last?.detail, 'destroyed');
    assert.equal(last?.outOfBand, true);
    assert.deepEqual(history.map((t) => t.to).reverse(), [
      'shutoff',
      'running',
      'paused',
      'running',
      'shutoff',
    ]);
    assert.ok(
      history.slice(0, -1).every((t) => t.cause === 'event'),
      JSON.stringify(history),
    );

    await virsh(['undefine', name]);
    const deleted = await until(store, name, (r) => r.vmState === 'deleted');
    assert.equal(deleted.taskState, null);
  });
  test('a task recorded in the store by someone else is performed after recordChanged', async () => {
    const { store, engine } = running;
    const name = uniqueName('hvsync-e2e-task');
    const xml = join(dir, `${name}.xml`);
    writeFileSync(
      xml,
      `<domain type='test'><name>${name}</name><memory>8192</memory><os><type>hvm</type></os></domain>`,
    );
    await virsh(['define', xml]);
    await virsh(['start', name]);
    try {
      const adopted = await until(store, name, (r) => r.powerState === 'running');
      // As a control-plane replica records a user's action: the task's mark, conditionally.
      const recorded = await store.write({
        kind: 'update',
        uuid: adopted.uuid,
        expectedVersion: adopted.version,
        patch: taskMark('pause', Date.now()),
      });
      assert.ok(recorded.ok);
      engine.recordChanged(recorded.instance);
      const done = await until(store, name, (r) => r.taskState === null);
      assert.equal(done.taskError, null);
      assert.equal(done.vmState, 'paused');
      assert.equal(done.powerState, 'paused');
      const [last] = await store.history(done.uuid);
      assert.equal(last?.cause, 'action');
      assert.equal(last?.detail, 'pause');
    } finally {
      await virsh(['destroy', name]).catch(() => undefined);
      await virsh(['undefine', name]);
    }
  });
});

describeLibvirt('sync engine with a real QEMU guest', () => {
  test('a guest that powers itself off ends stopped, with history cause event', async () => {
    const running = await runEngine('qemu+unix:///system');
    const guest = await createSelfStoppingGuest({
      name: uniqueName('hvsync-e2e-qemu'),
      delayMs: 1500,
    });
    try {
      await virsh(['define', guest.xmlPath], 'qemu:///system');
      await virsh(['start', guest.name], 'qemu:///system');
      await until(running.store, guest.name, (r) => r.powerState === 'running');
      const stopped = await until(
        running.store,
        guest.name,
        (r) => r.powerState === 'shutoff',
        60_000,
      );
      assert.equal(stopped.vmState, 'stopped');
      assert.equal(stopped.powerReason, 'shutdown');
      const [last] = await running.store.history(stopped.uuid);
      assert.equal(last?.cause, 'event');
      assert.equal(last?.to, 'shutoff');
      assert.equal(last?.outOfBand, true);
    } finally {
      await running.close();
      await guest.cleanup();
    }
  });
});

// A private libvirtd: these tests take the daemon away, and the machine's may serve other
// people's guests.
describePrivateLibvirtd('sync engine when libvirtd goes away', (daemon) => {
  test('libvirtd dies while a guest shuts itself down: after the reconnect the store is right, by reconcile', async () => {
    const uri = daemon.uri('qemu');
    // The first reconnect attempt is late on purpose: libvirtd must have settled the guest's
    // fate before hvsync can ask, so that only a reconcile can have found the change.
    const running = await runEngine(uri, 12_000);
    const guest = await createSelfStoppingGuest({
      name: uniqueName('hvsync-e2e-kill'),
      delayMs: 3000,
      uri,
      owner: daemon.user,
    });
    try {
      await virsh(['define', guest.xmlPath], uri);
      await virsh(['start', guest.name], uri);
      const up = await until(running.store, guest.name, (r) => r.powerState === 'running');
      await daemon.stop();
      await waitFor(() => !running.driver.connected, 'the driver to notice the daemon is gone');
      // The guest powers off while nobody listens; QEMU waits for libvirtd to reap it.
      await new Promise((r) => setTimeout(r, 4000));
      await daemon.start();
      const after = await until(
        running.store,
        guest.name,
        (r) => r.powerState === 'shutoff',
        30_000,
      );
      assert.equal(after.vmState, 'stopped');
      const [last] = await running.store.history(up.uuid);
      assert.equal(last?.cause, 'reconcile');
      assert.equal(last?.from, 'running');
      assert.equal(last?.to, 'shutoff');
      assert.ok(running.engine.stats.driftFound >= 1);
    } finally {
      await daemon.start();
      await running.close();
      await guest.cleanup();
    }
  });

  test('after libvirtd restarts, events arrive again: a change made after the reconnect is recorded by its event', async () => {
    const uri = daemon.uri('test');
    const running = await runEngine(uri);
    const dir = mkdtempSync(join(tmpdir(), 'hvsync-xml-'));
    try {
      await daemon.restart();
      await waitFor(() => running.driver.connected, 'the driver to reconnect');
      const name = uniqueName('hvsync-e2e-after-restart');
      const xml = join(dir, `${name}.xml`);
      writeFileSync(
        xml,
        `<domain type='test'><name>${name}</name><memory>8192</memory><os><type>hvm</type></os></domain>`,
      );
      await virsh(['define', xml], uri);
      await until(running.store, name, (r) => r.powerState === 'shutoff');
      await virsh(['start', name], uri);
      const started = await until(running.store, name, (r) => r.powerState === 'running');
      const [last] = await running.store.history(started.uuid);
      assert.equal(last?.cause, 'event');
      assert.equal(last?.to, 'running');
    } finally {
      await running.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
