// npm run bench:watchers — the API server while many watch clients never read their streams.
// The server runs in a child process over a real SQLite file and commits changes at a steady
// rate; this process opens the watchers (raw sockets that send the request and never read),
// and asks GET /v1/instances several times a second. Every second it prints the server's RSS, the watchers
// open, the bytes held for them, and the GET latency. Not a test: numbers only.
//
// Environment (defaults in brackets): BENCH_WATCHERS [1000], BENCH_DURATION_S [30],
// BENCH_CHANGES_PER_S [500], BENCH_INSTANCES [1000].
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import type { Gauge } from 'prom-client';
import { buildServer, listen } from '../src/server/index.ts';
import { openSqliteStore } from '../src/store/index.ts';
import { instanceFields } from '../test/support/records.ts';
import { envNumber, mib, progress, round, summarize } from './service/support.ts';

const watchers = envNumber('BENCH_WATCHERS', 1_000);
const durationS = envNumber('BENCH_DURATION_S', 30);
const changesPerS = envNumber('BENCH_CHANGES_PER_S', 500);
const instances = envNumber('BENCH_INSTANCES', 1_000);

interface ServerSample {
  readonly rss: number;
  readonly streams: number;
  /** null when the server has no such gauge. */
  readonly bufferedBytes: number | null;
  readonly commits: number;
}

type FromServer = { kind: 'listening'; url: string } | ({ kind: 'sample' } & ServerSample);

function uuidOf(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

async function serve(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hvsync-bench-watchers-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const store = await openSqliteStore(join(dir, 'bench.db'));
  // Names as long as real ones with a project prefix: each event is about 600 bytes.
  const name = (n: number, version: number) => `bench-${'x'.repeat(200)}-${n}-${version}`;
  const versions = new Map<string, number>();
  await Promise.all(
    Array.from({ length: instances }, async (_, n) => {
      const uuid = uuidOf(n + 1);
      await store.write({ kind: 'create', uuid, fields: instanceFields({ name: name(n, 1) }) });
      versions.set(uuid, 1);
    }),
  );
  const registry = new Registry();
  const app = buildServer({
    store,
    registry,
    actions: {
      submit: () => Promise.reject(new Error('the benchmark takes no actions')),
    },
    readiness: { check: () => ({ ready: true, reasons: [] }) },
    maxWatchers: watchers,
  });
  const { url } = await listen(app, '127.0.0.1:0');
  send({ kind: 'listening', url });

  let commits = 0;
  let next = 0;
  const perTick = Math.max(1, Math.round(changesPerS / 10));
  const writer = setInterval(() => {
    for (let i = 0; i < perTick; i++) {
      const n = next++ % instances;
      const uuid = uuidOf(n + 1);
      const version = versions.get(uuid)!;
      versions.set(uuid, version + 1);
      void store
        .write({
          kind: 'update',
          uuid,
          expectedVersion: version,
          patch: { name: name(n, version + 1) },
        })
        .then((result) => {
          if (result.ok) commits++;
        });
    }
  }, 100);
  const gauge = async (metric: string): Promise<number | null> => {
    const found = registry.getSingleMetric(metric) as Gauge | undefined;
    if (found === undefined) return null;
    return (await found.get()).values[0]?.value ?? 0;
  };
  const sampler = setInterval(() => {
    void (async () => {
      send({
        kind: 'sample',
        rss: process.memoryUsage().rss,
        streams: (await gauge('hvsync_watch_streams')) ?? 0,
        bufferedBytes: await gauge('hvsync_watch_buffered_bytes'),
        commits,
      });
    })();
  }, 1000);
  process.on('disconnect', () => {
    clearInterval(writer);
    clearInterval(sampler);
    app.server.closeAllConnections();
    void app.close().then(() => store.close());
  });
}

function send(message: FromServer): void {
  process.send?.(message);
}

/** A watcher that sends its request and never reads; resolves once the request is sent. */
function stalledWatcher(address: URL): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(address.port), address.hostname);
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.write('GET /v1/watch HTTP/1.1\r\nHost: bench\r\n\r\n');
      socket.pause();
      resolve(socket);
    });
  });
}

async function timedGet(url: string): Promise<number> {
  const started = performance.now();
  const response = await fetch(`${url}/v1/instances?limit=100`);
  await response.arrayBuffer();
  if (response.status !== 200) throw new Error(`GET /v1/instances answered ${response.status}`);
  return performance.now() - started;
}

async function main(): Promise<void> {
  progress(
    `${watchers} watchers that never read, ${changesPerS} changes/s on ${instances} instances, ` +
      `${durationS} s`,
  );
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['--serve'], {
    execArgv: ['--import', 'tsx'],
    env: process.env,
  });
  let latest: ServerSample | null = null;
  const url = await new Promise<string>((resolve, reject) => {
    child.on('message', (message: FromServer) => {
      if (message.kind === 'listening') resolve(message.url);
      else latest = message;
    });
    child.once('exit', (code) => reject(new Error(`the server exited with ${code}`)));
  });
  const address = new URL(url);
  // In waves: a thousand connects at once overflow the listen backlog, and the dropped SYNs'
  // retries would show as seconds of GET latency that have nothing to do with watching.
  const sockets: Socket[] = [];
  while (sockets.length < watchers) {
    const wave = Math.min(100, watchers - sockets.length);
    sockets.push(
      ...(await Promise.all(Array.from({ length: wave }, () => stalledWatcher(address)))),
    );
  }
  for (const socket of sockets) socket.on('error', () => undefined);

  const all: number[] = [];
  const rssSeen: number[] = [];
  console.log('   s   server RSS MiB   watchers   held MiB   commits   GET p50 ms   GET max ms');
  const started = performance.now();
  for (let second = 1; second <= durationS; second++) {
    const window: number[] = [];
    const deadline = started + second * 1000;
    while (performance.now() < deadline) {
      // One GET at a time: a server that stops answering shows as one long request.
      window.push(await timedGet(url));
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    all.push(...window);
    const sample = latest as ServerSample | null;
    if (sample === null) continue;
    rssSeen.push(sample.rss);
    const held = sample.bufferedBytes === null ? '—' : round(mib(sample.bufferedBytes), 1);
    const stats = summarize(window);
    console.log(
      [
        String(second).padStart(4),
        String(round(mib(sample.rss), 0)).padStart(16),
        String(sample.streams).padStart(10),
        String(held).padStart(10),
        String(sample.commits).padStart(9),
        String(round(stats.p50, 1)).padStart(12),
        String(round(stats.max, 1)).padStart(12),
      ].join(' '),
    );
  }
  const overall = summarize(all);
  console.log(
    `\nserver RSS max ${round(mib(Math.max(...rssSeen)), 0)} MiB; GET /v1/instances ` +
      `p50 ${round(overall.p50, 1)} ms, p99 ${round(overall.p99, 1)} ms, ` +
      `max ${round(overall.max, 1)} ms over ${all.length} requests`,
  );
  for (const socket of sockets) socket.destroy();
  child.disconnect();
  await new Promise((resolve) => child.once('exit', resolve));
  process.exit(0);
}

if (process.argv[2] === '--serve') await serve();
else await main();
