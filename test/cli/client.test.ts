import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { HvsyncClient } from '../../src/cli/client.ts';
import { create, patch, startServer, uuidOf, waitFor } from '../server/harness.ts';
import type { Harness } from '../server/harness.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI in its own process (async: the server answering it lives in this one). */
function hvsync(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', ...args],
      {
        cwd: root,
        env: {
          ...process.env,
          HVSYNC_SERVER: '',
          HVSYNC_TOKEN: '',
          HVSYNC_TOKEN_FILE: '',
          ...env,
        },
        timeout: 60_000,
      },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe('hvsync instances / hosts', () => {
  let h: Harness;
  let server: string[];
  before(async () => {
    h = await startServer();
    server = ['--server', h.url];
    await create(h.store, uuidOf(1), { name: 'web-1' });
    await create(h.store, uuidOf(2), {
      name: 'db-1',
      host: 'host-b',
      vmState: 'stopped',
      powerState: 'shutoff',
      powerReason: 'shutdown',
    });
    await create(h.store, uuidOf(3), { name: 'web-2', host: 'host-b' });
    await patch(
      h.store,
      uuidOf(1),
      { vmState: 'stopped', powerState: 'shutoff' },
      {
        from: 'running',
        to: 'shutoff',
        vmStateFrom: 'active',
        vmStateTo: 'stopped',
        cause: 'event',
        detail: 'shutdown',
        outOfBand: true,
        observedAt: Date.parse('2024-05-01T10:00:00Z'),
      },
    );
    await h.store.upsertHost({
      name: 'host-a',
      driver: 'sim',
      connected: true,
      lastSeenAt: Date.now(),
      lastReconcileAt: null,
    });
  });
  after(() => h.close());

  test('list as a table for people and as JSON for scripts, with filters and a limit', async () => {
    const [people, json, filtered, limited, envServer] = await Promise.all([
      hvsync(['instances', 'list', ...server]),
      hvsync(['instances', 'list', '--json', ...server]),
      hvsync([
        'instances',
        'list',
        '--host',
        'host-b',
        '--power-state',
        'running',
        '--json',
        ...server,
      ]),
      hvsync(['instances', 'list', '--limit', '2', '--json', ...server]),
      hvsync(['instances', 'list'], { HVSYNC_SERVER: h.url }),
    ]);
    assert.equal(people.code, 0, people.stderr);
    const lines = people.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^UUID\s+NAME\s+HOST\s+VM STATE\s+TASK\s+POWER\s+REASON\s+UPDATED$/);
    assert.equal(lines.length, 4);
    assert.match(
      lines[1]!,
      new RegExp(`^${uuidOf(1)}\\s+web-1\\s+host-a\\s+stopped\\s+-\\s+shutoff`),
    );
    // Columns line up: every row has NAME where the header has it.
    const nameColumn = lines[0]!.indexOf('NAME');
    for (const line of lines.slice(1)) assert.match(line.slice(nameColumn), /^(web|db)-/);

    assert.equal(json.code, 0, json.stderr);
    const body = JSON.parse(json.stdout) as { instances: { uuid: string }[]; next: unknown };
    assert.deepEqual(
      body.instances.map((i) => i.uuid),
      [1, 2, 3].map(uuidOf),
    );
    assert.equal(body.next, null);

    const only = JSON.parse(filtered.stdout) as { instances: { name: string }[] };
    assert.deepEqual(
      only.instances.map((i) => i.name),
      ['web-2'],
    );

    const two = JSON.parse(limited.stdout) as { instances: unknown[]; next: unknown };
    assert.equal(two.instances.length, 2);
    assert.equal(two.next, uuidOf(2));

    assert.equal(envServer.code, 0, envServer.stderr);
    assert.equal(envServer.stdout, people.stdout);
  });

  test('show and history, for people and as JSON', async () => {
    const [show, showJson, history, historyJson, hosts] = await Promise.all([
      hvsync(['instances', 'show', uuidOf(2), ...server]),
      hvsync(['instances', 'show', uuidOf(2), '--json', ...server]),
      hvsync(['instances', 'history', uuidOf(1), ...server]),
      hvsync(['instances', 'history', uuidOf(1), '--json', ...server]),
      hvsync(['hosts', ...server]),
    ]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^uuid:\s+00000000-0000-4000-8000-000000000002$/m);
    assert.match(show.stdout, /^vm state:\s+stopped$/m);
    assert.match(show.stdout, /^power reason:\s+shutdown$/m);

    const instance = JSON.parse(showJson.stdout) as Record<string, unknown>;
    assert.equal(instance.name, 'db-1');
    assert.equal(instance.powerState, 'shutoff');

    assert.equal(history.code, 0, history.stderr);
    assert.match(history.stdout, /^OBSERVED\s+POWER\s+VM STATE\s+CAUSE/);
    assert.match(
      history.stdout,
      /2024-05-01T10:00:00.000Z\s+running -> shutoff\s+active -> stopped\s+event\s+shutdown\s+yes/,
    );
    const transitions = (JSON.parse(historyJson.stdout) as { transitions: { detail: string }[] })
      .transitions;
    assert.deepEqual(
      transitions.map((t) => t.detail),
      ['shutdown'],
    );

    assert.match(hosts.stdout, /^host-a\s+sim\s+yes/m);
  });

  test('errors are one line on stderr with exit code 1', async () => {
    const [unknown, malformed, badState] = await Promise.all([
      hvsync(['instances', 'show', uuidOf(42), ...server]),
      hvsync(['instances', 'history', 'nope', ...server]),
      hvsync(['instances', 'list', '--vm-state', 'sleepy', ...server]),
    ]);
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stderr, `hvsync: no instance ${uuidOf(42)}\n`);
    assert.equal(malformed.code, 1);
    assert.match(malformed.stderr, /^hvsync: path parameter 'uuid' must be a UUID/);
    assert.equal(badState.code, 1);
    assert.match(badState.stderr, /vmState' must be one of .*active.*'sleepy'/);
    assert.equal(unknown.stdout + malformed.stdout + badState.stdout, '');
  });
});

