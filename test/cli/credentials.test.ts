// `hvsync hosts add|revoke`, `hvsync readers add|revoke` and `hvsync credentials`, the real CLI
// in its own process: through a running server's admin API, and straight in an SQLite file.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tokenHash } from '../../src/server/index.ts';
import { openSqliteStore } from '../../src/store/index.ts';
import { create, startServer, uuidOf } from '../server/harness.ts';
import type { Harness } from '../server/harness.ts';
import { hvsync } from '../support/cli.ts';

const ADMIN = 'the-admin-token';

const dir = mkdtempSync(join(tmpdir(), 'hvsync-credentials-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('hvsync hosts add / revoke through the admin API', () => {
  let h: Harness;
  let admin: string[];
  before(async () => {
    h = await startServer({ token: ADMIN });
    admin = ['--server', h.url, '--token', ADMIN];
    await create(h.store, uuidOf(1), { name: 'on-a', host: 'host-a' });
    await create(h.store, uuidOf(2), { name: 'on-b', host: 'host-b' });
  });
  after(() => h.close());

  test('add prints the token alone on stdout, once, and how to use it on stderr', async () => {
    const run = await hvsync(['hosts', 'add', 'host-a', ...admin]);
    assert.equal(run.code, 0, run.stderr);
    const token = run.stdout.trim();
    assert.match(token, /^hvs_[A-Za-z0-9_-]{43}$/);
    assert.equal(run.stdout, `${token}\n`);
    assert.match(run.stderr, /shown this once/);
    assert.ok(
      run.stderr.includes(`hvsync agent --server ${h.url} --token-file FILE --host host-a\n`),
      run.stderr,
    );
    // Only its hash is stored.
    assert.equal((await h.store.credentials.findCredential(tokenHash(token)))?.name, 'host-a');
    const rows = await h.store.credentials.listCredentials();
    assert.ok(!JSON.stringify(rows).includes(token));

    const file = join(dir, 'host-a.token');
    writeFileSync(file, `${token}\n`);
    const own = await hvsync([
      'instances',
      'list',
      '--host',
      'host-a',
      '--json',
      '--server',
      h.url,
      '--token-file',
      file,
    ]);
    assert.equal(own.code, 0, own.stderr);
    assert.deepEqual(
      (JSON.parse(own.stdout) as { instances: { name: string }[] }).instances.map((i) => i.name),
      ['on-a'],
    );
    const other = await hvsync(['instances', 'list', '--host', 'host-b', '--server', h.url], {
      HVSYNC_TOKEN_FILE: file,
    });
    assert.equal(other.code, 1);
    assert.match(other.stderr, /may not read the instances of host 'host-b'/);
  });

  test('a second add is refused with the way out; --replace revokes the old token', async () => {
    const first = (await hvsync(['hosts', 'add', 'host-b', ...admin])).stdout.trim();
    const again = await hvsync(['hosts', 'add', 'host-b', ...admin]);
    assert.equal(again.code, 1);
    assert.match(
      again.stderr,
      /host 'host-b' already has a token .*hvsync hosts revoke host-b.*--replace/,
    );
    const replaced = await hvsync(['hosts', 'add', 'host-b', '--replace', '--json', ...admin]);
    assert.equal(replaced.code, 0, replaced.stderr);
    const issued = JSON.parse(replaced.stdout) as { kind: string; name: string; token: string };
    assert.equal(issued.kind, 'host');
    assert.equal(issued.name, 'host-b');
    const old = await hvsync(['instances', 'list', '--host', 'host-b', '--server', h.url], {
      HVSYNC_TOKEN: first,
    });
    assert.equal(old.code, 1);
    assert.match(old.stderr, /the token of host 'host-b' was revoked/);
  });

  test("revoke: the host's token stops working at once", async () => {
    const token = (await hvsync(['hosts', 'add', 'host-c', ...admin])).stdout.trim();
    const revoked = await hvsync(['hosts', 'revoke', 'host-c', ...admin]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, /revoked the token of host 'host-c'/);
    const use = await hvsync(['instances', 'list', '--host', 'host-c', '--server', h.url], {
      HVSYNC_TOKEN: token,
    });
    assert.equal(use.code, 1);
    assert.match(use.stderr, /revoked at .*hvsync hosts add host-c/);
    const twice = await hvsync(['hosts', 'revoke', 'host-c', ...admin]);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /host 'host-c' has no valid token to revoke/);
  });

  test('a reader token reads and is refused an action; only the admin issues tokens', async () => {
    const reader = (await hvsync(['readers', 'add', 'dashboard', ...admin])).stdout.trim();
    const env = { HVSYNC_TOKEN: reader };
    assert.equal((await hvsync(['instances', 'list', '--server', h.url], env)).code, 0);
    const stop = await hvsync(['stop', uuidOf(1), '--server', h.url], env);
    assert.equal(stop.code, 1);
    assert.match(stop.stderr, /reader 'dashboard' may only read \(GET\)/);
    const issue = await hvsync(['hosts', 'add', 'mine', '--server', h.url], env);
    assert.equal(issue.code, 1);
    assert.match(issue.stderr, /needs the admin token/);

    const list = await hvsync(['credentials', ...admin]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^KIND +NAME +ISSUED +REVOKED$/m);
    assert.match(list.stdout, /^reader +dashboard +\S+ +-$/m);
    assert.match(list.stdout, /^host +host-c +\S+ +\d{4}-\S+$/m);
  });
});

