// The keyed serial work queue on its own: one run per key at a time, coalescing of work that
// arrives while a key is busy, and a settle window that newer work cuts short.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SUPERSEDED, WorkQueue } from '../../src/sync/queue.ts';
import type { QueueOptions, Runner } from '../../src/sync/queue.ts';

type Work = readonly string[];

function queue(run: Runner<Work, string>, extra: Partial<QueueOptions<Work, string>> = {}) {
  const tracked: Promise<unknown>[] = [];
  const errors: unknown[] = [];
  const q = new WorkQueue<Work, string>({
    run,
    merge: (older, newer) => [...older, ...newer],
    failed: 'failed',
    settleMs: 10_000,
    track: (work) => tracked.push(work),
    onRunError: (error) => errors.push(error),
    ...extra,
  });
  return { q, tracked, errors };
}

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

describe('WorkQueue', () => {
  test('runs one piece of work per key at a time and folds what arrives meanwhile into one run', async () => {
    const first = gate();
    const runs: string[] = [];
    let active = 0;
    let coalesced = 0;
    const { q } = queue(
      async (key, work) => {
        active++;
        assert.equal(active, 1, 'never two runs for one key');
        runs.push(`${key}:${work.join('+')}`);
        if (runs.length === 1) await first.promise;
        active--;
        return work.join('+');
      },
      { onCoalesced: () => coalesced++ },
    );
    const a = q.push('k', ['a']);
    const b = q.push('k', ['b']);
    const c = q.push('k', ['c']);
    assert.ok(q.has('k'));
    first.open();
    assert.deepEqual(await Promise.all([a, b, c]), ['a', 'b+c', 'b+c']);
    assert.deepEqual(runs, ['k:a', 'k:b+c']);
    assert.equal(coalesced, 1);
    assert.equal(q.has('k'), false);
  });

  test('keys run independently', async () => {
    const blocked = gate();
    const { q } = queue(async (key, work) => {
      if (key === 'slow') await blocked.promise;
      return work.join('+');
    });
    const slow = q.push('slow', ['s']);
    assert.equal(await q.push('fast', ['f']), 'f');
    blocked.open();
    assert.equal(await slow, 's');
  });

  test('newer work cuts the settle window short and the run starts over with both', async () => {
    const seen: string[] = [];
    const { q } = queue(async (_key, work, settle) => {
      seen.push(work.join('+'));
      if (work.length === 1 && (await settle())) return SUPERSEDED;
      return work.join('+');
    });
    const stop = q.push('k', ['stopped']);
    await new Promise((resolve) => setImmediate(resolve));
    const start = q.push('k', ['started']);
    // Both waiters get the outcome of the run that took the merged work, long before 10 s.
    assert.deepEqual(await Promise.all([stop, start]), ['stopped+started', 'stopped+started']);
    assert.deepEqual(seen, ['stopped', 'stopped+started']);
  });

  test('a run that throws gives its waiters the failed outcome and the key carries on', async () => {
    const { q, errors } = queue(async (_key, work) => {
      if (work[0] === 'boom') throw new Error('boom');
      return work.join('+');
    });
    assert.equal(await q.push('k', ['boom']), 'failed');
    assert.equal(errors.length, 1);
    assert.equal(await q.push('k', ['ok']), 'ok');
  });
});
