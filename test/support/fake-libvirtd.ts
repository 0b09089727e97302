// A hostile libvirt server on a local socket: the one fake the libvirt suites allow, because no
// real daemon can be made to send malformed frames. It completes the handshake like libvirtd,
// then does whatever the test tells it to.
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  decodePacket,
  encodePacket,
  FrameDecoder,
  MessageStatus,
  MessageType,
  Program,
  type PacketHeader,
} from '../../src/libvirt/packet.ts';
import { Proc } from '../../src/libvirt/remote.ts';
import { XdrWriter } from '../../src/libvirt/xdr.ts';

export interface FakeCall {
  readonly header: PacketHeader;
  readonly body: Buffer;
  readonly socket: Socket;
}

export interface FakeLibvirtd {
  readonly uri: string;
  readonly socketPath: string;
  /** Calls after the handshake that the test wants to answer itself; default: reply OK, empty. */
  onCall: (call: FakeCall) => void;
  /** Every keepalive PING seen. */
  pings: number;
  /** Every keepalive PONG seen: the client's answers to the fake's own PINGs. */
  pongs: number;
  /** Whether the fake answers our PINGs. */
  answerPings: boolean;
  readonly connections: Socket[];
  close(): Promise<void>;
}

const HANDSHAKE: Record<number, () => Buffer> = {
  [Proc.AUTH_LIST]: () => new XdrWriter().u32(1).i32(0).bytes(),
  [Proc.CONNECT_SUPPORTS_FEATURE]: () => new XdrWriter().i32(1).bytes(),
  [Proc.CONNECT_OPEN]: () => Buffer.alloc(0),
  [Proc.CONNECT_REGISTER_CLOSE_CALLBACK]: () => Buffer.alloc(0),
  [Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY]: () => new XdrWriter().i32(7).bytes(),
  [Proc.CONNECT_CLOSE]: () => Buffer.alloc(0),
};

const KEEPALIVE_PING = 1;
const KEEPALIVE_PONG = 2;

/** A keepalive PING as libvirtd sends it: a header-only message, serial 0. */
export function pingFrame(): Buffer {
  return encodePacket({
    program: Program.KEEPALIVE,
    version: 1,
    procedure: KEEPALIVE_PING,
    type: MessageType.MESSAGE,
    serial: 0,
    status: MessageStatus.OK,
  });
}

export function reply(call: FakeCall, body: Uint8Array = Buffer.alloc(0), status = 0): Buffer {
  return encodePacket({ ...call.header, type: MessageType.REPLY, status }, body);
}

export function eventFrame(
  procedure: number,
  body: Uint8Array,
  program: number = Program.REMOTE,
): Buffer {
  return encodePacket(
    { program, version: 1, procedure, type: MessageType.MESSAGE, serial: 1, status: 0 },
    body,
  );
}

export async function startFakeLibvirtd(): Promise<FakeLibvirtd> {
  const dir = mkdtempSync(join(tmpdir(), 'hvsync-fake-'));
  const socketPath = join(dir, 'libvirt-sock');
  const connections: Socket[] = [];
  const fake: FakeLibvirtd = {
    uri: `test+unix:///default?socket=${socketPath}`,
    socketPath,
    onCall: (call) => call.socket.write(reply(call)),
    pings: 0,
    pongs: 0,
    answerPings: true,
    connections,
    close: async () => {
      for (const socket of connections) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  const server: Server = createServer((socket) => {
    connections.push(socket);
    const decoder = new FrameDecoder();
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) {
        const { header, body } = decodePacket(frame);
        if (header.program === Program.KEEPALIVE) {
          if (header.procedure === KEEPALIVE_PONG) {
            fake.pongs++;
            continue;
          }
          fake.pings++;
          if (fake.answerPings) {
            socket.write(
              encodePacket({ ...header, procedure: KEEPALIVE_PONG, status: MessageStatus.OK }),
            );
          }
          continue;
        }
        const canned = HANDSHAKE[header.procedure];
        if (canned) {
          socket.write(reply({ header, body, socket }, canned()));
        } else {
          fake.onCall({ header, body, socket });
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return fake;
}
