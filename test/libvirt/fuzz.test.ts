// Throws many thousands of random and mutated real frames (recorded from libvirtd) at the
// decoder, and a few hundred mutated streams at a live client: every input must either decode or
// fail with a protocol error — no other exception, no crash, no hang. HVSYNC_FUZZ_SEED and
// HVSYNC_FUZZ_ITERATIONS reproduce or lengthen a run.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { LibvirtClient, LibvirtClientError } from '../../src/libvirt/index.ts';
import { decodePacket, FrameDecoder, MessageStatus } from '../../src/libvirt/packet.ts';
import {
  Proc,
  readDomain,
  readDomainList,
  readDomainStates,
  readLifecycleMessage,
  readRebootMessage,
  readRemoteError,
} from '../../src/libvirt/remote.ts';
import { XdrReader, XdrWriter } from '../../src/libvirt/xdr.ts';
import { reply, startFakeLibvirtd, type FakeLibvirtd } from '../support/fake-libvirtd.ts';

const fixture = JSON.parse(
  readFileSync(new URL('../fixtures/libvirt-frames.json', import.meta.url), 'utf8'),
) as { frames: { hex: string }[] };
const realFrames = fixture.frames.map((f) => Buffer.from(f.hex, 'hex'));
const seed = Number(process.env.HVSYNC_FUZZ_SEED ?? Date.now() % 1_000_000);
const iterations = Number(process.env.HVSYNC_FUZZ_ITERATIONS ?? 20_000);