describe('hvsync actions', () => {
  let h: Harness;
  let server: string[];
  before(async () => {
    h = await startServer();
    server = ['--server', h.url];
    await create(h.store, uuidOf(1), { name: 'web-1', vmState: 'stopped', powerState: 'shutoff' });
    await create(h.store, uuidOf(2), { name: 'will-fail' });
    await create(h.store, uuidOf(3), { name: 'web-3' });
    await create(h.store, uuidOf(4), { name: 'web-4', vmState: 'stopped', powerState: 'shutoff' });
    await create(h.store, uuidOf(5), { name: 'web-5' });
  });
  after(() => h.close());

  test('an action waits for its task and reports success, failure, as text or JSON', async () => {
    h.actions.finishAfterMs = 300;
    const [started, failed, paused] = await Promise.all([
      hvsync(['start', uuidOf(1), ...server]),
      hvsync(['stop', uuidOf(2), ...server]),
      hvsync(['pause', uuidOf(3), '--json', ...server]),
    ]);
    assert.equal(started.code, 0, started.stderr);
    assert.equal(started.stdout, `start ${uuidOf(1)}: done, active/running\n`);
    assert.match(started.stderr, /powering-on/);
    const record = await h.store.getInstance(uuidOf(1));
    assert.equal(record?.taskState, null);
    assert.equal(record?.vmState, 'active');

    assert.equal(failed.code, 1);
    assert.match(
      failed.stderr,
      new RegExp(`^hvsync: stop ${uuidOf(2)} failed: stop failed: guest did not respond$`, 'm'),
    );

    assert.equal(paused.code, 0, paused.stderr);
    const outcome = JSON.parse(paused.stdout) as {
      action: string;
      outcome: string;
      error: unknown;
      instance: { vmState: string; taskState: unknown };
    };
    assert.equal(outcome.action, 'pause');
    assert.equal(outcome.outcome, 'succeeded');
    assert.equal(outcome.error, null);
    assert.equal(outcome.instance.vmState, 'paused');
    assert.equal(outcome.instance.taskState, null);
  });

  test('--no-wait returns once accepted; --timeout gives up with exit 1 and the task still runs', async () => {
    h.actions.finishAfterMs = null;
    const accepted = await hvsync(['start', uuidOf(4), '--no-wait', ...server]);
    assert.equal(accepted.code, 0, accepted.stderr);
    assert.equal(accepted.stdout, `start ${uuidOf(4)}: accepted, powering-on\n`);
    assert.equal((await h.store.getInstance(uuidOf(4)))?.taskState, 'powering-on');

    const timedOut = await hvsync(['reboot', uuidOf(5), '--timeout', '0.5', '--json', ...server]);
    assert.equal(timedOut.code, 1);
    const body = JSON.parse(timedOut.stdout) as { outcome: string; error: string };
    assert.equal(body.outcome, 'timeout');
    assert.match(body.error, /still rebooting after 0.5 s/);
    await h.actions.finish(uuidOf(4), 'start');
    await h.actions.finish(uuidOf(5), 'reboot');
  });

  test('refused actions say why and exit 1', async () => {
    h.actions.finishAfterMs = null;
    const [nonsense, unknown] = await Promise.all([
      hvsync(['resume', uuidOf(1), ...server]),
      hvsync(['stop', uuidOf(99), ...server]),
    ]);
    assert.equal(nonsense.code, 1);
    assert.equal(nonsense.stderr, 'hvsync: cannot resume an instance that is active\n');
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stderr, `hvsync: no instance ${uuidOf(99)}\n`);
    h.actions.connected = false;
    const down = await hvsync(['stop', uuidOf(1), ...server]);
    h.actions.connected = true;
    assert.equal(down.code, 1);
    assert.equal(down.stderr, 'hvsync: hypervisor is disconnected\n');
  });
});

