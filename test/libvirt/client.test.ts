// The libvirt client against a real libvirtd: the test driver for every call and the events each
// action causes, a real QEMU guest that powers itself off, and a private libvirtd dying under us.
import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DomainEventId,
  ErrorCode,
  LibvirtClient,
  LibvirtClientError,
  LibvirtError,
  ListDomainsFlags,
  type LifecycleEventMessage,
} from '../../src/libvirt/index.ts';
import { createIdleGuest, createSelfStoppingGuest } from '../support/guest.ts';
import { describeLibvirt, uniqueName, virsh } from '../support/libvirt.ts';
import { describePrivateLibvirtd } from '../support/private-libvirtd.ts';

const TEST_URI = 'test+unix:///default';
const QEMU_URI = 'qemu+unix:///system';

function testDomainXml(name: string): string {
  return `<domain type='test'><name>${name}</name><memory>8192</memory><os><type>hvm</type></os></domain>`;
}

/** Collects one domain's events (by name: DEFINED can arrive before defineXml's reply). */
function recorder(client: LibvirtClient, name: string) {
  const events: LifecycleEventMessage[] = [];
  const waiters: (() => void)[] = [];
  client.onLifecycle((e) => {
    if (e.domain.name !== name) return;
    events.push(e);
    waiters.splice(0).forEach((wake) => wake());
  });
  const words = () => events.map((e) => `${e.event}/${e.detail}`);
  return {
    events,
    /** Waits (bounded) until `done` holds for the events so far; returns them as event/detail. */
    async until(done: (seen: string[]) => boolean, timeoutMs = 10_000): Promise<string[]> {
      const deadline = Date.now() + timeoutMs;
      while (!done(words()) && Date.now() < deadline) {
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 100);
        });
      }
      return words();
    },
  };
}