/** mulberry32: small, seedable, good enough to pick mutations. */
function prng(s: number): () => number {
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function mutate(frame: Buffer, random: () => number): Buffer {
  const out = Buffer.from(frame);
  const pick = (n: number) => Math.floor(random() * n);
  switch (pick(6)) {
    case 0: // flip a few bytes anywhere
      for (let i = 0, n = 1 + pick(4); i < n; i++) out[pick(out.length)] = pick(256);
      return out;
    case 1: // truncate, keeping the length word honest or not
      return out.subarray(0, pick(out.length));
    case 2: {
      // plant a huge or random 32-bit number at a 4-byte boundary (lengths, counts)
      const at = 4 * pick(out.length >> 2);
      if (at + 4 <= out.length)
        out.writeUInt32BE(random() < 0.5 ? 0xffffffff - pick(16) : pick(1 << 24), at);
      return out;
    }
    case 3: {
      // random bytes appended, length word fixed up so the frame stays "valid"
      const extended = Buffer.concat([
        out,
        Buffer.from(Array.from({ length: pick(64) }, () => pick(256))),
      ]);
      extended.writeUInt32BE(extended.length, 0);
      return extended;
    }
    case 4: // a random length word
      out.writeUInt32BE(pick(2) ? pick(64) : 0xffffffff - pick(1 << 20), 0);
      return out;
    default: // pure noise
      return Buffer.from(Array.from({ length: 4 + pick(200) }, () => pick(256)));
  }
}

/** Decodes a daemon→client frame the way the client does, payload included. */
function decodeLikeTheClient(frame: Buffer): void {
  const { header, body } = decodePacket(frame);
  const r = new XdrReader(body);
  if (header.status === MessageStatus.ERROR) {
    readRemoteError(r);
    return;
  }
  switch (header.procedure) {
    case Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE:
      readLifecycleMessage(r);
      return;
    case Proc.DOMAIN_EVENT_CALLBACK_REBOOT:
      readRebootMessage(r);
      return;
    case Proc.CONNECT_GET_ALL_DOMAIN_STATS:
      readDomainStates(r);
      break;
    case Proc.CONNECT_LIST_ALL_DOMAINS:
      readDomainList(r);
      r.u32();
      break;
    case Proc.DOMAIN_LOOKUP_BY_NAME:
    case Proc.DOMAIN_LOOKUP_BY_UUID:
    case Proc.DOMAIN_DEFINE_XML:
    case Proc.DOMAIN_CREATE_WITH_FLAGS:
      readDomain(r);
      break;
    default:
      return;
  }
  r.end('reply');
}

function isProtocolError(error: unknown): boolean {
  return error instanceof LibvirtClientError && error.code === 'protocol';
}

describe(`libvirt decoder fuzz (seed ${seed})`, () => {
  test('every recorded real frame decodes cleanly', () => {
    assert.ok(realFrames.length > 100);
    for (const frame of realFrames) decodeLikeTheClient(frame);
  });

  test(`${iterations} mutated and random frames: decoded or a protocol error, nothing else`, () => {
    const random = prng(seed);
    let rejected = 0;
    for (let i = 0; i < iterations; i++) {
      const input = mutate(realFrames[Math.floor(random() * realFrames.length)]!, random);
      const decoder = new FrameDecoder();
      try {
        // Fed in random pieces, as a socket would deliver it.
        let offset = 0;
        while (offset < input.length) {
          const size = 1 + Math.floor(random() * 64);
          for (const frame of decoder.push(input.subarray(offset, offset + size))) {
            decodeLikeTheClient(frame);
          }
          offset += size;
        }
      } catch (error) {
        assert.ok(isProtocolError(error), `seed ${seed} iteration ${i}: ${String(error)}`);
        rejected++;
      }
      // Whatever was claimed, the decoder never holds more than the bytes it was given.
      assert.ok(decoder.pending <= input.length);
    }
    assert.ok(rejected > iterations / 10, `only ${rejected} inputs were rejected`);
  });

  test('the same stream split at any point yields the same frames', () => {
    const random = prng(seed + 1);
    const stream = Buffer.concat(realFrames.slice(0, 50));
    const whole = new FrameDecoder().push(stream).map((f) => f.toString('hex'));
    for (let i = 0; i < 200; i++) {
      const decoder = new FrameDecoder();
      const pieces: string[] = [];
      let offset = 0;
      while (offset < stream.length) {
        const size = 1 + Math.floor(random() * 300);
        pieces.push(
          ...decoder.push(stream.subarray(offset, offset + size)).map((f) => f.toString('hex')),
        );
        offset += size;
      }
      assert.deepEqual(pieces, whole);
    }
  });
});

describe(`libvirt client stream fuzz (seed ${seed})`, () => {
  let fake: FakeLibvirtd;
  before(async () => {
    fake = await startFakeLibvirtd();
  });
  after(() => fake.close());

  test('500 mutated event streams: delivered or closed with a protocol error, never hung', async () => {
    const random = prng(seed + 2);
    const events = realFrames.filter(
      (f) => f.readInt32BE(12) === Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE,
    );
    let closedWithError = 0;
    for (let i = 0; i < 500; i++) {
      const client = await LibvirtClient.connect({
        uri: fake.uri,
        keepaliveIntervalMs: 0,
        callTimeoutMs: 50,
      });
      let closeError: Error | undefined;
      client.onClose((_reason, error) => (closeError = error));
      client.onLifecycle(() => {});
      const burst = Buffer.concat(
        Array.from({ length: 1 + Math.floor(random() * 5) }, () =>
          mutate(events[Math.floor(random() * events.length)]!, random),
        ),
      );
      fake.connections.at(-1)!.write(burst);
      // A call after the burst either completes or fails cleanly: the client never hangs.
      // (A truncated frame in the burst swallows the reply: that call then times out, cleanly.)
      fake.onCall = (call) =>
        call.socket.write(reply(call, new XdrWriter().string('test:///x').bytes()));
      await client.getUri().catch((error: unknown) => {
        assert.ok(error instanceof LibvirtClientError, String(error));
      });
      if (closeError) {
        assert.ok(isProtocolError(closeError), `seed ${seed} stream ${i}: ${String(closeError)}`);
        closedWithError++;
      }
      // The daemon side hangs up: a client left holding half a frame must still close at once.
      const gone = new Promise((resolve) => client.onClose(resolve));
      fake.connections.at(-1)!.destroy();
      await gone;
    }
    assert.ok(closedWithError > 0);
  });
});
