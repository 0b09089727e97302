// XDR (RFC 4506) as libvirt's RPC uses it. The reader trusts nothing: every length and count
// comes from the peer, so each is checked against both a protocol maximum and the bytes actually
// left before anything is allocated or sliced.
import { protocolError } from './errors.ts';

export class XdrReader {
  private offset: number;

  constructor(
    private readonly buffer: Buffer,
    offset = 0,
  ) {
    this.offset = offset;
  }

  get remaining(): number {
    return this.buffer.length - this.offset;
  }

  private need(bytes: number, what: string): void {
    if (bytes > this.remaining) {
      throw protocolError(`truncated ${what}: need ${bytes} bytes, ${this.remaining} left`);
    }
  }

  u32(): number {
    this.need(4, 'unsigned int');
    const value = this.buffer.readUInt32BE(this.offset);
    this.offset += 4;
    return value;
  }

  i32(): number {
    this.need(4, 'int');
    const value = this.buffer.readInt32BE(this.offset);
    this.offset += 4;
    return value;
  }

  /** Unsigned hyper; bigint because libvirt counters exceed 2^53. */
  u64(): bigint {
    this.need(8, 'unsigned hyper');
    const value = this.buffer.readBigUInt64BE(this.offset);
    this.offset += 8;
    return value;
  }

  i64(): bigint {
    this.need(8, 'hyper');
    const value = this.buffer.readBigInt64BE(this.offset);
    this.offset += 8;
    return value;
  }

  f64(): number {
    this.need(8, 'double');
    const value = this.buffer.readDoubleBE(this.offset);
    this.offset += 8;
    return value;
  }

  bool(): boolean {
    const value = this.u32();
    if (value > 1) throw protocolError(`bool with value ${value}`);
    return value === 1;
  }

  /** Fixed-length opaque (e.g. a 16-byte UUID), padded to 4 bytes. */
  fixedOpaque(length: number): Buffer {
    const padded = pad(length);
    this.need(padded, `opaque[${length}]`);
    const value = this.buffer.subarray(this.offset, this.offset + length);
    this.offset += padded;
    return value;
  }

  /** Variable-length opaque with a declared maximum. */
  opaque(max: number, what = 'opaque'): Buffer {
    const length = this.u32();
    if (length > max) throw protocolError(`${what} of ${length} bytes exceeds the maximum ${max}`);
    return this.fixedOpaque(length);
  }

  /**
   * Reads a string and returns which of `candidates` (UTF-8 bytes) it is, or -1, without decoding
   * it: for long listings of which only a few named fields matter.
   */
  stringIndex(candidates: readonly Buffer[], max: number, what = 'string'): number {
    const length = this.u32();
    if (length > max) throw protocolError(`${what} of ${length} bytes exceeds the maximum ${max}`);
    const padded = pad(length);
    this.need(padded, what);
    const start = this.offset;
    this.offset += padded;
    // Byte by byte: Buffer#compare checks its arguments on every call, which costs more than
    // comparing a dozen bytes, and a listing asks this twice per domain.
    const buffer = this.buffer;
    for (let index = 0; index < candidates.length; index++) {
      const candidate = candidates[index]!;
      if (candidate.length !== length) continue;
      let i = 0;
      while (i < length && candidate[i] === buffer[start + i]) i++;
      if (i === length) return index;
    }
    return -1;
  }

  /** The bytes not read yet, without reading them (a view, not a copy). */
  unread(): Buffer {
    return this.buffer.subarray(this.offset);
  }

  /** Steps over `bytes` bytes that are read but not wanted. */
  skip(bytes: number, what: string): void {
    this.need(bytes, what);
    this.offset += bytes;
  }

  string(max: number, what = 'string'): string {
    return this.opaque(max, what).toString('utf8');
  }

  /** XDR optional-data (`type *`): a bool, then the value when true. */
  optional<T>(read: (reader: XdrReader) => T): T | null {
    return this.bool() ? read(this) : null;
  }

  /**
   * Variable-length array. The count is checked against the protocol maximum and against the
   * bytes left (each element takes at least `minElementBytes`), so a hostile count cannot make us
   * loop or allocate for elements that are not there.
   */
  array<T>(
    max: number,
    minElementBytes: number,
    read: (reader: XdrReader) => T,
    what = 'array',
  ): T[] {
    const count = this.u32();
    if (count > max) throw protocolError(`${what} of ${count} elements exceeds the maximum ${max}`);
    if (count * minElementBytes > this.remaining) {
      throw protocolError(
        `${what} claims ${count} elements but only ${this.remaining} bytes remain`,
      );
    }
    const items: T[] = [];
    for (let i = 0; i < count; i++) items.push(read(this));
    return items;
  }

  /** Decoders call this last: trailing bytes mean we and the peer disagree about the type. */
  end(what: string): void {
    if (this.remaining !== 0) {
      throw protocolError(`${this.remaining} unexpected trailing bytes after ${what}`);
    }
  }
}

export class XdrWriter {
  private buffer: Buffer;
  private offset = 0;

  constructor(initialSize = 256) {
    this.buffer = Buffer.allocUnsafe(initialSize);
  }

  private reserve(bytes: number): void {
    if (this.offset + bytes <= this.buffer.length) return;
    let size = this.buffer.length * 2;
    while (size < this.offset + bytes) size *= 2;
    const grown = Buffer.allocUnsafe(size);
    this.buffer.copy(grown, 0, 0, this.offset);
    this.buffer = grown;
  }

  u32(value: number): this {
    this.reserve(4);
    this.buffer.writeUInt32BE(value >>> 0, this.offset);
    this.offset += 4;
    return this;
  }

  i32(value: number): this {
    this.reserve(4);
    this.buffer.writeInt32BE(value | 0, this.offset);
    this.offset += 4;
    return this;
  }

  u64(value: bigint): this {
    this.reserve(8);
    this.buffer.writeBigUInt64BE(value, this.offset);
    this.offset += 8;
    return this;
  }

  i64(value: bigint): this {
    this.reserve(8);
    this.buffer.writeBigInt64BE(value, this.offset);
    this.offset += 8;
    return this;
  }

  bool(value: boolean): this {
    return this.u32(value ? 1 : 0);
  }

  fixedOpaque(bytes: Uint8Array): this {
    const padded = pad(bytes.length);
    this.reserve(padded);
    this.buffer.set(bytes, this.offset);
    this.buffer.fill(0, this.offset + bytes.length, this.offset + padded);
    this.offset += padded;
    return this;
  }

  opaque(bytes: Uint8Array): this {
    this.u32(bytes.length);
    return this.fixedOpaque(bytes);
  }

  string(value: string): this {
    return this.opaque(Buffer.from(value, 'utf8'));
  }

  optional<T>(value: T | null | undefined, write: (writer: XdrWriter, value: T) => void): this {
    if (value === null || value === undefined) return this.bool(false);
    this.bool(true);
    write(this, value);
    return this;
  }

  array<T>(items: readonly T[], write: (writer: XdrWriter, item: T) => void): this {
    this.u32(items.length);
    for (const item of items) write(this, item);
    return this;
  }

  /** The bytes written so far (a view; copy it if the writer is reused). */
  bytes(): Buffer {
    return this.buffer.subarray(0, this.offset);
  }
}

function pad(length: number): number {
  return (length + 3) & ~3;
}
