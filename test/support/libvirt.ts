// The one place libvirt suites learn whether the machine's libvirtd is reachable, and the tools
// they use to act on it behind hvsync's back (virsh). Nothing here stops or restarts it: suites
// that take libvirtd away run their own (private-libvirtd.ts).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';

export const DEFAULT_LIBVIRT_SOCKET = '/var/run/libvirt/libvirt-sock';
export const LIBVIRT_SOCKET = process.env.HVSYNC_TEST_SOCKET ?? DEFAULT_LIBVIRT_SOCKET;
export const LIBVIRT_REQUIRED = process.env.HVSYNC_REQUIRE_LIBVIRT === '1';

/** The test driver inside libvirtd: shared by every connection to the daemon. */
export const TEST_DRIVER_URI = 'test:///default';
export const QEMU_URI = 'qemu:///system';

const PROVISION_HINT =
  'run scripts/provision-libvirt.sh as root (Debian 12) to install and start it, ' +
  'or scripts/libvirtd.sh start if it is installed';

export class LibvirtSupportError extends Error {
  readonly code: 'VIRSH_FAILED';
  readonly stderr: string;
  constructor(code: LibvirtSupportError['code'], message: string, stderr: string) {
    super(message);
    this.name = 'LibvirtSupportError';
    this.code = code;
    this.stderr = stderr;
  }
}

// Just enough of libvirt's RPC to probe the daemon and hold a driver open, deliberately not
// hvsync's own client: the support code must not depend on what it helps to test.
const REMOTE_PROGRAM = 0x20008086;
const REMOTE_PROC_CONNECT_OPEN = 1;
const REMOTE_PROC_AUTH_LIST = 66;
const HEADER_BYTES = 28;
const STATUS_OK = 0;

function callPacket(procedure: number, serial: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(HEADER_BYTES + payload.length, 0);
  header.writeUInt32BE(REMOTE_PROGRAM, 4);
  header.writeUInt32BE(1, 8);
  header.writeUInt32BE(procedure, 12);
  header.writeUInt32BE(0, 16);
  header.writeUInt32BE(serial, 20);
  header.writeUInt32BE(0, 24);
  return Buffer.concat([header, payload]);
}

/** remote_connect_open_args: an optional string (present flag, length, padded bytes), flags. */
function connectOpenArgs(uri: string): Buffer {
  const name = Buffer.from(uri, 'utf8');
  const padded = Math.ceil(name.length / 4) * 4;
  const args = Buffer.alloc(4 + 4 + padded + 4);
  args.writeUInt32BE(1, 0);
  args.writeUInt32BE(name.length, 4);
  name.copy(args, 8);
  args.writeUInt32BE(0, 8 + padded);
  return args;
}

interface RawConnection {
  /** Sends a CALL and resolves with the reply's status once the whole reply has arrived. */
  call(procedure: number, payload: Buffer): Promise<number>;
  close(): void;
}

