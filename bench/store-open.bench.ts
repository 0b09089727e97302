// What the start-up integrity check costs: opening a full store (10,000 instances, the change log
// at its default limit of 100,000 rows, one transition per change) with and without
// `PRAGMA quick_check`, on a real file.
//
//   node --import tsx bench/store-open.bench.ts [instances=10000] [changes=100000] [opens=5]
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { openSqliteStore } from '../src/store/index.ts';
import type { InstanceWrite, WriteResult } from '../src/store/index.ts';
import { instanceFields } from '../test/support/records.ts';

const [instances = 10_000, changes = 100_000, opens = 5] = process.argv
  .slice(2)
  .map((arg) => Number.parseInt(arg, 10));

function uuidOf(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

async function fill(path: string): Promise<void> {
  const store = await openSqliteStore(path);
  const versions = new Array<number>(instances).fill(1);
  const creates: Promise<WriteResult>[] = [];
  for (let i = 0; i < instances; i++) {
    creates.push(
      store.write({ kind: 'create', uuid: uuidOf(i), fields: instanceFields({ name: `vm-${i}` }) }),
    );
  }
  await Promise.all(creates);
  const observedAt = Date.now();
  for (let done = instances; done < changes;) {
    const wave: Promise<WriteResult>[] = [];
    for (let i = 0; i < 5_000 && done < changes; i++, done++) {
      const slot = done % instances;
      const stopping = versions[slot]! % 2 === 1;
      const write: InstanceWrite = {
        kind: 'update',
        uuid: uuidOf(slot),
        expectedVersion: versions[slot]!,
        patch: { powerState: stopping ? 'shutoff' : 'running' },
        transition: {
          from: stopping ? 'running' : 'shutoff',
          to: stopping ? 'shutoff' : 'running',
          vmStateFrom: 'active',
          vmStateTo: 'active',
          cause: 'event',
          detail: stopping ? 'shutdown' : 'booted',
          outOfBand: true,
          observedAt,
        },
      };
      versions[slot]! += 1;
      wave.push(store.write(write));
    }
    await Promise.all(wave);
  }
  await store.close();
}

async function timeOpens(path: string, integrityCheck: boolean): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < opens; i++) {
    const began = performance.now();
    const store = await openSqliteStore(path, { integrityCheck });
    times.push(performance.now() - began);
    await store.close();
  }
  return times.sort((a, b) => a - b);
}

const dir = mkdtempSync(join(tmpdir(), 'hvsync-open-bench-'));
try {
  const path = join(dir, 'hvsync.db');
  await fill(path);
  const size = statSync(path).size;
  // Both runs find the file in the page cache (it was just written): the CPU cost of the check.
  const without = await timeOpens(path, false);
  const withCheck = await timeOpens(path, true);
  const median = (times: number[]): string => times[Math.floor(times.length / 2)]!.toFixed(1);
  console.log(
    `store of ${instances} instances, ${changes} changes, ${(size / 1e6).toFixed(1)} MB on disk`,
  );
  console.log(`open without quick_check: median ${median(without)} ms of ${opens}`);
  console.log(`open with quick_check:    median ${median(withCheck)} ms of ${opens}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
