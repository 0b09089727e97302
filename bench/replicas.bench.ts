// Watch fan-out from replica to replica: two `hvsync server` processes on one fresh PostgreSQL
// database, a writer committing through a third connection at a fixed rate (standing in for an
// agent), and watchers on both replicas. Prints, per replica, how long after a write's commit
// resolved in the writer its event reached a watcher (one machine, one clock).
//
//   npm run bench:replicas -- [changes=2000] [perSecond=200] [watchersPerReplica=2]
//   HVSYNC_BENCH_PG=postgres://user@host:port/db names the server (default: the local one)
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { HvsyncClient, type WatchSubscription } from '../src/cli/client.ts';
import { openPostgresStore, type WriteResult } from '../src/store/index.ts';
import { instanceFields } from '../test/support/records.ts';
import { startServerProcess } from '../test/support/server-process.ts';

const [changes = 2_000, perSecond = 200, watchersPerReplica = 2] = process.argv
  .slice(2)
  .map((arg) => Number.parseInt(arg, 10));
const INSTANCES = 100;
const adminUrl = process.env.HVSYNC_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/postgres';

function uuidOf(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

function revisionOf(result: WriteResult): number {
  if (!result.ok) throw new Error(`write refused: ${result.reason}`);
  return result.revision;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Receive time of every revision the stream delivers, until it has `count` of them. */
async function receiveTimes(
  stream: WatchSubscription,
  count: number,
): Promise<Map<number, number>> {
  const received = new Map<number, number>();
  for await (const message of stream) {
    if (message.kind === 'end') throw new Error(`stream ended: ${JSON.stringify(message.error)}`);
    received.set(message.change.revision, performance.now());
    if (received.size === count) break;
  }
  return received;
}

const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
const name = `hvsync_bench_replicas_${process.pid}`;
await admin.unsafe(`CREATE DATABASE ${name}`);
const url = new URL(adminUrl);
url.pathname = `/${name}`;
const replicas = [0, 1].map(() =>
  startServerProcess(['--db', url.toString(), '--listen', '127.0.0.1:0']),
);
try {
  const clients = await Promise.all(
    replicas.map(async (replica) => new HvsyncClient({ server: await replica.started() })),
  );
  const store = await openPostgresStore(url.toString());
  for (let i = 0; i < INSTANCES; i += 1) {
    revisionOf(await store.write({ kind: 'create', uuid: uuidOf(i), fields: instanceFields() }));
  }
  const versions = new Array<number>(INSTANCES).fill(1);
  const streams = await Promise.all(
    clients.flatMap((client) =>
      Array.from({ length: watchersPerReplica }, () =>
        client.watch({ signal: AbortSignal.timeout(changes * (1000 / perSecond) + 60_000) }),
      ),
    ),
  );
  const receiving = streams.map((stream) => receiveTimes(stream, changes));

  const committedAt = new Map<number, number>();
  const writes: Promise<void>[] = [];
  const start = performance.now();
  for (let i = 0; i < changes; i += 1) {
    const due = start + (i * 1000) / perSecond;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const slot = i % INSTANCES;
    const expectedVersion = versions[slot]!;
    versions[slot] = expectedVersion + 1;
    writes.push(
      store
        .write({
          kind: 'update',
          uuid: uuidOf(slot),
          expectedVersion,
          patch: { powerReason: `change ${i}` },
        })
        .then((result) => {
          committedAt.set(revisionOf(result), performance.now());
        }),
    );
  }
  await Promise.all(writes);
  const written = performance.now() - start;
  const received = await Promise.all(receiving);
  for (const stream of streams) stream.close();
  await store.close();

  console.log(
    `${changes} changes at ${perSecond}/s (took ${(written / 1000).toFixed(1)} s), ` +
      `${watchersPerReplica} watcher(s) on each of 2 replicas`,
  );
  for (const [index, name] of ['A', 'B'].entries()) {
    const latencies: number[] = [];
    let missing = 0;
    for (const times of received.slice(
      index * watchersPerReplica,
      (index + 1) * watchersPerReplica,
    )) {
      for (const [revision, commit] of committedAt) {
        const at = times.get(revision);
        if (at === undefined) missing += 1;
        else latencies.push(at - commit);
      }
    }
    latencies.sort((a, b) => a - b);
    console.log(
      `replica ${name}: commit → event p50 ${percentile(latencies, 50).toFixed(1)} ms, ` +
        `p99 ${percentile(latencies, 99).toFixed(1)} ms, max ${latencies[latencies.length - 1]!.toFixed(1)} ms` +
        (missing > 0 ? `, ${missing} MISSING` : ''),
    );
  }
} finally {
  await Promise.all(replicas.map((replica) => replica.stop()));
  await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end({ timeout: 5 });
}
