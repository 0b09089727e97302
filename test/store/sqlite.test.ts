import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { openSqliteStore, StoreError } from '../../src/store/index.ts';
import { MIGRATIONS, SCHEMA_VERSION, migrate } from '../../src/store/sqlite-schema.ts';
import { create, ok, rejectsWithCode, storeContract, update, uuidOf } from './contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'hvsync-store-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let fileCounter = 0;
function freshPath(): string {
  fileCounter += 1;
  return join(dir, `store-${fileCounter}.db`);
}

storeContract('SqliteStore', {
  freshLocation: async () => freshPath(),
  open: (path, options) => openSqliteStore(path, options),
});

describe('SqliteStore file lifecycle', () => {
  test('reopening a file keeps the data and does not re-run migrations', async () => {
    const path = freshPath();
    const first = await openSqliteStore(path);
    ok(await first.write(create(uuidOf(1), { name: 'kept' })));
    await first.upsertHost({
      name: 'h',
      driver: 'sim',
      connected: true,
      lastSeenAt: 1,
      lastReconcileAt: null,
    });
    await first.close();

    const raw = new Database(path, { readonly: true });
    const ledger = raw.prepare('SELECT version, name, applied_at FROM schema_migrations').all();
    assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
    raw.close();
    assert.equal(ledger.length, MIGRATIONS.length);

    const second = await openSqliteStore(path);
    assert.equal((await second.getInstance(uuidOf(1)))?.name, 'kept');
    assert.equal((await second.listHosts()).length, 1);
    ok(await second.write(update(uuidOf(1), 1, { name: 'still kept' })));
    await second.close();

    const rawAgain = new Database(path, { readonly: true });
    assert.deepEqual(
      rawAgain.prepare('SELECT version, name, applied_at FROM schema_migrations').all(),
      ledger,
    );
    rawAgain.close();
  });

  test('a version 1 file upgrades in place: its hosts gain a null connection error', async () => {
    const path = freshPath();
    const old = new Database(path);
    migrate(old, MIGRATIONS.slice(0, 1));
    old
      .prepare(
        'INSERT INTO hosts (name, driver, connected, last_seen_at, last_reconcile_at) VALUES (?, ?, ?, ?, ?)',
      )
      .run('h', 'libvirt', 1, 5, null);
    old.close();

    const store = await openSqliteStore(path);
    assert.deepEqual(await store.listHosts(), [
      {
        name: 'h',
        driver: 'libvirt',
        connected: true,
        lastSeenAt: 5,
        lastReconcileAt: null,
        connectionError: null,
        backlog: 0,
      },
    ]);
    await store.recordConnectionError('h', 'connect ENOENT');
    assert.equal((await store.listHosts())[0]!.connectionError, 'connect ENOENT');
    await store.close();
  });

  test('a database from a newer hvsync is refused', async () => {
    const path = freshPath();
    await (await openSqliteStore(path)).close();
    const raw = new Database(path);
    raw
      .prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)')
      .run(SCHEMA_VERSION + 1, 'from the future', 0);
    raw.close();
    await assert.rejects(openSqliteStore(path), (error: unknown) => {
      assert.ok(error instanceof StoreError);
      assert.equal(error.code, 'migration-failed');
      assert.match(error.message, /newer/);
      return true;
    });
  });

  test('a failing migration leaves nothing half applied', () => {
    const raw = new Database(':memory:');
    const broken = [
      ...MIGRATIONS,
      {
        version: SCHEMA_VERSION + 1,
        name: 'broken',
        sql: 'CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);',
      },
    ];
    assert.throws(
      () => migrate(raw, broken),
      (error: unknown) => error instanceof StoreError && error.code === 'migration-failed',
    );
    const tables = raw
      .prepare<[], { name: string }>("SELECT name FROM sqlite_schema WHERE type = 'table'")
      .all()
      .map((t) => t.name);
    assert.ok(tables.includes('instances'), 'earlier migrations stay applied');
    assert.ok(!tables.includes('half_done'));
    const versions = raw.prepare('SELECT version FROM schema_migrations').pluck().all();
    assert.deepEqual(
      versions,
      MIGRATIONS.map((m) => m.version),
    );
    raw.close();
  });

  test('a file that is not SQLite gives a StoreError, not a crash', async () => {
    const path = freshPath();
    writeFileSync(path, 'this is not a database, just some text\n'.repeat(100));
    await rejectsWithCode(openSqliteStore(path), 'corrupt');
    await rejectsWithCode(openSqliteStore(join(dir, 'no-such-dir', 'x.db')), 'io');
  });

  test('a SQLite file that belongs to something else is left alone', async () => {
    const path = freshPath();
    const raw = new Database(path);
    raw.exec('CREATE TABLE invoices (id INTEGER PRIMARY KEY)');
    raw.close();
    await rejectsWithCode(openSqliteStore(path), 'migration-failed');
  });
});
