import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LibvirtClientError } from '../../src/libvirt/index.ts';
import { XdrReader, XdrWriter } from '../../src/libvirt/xdr.ts';

function isProtocolError(error: unknown): boolean {
  return error instanceof LibvirtClientError && error.code === 'protocol';
}

describe('XDR', () => {
  test('round-trips every primitive with 4-byte padding', () => {
    const w = new XdrWriter(4)
      .u32(0xffffffff)
      .i32(-2)
      .u64(2n ** 63n + 5n)
      .i64(-(2n ** 40n))
      .bool(true)
      .string('héllo')
      .fixedOpaque(Buffer.from([1, 2, 3]))
      .optional('x', (x, v) => x.string(v))
      .optional(null, (x, v: string) => x.string(v))
      .array([1, 2, 3], (x, v) => x.i32(v));
    const bytes = w.bytes();
    assert.equal(bytes.length % 4, 0);
    const r = new XdrReader(bytes);
    assert.equal(r.u32(), 0xffffffff);
    assert.equal(r.i32(), -2);
    assert.equal(r.u64(), 2n ** 63n + 5n);
    assert.equal(r.i64(), -(2n ** 40n));
    assert.equal(r.bool(), true);
    assert.equal(r.string(100), 'héllo');
    assert.deepEqual([...r.fixedOpaque(3)], [1, 2, 3]);
    assert.equal(
      r.optional((x) => x.string(10)),
      'x',
    );
    assert.equal(
      r.optional((x) => x.string(10)),
      null,
    );
    assert.deepEqual(
      r.array(10, 4, (x) => x.i32()),
      [1, 2, 3],
    );
    r.end('test');
  });

  test('a string is encoded as length, bytes, zero padding', () => {
    assert.deepEqual(
      [...new XdrWriter().string('abcde').bytes()],
      [0, 0, 0, 5, 97, 98, 99, 100, 101, 0, 0, 0],
    );
  });

  test('refuses reads past the end', () => {
    assert.throws(() => new XdrReader(Buffer.alloc(3)).u32(), isProtocolError);
    assert.throws(() => new XdrReader(Buffer.alloc(4)).u64(), isProtocolError);
  });

  test('refuses a string whose length runs past the end', () => {
    const bytes = new XdrWriter().u32(100).fixedOpaque(Buffer.from('abcd')).bytes();
    assert.throws(() => new XdrReader(bytes).string(1000), isProtocolError);
  });

  test('refuses a string longer than its maximum before reading it', () => {
    const bytes = new XdrWriter().string('abcdefgh').bytes();
    assert.throws(() => new XdrReader(bytes).string(4), /exceeds the maximum 4/);
  });

  test('stringIndex tells which candidate a string is without decoding it, and steps past it', () => {
    const candidates = [Buffer.from('state.state'), Buffer.from('state.reason')];
    const bytes = new XdrWriter()
      .string('state.reason')
      .string('state.statf')
      .string('state')
      .string('state.state')
      .u32(7)
      .bytes();
    const r = new XdrReader(bytes);
    assert.equal(r.stringIndex(candidates, 100), 1);
    assert.equal(r.stringIndex(candidates, 100), -1, 'same length, one byte apart');
    assert.equal(r.stringIndex(candidates, 100), -1, 'a prefix');
    assert.equal(r.stringIndex(candidates, 100), 0);
    assert.equal(r.u32(), 7, 'padding stepped over');
    assert.throws(
      () => new XdrReader(new XdrWriter().string('state.state').bytes()).stringIndex(candidates, 4),
      /exceeds the maximum 4/,
    );
  });

  test('refuses array counts above the maximum or beyond the bytes present', () => {
    const huge = new XdrWriter().u32(0xffffffff).bytes();
    assert.throws(() => new XdrReader(huge).array(16384, 4, (r) => r.i32()), /exceeds the maximum/);
    const lying = new XdrWriter().u32(1000).i32(1).bytes();
    assert.throws(
      () => new XdrReader(lying).array(16384, 4, (r) => r.i32()),
      /only 4 bytes remain/,
    );
  });

  test('refuses a bool that is neither 0 nor 1 and trailing bytes', () => {
    assert.throws(() => new XdrReader(new XdrWriter().u32(2).bytes()).bool(), isProtocolError);
    const r = new XdrReader(new XdrWriter().u32(1).u32(2).bytes());
    r.u32();
    assert.throws(() => r.end('thing'), /trailing bytes after thing/);
  });
});
