// A libvirtd of the test's own, for suites that stop, kill or restart the daemon: the machine's
// daemon may serve other people's guests and is never touched. It is an unprivileged session
// daemon (own config, sockets and state under a temporary folder) reached with ?socket=; as root
// it runs as `nobody`, because a second privileged daemon would share /run/libvirt with the
// machine's and fight it. Its QEMU driver (qemu:///session) runs guests with TCG.
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import {
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { LIBVIRT_REQUIRED, libvirtAvailable } from './libvirt.ts';

export class PrivateLibvirtdError extends Error {
  readonly code: 'NOT_INSTALLED' | 'START_FAILED' | 'STOP_FAILED' | 'NOT_RUNNING';
  /** The last lines of the daemon's log, for the failure message. */
  readonly log: string;
  constructor(code: PrivateLibvirtdError['code'], message: string, log = '') {
    super(log ? `${message}\n--- private libvirtd log (last lines) ---\n${log}` : message);
    this.name = 'PrivateLibvirtdError';
    this.code = code;
    this.log = log;
  }
}

export interface DaemonUser {
  readonly uid: number;
  readonly gid: number;
}

export type PrivateDriver = 'test' | 'qemu';

const SEARCH_DIRS = ['/usr/sbin', '/usr/local/sbin', '/sbin'];
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const KILL_TIMEOUT_MS = 5_000;
const POLL_MS = 50;
// Processes a session daemon leaves pidfiles for under its runtime folder.
const OWN_PROCESS = /^(libvirtd|virtlogd|qemu-system-.*)$/;
const LOG_LINES = 40;

function findProgram(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), ...SEARCH_DIRS];
  return dirs.map((dir) => join(dir, name)).find((path) => existsSync(path));
}

function lookupUser(name: string): DaemonUser {
  const id = (flag: string): number =>
    Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

const isRoot = process.getuid?.() === 0;

/** Why a private libvirtd cannot run here, or undefined when it can. */
export function privateLibvirtdMissing(): string | undefined {
  if (!findProgram('libvirtd')) return 'libvirtd is not installed';
  if (isRoot && !findProgram('setpriv')) return 'setpriv (util-linux) is not installed';
  return undefined;
}

/** The user the daemon runs as: `nobody` under root, else the current user. */
export function privateDaemonUser(): DaemonUser {
  if (isRoot) return lookupUser('nobody');
  return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
}

/** Makes a file or folder the daemon's, so its QEMU can open guest disks written by a test. */
export function giveToDaemon(paths: readonly string[], user: DaemonUser): void {
  if (!isRoot) return;
  for (const path of paths) chownSync(path, user.uid, user.gid);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function pidFiles(dir: string): string[] {
  const found: string[] = [];
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return found;
  }
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...pidFiles(path));
    else if (entry.name.endsWith('.pid')) found.push(path);
  }
  return found;
}