describe('hvsync hosts add / revoke against the database', () => {
  test('an SQLite file no hvsync has open', async () => {
    const path = join(dir, 'offline.db');
    await (await openSqliteStore(path)).close();

    const added = await hvsync(['hosts', 'add', 'host-a', '--db', path]);
    assert.equal(added.code, 0, added.stderr);
    const token = added.stdout.trim();
    const again = await hvsync(['hosts', 'add', 'host-a', '--db', path]);
    assert.match(again.stderr, /already has a token/);
    const readerAdded = await hvsync(['readers', 'add', 'grafana', '--db', path, '--json']);
    assert.equal(readerAdded.code, 0, readerAdded.stderr);
    assert.equal((await hvsync(['hosts', 'revoke', 'host-a', '--db', path])).code, 0);
    const list = await hvsync(['credentials', '--db', path, '--json']);
    const { credentials } = JSON.parse(list.stdout) as {
      credentials: { kind: string; name: string; revokedAt: string | null }[];
    };
    assert.deepEqual(
      credentials.map((c) => [c.kind, c.name, c.revokedAt === null]),
      [
        ['host', 'host-a', false],
        ['reader', 'grafana', true],
      ],
    );

    const store = await openSqliteStore(path);
    try {
      const found = await store.credentials.findCredential(tokenHash(token));
      assert.equal(found?.name, 'host-a');
      assert.notEqual(found?.revokedAt, null);
    } finally {
      await store.close();
    }
  });

  test('the SQLite file of a running hvsync is locked: the error says to use the admin API', async () => {
    const path = join(dir, 'held.db');
    const held = await openSqliteStore(path);
    try {
      const run = await hvsync(['hosts', 'add', 'host-x', '--db', path]);
      assert.equal(run.code, 1);
      assert.match(
        run.stderr,
        /is in use by a running hvsync .*admin API instead, with --server URL/,
      );
      assert.deepEqual(await held.credentials.listCredentials(), []);
    } finally {
      await held.close();
    }
  });

  test('a missing file or a bad name is refused before anything is created', async () => {
    const missing = join(dir, 'typo.db');
    const run = await hvsync(['hosts', 'add', 'host-a', '--db', missing]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /no database at .*typo\.db/);
    const bad = await hvsync(['hosts', 'add', 'bad name', '--db', join(dir, 'offline.db')]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid host name 'bad name'/);
  });
});
