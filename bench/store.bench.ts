// Micro-benchmark of the stores' hot path: conditional updates, each with a transition, on a real
// SQLite file and, when one answers, a real PostgreSQL database (a fresh one, dropped after).
// Writes are fired in waves without awaiting one by one, as a burst of events would arrive, so
// the store batches them; an awaited-one-at-a-time run shows what batching buys.
//
//   npm run bench:store -- [updates=50000] [instances=1000] [wave=5000]
//   HVSYNC_BENCH_PG=postgres://user@host:port/db names the server (default: the local one)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import postgres from 'postgres';
import { openPostgresStore, openSqliteStore } from '../src/store/index.ts';
import type {
  InstanceWrite,
  NewTransition,
  Store,
  StoreStats,
  WriteResult,
} from '../src/store/index.ts';
import { instanceFields } from '../test/support/records.ts';

const [updates = 50_000, instances = 1_000, wave = 5_000] = process.argv
  .slice(2)
  .map((arg) => Number.parseInt(arg, 10));
const sequentialUpdates = Math.min(5_000, updates);

function uuidOf(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

function transition(i: number): NewTransition {
  const stopping = i % 2 === 0;
  return {
    from: stopping ? 'running' : 'shutoff',
    to: stopping ? 'shutoff' : 'running',
    vmStateFrom: stopping ? 'active' : 'stopped',
    vmStateTo: stopping ? 'stopped' : 'active',
    cause: 'event',
    detail: stopping ? 'shutdown' : 'booted',
    outOfBand: true,
    observedAt: Date.now(),
  };
}

function updateOf(i: number, versions: number[]): InstanceWrite {
  const slot = i % instances;
  const expectedVersion = versions[slot]!;
  versions[slot] = expectedVersion + 1;
  const t = transition(i);
  return {
    kind: 'update',
    uuid: uuidOf(slot),
    expectedVersion,
    patch: { vmState: t.vmStateTo, powerState: t.to, powerReason: t.detail },
    transition: t,
  };
}

function check(results: readonly WriteResult[]): void {
  const refused = results.filter((r) => !r.ok).length;
  if (refused > 0) throw new Error(`${refused} writes were refused; the benchmark is broken`);
}

type BenchStore = Store & { readonly stats: StoreStats };
type Open = (name: string) => Promise<BenchStore>;

async function seed(store: BenchStore): Promise<number[]> {
  const writes: Promise<WriteResult>[] = [];
  for (let i = 0; i < instances; i += 1) {
    writes.push(
      store.write({
        kind: 'create',
        uuid: uuidOf(i),
        fields: instanceFields({ name: `bench-${i}`, host: `host-${i % 8}` }),
      }),
    );
  }
  check(await Promise.all(writes));
  return new Array<number>(instances).fill(1);
}

function report(label: string, count: number, ms: number, commits: number): void {
  const perSecond = Math.round((count / ms) * 1000);
  console.log(
    `${label.padEnd(28)} ${String(count).padStart(7)} updates  ${ms.toFixed(0).padStart(6)} ms  ` +
      `${String(perSecond).padStart(8)} writes/s  ${String(commits).padStart(6)} commits`,
  );
}

async function batched(open: Open): Promise<void> {
  const store = await open('batched');
  const versions = await seed(store);
  const commitsBefore = store.stats.commits;
  const started = performance.now();
  for (let done = 0; done < updates; done += wave) {
    const writes: Promise<WriteResult>[] = [];
    for (let i = done; i < Math.min(updates, done + wave); i += 1) {
      writes.push(store.write(updateOf(i, versions)));
    }
    check(await Promise.all(writes));
  }
  const elapsed = performance.now() - started;
  report(`batched (waves of ${wave})`, updates, elapsed, store.stats.commits - commitsBefore);
  await store.close();
}

async function sequential(open: Open): Promise<void> {
  const store = await open('sequential');
  const versions = await seed(store);
  const commitsBefore = store.stats.commits;
  const started = performance.now();
  for (let i = 0; i < sequentialUpdates; i += 1) {
    check([await store.write(updateOf(i, versions))]);
  }
  const elapsed = performance.now() - started;
  report(
    'one at a time (awaited)',
    sequentialUpdates,
    elapsed,
    store.stats.commits - commitsBefore,
  );
  await store.close();
}

async function sqlite(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hvsync-store-bench-'));
  try {
    console.log(`SQLite store: ${instances} instances, conditional updates with transitions\n`);
    const open: Open = (name) => openSqliteStore(join(dir, `${name}.db`));
    await batched(open);
    await sequential(open);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function postgresql(): Promise<void> {
  const server = process.env.HVSYNC_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const admin = postgres(server, { max: 1, connect_timeout: 5, onnotice: false });
  const database = `hvsync_bench_${process.pid}_${Date.now().toString(36)}`;
  try {
    await admin.unsafe(`CREATE DATABASE ${database}`);
  } catch (error) {
    console.log(`\nPostgreSQL store: skipped, ${server} did not answer (${String(error)})`);
    await admin.end({ timeout: 1 });
    return;
  }
  try {
    const url = new URL(server);
    url.pathname = `/${database}`;
    console.log(
      `\nPostgreSQL store: ${instances} instances, conditional updates with transitions\n`,
    );
    const open: Open = (schema) => openPostgresStore(url.toString(), { schema });
    await batched(open);
    await sequential(open);
  } finally {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin.end({ timeout: 5 });
  }
}

await sqlite();
await postgresql();
