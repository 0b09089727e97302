// The outage journal on a real SQLite file: entries survive reopening (and the agent being
// killed) in order, keep the seq they were first sent with, reach the disk in shared flushes, are
// bounded by compaction (the newest observation of each instance is kept) and then by refusal,
// and belong to one host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentError, Journal, SEQ_GAP } from '../../src/agent/index.ts';
import type { InstanceWrite } from '../../src/store/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'hvsync-journal-test-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
let files = 0;
const freshPath = (): string => join(dir, `j${++files}.journal`);

function observe(n: number, version: number): InstanceWrite {
  return {
    kind: 'update',
    uuid: `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`,
    expectedVersion: version,
    patch: { powerReason: `change ${version}` },
  };
}

test('entries come back in order after reopening, with the seqs they were sent with', () => {
  const path = freshPath();
  const journal = Journal.open(path, { host: 'h', maxEntries: 100 });
  journal.append([observe(1, 1), observe(2, 1), observe(1, 2)]);
  const sent = journal.assignSeqs(journal.head(2));
  assert.deepEqual(
    sent.map((e) => e.seq),
    [1, 2],
  );
  const id = journal.id;
  journal.close();

  const again = Journal.open(path, { host: 'h', maxEntries: 100 });
  assert.equal(again.id, id);
  assert.equal(again.size, 3);
  const head = again.head(10);
  assert.deepEqual(
    head.map((e) => [e.write.kind === 'update' && e.write.expectedVersion, e.seq]),
    [
      [1, 1],
      [1, 2],
      [2, null],
    ],
  );
  // Resent entries keep their seq; a new one gets one past the gap each opening leaves (seqs
  // sent but lost from the disk by a power loss are never handed out again).
  assert.deepEqual(
    again.assignSeqs(head).map((e) => e.seq),
    [1, 2, 3 + SEQ_GAP],
  );
  again.settle([head[0]!.pos], []);
  assert.equal(again.size, 2);
  again.close();
});

test('changes made while a flush runs share the next one; sync says when all are on disk', async () => {
  const journal = Journal.open(freshPath(), { host: 'h', maxEntries: 100 });
  const before = journal.flushes;
  journal.append([observe(1, 1)]);
  assert.equal(journal.synced, false);
  const first = journal.sync();
  // While the first flush runs: three more changes, three callers, one more flush for them all.
  journal.append([observe(2, 1)]);
  journal.assignSeqs(journal.head(2));
  journal.append([observe(3, 1)]);
  const waiting = [journal.sync(), journal.sync(), journal.sync()];
  assert.equal(journal.synced, false);
  await Promise.all([first, ...waiting]);
  assert.equal(journal.synced, true);
  assert.equal(journal.flushes - before, 2);
  // Nothing new: no flush at all.
  await journal.sync();
  assert.equal(journal.flushes - before, 2);
  journal.close();
});

test('appended entries survive the agent being killed, flushed or not', async () => {
  const path = freshPath();
  // A child process appends, flushes some, appends more without waiting, and is killed.
  const script = `
    import { Journal } from ${JSON.stringify(new URL('../../src/agent/index.ts', import.meta.url).href)};
    const journal = Journal.open(${JSON.stringify(path)}, { host: 'h', maxEntries: 1000 });
    const write = (n) => ({ kind: 'update', uuid: 'u' + n, expectedVersion: 1, patch: {} });
    for (let n = 0; n < 50; n++) journal.append([write(n)]);
    await journal.sync();
    for (let n = 50; n < 100; n++) journal.append([write(n)]);
    journal.assignSeqs(journal.head(10));
    process.kill(process.pid, 'SIGKILL');
  `;
  const child = spawn(
    process.execPath,
    ['--import', import.meta.resolve('tsx'), '--input-type=module', '-e', script],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const signal = await new Promise((resolve) => child.once('exit', (_code, sig) => resolve(sig)));
  assert.equal(signal, 'SIGKILL', stderr);
  const journal = Journal.open(path, { host: 'h', maxEntries: 1000 });
  const head = journal.head(1000);
  assert.deepEqual(
    head.map((e) => e.uuid),
    Array.from({ length: 100 }, (_, n) => `u${n}`),
  );
  assert.deepEqual(
    head.slice(0, 11).map((e) => e.seq),
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, null],
  );
  journal.close();
});

test("a refused entry rewritten in place loses its seq and flags its instance's later entries", () => {
  const journal = Journal.open(freshPath(), { host: 'h', maxEntries: 100 });
  journal.append([observe(1, 1), observe(2, 1), observe(1, 2)]);
  const [first] = journal.assignSeqs(journal.head(1));
  journal.settle([], [{ entry: first!, write: observe(1, 9) }]);
  const head = journal.head(10);
  assert.equal(head[0]!.seq, null);
  assert.equal(head[0]!.write.kind === 'update' && head[0]!.write.expectedVersion, 9);
  assert.deepEqual(
    head.map((e) => e.rebase),
    [false, false, true],
  );
  // A fresh seq, after every seq handed out before.
  assert.equal(journal.assignSeqs(head.slice(0, 1))[0]!.seq, 2);
  journal.close();
});

test('at its bound the oldest superseded observations go first; then appends are refused', () => {
  const journal = Journal.open(freshPath(), { host: 'h', maxEntries: 4 });
  journal.append([observe(1, 1), observe(2, 1), observe(1, 2), observe(3, 1)]);
  const outcome = journal.append([observe(1, 3)]);
  assert.equal(outcome.dropped, 1);
  assert.equal(journal.size, 4);
  const head = journal.head(10);
  // Instance 1's oldest observation went; its newest is kept, and the rest of it is rebased.
  assert.deepEqual(
    head.map((e) => [e.uuid.slice(-1), e.write.kind === 'update' && e.write.expectedVersion]),
    [
      ['2', 1],
      ['1', 2],
      ['3', 1],
      ['1', 3],
    ],
  );
  assert.equal(head[1]!.rebase, true);
  journal.append([observe(4, 1)]);
  assert.equal(journal.size, 4);
  // Now every entry is the only one of its instance: nothing more can go.
  assert.throws(
    () => journal.append([observe(5, 1)]),
    (error: unknown) => error instanceof AgentError && error.code === 'journal-full',
  );
  assert.equal(journal.size, 4);
  journal.close();
});

test("another host's journal, and a journal already open, are refused", () => {
  const path = freshPath();
  const journal = Journal.open(path, { host: 'h', maxEntries: 10 });
  assert.throws(
    () => Journal.open(path, { host: 'h', maxEntries: 10 }),
    (error: unknown) => error instanceof AgentError && error.code === 'journal',
  );
  journal.close();
  assert.throws(
    () => Journal.open(path, { host: 'other', maxEntries: 10 }),
    (error: unknown) =>
      error instanceof AgentError &&
      error.code === 'journal' &&
      /belongs to host h/.test(error.message),
  );
});
