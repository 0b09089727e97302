// `hvsync all-in-one` started as a user starts it, as a real process: every configuration error
// and every unusable database file is a clear line and a non-zero exit before anything is
// connected or recorded; a second process on one file is refused; a database that stops taking
// writes makes the service not ready; the simulator runs only when asked for.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { openSqliteStore } from '../../src/store/index.ts';
import { instanceFields } from '../support/records.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const main = join(root, 'src', 'cli', 'main.ts');
const tsxLoader = import.meta.resolve('tsx');
const asRoot = process.getuid?.() === 0;
/** Root ignores file modes: the read-only cases run as nobody so that the modes mean something. */
const NOBODY = 65534;
const EXIT_WITHIN_MS = 20_000;

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'hvsync-startup-'));
  // Reachable by nobody, for the cases that run as nobody.
  chmodSync(dir, 0o755);
});
after(() => rmSync(dir, { recursive: true, force: true }));

let cases = 0;
/** A fresh directory for one case, owned by whoever the process will run as. */
function caseDir(owner?: number): string {
  const path = join(dir, `case-${++cases}`);
  mkdirSync(path);
  if (owner !== undefined) chownSync(path, owner, owner);
  return path;
}

interface Running {
  readonly child: ChildProcess;
  output(): string;
  /** Resolves with the first match of `pattern` in the output; fails after 20 s. */
  waitFor(pattern: RegExp): Promise<RegExpExecArray>;
  /** Resolves with the exit code once the process has ended; fails (and kills it) after 20 s. */
  exit(): Promise<number | null>;
}

interface RunOptions {
  readonly cwd?: string;
  readonly env?: Record<string, string>;
  readonly uid?: number;
  /** Runs the command through `sh -c SCRIPT sh node ...`, e.g. inside a mount namespace. */
  readonly wrap?: readonly string[];
}

/** Starts `hvsync all-in-one ARGS` with none of the caller's HVSYNC_* settings. */
function allInOne(args: readonly string[], options: RunOptions = {}): Running {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('HVSYNC_') && value !== undefined) env[key] = value;
  }
  const command = [process.execPath, '--import', tsxLoader, main, 'all-in-one', ...args];
  const [file, ...rest] = options.wrap ? [...options.wrap, ...command] : command;
  const child = spawn(file!, rest, {
    cwd: options.cwd ?? dir,
    env: { ...env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.uid === undefined ? {} : { uid: options.uid, gid: options.uid }),
  });
  let output = '';
  const seen = new Set<() => void>();
  const collect = (chunk: Buffer): void => {
    output += chunk.toString();
    for (const check of seen) check();
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  return {
    child,
    output: () => output,
    waitFor(pattern) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const match = pattern.exec(output);
          if (match === null) return;
          clearTimeout(timer);
          seen.delete(check);
          resolve(match);
        };
        const timer = setTimeout(() => {
          seen.delete(check);
          reject(new Error(`never printed ${pattern}; output:\n${output}`));
        }, EXIT_WITHIN_MS);
        seen.add(check);
        void exited.then(() => setImmediate(check));
        check();
      });
    },
    async exit() {
      let hung = false;
      const timer = setTimeout(() => {
        hung = true;
        child.kill('SIGKILL');
      }, EXIT_WITHIN_MS);
      const code = await exited;
      clearTimeout(timer);
      assert.ok(!hung, `still running after 20 s; output:\n${output}`);
      return code;
    },
  };
}

/** What a new user sees on the terminal: the error line, and nothing started. */
async function refused(run: Running, message: RegExp): Promise<void> {
  const code = await run.exit();
  assert.equal(code, 1, `exit code; output:\n${run.output()}`);
  assert.match(run.output(), message);
  assert.doesNotMatch(run.output(), /listening at|does not answer|reconciled|serving/);
}

/** Polls `read` until it returns something other than null; fails after 20 s. */
async function eventually<T>(read: () => Promise<T | null>): Promise<T> {
  const deadline = Date.now() + EXIT_WITHIN_MS;
  while (Date.now() < deadline) {
    const value = await read();
    if (value !== null) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return assert.fail('the condition never held within 20 s');
}

function unreachableLibvirt(where: string): string {
  return `test+unix:///default?socket=${join(where, 'no-libvirt-here.sock')}`;
}

function recorded(path: string): { instances: number; hosts: number } {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const count = (table: string): number =>
      db.prepare<[], number>(`SELECT count(*) FROM ${table}`).pluck().get() ?? 0;
    return { instances: count('instances'), hosts: count('hosts') };
  } finally {
    db.close();
  }
}