export class PrivateLibvirtd {
  readonly dir: string;
  readonly socketPath: string;
  readonly user: DaemonUser;
  /** How long the last start() took until the daemon answered an RPC call. */
  lastStartMs = 0;
  private readonly logPath: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private disposed = false;
  private readonly onProcessExit = (): void => {
    this.sweep('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  };

  constructor() {
    const missing = privateLibvirtdMissing();
    if (missing) throw new PrivateLibvirtdError('NOT_INSTALLED', missing);
    this.user = privateDaemonUser();
    this.dir = mkdtempSync(join(tmpdir(), 'hvsync-libvirtd-'));
    for (const sub of ['run', 'cfg/libvirt', 'cache', 'data']) {
      mkdirSync(join(this.dir, sub), { recursive: true });
    }
    // No virtlogd: QEMU's output goes straight to a file, one daemon fewer to clean up.
    writeFileSync(join(this.dir, 'cfg/libvirt/qemu.conf'), 'stdio_handler = "file"\n');
    this.logPath = join(this.dir, 'libvirtd.log');
    writeFileSync(this.logPath, '');
    giveToDaemon(
      [
        this.dir,
        ...['run', 'cfg', 'cfg/libvirt', 'cfg/libvirt/qemu.conf', 'cache', 'data'].map((p) =>
          join(this.dir, p),
        ),
        this.logPath,
      ],
      this.user,
    );
    this.socketPath = join(this.dir, 'run/libvirt/libvirt-sock');
    // A test process that dies without its after() hooks must still not leave daemons behind.
    process.once('exit', this.onProcessExit);
  }

  /** test+unix:///default or qemu+unix:///session on this daemon's socket. */
  uri(driver: PrivateDriver): string {
    const path = driver === 'test' ? 'default' : 'session';
    return `${driver}+unix:///${path}?socket=${encodeURIComponent(this.socketPath)}`;
  }

  get pid(): number | undefined {
    return this.child?.exitCode === null && this.child.signalCode === null
      ? this.child.pid
      : undefined;
  }

  get running(): boolean {
    return this.pid !== undefined;
  }

  logTail(lines = LOG_LINES): string {
    try {
      return readFileSync(this.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  /** Starts the daemon; resolves once it answers an RPC call on its socket. */
  async start(): Promise<void> {
    if (this.disposed) throw new PrivateLibvirtdError('NOT_RUNNING', 'already disposed');
    if (this.running) return;
    const began = performance.now();
    const libvirtd = findProgram('libvirtd') ?? 'libvirtd';
    const env = {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      LANG: 'C',
      HOME: this.dir,
      XDG_RUNTIME_DIR: join(this.dir, 'run'),
      XDG_CONFIG_HOME: join(this.dir, 'cfg'),
      XDG_CACHE_HOME: join(this.dir, 'cache'),
      XDG_DATA_HOME: join(this.dir, 'data'),
    };
    // setpriv execs libvirtd in place (runuser would stay as its parent), so the child's pid is
    // the daemon's own and signals reach it directly. Its parent-death signal takes the daemon
    // down with a test process that is killed before its after() hooks can run.
    const setpriv = findProgram('setpriv');
    const [file, args] = setpriv
      ? [
          setpriv,
          [
            ...(isRoot
              ? [`--reuid=${this.user.uid}`, `--regid=${this.user.gid}`, '--clear-groups']
              : []),
            '--pdeathsig=SIGKILL',
            '--',
            libvirtd,
          ],
        ]
      : [libvirtd, []];
    const log = openSync(this.logPath, 'a');
    let child: ChildProcess;
    try {
      // Own session: the daemon must not get the test runner's terminal signals.
      child = spawn(file, args, { env, detached: true, stdio: ['ignore', log, log] });
    } finally {
      closeSync(log);
    }
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.once('exit', () => resolve());
      child.once('error', () => resolve());
    });
    child.unref();

    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!(await libvirtAvailable(this.socketPath, 1000))) {
      if (!this.running) {
        throw new PrivateLibvirtdError(
          'START_FAILED',
          `private libvirtd exited during start (${child.exitCode ?? child.signalCode})`,
          this.logTail(),
        );
      }
      if (Date.now() >= deadline) {
        this.signal('SIGKILL');
        throw new PrivateLibvirtdError(
          'START_FAILED',
          `private libvirtd did not answer on ${this.socketPath} within ${START_TIMEOUT_MS} ms`,
          this.logTail(),
        );
      }
      await delay(POLL_MS);
    }
    this.lastStartMs = performance.now() - began;
  }

  /** Sends a signal to the daemon (SIGSTOP to freeze it, for example); no wait. */
  signal(signal: NodeJS.Signals): void {
    const pid = this.pid;
    if (pid === undefined) {
      throw new PrivateLibvirtdError('NOT_RUNNING', `cannot send ${signal}: not running`);
    }
    process.kill(pid, signal);
  }

  private async waitForExit(timeoutMs: number): Promise<boolean> {
    if (!this.running) return true;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const result = await Promise.race([this.exited.then(() => true as const), timedOut]);
    clearTimeout(timer);
    return result;
  }

  /** SIGKILL, as a crash would; resolves once the daemon is gone. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.signal('SIGKILL');
    if (!(await this.waitForExit(KILL_TIMEOUT_MS))) {
      throw new PrivateLibvirtdError('STOP_FAILED', 'private libvirtd survived SIGKILL');
    }
  }

  /** SIGTERM, SIGKILL after a bounded wait; resolves once the daemon is gone. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.signal('SIGCONT');
    this.signal('SIGTERM');
    if (await this.waitForExit(STOP_TIMEOUT_MS)) return;
    await this.kill();
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /**
   * Kills every process the daemon left a pidfile for in its folder (itself, QEMU guests, a
   * virtlogd), checked by owner and name so a reused pid is never hit. Synchronous: it also
   * runs from process.on('exit').
   */
  private sweep(signal: NodeJS.Signals): number[] {
    const hit: number[] = [];
    for (const file of pidFiles(join(this.dir, 'run'))) {
      const pid = Number(readFileSync(file, 'utf8').trim());
      if (!Number.isInteger(pid) || pid <= 1 || hit.includes(pid)) continue;
      try {
        if (statSync(`/proc/${pid}`).uid !== this.user.uid) continue;
        if (!OWN_PROCESS.test(readFileSync(`/proc/${pid}/comm`, 'utf8').trim())) continue;
        process.kill(pid, signal);
        hit.push(pid);
      } catch {
        // Gone already.
      }
    }
    return hit;
  }

  /** Stops the daemon and everything it started, and removes its folder. Safe to call twice. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    try {
      if (this.running) await this.kill();
      const left = this.sweep('SIGKILL');
      const deadline = Date.now() + KILL_TIMEOUT_MS;
      while (left.some(alive) && Date.now() < deadline) await delay(POLL_MS);
    } finally {
      process.off('exit', this.onProcessExit);
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

function testFailed(context: unknown): boolean {
  return (
    typeof context === 'object' &&
    context !== null &&
    'passed' in context &&
    context.passed === false
  );
}

/**
 * A private libvirtd for the enclosing describe(): started in before(), its log printed after a
 * failed test, disposed of in after() whatever happened.
 */
export function usePrivateLibvirtd(): PrivateLibvirtd {
  const daemon = new PrivateLibvirtd();
  before(() => daemon.start());
  afterEach((context) => {
    if (testFailed(context)) {
      console.error(`--- private libvirtd log (${daemon.dir}) ---\n${daemon.logTail()}`);
    }
  });
  after(() => daemon.dispose());
  return daemon;
}

/**
 * describe() for suites on a private libvirtd: they need libvirtd installed, not running. When it
 * is missing the suite is skipped, or fails under HVSYNC_REQUIRE_LIBVIRT=1.
 */
export function describePrivateLibvirtd(name: string, fn: (daemon: PrivateLibvirtd) => void): void {
  const missing = privateLibvirtdMissing();
  describe(name, () => {
    if (!missing) {
      fn(usePrivateLibvirtd());
      return;
    }
    if (LIBVIRT_REQUIRED) {
      test('a private libvirtd can run', () => {
        assert.fail(`${missing}; HVSYNC_REQUIRE_LIBVIRT=1 requires it`);
      });
      return;
    }
    test('needs libvirtd installed', { skip: missing }, () => {});
  });
}
