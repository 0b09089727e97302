// The CLI as people start it: the built JavaScript through bin/, `npm start`, and signals.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { waitFor } from '../server/harness.ts';
import { LOCAL_LIBVIRT_URI } from '../../src/cli/all-in-one.ts';
import { DEFAULT_URI } from '../../src/libvirt/index.ts';

/** The caller's environment minus any token: an empty HVSYNC_TOKEN is a configuration error. */
function withoutToken(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { HVSYNC_TOKEN: _token, HVSYNC_TOKEN_FILE: _tokenFile, ...rest } = env;
  return rest;
}

const root = fileURLToPath(new URL('../..', import.meta.url));
const run = promisify(execFile);
const UNKNOWN = '00000000-0000-4000-8000-00000000beef';

const scratch: string[] = [];
function scratchDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  scratch.push(dir);
  return dir;
}
after(() => {
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

/** bin/hvsync.js runs dist/: build it from the sources under test. */
before(async () => {
  await run('npm', ['run', 'build'], { cwd: root, timeout: 180_000 });
});

interface Served {
  readonly child: ChildProcess;
  readonly url: string;
  output(): string;
}

/** Starts the all-in-one on a simulated host and an unused port; resolves once it serves. */
async function serve(command: string, args: string[]): Promise<Served> {
  const db = join(scratchDir('hvsync-start-'), 'hvsync.db');
  const child = spawn(
    command,
    [...args, '--sim', '3', '--listen', '127.0.0.1:0', '--db', db, '--log-level', 'info'],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: withoutToken(process.env) },
  );
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  let url: string | undefined;
  await waitFor(
    'the API to be served',
    () => {
      url = /serving the API at (http:\/\/[\d.:]+)/.exec(output)?.[1];
      assert.equal(child.exitCode, null, output);
      return url !== undefined;
    },
    60_000,
  );
  const health = await fetch(`${url!}/healthz`);
  assert.equal(health.status, 200);
  return { child, url: url!, output: () => output };
}

/** Every live process below `pid`, from /proc (zombies awaiting their reaper count as gone). */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (state === 'Z') continue;
    const list = children.get(Number(ppid)) ?? [];
    list.push(Number(entry));
    children.set(Number(ppid), list);
  }
  const found: number[] = [];
  const walk = (parent: number) => {
    for (const child of children.get(parent) ?? []) {
      found.push(child);
      walk(child);
    }
  };
  walk(pid);
  return found;
}

function alive(pid: number): boolean {
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}

async function refused(url: string): Promise<boolean> {
  try {
    await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) });
    return false;
  } catch {
    return true;
  }
}

/** SIGTERM to the process we started; everything it started must go, and the port with it. */
async function assertStopsOnSigterm(served: Served): Promise<void> {
  const pid = served.child.pid!;
  const family = [pid, ...descendants(pid)];
  assert.ok(family.length >= 1);
  served.child.kill('SIGTERM');
  try {
    await waitFor('every process to exit', () => family.every((p) => !alive(p)), 30_000);
  } catch (error) {
    const survivors = family.filter(alive);
    for (const p of survivors) process.kill(p, 'SIGKILL');
    throw new Error(`still running after SIGTERM: pids ${survivors.join(', ')}`, { cause: error });
  }
  assert.ok(await refused(served.url), `${served.url} still answers`);
  assert.match(served.output(), /stopped cleanly/);
}

describe('signals stop the service however it was started', () => {
  test('npm start, then SIGTERM to npm', async () => {
    const served = await serve('npm', ['start', '--']);
    // While it is up: a missing instance reads the same from a query and from an action.
    const hvsync = (args: string[]) =>
      run(process.execPath, ['bin/hvsync.js', ...args, '--server', served.url], {
        cwd: root,
      }).then(
        () => assert.fail(`hvsync ${args.join(' ')} succeeded`),
        (error: { code: number; stderr: string }) => error,
      );
    try {
      const [show, stop] = await Promise.all([
        hvsync(['instances', 'show', UNKNOWN]),
        hvsync(['stop', UNKNOWN]),
      ]);
      assert.equal(show.stderr, `hvsync: no instance ${UNKNOWN}\n`);
      assert.equal(stop.stderr, show.stderr);
    } catch (error) {
      for (const p of [served.child.pid!, ...descendants(served.child.pid!)]) {
        process.kill(p, 'SIGKILL');
      }
      throw error;
    }
    await assertStopsOnSigterm(served);
  });

  test('npm run hvsync -- all-in-one (a shell between npm and node), then SIGTERM to npm', async () => {
    await assertStopsOnSigterm(await serve('npm', ['run', 'hvsync', '--', 'all-in-one']));
  });

  test('bin/hvsync.js run by node directly, then SIGTERM', async () => {
    await assertStopsOnSigterm(await serve(process.execPath, ['bin/hvsync.js', 'all-in-one']));
  });
});

describe('the installed command', () => {
  test("its spelling of libvirt's local URI is the libvirt client's default", () => {
    assert.equal(LOCAL_LIBVIRT_URI, DEFAULT_URI);
  });

  test('a client command loads neither the server, the store nor the metrics', async () => {
    const served = await serve(process.execPath, ['bin/hvsync.js', 'all-in-one']);
    try {
      const trace = join(scratchDir('hvsync-trace-'), 'imports');
      const { stdout } = await run(
        process.execPath,
        [
          '--import',
          './test/support/trace-imports.mjs',
          'bin/hvsync.js',
          'instances',
          'list',
          '--server',
          served.url,
        ],
        { cwd: root, env: { ...withoutToken(process.env), HVSYNC_TRACE_IMPORTS: trace } },
      );
      assert.match(stdout, /sim-00001/);
      const loaded = readFileSync(trace, 'utf8');
      assert.match(loaded, /\/dist\/cli\/commands\.js$/m, 'the trace sees the CLI load');
      for (const heavy of ['fastify', 'better-sqlite3', 'pino', 'pino-pretty', 'prom-client']) {
        assert.doesNotMatch(loaded, new RegExp(`/node_modules/${heavy}/`), heavy);
      }
      assert.doesNotMatch(loaded, /\/dist\/(server|store|sync|virt|libvirt)\//);
    } finally {
      await assertStopsOnSigterm(served);
    }
  });

  test('without a build it says what to run', async () => {
    const bin = join(scratchDir('hvsync-nobuild-'), 'bin');
    mkdirSync(bin);
    copyFileSync(join(root, 'bin/hvsync.js'), join(bin, 'hvsync.js'));
    const failed = await run(process.execPath, [join(bin, 'hvsync.js'), '--version']).then(
      () => assert.fail('ran without dist/'),
      (error: { code: number; stdout: string; stderr: string }) => error,
    );
    assert.equal(failed.code, 1);
    assert.equal(failed.stdout, '');
    assert.equal(failed.stderr, 'hvsync: the compiled CLI is missing (dist/): run npm run build\n');
  });
});
