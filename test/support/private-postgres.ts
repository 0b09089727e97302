// A PostgreSQL cluster of a test's own, in a temp dir on a free port, for tests that stop and
// restart the database under load (the machine's server is shared and never restarted). Under
// root it runs as the `postgres` user (or `nobody`), which owns the temp dir.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';

const BIN_DIRS = ['/usr/lib/postgresql/15/bin', '/usr/lib/postgresql/16/bin', '/usr/pgsql-15/bin'];
const START_TIMEOUT_MS = 20_000;
const READY = 'database system is ready to accept connections';

const isRoot = process.getuid?.() === 0;
/** As test/support/postgres.ts decides, without the database that module creates on import. */
const POSTGRES_REQUIRED =
  process.env.HVSYNC_REQUIRE_POSTGRES === '1' || process.env.HVSYNC_REQUIRE_LIBVIRT === '1';

function binDir(): string | undefined {
  return BIN_DIRS.find(
    (dir) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres')),
  );
}

function findProgram(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/bin', '/bin'];
  return dirs.map((dir) => join(dir, name)).find((path) => existsSync(path));
}

function userIds(name: string): { uid: number; gid: number } | undefined {
  try {
    const id = (flag: string): number =>
      Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim());
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    return undefined;
  }
}

/** Why a private cluster cannot run here, or undefined when it can. */
export function privatePostgresMissing(): string | undefined {
  if (binDir() === undefined) {
    return `initdb and postgres are not installed in any of ${BIN_DIRS.join(', ')}`;
  }
  if (isRoot && !findProgram('setpriv')) return 'setpriv (util-linux) is not installed';
  if (isRoot && userIds('postgres') === undefined && userIds('nobody') === undefined) {
    return 'neither a postgres nor a nobody user exists to run it as (it refuses root)';
  }
  return undefined;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === 'string') throw new Error('no port was given');
  return address.port;
}

export class PrivatePostgres {
  private child: ChildProcess | undefined;
  private log = '';

  private constructor(
    private readonly dir: string,
    private readonly bin: string,
    private readonly user: { uid: number; gid: number } | undefined,
    readonly port: number,
  ) {}

  /** A superuser URL of the cluster's `postgres` database, over TCP. */
  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  /** The server's output since it was last started. */
  output(): string {
    return this.log;
  }

  /** initdb into a fresh temp dir, then start it; stopped and removed in the file's after(). */
  static async create(): Promise<PrivatePostgres> {
    const missing = privatePostgresMissing();
    if (missing !== undefined) throw new Error(`no private PostgreSQL: ${missing}`);
    const dir = mkdtempSync(join(tmpdir(), 'hvsync-pg-'));
    const user = isRoot ? (userIds('postgres') ?? userIds('nobody')) : undefined;
    if (user !== undefined) chownSync(dir, user.uid, user.gid);
    const cluster = new PrivatePostgres(dir, binDir()!, user, await freePort());
    after(() => cluster.cleanup());
    execFileSync(
      ...cluster.command('initdb', [
        '-D',
        cluster.dataDir,
        '-U',
        'postgres',
        '--auth=trust',
        '--encoding=UTF8',
        '--no-sync',
      ]),
      { stdio: 'pipe', env: cluster.env() },
    );
    await cluster.start();
    return cluster;
  }

  private get dataDir(): string {
    return join(this.dir, 'data');
  }

  private env(): Record<string, string> {
    return { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', HOME: this.dir };
  }

  /** As the cluster's user; the parent-death signal takes it down with a killed test process. */
  private command(program: string, args: readonly string[]): [string, string[]] {
    const path = join(this.bin, program);
    if (!isRoot) return [path, [...args]];
    return [
      findProgram('setpriv')!,
      [
        `--reuid=${this.user!.uid}`,
        `--regid=${this.user!.gid}`,
        '--clear-groups',
        '--pdeathsig=SIGKILL',
        '--',
        path,
        ...args,
      ],
    ];
  }

  /** Starts the server; resolves once it accepts connections. */
  async start(): Promise<void> {
    if (this.child !== undefined) throw new Error('the private PostgreSQL is already running');
    this.log = '';
    const child = spawn(
      ...this.command('postgres', [
        '-D',
        this.dataDir,
        '-p',
        String(this.port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        `unix_socket_directories=${this.dir}`,
        '-c',
        'fsync=off',
      ]),
      { env: this.env(), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child = child;
    child.stdout!.on('data', (chunk: Buffer) => (this.log += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (this.log += chunk.toString()));
    child.once('exit', () => {
      if (this.child === child) this.child = undefined;
    });
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!this.log.includes(READY)) {
      if (this.child !== child || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`the private PostgreSQL did not start; its output:\n${this.log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** A fast shutdown (what `pg_ctl stop -m fast` sends): sessions are cut, work is rolled back. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child === undefined) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGKILL'), START_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
    this.child = undefined;
  }

  /** Stops it fast, stays down for `downMs`, starts it again. */
  async restart(downMs: number): Promise<void> {
    await this.stop();
    await new Promise((resolve) => setTimeout(resolve, downMs));
    await this.start();
  }

  async cleanup(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * node:test's describe for suites that need a private cluster: skipped with the reason when the
 * binaries are missing, failed instead when HVSYNC_REQUIRE_POSTGRES=1 (CI) says they must be here.
 */
export function describePrivatePostgres(name: string, fn: () => void): void {
  const missing = privatePostgresMissing();
  describe(name, () => {
    if (missing === undefined) {
      fn();
      return;
    }
    if (POSTGRES_REQUIRED) {
      test('a private PostgreSQL can run', () => {
        assert.fail(`${missing}; HVSYNC_REQUIRE_POSTGRES=1 requires it (install PostgreSQL 15)`);
      });
      return;
    }
    test('needs a private PostgreSQL', { skip: missing }, () => {});
  });
}