async function makeStore(path: string, instances: number): Promise<void> {
  const store = await openSqliteStore(path);
  const writes = [];
  for (let i = 0; i < instances; i++) {
    const uuid = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
    writes.push(store.write({ kind: 'create', uuid, fields: instanceFields({ name: `vm-${i}` }) }));
  }
  await Promise.all(writes);
  await store.close();
}

describe('configuration errors: a clear line and a non-zero exit, before anything starts', () => {
  const tokens: [string, string[], Record<string, string>][] = [
    ['--token of spaces', ['--token', '  '], {}],
    ['an empty --token', ['--token', ''], {}],
    ['HVSYNC_TOKEN of spaces', [], { HVSYNC_TOKEN: ' \t ' }],
    ['a --token with a space inside', ['--token', 'two words'], {}],
  ];
  for (const [name, args, env] of tokens) {
    test(`${name} is refused`, async () => {
      const where = caseDir();
      const db = join(where, 'hvsync.db');
      // A simulated host connects at once: today the token is looked at only after it has.
      const run = allInOne(
        ['--sim', '3', '--sim-rate', '0', '--db', db, '--listen', '127.0.0.1:0', ...args],
        { env },
      );
      await refused(run, /^hvsync: .*token.* (is empty|contains whitespace)/m);
      assert.ok(!existsSync(db), 'nothing was written');
    });
  }

  for (const [name, env] of [
    ['an empty HVSYNC_DB', { HVSYNC_DB: '' }],
    ['an empty HVSYNC_HYPERVISOR', { HVSYNC_HYPERVISOR: ' ' }],
  ] as const) {
    test(`${name} is refused, not taken for the demo`, async () => {
      const where = caseDir();
      const run = allInOne(['--listen', '127.0.0.1:0'], { cwd: where, env });
      await refused(run, /^hvsync: --(db|hypervisor) \(or HVSYNC_\w+\) is empty/m);
    });
  }

  test('a token file of whitespace is refused', async () => {
    const where = caseDir();
    const tokenFile = join(where, 'token');
    writeFileSync(tokenFile, '  \n');
    const run = allInOne([
      '--hypervisor',
      unreachableLibvirt(where),
      '--db',
      join(where, 'hvsync.db'),
      '--token-file',
      tokenFile,
    ]);
    await refused(run, /token file .* is empty/);
  });

  test('a busy port is refused before the hypervisor is connected or anything recorded', async () => {
    const where = caseDir();
    const db = join(where, 'hvsync.db');
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const { port } = holder.address() as AddressInfo;
    try {
      // A simulated host connects at once: today's order would adopt its instances first.
      const run = allInOne(['--sim', '3', '--db', db, '--listen', `127.0.0.1:${port}`]);
      await refused(run, new RegExp(`cannot listen on 127.0.0.1:${port}: the address is in use`));
      assert.deepEqual(recorded(db), { instances: 0, hosts: 0 });
    } finally {
      holder.close();
    }
  });
});

describe('one hvsync per database file', () => {
  test('a second process is refused, naming the file and the holder; a killed holder blocks nothing', async () => {
    const where = caseDir();
    const db = join(where, 'shared.db');
    const args = ['--sim', '3', '--sim-rate', '0', '--db', db, '--listen', '127.0.0.1:0'];
    const first = allInOne(args);
    await first.waitFor(/serving the API at/);
    const second = allInOne(args);
    await refused(
      second,
      new RegExp(
        `database .*shared\\.db is in use: another hvsync holds its lock \\(pid ${first.child.pid}`,
      ),
    );
    first.child.kill('SIGKILL');
    await first.exit();
    const third = allInOne(args);
    await third.waitFor(/serving the API at/);
    third.child.kill('SIGTERM');
    assert.equal(await third.exit(), 0, third.output());
  });
});