describe('hvsync instances list and deleted instances', () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
    await create(h.store, uuidOf(1), { name: 'kept' });
    await create(h.store, uuidOf(2), {
      name: 'gone',
      vmState: 'deleted',
      powerState: 'missing',
      powerReason: '',
    });
  });
  after(() => h.close());

  // Hiding deleted instances by default and `includeDeleted=true` are the API's; --all asks for it.
  test('hidden by default, shown with --all', async () => {
    const [plain, all, people] = await Promise.all([
      hvsync(['instances', 'list', '--json', '--server', h.url]),
      hvsync(['instances', 'list', '--all', '--json', '--server', h.url]),
      hvsync(['instances', 'list', '--all', '--server', h.url]),
    ]);
    const names = (run: Run) => {
      assert.equal(run.code, 0, run.stderr);
      return (JSON.parse(run.stdout) as { instances: { name: string }[] }).instances.map(
        (i) => i.name,
      );
    };
    assert.deepEqual(names(plain), ['kept']);
    assert.deepEqual(names(all), ['kept', 'gone']);
    assert.match(people.stdout, new RegExp(`^${uuidOf(2)}\\s+gone\\s+host-a\\s+deleted`, 'm'));
  });
});

describe('hvsync watch', () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
    await create(h.store, uuidOf(1), { name: 'web-1' });
    await create(h.store, uuidOf(2), { name: 'web-2' });
  });
  after(() => h.close());

  test('prints replayed and live changes, one line each, until interrupted', async () => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'watch', '--since', '0', '--json', '--server', h.url],
      { cwd: root, env: { ...process.env, HVSYNC_TOKEN: '' } },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) =>
      child.on('exit', (code) => resolve(code)),
    );
    try {
      const lines = () => stdout.split('\n').filter((line) => line !== '');
      await waitFor('replay', () => lines().length >= 2, 30_000);
      await patch(h.store, uuidOf(2), { vmState: 'stopped', powerState: 'shutoff' });
      await waitFor('live change', () => lines().length >= 3, 30_000);
      const events = lines().map(
        (line) =>
          JSON.parse(line) as {
            revision: number;
            type: string;
            instance: { name: string; powerState: string };
          },
      );
      assert.deepEqual(
        events.map((e) => e.revision),
        [1, 2, 3],
      );
      assert.deepEqual(
        events.map((e) => e.type),
        ['created', 'created', 'updated'],
      );
      assert.equal(events[2]!.instance.powerState, 'shutoff');
    } finally {
      child.kill('SIGINT');
    }
    assert.equal(await exited, 0, stderr);
  });

  test('the people format names the revision, instance and states', async () => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'watch', '--since', '1', '--server', h.url],
      { cwd: root },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) =>
      child.on('exit', (code) => resolve(code)),
    );
    try {
      await waitFor('two lines', () => stdout.split('\n').length > 2, 30_000);
    } finally {
      child.kill('SIGINT');
    }
    assert.equal(await exited, 0);
    assert.match(stderr, /watching http:\/\/127\.0\.0\.1:\d+ from revision 1/);
    const [first] = stdout.split('\n');
    assert.match(
      first!,
      new RegExp(`^\\s+2  \\S+Z  created  ${uuidOf(2)}  web-2  active/running \\(booted\\)$`),
    );
  });
});

