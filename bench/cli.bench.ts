// How long a CLI command takes, start to exit, as a person or a script sees it: repeated runs of
// the built command (bin/hvsync.js) against a running all-in-one on a simulated host, next to a
// bare `node` and to the same commands run from the TypeScript sources through tsx (what the
// bin did before it ran the build). Prints p50/p95 and writes bench/results/cli.json.
//
//   npm run bench:cli -- [runs=30]        (the script builds dist/ first)
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { round, waitFor } from './service/support.ts';

const runs = Number.parseInt(process.argv[2] ?? '30', 10);
const sourceRuns = Math.max(5, Math.round(runs / 3));
const WARM_UP = 3;
const root = fileURLToPath(new URL('..', import.meta.url));
// The bench's own server and client: nothing from the caller's environment may point elsewhere
// (an empty value is a config error, so the variables are left out, not emptied).
const env = Object.fromEntries(
  Object.entries(process.env).filter(
    ([name]) => !['HVSYNC_TOKEN', 'HVSYNC_TOKEN_FILE', 'HVSYNC_SERVER', 'HVSYNC_CA'].includes(name),
  ),
);

interface Row {
  readonly command: string;
  readonly runs: number;
  readonly p50: number;
  readonly p95: number;
  readonly max: number;
}

/** Nearest rank on sorted samples. */
function percentile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

function time(command: string, args: readonly string[], count: number): Row {
  const once = (): number => {
    const started = performance.now();
    const result = spawnSync(process.execPath, args, { cwd: root, env, encoding: 'utf8' });
    const elapsed = performance.now() - started;
    if (result.status !== 0) {
      throw new Error(`${command} exited ${result.status}: ${result.stderr.trim()}`);
    }
    return elapsed;
  };
  for (let i = 0; i < WARM_UP; i += 1) once();
  const samples = Array.from({ length: count }, once).sort((a, b) => a - b);
  return {
    command,
    runs: count,
    p50: round(percentile(samples, 0.5)),
    p95: round(percentile(samples, 0.95)),
    max: round(samples.at(-1)!),
  };
}

const dir = mkdtempSync(join(tmpdir(), 'hvsync-cli-bench-'));
const service = spawn(
  process.execPath,
  [
    'bin/hvsync.js',
    'all-in-one',
    '--sim',
    '20',
    '--listen',
    '127.0.0.1:0',
    '--db',
    join(dir, 'db'),
  ],
  { cwd: root, env, stdio: ['ignore', 'pipe', 'inherit'] },
);
let log = '';
service.stdout.setEncoding('utf8').on('data', (chunk: string) => (log += chunk));
const serving = () => /serving the API at (http:\/\/[\d.:]+)/.exec(log)?.[1];
try {
  if (!(await waitFor(() => serving() !== undefined || service.exitCode !== null, 60_000))) {
    throw new Error('the all-in-one did not start serving within 60 s');
  }
  const server = serving();
  if (server === undefined) throw new Error(`the all-in-one exited:\n${log}`);
  const list = ['instances', 'list', '--server', server];
  console.log(`CLI start-to-exit, ${runs} runs each after ${WARM_UP} warm-up runs`);
  const machine = `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, Node ${process.version}`;
  const load = loadavg()[0]!.toFixed(1);
  console.log(`${machine}, load average ${load}; all-in-one --sim 20 on the same machine\n`);
  const rows = [
    time('node -e 0 (the floor)', ['-e', '0'], runs),
    time('hvsync --version', ['bin/hvsync.js', '--version'], runs),
    time('hvsync instances list', ['bin/hvsync.js', ...list], runs),
    time(
      'sources via tsx: --version',
      ['--import', 'tsx', 'src/cli/main.ts', '--version'],
      sourceRuns,
    ),
    time(
      'sources via tsx: instances list',
      ['--import', 'tsx', 'src/cli/main.ts', ...list],
      sourceRuns,
    ),
  ];
  // What hvsync adds to starting node at all: the figure that load on a shared machine moves least.
  const floor = rows[0]!.p50;
  const header = ['runs', 'p50 ms', 'p95 ms', 'max ms', 'p50 - node'];
  console.log(`${'command'.padEnd(34)} ${header.map((h) => h.padStart(10)).join(' ')}`);
  for (const row of rows) {
    const cells = [row.runs, row.p50, row.p95, row.max, round(row.p50 - floor)];
    console.log(`${row.command.padEnd(34)} ${cells.map((c) => String(c).padStart(10)).join(' ')}`);
  }
  mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
  writeFileSync(
    new URL('./results/cli.json', import.meta.url),
    `${JSON.stringify(rows, null, 2)}\n`,
  );
  console.log('\nwritten to bench/results/cli.json');
} finally {
  service.kill('SIGTERM');
  await new Promise((resolve) => service.once('exit', resolve));
  rmSync(dir, { recursive: true, force: true });
}