describeLibvirt('libvirt client on the test driver', () => {
  // One connection per test: libvirt refuses a second registration of the same event id on a
  // connection ("event callback already tracked").
  let client: LibvirtClient;
  beforeEach(async () => {
    client = await LibvirtClient.connect({ uri: TEST_URI });
  });
  afterEach(() => client.close());

  test('connection calls: library version, hostname, URI', async () => {
    assert.match(await client.getLibVersion(), /^\d+\.\d+\.\d+$/);
    assert.ok((await client.getHostname()).length > 0);
    assert.equal(await client.getUri(), 'test:///default');
  });

  test('every domain call, and the events each action causes, in order', async () => {
    const name = uniqueName('hvsync-client');
    const seen = recorder(client, name);
    await client.registerDomainEvent(DomainEventId.LIFECYCLE);

    const domain = await client.defineXml(testDomainXml(name));
    assert.equal(domain.name, name);
    assert.equal(domain.id, -1);
    assert.deepEqual(await client.lookupByName(name), domain);
    assert.deepEqual(await client.lookupByUuid(domain.uuid), domain);
    assert.deepEqual(await client.getState(domain), {
      state: 'shutoff',
      reason: 'unknown',
      stateCode: 5,
      reasonCode: 0,
    });
    const inactive = await client.listAllDomains(ListDomainsFlags.INACTIVE);
    assert.ok(inactive.some((d) => d.uuid === domain.uuid));

    const running = await client.create(domain);
    assert.ok(running.id > 0, 'a started domain has an id');
    const active = await client.listAllDomains(ListDomainsFlags.ACTIVE);
    assert.ok(active.some((d) => d.uuid === domain.uuid));
    const [byUuid, ...more] = await client.getDomainStatesByUuid([domain.uuid]);
    assert.equal(more.length, 0);
    assert.deepEqual(byUuid?.domain, running, 'one call gives the name and id too');
    assert.equal(byUuid?.state, 'running');
    assert.deepEqual(
      await client.getDomainStatesByUuid(['00000000-0000-4000-8000-000000000001']),
      [],
    );
    const all = await client.getAllDomainStates();
    const mine = all.find((s) => s.domain.uuid === domain.uuid);
    assert.equal(mine?.state, 'running');
    assert.equal(mine?.reason, 'booted');

    await client.suspend(running);
    assert.equal((await client.getState(running)).state, 'paused');
    await client.resume(running);
    assert.equal((await client.getState(running)).reason, 'unpaused');
    await client.reboot(running);
    await client.reset(running);
    await client.shutdown(running);
    assert.deepEqual(await client.getState(running), {
      state: 'shutoff',
      reason: 'shutdown',
      stateCode: 5,
      reasonCode: 1,
    });
    await client.create(domain);
    await client.destroy(domain);
    assert.equal((await client.getState(domain)).reason, 'destroyed');
    await client.undefine(domain);
    await assert.rejects(client.lookupByUuid(domain.uuid), (e: unknown) => {
      return e instanceof LibvirtError && e.isNoDomain && e.code === ErrorCode.NO_DOMAIN;
    });

    const expected = [
      'defined/added',
      'started/booted',
      'suspended/paused',
      'resumed/unpaused',
      'stopped/shutdown',
      'started/booted',
      'stopped/destroyed',
      'undefined/removed',
    ];
    assert.deepEqual(await seen.until((e) => e.length >= expected.length), expected);
  });

  test('events caused by another connection (virsh) arrive; deregistered callbacks stop them', async () => {
    const name = uniqueName('hvsync-virsh');
    const seen = recorder(client, name);
    const callbackId = await client.registerDomainEvent(DomainEventId.LIFECYCLE);
    await client.defineXml(testDomainXml(name));
    await virsh(['start', name]);
    await virsh(['suspend', name]);
    await virsh(['resume', name]);
    await virsh(['destroy', name]);
    assert.deepEqual(await seen.until((e) => e.length >= 5), [
      'defined/added',
      'started/booted',
      'suspended/paused',
      'resumed/unpaused',
      'stopped/destroyed',
    ]);
    await client.deregisterDomainEvent(callbackId);
    await virsh(['undefine', name]);
    // A marker event on another domain, registered afresh, proves events still flow and that
    // the deregistered callback delivered nothing for the undefine in between.
    await client.registerDomainEvent(DomainEventId.LIFECYCLE);
    const marker = uniqueName('hvsync-marker');
    const markerSeen = recorder(client, marker);
    await client.undefine(await client.defineXml(testDomainXml(marker)));
    await markerSeen.until((e) => e.length >= 2);
    assert.equal(seen.events.length, 5);
  });

  test('operation errors carry libvirt code and message', async () => {
    const name = uniqueName('hvsync-err');
    const domain = await client.defineXml(testDomainXml(name));
    try {
      await assert.rejects(client.destroy(domain), (e: unknown) => {
        assert.ok(e instanceof LibvirtError);
        assert.equal(e.isOperationInvalid, true);
        assert.equal(e.code, ErrorCode.OPERATION_INVALID);
        assert.match(e.message, /not running/);
        return true;
      });
    } finally {
      await client.undefine(domain);
    }
  });
});