describe('hvsync against an unreachable or guarded server', () => {
  test('connection refused is one line and exit 1', async () => {
    const h = await startServer();
    const url = h.url;
    await h.close();
    const [list, action, watch] = await Promise.all([
      hvsync(['instances', 'list', '--server', url]),
      hvsync(['start', uuidOf(1), '--server', url]),
      hvsync(['watch', '--server', url]),
    ]);
    for (const run of [list, action, watch]) {
      assert.equal(run.code, 1);
      assert.match(
        run.stderr,
        new RegExp(
          `^hvsync: cannot reach hvsync at ${url.replace(/\./g, '\\.')}( \\(connection refused\\))?\\n$`,
        ),
      );
      assert.equal(run.stdout, '');
    }
  });

  test('a token from --token, --token-file or the environment; without it, a hint', async () => {
    const h = await startServer({ token: 'cli-token' });
    const dir = mkdtempSync(join(tmpdir(), 'hvsync-token-'));
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'cli-token\n');
    writeFileSync(join(dir, 'empty'), ' \n');
    writeFileSync(join(dir, 'two-words'), 'cli token\n');
    try {
      await create(h.store, uuidOf(1));
      const list = ['instances', 'list', '--json', '--server', h.url];
      const [missing, flag, env, file, envFile, both, bothEnv, empty, absent, twoWords] =
        await Promise.all([
          hvsync(['instances', 'list', '--server', h.url]),
          hvsync([...list, '--token', 'cli-token']),
          hvsync(['instances', 'list', '--json'], {
            HVSYNC_SERVER: h.url,
            HVSYNC_TOKEN: 'cli-token',
          }),
          hvsync([...list, '--token-file', tokenFile]),
          hvsync(list, { HVSYNC_TOKEN_FILE: tokenFile }),
          hvsync([...list, '--token', 'cli-token', '--token-file', tokenFile]),
          hvsync(list, { HVSYNC_TOKEN: 'cli-token', HVSYNC_TOKEN_FILE: tokenFile }),
          hvsync([...list, '--token-file', join(dir, 'empty')]),
          hvsync([...list, '--token-file', join(dir, 'absent')]),
          hvsync([...list, '--token-file', join(dir, 'two-words')]),
        ]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /bearer token.*pass --token or --token-file/);
      for (const run of [flag, env, file, envFile]) {
        assert.equal(run.code, 0, run.stderr);
        assert.equal((JSON.parse(run.stdout) as { instances: unknown[] }).instances.length, 1);
      }
      assert.equal(both.code, 1);
      assert.equal(both.stderr, 'hvsync: give either --token or --token-file, not both\n');
      assert.equal(bothEnv.code, 1);
      assert.match(bothEnv.stderr, /HVSYNC_TOKEN and HVSYNC_TOKEN_FILE are both set/);
      assert.equal(empty.stderr, `hvsync: token file ${join(dir, 'empty')} is empty\n`);
      assert.match(absent.stderr, /^hvsync: cannot read token file .*absent: ENOENT/);
      assert.match(twoWords.stderr, /two-words contains whitespace: a bearer token is one word/);
      for (const run of [both, bothEnv, empty, absent, twoWords]) {
        assert.equal(run.code, 1);
        assert.equal(run.stdout, '');
      }
    } finally {
      await h.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a server URL that is not http is refused before any request', async () => {
    const [ftp, bare, named] = await Promise.all([
      hvsync(['instances', 'list', '--server', 'ftp://example']),
      hvsync(['instances', 'list', '--server', '127.0.0.1:8080']),
      hvsync(['hosts', '--server', 'localhost:8080']),
    ]);
    assert.equal(ftp.code, 1);
    assert.match(ftp.stderr, /invalid server URL 'ftp:\/\/example'/);
    assert.equal(bare.code, 1);
    assert.equal(
      bare.stderr,
      "hvsync: invalid server URL '127.0.0.1:8080': it needs a scheme, e.g. http://127.0.0.1:8080\n",
    );
    assert.equal(named.code, 1);
    assert.match(named.stderr, /it needs a scheme, e\.g\. http:\/\/localhost:8080\n$/);
  });
});

describe('hvsync itself', () => {
  test('--version prints the package version', async () => {
    const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      version: string;
    };
    const [long, short] = await Promise.all([hvsync(['--version']), hvsync(['-V'])]);
    assert.equal(long.code, 0, long.stderr);
    assert.equal(long.stdout, `${version}\n`);
    assert.equal(short.stdout, long.stdout);
  });
});

describe('the client over node:http', () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
  });
  after(() => h.close());

  test('a long-running caller keeps its connection between requests further apart than 5 s', async () => {
    let connections = 0;
    const count = () => (connections += 1);
    h.app.server.on('connection', count);
    try {
      const longRunning = new HvsyncClient({ server: h.url, keepAlive: true });
      const command = new HvsyncClient({ server: h.url });
      await command.hosts();
      await command.hosts();
      assert.equal(connections, 2, 'a command opens a connection per request');
      await longRunning.hosts();
      // Longer than Node's default agent keeps an idle connection: an agent reports every 10 s.
      await sleep(5_500);
      await longRunning.hosts();
      assert.equal(
        connections,
        3,
        'the second request of the long-running caller reused its connection',
      );
    } finally {
      h.app.server.off('connection', count);
    }
  });
});