describe('unusable database files are refused at start', () => {
  // As root the file modes would not stop anything: those cases run as nobody.
  const user = asRoot ? NOBODY : undefined;
  const simArgs = (db: string) => [
    '--sim',
    '3',
    '--sim-rate',
    '0',
    '--db',
    db,
    '--listen',
    '127.0.0.1:0',
  ];

  test('a read-only database file', async () => {
    const where = caseDir(user);
    const db = join(where, 'hvsync.db');
    await makeStore(db, 5);
    if (user !== undefined) chownSync(db, user, user);
    chmodSync(db, 0o444);
    await refused(allInOne(simArgs(db), { uid: user }), /database .*hvsync\.db is read-only/);
  });

  test('a database in a read-only directory', async () => {
    const where = caseDir(user);
    const db = join(where, 'hvsync.db');
    await makeStore(db, 5);
    if (user !== undefined) chownSync(db, user, user);
    chmodSync(where, 0o555);
    try {
      await refused(allInOne(simArgs(db), { uid: user }), /directory .* is read-only/);
    } finally {
      chmodSync(where, 0o755);
    }
  });

  test('a database with a damaged interior page', async () => {
    const where = caseDir();
    const db = join(where, 'hvsync.db');
    // Enough rows for the tables' b-trees to have interior pages above their leaves.
    await makeStore(db, 3_000);
    overwriteInteriorPage(db);
    await refused(allInOne(simArgs(db)), /database .*hvsync\.db is damaged \(SQLite quick_check: /);
  });

  test('a file that is not SQLite', async () => {
    const where = caseDir();
    const db = join(where, 'hvsync.db');
    writeFileSync(db, 'these are my notes, not a database\n'.repeat(200));
    await refused(allInOne(simArgs(db)), /not a usable SQLite database/);
  });
});

/** Overwrites the cell area of the first interior table b-tree page (type 5) with noise. */
function overwriteInteriorPage(path: string): void {
  const size = statSync(path).size;
  const fd = openSync(path, 'r+');
  try {
    const header = Buffer.alloc(100);
    readSync(fd, header, 0, 100, 0);
    const pageSize = header.readUInt16BE(16) === 1 ? 65536 : header.readUInt16BE(16);
    const page = Buffer.alloc(pageSize);
    for (let offset = pageSize; offset < size; offset += pageSize) {
      readSync(fd, page, 0, pageSize, offset);
      if (page[0] !== 0x05) continue;
      const noise = Buffer.alloc(pageSize - 12, 0xa5);
      writeSync(fd, noise, 0, noise.length, offset + 12);
      return;
    }
    assert.fail('no interior page found: the test database is too small');
  } finally {
    closeSync(fd);
  }
}

describe('a database that stops taking writes makes the service not ready', () => {
  test('disk full: a clear log line, /readyz 503 with the reason, a metric', async (t) => {
    if (!asRoot) {
      t.skip('a small filesystem of its own needs root (a tmpfs in a private mount namespace)');
      return;
    }
    const where = caseDir();
    const run = allInOne(
      [
        '--sim',
        '50',
        '--sim-rate',
        '500',
        '--db',
        join(where, 'hvsync.db'),
        '--listen',
        '127.0.0.1:0',
      ],
      {
        wrap: [
          'unshare',
          '--mount',
          '--propagation',
          'private',
          'sh',
          '-c',
          `mount -t tmpfs -o size=1m none ${where} && exec "$@"`,
          'sh',
        ],
      },
    );
    try {
      const [, url] = await run.waitFor(/listening at (http:\/\/[0-9.:]+)/);
      await run.waitFor(/database writes are failing, nothing is being recorded/);
      // Where the disk fills decides SQLite's words (full, or an I/O error); either way it says.
      const reasons = await eventually(async () => {
        const ready = await fetch(`${url}/readyz`);
        const body = (await ready.json()) as { reasons: string[] };
        return ready.status === 503 ? body.reasons : null;
      });
      assert.ok(
        reasons.some((r) => r.startsWith('the database cannot be written: ')),
        JSON.stringify(reasons),
      );
      const metrics = await eventually(async () => {
        const text = await (await fetch(`${url}/metrics`)).text();
        return /^hvsync_store_writable 0$/m.test(text) ? text : null;
      });
      const failures = /^hvsync_store_write_failures_total (\d+)$/m.exec(metrics);
      assert.ok(failures !== null && Number(failures[1]) > 0, metrics);
      // Said once by the store, not once per failed pass (hundreds a second at this rate).
      await delay(1000);
      const errorLines = run
        .output()
        .split('\n')
        .filter((line) => /"level":50|ERROR/.test(line));
      assert.ok(errorLines.length <= 2, errorLines.join('\n'));
    } finally {
      run.child.kill('SIGTERM');
      await run.exit();
    }
  });
});

describe('the simulator runs only when asked for', () => {
  test('an unreachable --hypervisor is retried with its reason, never simulated', async () => {
    const where = caseDir();
    const db = join(where, 'hvsync.db');
    const run = allInOne([
      '--hypervisor',
      unreachableLibvirt(where),
      '--db',
      db,
      '--listen',
      '127.0.0.1:0',
    ]);
    const [, url] = await run.waitFor(/listening at (http:\/\/[0-9.:]+)/);
    await run.waitFor(/does not answer yet \(.*ENOENT.*\); retrying in 1 s/);
    assert.equal((await fetch(`${url}/healthz`)).status, 200);
    const ready = await fetch(`${url}/readyz`);
    assert.equal(ready.status, 503);
    assert.match(JSON.stringify(await ready.json()), /cannot connect to libvirt at test\+unix/);
    run.child.kill('SIGTERM');
    assert.equal(await run.exit(), 0, run.output());
    assert.match(run.output(), /SIGTERM: stopped before start-up finished/);
    assert.doesNotMatch(run.output(), /simulated|DEMO/);
    assert.deepEqual(recorded(db), { instances: 0, hosts: 0 });
  });

  // Without libvirt: root hides this machine's sockets in a private mount namespace.
  const hideLibvirt = [
    'unshare',
    '--mount',
    '--propagation',
    'private',
    'sh',
    '-c',
    'mount -t tmpfs none /var/run/libvirt && exec "$@"',
    'sh',
  ];
  const canHide = asRoot || !existsSync('/var/run/libvirt');
  const hide = existsSync('/var/run/libvirt') ? { wrap: hideLibvirt } : {};

  for (const [name, args, env] of [
    ['--db', ['--db', 'prod.db'], {}],
    ['HVSYNC_DB', [], { HVSYNC_DB: 'prod.db' }],
  ] as const) {
    test(`${name} without a hypervisor means libvirt, waited for without it`, async (t) => {
      if (!canHide) {
        t.skip('libvirt is installed here; hiding it takes root (a private mount namespace)');
        return;
      }
      const where = caseDir();
      const run = allInOne([...args, '--listen', '127.0.0.1:0'], { ...hide, cwd: where, env });
      try {
        await run.waitFor(/libvirt at qemu:\/\/\/system does not answer yet/);
        assert.doesNotMatch(run.output(), /simulated|DEMO/);
      } finally {
        run.child.kill('SIGTERM');
        await run.exit();
      }
      assert.deepEqual(recorded(join(where, 'prod.db')), { instances: 0, hosts: 0 });
    });
  }

  test('a bare start without libvirt is a loudly announced demo in a database of its own', async (t) => {
    if (!canHide) {
      t.skip('libvirt is installed here; hiding it takes root (a private mount namespace)');
      return;
    }
    const where = caseDir();
    const run = allInOne(['--listen', '127.0.0.1:0', '--sim-rate', '5'], { ...hide, cwd: where });
    try {
      await run.waitFor(
        /DEMO: no libvirt answers at qemu:\/\/\/system, so this is a simulated host with 20 FAKE instances.*--hypervisor/,
      );
      const [, url] = await run.waitFor(/serving the API at (http:\/\/[0-9.:]+)/);
      const page = (await (await fetch(`${url}/v1/instances`)).json()) as {
        instances: { host: string }[];
      };
      assert.equal(page.instances.length, 20);
      assert.ok(page.instances.every((i) => i.host === 'sim-host'));
      assert.equal((await fetch(`${url}/readyz`)).status, 200);
    } finally {
      run.child.kill('SIGINT');
      assert.equal(await run.exit(), 0, run.output());
    }
    assert.match(run.output(), /stopped cleanly/);
    assert.ok(existsSync(join(where, 'hvsync-sim.db')));
    assert.ok(
      !existsSync(join(where, 'hvsync.db')),
      'the default database of a real host is untouched',
    );
  });

  test('the systemd unit names its hypervisor', () => {
    const unit = readFileSync(join(root, 'contrib', 'hvsync.service'), 'utf8');
    assert.match(unit, /^ExecStart=.*hvsync all-in-one .*--hypervisor qemu:\/\/\/system/m);
  });
});
