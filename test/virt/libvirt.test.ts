// The libvirt driver on the real test driver: libvirt's vocabulary mapped onto the engine's.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { LibvirtClient, type Domain } from '../../src/libvirt/index.ts';
import { DriverError, LibvirtDriver, type DriverEvent } from '../../src/virt/index.ts';
import { describeLibvirt, uniqueName } from '../support/libvirt.ts';
import { reply, startFakeLibvirtd } from '../support/fake-libvirtd.ts';
import { Proc } from '../../src/libvirt/remote.ts';
import { XdrWriter } from '../../src/libvirt/xdr.ts';

describeLibvirt('libvirt driver', () => {
  let driver: LibvirtDriver;
  let other: LibvirtClient;
  let domain: Domain;
  const events: DriverEvent[] = [];

  before(async () => {
    other = await LibvirtClient.connect({ uri: 'test+unix:///default' });
    domain = await other.defineXml(
      `<domain type='test'><name>${uniqueName('hvsync-driver')}</name><memory>8192</memory><os><type>hvm</type></os></domain>`,
    );
    driver = new LibvirtDriver({ uri: 'test+unix:///default' });
    driver.registerEventListener((e) => events.push(e));
    await driver.connect();
  });
  after(async () => {
    await driver.close();
    await other.undefine(domain).catch(() => undefined);
    await other.close();
  });

  async function eventFor(transition: string): Promise<DriverEvent> {
    for (let i = 0; i < 200; i++) {
      const found = events.find(
        (e) => e.kind === 'lifecycle' && e.uuid === domain.uuid && e.transition === transition,
      );
      if (found) return found;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.fail(`no ${transition} event for ${domain.name}`);
  }

  test('announces the connection, and lists every instance with its power state in one call', async () => {
    assert.equal(events[0]?.kind, 'connected');
    const listed = await driver.listInstances();
    const mine = listed.find((i) => i.uuid === domain.uuid);
    assert.deepEqual(mine, {
      uuid: domain.uuid,
      name: domain.name,
      powerState: 'shutoff',
      reason: 'unknown',
    });
  });

  test('actions, events and confirmed states in the engine vocabulary', async () => {
    await driver.start(domain.uuid);
    const started = await eventFor('started');
    assert.equal(started.kind === 'lifecycle' && started.powerState, 'running');
    assert.equal(started.kind === 'lifecycle' && started.detail, 'booted');

    await driver.pause(domain.uuid);
    assert.equal((await driver.getPowerState(domain.uuid))?.powerState, 'paused');
    await driver.resume(domain.uuid);
    await driver.reboot(domain.uuid, { hard: true });
    const stopped = await eventFor('stopped');
    assert.equal(stopped.kind === 'lifecycle' && stopped.detail, 'destroyed');
    assert.equal(stopped.kind === 'lifecycle' && stopped.powerState, 'shutoff');
    assert.equal((await driver.getPowerState(domain.uuid))?.powerState, 'running');

    await driver.stop(domain.uuid, { timeoutMs: 5000 });
    assert.deepEqual(await driver.getPowerState(domain.uuid), {
      uuid: domain.uuid,
      name: domain.name,
      powerState: 'shutoff',
      reason: 'shutdown',
    });
  });

  test('lookups asked together are answered together, each with its own answer', async () => {
    const missing = '00000000-0000-4000-8000-000000000003';
    const answers = await Promise.all([
      driver.getPowerState(domain.uuid),
      driver.getPowerState(missing),
      driver.getPowerState(domain.uuid),
    ]);
    assert.equal(answers[0]?.name, domain.name);
    assert.equal(answers[1], null);
    assert.deepEqual(answers[2], answers[0]);
  });

  test('absence is confirmed as null; errors are typed', async () => {
    assert.equal(await driver.getPowerState('00000000-0000-4000-8000-000000000002'), null);
    await assert.rejects(
      driver.forceStop(domain.uuid),
      (e: unknown) => e instanceof DriverError && e.code === 'invalid-state',
    );
    await assert.rejects(
      driver.start('00000000-0000-4000-8000-000000000002'),
      (e: unknown) => e instanceof DriverError && e.code === 'not-found',
    );
  });
});

test('lookups asked in one turn share one stats call; later ones get their own', async () => {
  const fake = await startFakeLibvirtd();
  let statsCalls = 0;
  fake.onCall = (call) => {
    if (call.header.procedure === Proc.CONNECT_GET_ALL_DOMAIN_STATS) statsCalls++;
    // No domain known: every lookup answers "gone".
    call.socket.write(reply(call, new XdrWriter().u32(0).bytes()));
  };
  const driver = new LibvirtDriver({ uri: fake.uri, keepaliveIntervalMs: 0 });
  try {
    await driver.connect();
    const uuids = Array.from(
      { length: 50 },
      (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    );
    const answers = await Promise.all(uuids.map((uuid) => driver.getPowerState(uuid)));
    assert.deepEqual(
      answers,
      uuids.map(() => null),
    );
    assert.equal(statsCalls, 1);
    await driver.getPowerState(uuids[0]!);
    assert.equal(statsCalls, 2);
  } finally {
    await driver.close();
    await fake.close();
  }
});