describeLibvirt('libvirt client with a real QEMU guest', () => {
  test('a guest that powers itself off: SHUTDOWN/GUEST (or FINISHED), then STOPPED/SHUTDOWN', async () => {
    const guest = await createSelfStoppingGuest({
      name: uniqueName('hvsync-selfstop'),
      delayMs: 1000,
    });
    const client = await LibvirtClient.connect({ uri: QEMU_URI });
    try {
      const seen = recorder(client, guest.name);
      await client.registerDomainEvent(DomainEventId.LIFECYCLE);
      const domain = await client.defineXml(guest.xml);
      await client.create(domain);
      const events = await seen.until((e) => e.some((w) => w.startsWith('stopped/')), 60_000);
      // libvirtd 9.0 with QEMU gives: defined/added, resumed/unpaused, started/booted,
      // shutdown/guest, stopped/shutdown. Older daemons say shutdown/finished. What matters: the
      // guest's own shutdown is announced before the stop, and the stop says shutdown, not
      // destroyed or crashed.
      assert.equal(events[0], 'defined/added');
      assert.ok(events.includes('started/booted'));
      const announced = events.findIndex((w) => /^shutdown\/(guest|finished)$/.test(w));
      assert.ok(announced > events.indexOf('started/booted'), events.join());
      assert.equal(events.at(-1), 'stopped/shutdown');
      assert.equal(events.indexOf('stopped/shutdown'), events.length - 1);
      assert.equal((await client.getState(domain)).reason, 'shutdown');
    } finally {
      await client.close();
      await guest.cleanup();
    }
  });

  test('a reset of a running guest delivers a reboot event', async () => {
    const guest = await createIdleGuest({ name: uniqueName('hvsync-idle') });
    const client = await LibvirtClient.connect({ uri: QEMU_URI });
    try {
      const reboots: string[] = [];
      client.onReboot((e) => reboots.push(e.domain.uuid));
      await client.registerDomainEvent(DomainEventId.REBOOT);
      const domain = await client.create(await client.defineXml(guest.xml));
      await client.reset(domain);
      for (let i = 0; i < 100 && reboots.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(reboots, [guest.uuid]);
    } finally {
      await client.close();
      await guest.cleanup();
    }
  });
});

// A private daemon: the machine's may serve other people's guests.
describePrivateLibvirtd('libvirt client when libvirtd dies', (daemon) => {
  test('pending calls are rejected and the close reported; a new connection works once it is back', async () => {
    const uri = daemon.uri('test');
    const client = await LibvirtClient.connect({ uri, callTimeoutMs: 0 });
    const closed = new Promise<string>((resolve) => client.onClose((reason) => resolve(reason)));
    // Frozen first, so the calls are certainly pending when the daemon dies.
    daemon.signal('SIGSTOP');
    const pending = [client.getHostname(), client.listAllDomains(), client.getAllDomainStates()];
    await new Promise((r) => setTimeout(r, 100));
    // Sent without waiting: the pending calls' rejections are awaited right below.
    daemon.signal('SIGKILL');
    // Dying with our calls unread in its socket buffer, the daemon resets the connection
    // (ECONNRESET) rather than closing it cleanly: either way the client must say it is closed.
    assert.match(await closed, /^(eof|error)$/);
    for (const call of pending) {
      await assert.rejects(
        call,
        (e: unknown) => e instanceof LibvirtClientError && e.code === 'closed',
      );
    }
    await assert.rejects(
      client.getUri(),
      (e: unknown) => e instanceof LibvirtClientError && e.code === 'closed',
    );

    await daemon.kill();
    await daemon.start();
    const again = await LibvirtClient.connect({ uri });
    assert.equal(await again.getUri(), 'test:///default');
    await again.close();
  });
});

// A private daemon: on the machine's, anyone's change to any domain changes the listing.
describePrivateLibvirtd('libvirt client: a listing that did not change', (daemon) => {
  test('is recognised by its bytes and handed back as it was; a change is decoded', async () => {
    const client = await LibvirtClient.connect({ uri: daemon.uri('test') });
    try {
      const domain = await client.create(
        await client.defineXml(testDomainXml(uniqueName('hvsync-listing'))),
      );
      const first = await client.listDomainStates();
      const mine = (listing: typeof first) =>
        listing.domains.find((s) => s.domain.uuid === domain.uuid);
      assert.equal(mine(first)?.state, 'running');
      assert.deepEqual(first.domains, await client.getAllDomainStates());
      const second = await client.listDomainStates(first);
      assert.equal(second, first, 'the same listing, not decoded again');

      await client.suspend(domain);
      const third = await client.listDomainStates(second);
      assert.notEqual(third, second);
      assert.equal(mine(third)?.state, 'paused');
      assert.equal(await client.listDomainStates(third), third);
      assert.deepEqual((await client.listDomainStates()).domains, third.domains);
    } finally {
      await client.close();
    }
  });
});
