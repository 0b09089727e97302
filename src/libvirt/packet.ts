// libvirt RPC framing: a u32 big-endian length that counts itself, a 24-byte header, then the
// XDR payload. See DESIGN.md section 4 and libvirt's virnetprotocol.x.
import { protocolError } from './errors.ts';

export const Program = {
  REMOTE: 0x20008086,
  QEMU: 0x20008087,
  KEEPALIVE: 0x6b656570,
} as const;

export const PROTOCOL_VERSION = 1;

export const MessageType = {
  CALL: 0,
  REPLY: 1,
  MESSAGE: 2,
  STREAM: 3,
  CALL_WITH_FDS: 4,
  REPLY_WITH_FDS: 5,
} as const;

export const MessageStatus = { OK: 0, ERROR: 1, CONTINUE: 2 } as const;

export const KeepaliveProc = { PING: 1, PONG: 2 } as const;

export const HEADER_BYTES = 24;
const LENGTH_BYTES = 4;
/** VIR_NET_MESSAGE_MAX: the largest message libvirt sends, not counting the length word. */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
const MAX_FRAME_BYTES = MAX_MESSAGE_BYTES + LENGTH_BYTES;
const MIN_FRAME_BYTES = LENGTH_BYTES + HEADER_BYTES;

export interface PacketHeader {
  readonly program: number;
  readonly version: number;
  readonly procedure: number;
  readonly type: number;
  readonly serial: number;
  readonly status: number;
}

export interface Packet {
  readonly header: PacketHeader;
  /** The XDR payload after the header. */
  readonly body: Buffer;
}

const KNOWN_PROGRAMS = new Set<number>(Object.values(Program));

/** Encodes one frame: length word, header, payload. */
export function encodePacket(header: PacketHeader, body?: Uint8Array): Buffer {
  const bodyLength = body?.length ?? 0;
  const frame = Buffer.allocUnsafe(MIN_FRAME_BYTES + bodyLength);
  frame.writeUInt32BE(frame.length, 0);
  frame.writeUInt32BE(header.program, 4);
  frame.writeUInt32BE(header.version, 8);
  frame.writeInt32BE(header.procedure, 12);
  frame.writeInt32BE(header.type, 16);
  frame.writeUInt32BE(header.serial, 20);
  frame.writeInt32BE(header.status, 24);
  if (body) frame.set(body, MIN_FRAME_BYTES);
  return frame;
}

/** Decodes and validates one whole frame (length word included). */
export function decodePacket(frame: Buffer): Packet {
  if (frame.length < MIN_FRAME_BYTES) {
    throw protocolError(`frame of ${frame.length} bytes is shorter than a header`);
  }
  const header: PacketHeader = {
    program: frame.readUInt32BE(4),
    version: frame.readUInt32BE(8),
    procedure: frame.readInt32BE(12),
    type: frame.readInt32BE(16),
    serial: frame.readUInt32BE(20),
    status: frame.readInt32BE(24),
  };
  if (!KNOWN_PROGRAMS.has(header.program)) {
    throw protocolError(`unknown program 0x${header.program.toString(16)}`);
  }
  if (header.version !== PROTOCOL_VERSION) {
    throw protocolError(`unsupported protocol version ${header.version}`);
  }
  if (header.type < MessageType.CALL || header.type > MessageType.REPLY_WITH_FDS) {
    throw protocolError(`unknown message type ${header.type}`);
  }
  if (header.status < MessageStatus.OK || header.status > MessageStatus.CONTINUE) {
    throw protocolError(`unknown message status ${header.status}`);
  }
  return { header, body: frame.subarray(MIN_FRAME_BYTES) };
}

/**
 * Cuts a byte stream into frames. The length word is validated before any byte of the frame is
 * buffered, so a peer cannot make us hold more than one maximum-size frame.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private expected = -1;

  /** Feeds bytes; returns every frame now complete. Throws a protocol error on a bad length. */
  push(chunk: Buffer): Buffer[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Buffer[] = [];
    for (;;) {
      if (this.expected < 0) {
        if (this.buffered < LENGTH_BYTES) break;
        const length = this.peekLength();
        if (length < MIN_FRAME_BYTES) {
          throw protocolError(`frame length ${length} is shorter than a header`);
        }
        if (length > MAX_FRAME_BYTES) {
          throw protocolError(`frame length ${length} exceeds the maximum ${MAX_FRAME_BYTES}`);
        }
        this.expected = length;
      }
      if (this.buffered < this.expected) break;
      frames.push(this.take(this.expected));
      this.expected = -1;
    }
    return frames;
  }

  /** Bytes held for a frame not yet complete. */
  get pending(): number {
    return this.buffered;
  }

  private peekLength(): number {
    const first = this.chunks[0]!;
    if (first.length >= LENGTH_BYTES) return first.readUInt32BE(0);
    return this.take(LENGTH_BYTES, true).readUInt32BE(0);
  }

  /** Removes `length` bytes from the front (or copies them without removing, when peeking). */
  private take(length: number, peek = false): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= length) {
      if (peek) return first;
      const frame = first.subarray(0, length);
      if (first.length === length) this.chunks.shift();
      else this.chunks[0] = first.subarray(length);
      this.buffered -= length;
      return frame;
    }
    const frame = Buffer.allocUnsafe(length);
    let copied = 0;
    let index = 0;
    while (copied < length) {
      const chunk = this.chunks[index]!;
      const n = Math.min(chunk.length, length - copied);
      chunk.copy(frame, copied, 0, n);
      copied += n;
      if (peek) {
        index++;
        continue;
      }
      if (n === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(n);
    }
    if (!peek) this.buffered -= length;
    return frame;
  }
}
