// A resuming watch stream on a store that keeps committing: its replay reads the log only up to
// the first change the live subscription delivered, then goes live, whatever the rate of commits
// behind it. Before, a replay chased the log's head as long as commits kept coming.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../src/store/index.ts';
import type { ReadStore } from '../../src/store/index.ts';
import { WatchHub } from '../../src/server/watch.ts';
import { create, patch, uuidOf, waitFor } from './harness.ts';

const dir = mkdtempSync(join(tmpdir(), 'hvsync-watch-replay-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

test('a replay under a stream of commits reads up to where live delivery began, then goes live', async () => {
  const store = await openSqliteStore(join(dir, 'replay.db'));
  try {
    await create(store, uuidOf(1), { host: 'busy' });
    await create(store, uuidOf(2), { host: 'quiet' });
    for (let i = 0; i < 60; i++) await patch(store, uuidOf(1), { name: `busy ${i}` });
    await patch(store, uuidOf(2), { name: 'quiet 1' });

    // Before every page the replay reads, more commits than a page holds land: the head runs
    // away from a replay that waits to reach it.
    let reads = 0;
    let extra = 0;
    const racing = new Proxy(store, {
      get(target, property, receiver) {
        if (property === 'changesSince') {
          return async (after: number, limit: number) => {
            reads++;
            for (let i = 0; i < 15 && extra < 1_500; i++, extra++) {
              await patch(store, uuidOf(1), { name: `racing ${extra}` });
            }
            return target.changesSince(after, limit);
          };
        }
        const value: unknown = Reflect.get(target, property, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as ReadStore;
    const hub = new WatchHub(
      racing,
      { heartbeatMs: 0, bufferLimit: 10_000, pageSize: 10, bufferBytes: 64 * 1024 * 1024 },
      { onOpen: () => {}, onEventSent: () => {}, onEnd: () => {}, onError: () => {} },
    );
    for (const host of [null, 'quiet'] as const) {
      const behind = (await store.changesSince(Number.MAX_SAFE_INTEGER, 1)).latestRevision;
      reads = 0;
      const opened = await hub.open(0, host);
      assert.ok(opened.ok);
      let text = '';
      opened.stream.output.on('data', (chunk: Buffer) => (text += chunk.toString()));
      const revisions = (): number[] =>
        [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
      // The watch ends up with every revision of its filter, once, in order (the racing stops
      // when the replay does, so the log stops growing).
      const expected = async (): Promise<number[]> =>
        (await store.changesSince(0, 100_000)).changes
          .filter((c) => host === null || c.instance.host === host)
          .map((c) => c.revision);
      await waitFor(`${host ?? 'all'}: every revision`, async () => {
        return JSON.stringify(revisions()) === JSON.stringify(await expected());
      });
      assert.deepEqual(revisions(), await expected());
      assert.ok(extra > 0, 'commits raced the replay');
      // Live now, each change handed to the streams of its host only: these arrive too.
      extra = Number.POSITIVE_INFINITY;
      for (let i = 0; i < 5; i++) {
        await patch(store, uuidOf(1), { name: `live ${i}` });
        await patch(store, uuidOf(2), { name: `live ${i}` });
      }
      await waitFor(`${host ?? 'all'}: the live changes`, async () => {
        return JSON.stringify(revisions()) === JSON.stringify(await expected());
      });
      // The backlog is `behind` changes, 10 a page: a few more reads than that, not one per 10
      // racing commits (1,500 of them).
      assert.ok(reads <= Math.ceil(behind / 10) + 5, `${reads} reads for ${behind} behind`);
      opened.stream.output.destroy();
      extra = 0;
    }
    hub.closeAll();
  } finally {
    await store.close();
  }
});