function openRaw(socketPath: string, timeoutMs: number): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no connection to ${socketPath} within ${timeoutMs} ms`));
    }, timeoutMs);
    let buffered = Buffer.alloc(0);
    let serial = 0;
    const waiting = new Map<number, (status: number) => void>();
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 4 && buffered.length >= buffered.readUInt32BE(0)) {
        const length = buffered.readUInt32BE(0);
        if (length < HEADER_BYTES) {
          socket.destroy(new Error(`bad packet length ${length}`));
          return;
        }
        waiting.get(buffered.readUInt32BE(20))?.(buffered.readUInt32BE(24));
        buffered = buffered.subarray(length);
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('connect', () => {
      clearTimeout(timer);
      resolve({
        call: (procedure, payload) =>
          new Promise((resolveCall, rejectCall) => {
            serial += 1;
            const callSerial = serial;
            const callTimer = setTimeout(() => {
              waiting.delete(callSerial);
              rejectCall(new Error(`no reply to procedure ${procedure} within ${timeoutMs} ms`));
            }, timeoutMs);
            const onClose = (): void => rejectCall(new Error('connection closed'));
            socket.once('close', onClose);
            waiting.set(callSerial, (status) => {
              clearTimeout(callTimer);
              socket.off('close', onClose);
              waiting.delete(callSerial);
              resolveCall(status);
            });
            socket.write(callPacket(procedure, callSerial, payload));
          }),
        close: () => socket.destroy(),
      });
    });
  });
}

/**
 * True when libvirtd answers an RPC call on the socket within timeoutMs. libvirtd can accept
 * connections before its drivers are initialised and answers only once it is ready, so a reply,
 * not a connect, is what "reachable" means.
 */
export async function libvirtAvailable(
  socketPath = LIBVIRT_SOCKET,
  timeoutMs = 3000,
): Promise<boolean> {
  let connection: RawConnection | undefined;
  try {
    connection = await openRaw(socketPath, timeoutMs);
    await connection.call(REMOTE_PROC_AUTH_LIST, Buffer.alloc(0));
    return true;
  } catch {
    return false;
  } finally {
    connection?.close();
  }
}

export interface HeldConnection {
  release(): void;
}

/**
 * Keeps a connection to a driver open until release(). libvirtd frees test:///default's state
 * (every domain defined in it) when its last connection closes, and each virsh() call is a
 * connection of its own: a suite that drives the test driver only through virsh must hold one.
 * No keepalive is negotiated, so the daemon never drops this idle connection.
 */
export async function holdDriverConnection(
  uri: string = TEST_DRIVER_URI,
  socketPath = LIBVIRT_SOCKET,
  timeoutMs = 10_000,
): Promise<HeldConnection> {
  const connection = await openRaw(socketPath, timeoutMs);
  try {
    await connection.call(REMOTE_PROC_AUTH_LIST, Buffer.alloc(0));
    const status = await connection.call(REMOTE_PROC_CONNECT_OPEN, connectOpenArgs(uri));
    if (status !== STATUS_OK) throw new Error(`libvirtd refused to open ${uri}`);
  } catch (error) {
    connection.close();
    throw error;
  }
  return { release: () => connection.close() };
}

// Decided once, when the module loads, so describeLibvirt can register its suite
// synchronously: node:test attaches tests registered after an await in a describe body to the
// wrong suite. In CI (required) a daemon still coming up after provisioning gets a grace period
// rather than failing the file; elsewhere one probe decides, so a stale socket costs nothing.
const RESTART_GRACE_MS = 10_000;
async function libvirtReachableAtStart(): Promise<boolean> {
  const deadline = Date.now() + (LIBVIRT_REQUIRED ? RESTART_GRACE_MS : 0);
  for (;;) {
    if (await libvirtAvailable()) return true;
    if (!existsSync(LIBVIRT_SOCKET) || Date.now() >= deadline) return false;
    await delay(250);
  }
}

/** Whether libvirtd answered when this test file started. */
export const LIBVIRT_REACHABLE = await libvirtReachableAtStart();

/**
 * node:test's describe for suites that need a real libvirtd. Reachable: the suite runs.
 * Unreachable: with HVSYNC_REQUIRE_LIBVIRT=1 (CI) the suite fails with one test saying so,
 * otherwise it is skipped with the reason and how to enable it.
 */
export function describeLibvirt(name: string, fn: () => void | Promise<void>): void {
  if (LIBVIRT_REACHABLE) {
    describe(name, fn);
    return;
  }
  const why = `libvirtd is unreachable on ${LIBVIRT_SOCKET}`;
  describe(name, () => {
    if (LIBVIRT_REQUIRED) {
      test('libvirtd is reachable', () => {
        assert.fail(`${why}; HVSYNC_REQUIRE_LIBVIRT=1 requires it: ${PROVISION_HINT}`);
      });
      return;
    }
    const skip = `${why}: ${PROVISION_HINT} (HVSYNC_TEST_SOCKET names another socket)`;
    test('needs libvirtd', { skip }, () => {});
  });
}

interface ExecResult {
  stdout: string;
  stderr: string;
  failure: Error | null;
}

function run(file: string, args: string[], timeoutMs: number): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        resolve({ stdout, stderr, failure: error });
      },
    );
  });
}

/**
 * The same daemon and driver as hvsync's connection, for virsh. A URI without a transport
 * (test:///default) would make virsh open a private test driver inside its own process, which
 * hvsync's connection never sees; so route it through the daemon's socket. A URI that names its
 * socket (a private daemon's) keeps it.
 */
export function viaDaemonSocket(uri: string): string {
  const url = new URL(uri);
  const [driver] = url.protocol.slice(0, -1).split('+');
  url.protocol = `${driver}+unix:`;
  if (LIBVIRT_SOCKET !== DEFAULT_LIBVIRT_SOCKET && !url.searchParams.has('socket')) {
    url.searchParams.set('socket', LIBVIRT_SOCKET);
  }
  return url.toString();
}

export interface VirshOptions {
  timeoutMs?: number;
  /**
   * How long to keep retrying while virsh cannot connect at all (a test's private libvirtd
   * restarting). Only connection failures are retried: the command never ran, so a retry
   * cannot apply it twice. 0 turns retries off.
   */
  connectRetryMs?: number;
}

const CONNECT_FAILURE = /failed to connect to the hypervisor/i;

/** Runs virsh against the daemon as a second client; returns stdout, throws with stderr. */
export async function virsh(
  args: string[],
  uri: string = TEST_DRIVER_URI,
  options: VirshOptions = {},
): Promise<string> {
  const { timeoutMs = 30_000, connectRetryMs = 20_000 } = options;
  const fullArgs = ['-q', '-c', viaDaemonSocket(uri), ...args];
  const deadline = Date.now() + connectRetryMs;
  for (;;) {
    const { stdout, stderr, failure } = await run('virsh', fullArgs, timeoutMs);
    if (!failure) return stdout;
    if (CONNECT_FAILURE.test(stderr) && Date.now() < deadline) {
      await delay(250);
      continue;
    }
    throw new LibvirtSupportError(
      'VIRSH_FAILED',
      `virsh ${fullArgs.join(' ')} failed: ${stderr.trim() || failure.message}`,
      stderr,
    );
  }
}

const runId = Date.now().toString(36);
let nameCounter = 0;
/**
 * A domain name no other test file, process or earlier run will use: domains live in the daemon,
 * are seen by every connection and can outlive the process that made them.
 */
export function uniqueName(prefix: string): string {
  const safePrefix = prefix.replace(/[^A-Za-z0-9_.-]/g, '-');
  nameCounter += 1;
  return `${safePrefix}-${process.pid}-${runId}-${nameCounter}`;
}
