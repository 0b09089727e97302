// The client against a hostile server: every kind of bad frame closes that connection with a
// clear protocol error; nothing crashes, hangs or buffers what the peer merely claims.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  LibvirtClient,
  LibvirtClientError,
  LibvirtError,
  type CloseReason,
} from '../../src/libvirt/index.ts';
import { encodePacket, MessageType, Program } from '../../src/libvirt/packet.ts';
import { Proc } from '../../src/libvirt/remote.ts';
import { XdrWriter } from '../../src/libvirt/xdr.ts';
import {
  eventFrame,
  pingFrame,
  reply,
  startFakeLibvirtd,
  type FakeLibvirtd,
} from '../support/fake-libvirtd.ts';

const UUID = Buffer.alloc(16, 0xab);

function lifecycleBody(name: string): XdrWriter {
  return new XdrWriter().i32(7).string(name).fixedOpaque(UUID).i32(3).i32(5).i32(1);
}

function closed(client: LibvirtClient): Promise<{ reason: CloseReason; error?: Error }> {
  return new Promise((resolve) => client.onClose((reason, error) => resolve({ reason, error })));
}

describe('libvirt client against a hostile server', () => {
  let fake: FakeLibvirtd;
  before(async () => {
    fake = await startFakeLibvirtd();
  });
  after(() => fake.close());

  async function connect(options: { keepaliveIntervalMs?: number; callTimeoutMs?: number } = {}) {
    return LibvirtClient.connect({ uri: fake.uri, keepaliveIntervalMs: 0, ...options });
  }

  /** Sends `bytes` after the handshake and expects the client to drop the connection for it. */
  async function expectProtocolClose(bytes: Buffer, message: RegExp): Promise<void> {
    const client = await connect();
    const done = closed(client);
    fake.connections.at(-1)!.write(bytes);
    const { reason, error } = await done;
    assert.equal(reason, 'error');
    assert.ok(error instanceof LibvirtClientError, String(error));
    assert.equal(error.code, 'protocol');
    assert.match(error.message, message);
    await assert.rejects(
      client.getHostname(),
      (e: unknown) => e instanceof LibvirtClientError && e.code === 'closed',
    );
  }

  test('a well-formed event is delivered', async () => {
    const client = await connect();
    const got = new Promise((resolve) => client.onLifecycle(resolve));
    fake.connections
      .at(-1)!
      .write(eventFrame(Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, lifecycleBody('vm1').bytes()));
    const event = (await got) as {
      domain: { name: string; uuid: string };
      event: string;
      detail: string;
    };
    assert.equal(event.domain.name, 'vm1');
    assert.equal(event.domain.uuid, 'abababab-abab-abab-abab-abababababab');
    assert.equal(event.event, 'stopped');
    assert.equal(event.detail, 'destroyed');
    await client.close();
  });

  test('a frame shorter than a header', async () => {
    const bytes = Buffer.alloc(12);
    bytes.writeUInt32BE(12, 0);
    await expectProtocolClose(bytes, /shorter than a header/);
  });

  test('a length word over 16 MiB + 4 is refused before any payload is buffered', async () => {
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32BE(16 * 1024 * 1024 + 5, 0);
    await expectProtocolClose(bytes, /exceeds the maximum 16777220/);
  });

  test('a wrong program', async () => {
    await expectProtocolClose(
      eventFrame(318, lifecycleBody('x').bytes(), 0x12345678),
      /unknown program 0x12345678/,
    );
  });

  test('a wrong protocol version', async () => {
    const frame = encodePacket({
      program: Program.REMOTE,
      version: 2,
      procedure: 318,
      type: 2,
      serial: 1,
      status: 0,
    });
    await expectProtocolClose(frame, /unsupported protocol version 2/);
  });

  test('a truncated event payload', async () => {
    const body = lifecycleBody('vm1').bytes().subarray(0, 30);
    await expectProtocolClose(eventFrame(Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, body), /truncated/);
  });

  test('a string length running past the end of the frame', async () => {
    const body = new XdrWriter().i32(7).u32(1_000_000).fixedOpaque(Buffer.from('abcd')).bytes();
    await expectProtocolClose(
      eventFrame(Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, body),
      /truncated|remain/,
    );
  });

  test('a string longer than libvirt allows', async () => {
    const body = new XdrWriter()
      .i32(7)
      .u32(4 * 1024 * 1024 + 1)
      .bytes();
    await expectProtocolClose(
      eventFrame(Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, body),
      /exceeds the maximum/,
    );
  });

  test('a message type the daemon never sends', async () => {
    const frame = encodePacket({
      program: Program.REMOTE,
      version: 1,
      procedure: 1,
      type: MessageType.CALL,
      serial: 9,
      status: 0,
    });
    await expectProtocolClose(frame, /unexpected message type 0/);
  });

  test('a huge array count in a reply rejects the call and drops the connection', async () => {
    const client = await connect();
    const done = closed(client);
    fake.onCall = (call) => call.socket.write(reply(call, new XdrWriter().u32(0xffffffff).bytes()));
    await assert.rejects(client.listAllDomains(), /exceeds the maximum 16384/);
    assert.equal((await done).reason, 'error');
  });

  test('an array count larger than the bytes present', async () => {
    const client = await connect();
    fake.onCall = (call) => call.socket.write(reply(call, new XdrWriter().u32(16000).bytes()));
    await assert.rejects(client.listAllDomains(), /claims 16000 elements/);
    assert.equal(client.closed, true);
  });

  test('an error reply becomes a LibvirtError with code, domain and message', async () => {
    const client = await connect();
    fake.onCall = (call) => {
      const error = new XdrWriter()
        .i32(42)
        .i32(10)
        .optional('Domain not found', (w, v) => w.string(v))
        .i32(2)
        .bool(false)
        .bool(false)
        .bool(false)
        .bool(false)
        .i32(0)
        .i32(0)
        .bool(false);
      call.socket.write(reply(call, error.bytes(), 1));
    };
    await assert.rejects(client.lookupByName('nope'), (e: unknown) => {
      assert.ok(e instanceof LibvirtError);
      assert.equal(e.code, 42);
      assert.equal(e.domain, 10);
      assert.equal(e.isNoDomain, true);
      assert.equal(e.message, 'Domain not found');
      return true;
    });
    assert.equal(client.closed, false);
    await client.close();
  });

  test('a malformed error body rejects the pending call and drops the connection', async () => {
    const client = await connect({ callTimeoutMs: 0 });
    fake.onCall = (call) => call.socket.write(reply(call, new XdrWriter().i32(42).bytes(), 1));
    await assert.rejects(
      client.getHostname(),
      (e: unknown) =>
        e instanceof LibvirtClientError && e.code === 'closed' && /truncated/.test(e.message),
    );
    assert.equal(client.closed, true);
  });

  test('a CONTINUE reply (streams, which hvsync never opens) rejects the call and drops the connection', async () => {
    const client = await connect({ callTimeoutMs: 0 });
    fake.onCall = (call) => call.socket.write(reply(call, Buffer.alloc(0), 2));
    await assert.rejects(
      client.getHostname(),
      (e: unknown) => e instanceof LibvirtClientError && /unexpected status 2/.test(e.message),
    );
    assert.equal(client.closed, true);
  });

  test('a reply to an unknown serial is ignored', async () => {
    const client = await connect();
    fake.onCall = (call) => {
      call.socket.write(reply({ ...call, header: { ...call.header, serial: 999_999 } }));
      call.socket.write(reply(call, new XdrWriter().string('host-a').bytes()));
    };
    assert.equal(await client.getHostname(), 'host-a');
    await client.close();
  });

  test('per-call timeout rejects only that call', async () => {
    const client = await connect({ callTimeoutMs: 100 });
    fake.onCall = () => {};
    await assert.rejects(
      client.getHostname(),
      (e: unknown) => e instanceof LibvirtClientError && e.code === 'timeout',
    );
    fake.onCall = (call) => call.socket.write(reply(call, new XdrWriter().string('h').bytes()));
    assert.equal(await client.getHostname(), 'h');
    await client.close();
  });

  test('the daemon hanging up rejects every pending call at once with reason eof', async () => {
    const client = await connect({ callTimeoutMs: 0 });
    const done = closed(client);
    fake.onCall = () => {};
    const calls = [client.getHostname(), client.getUri(), client.listAllDomains()];
    await new Promise((r) => setTimeout(r, 20));
    fake.connections.at(-1)!.end();
    for (const call of calls) {
      await assert.rejects(
        call,
        (e: unknown) => e instanceof LibvirtClientError && e.code === 'closed',
      );
    }
    assert.equal((await done).reason, 'eof');
  });

  test('keepalive: answers the daemon PING with a PONG', async () => {
    const client = await connect();
    const before = fake.pongs;
    fake.connections.at(-1)!.write(pingFrame());
    for (let i = 0; i < 100 && fake.pongs === before; i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal(fake.pongs, before + 1);
    await client.close();
  });

  test('keepalive: a daemon that pings keeps the connection alive without pings of ours', async () => {
    // libvirtd pings a silent client every keepalive_interval (its own setting, here longer than
    // ours): its pings are proof of life enough, and answering them is all it needs from us.
    const client = await connect({ keepaliveIntervalMs: 40 });
    const socket = fake.connections.at(-1)!;
    const pingsBefore = fake.pings;
    const pongsBefore = fake.pongs;
    const daemonPings = setInterval(() => socket.write(pingFrame()), 60);
    try {
      // Ten of our intervals, more than the 6 after which silence would close the connection.
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(client.closed, false);
      assert.equal(fake.pings, pingsBefore, 'the client sent PINGs of its own');
      assert.ok(fake.pongs > pongsBefore, 'the client did not answer the daemon');
    } finally {
      clearInterval(daemonPings);
      await client.close();
    }
  });

  test('keepalive: a daemon that does not ping but answers ours stays connected', async () => {
    const client = await connect({ keepaliveIntervalMs: 20 });
    const pingsBefore = fake.pings;
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(client.closed, false);
    assert.ok(fake.pings > pingsBefore, 'the client never asked a silent daemon');
    await client.close();
  });

  test('keepalive: a silent peer is closed with reason keepalive', async () => {
    fake.answerPings = false;
    try {
      const client = await connect({ keepaliveIntervalMs: 40 });
      const pingsBefore = fake.pings;
      const { reason, error } = await closed(client);
      assert.equal(reason, 'keepalive');
      assert.match(String(error?.message), /libvirtd sent nothing for 240 ms/);
      assert.ok(fake.pings > pingsBefore, 'the client closed without asking first');
    } finally {
      fake.answerPings = true;
    }
  });

  test('domain states: other typed parameters are stepped over, a missing state is an error', async () => {
    const client = await connect();
    const record = (w: XdrWriter, name: string, params: (w: XdrWriter) => number): void => {
      w.string(name).fixedOpaque(UUID).i32(-1);
      const counted = new XdrWriter();
      const count = params(counted);
      w.u32(count).fixedOpaque(counted.bytes());
    };
    const listing = new XdrWriter().u32(1);
    record(listing, 'vm3', (w) => {
      w.string('state.note').i32(7).string('state.state is not this');
      w.string('state.cpu').i32(4).u32(0).u32(9);
      w.string('state.reason').i32(1).i32(2);
      w.string('state.flag').i32(6).i32(1);
      w.string('state.state').i32(1).i32(5);
      return 5;
    });
    fake.onCall = (call) => call.socket.write(reply(call, listing.bytes()));
    try {
      const [vm3, ...more] = await client.getAllDomainStates();
      assert.deepEqual(more, []);
      assert.equal(vm3!.domain.name, 'vm3');
      assert.equal(vm3!.stateCode, 5);
      assert.equal(vm3!.reasonCode, 2);

      const lacking = new XdrWriter().u32(1);
      record(lacking, 'vm4', (w) => {
        w.string('state.reason').i32(1).i32(2);
        return 1;
      });
      fake.onCall = (call) => call.socket.write(reply(call, lacking.bytes()));
      await assert.rejects(
        client.getAllDomainStates(),
        (e: unknown) =>
          e instanceof LibvirtClientError &&
          e.code === 'protocol' &&
          /vm4 lack state\.state/.test(e.message),
      );
    } finally {
      fake.onCall = (call) => call.socket.write(reply(call));
      await client.close();
    }
  });

  test('a listener that throws does not cost the others their events', async () => {
    const client = await connect();
    client.onLifecycle(() => {
      throw new Error('bug in a listener');
    });
    const got = new Promise((resolve) => client.onLifecycle(resolve));
    fake.connections
      .at(-1)!
      .write(eventFrame(Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, lifecycleBody('vm2').bytes()));
    assert.ok(await got);
    assert.equal(client.closed, false);
    await client.close();
  });

  test('connecting to a socket nobody listens on is a clear connect error', async () => {
    await assert.rejects(
      LibvirtClient.connect({ uri: 'test+unix:///default?socket=/nonexistent/sock' }),
      (e: unknown) =>
        e instanceof LibvirtClientError && e.code === 'connect' && /ENOENT/.test(e.message),
    );
  });
});
