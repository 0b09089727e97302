// Opening the SQLite store: the file's lock and the checks made at open, without a process around
// them (test/server/startup.test.ts runs the same cases as a user meets them).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { openSqliteStore, StoreError } from '../../src/store/index.ts';
import { migrate } from '../../src/store/sqlite-schema.ts';

const dir = mkdtempSync(join(tmpdir(), 'hvsync-open-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('a second store on a locked file is refused with locked, naming the file', async () => {
  const path = join(dir, 'locked.db');
  const first = await openSqliteStore(path);
  await assert.rejects(openSqliteStore(path), (error: unknown) => {
    assert.ok(error instanceof StoreError);
    assert.equal(error.code, 'locked');
    assert.match(error.message, /locked\.db is in use/);
    return true;
  });
  await first.close();
  // Closing releases the lock.
  await (await openSqliteStore(path)).close();
});

test('stores that ask to share a file may', async () => {
  const path = join(dir, 'shared.db');
  const first = await openSqliteStore(path, { exclusive: false });
  const second = await openSqliteStore(path, { exclusive: false });
  await second.close();
  await first.close();
});

test('a migration missing below the highest applied one is still applied', () => {
  const db = new Database(join(mkdtempSync(join(tmpdir(), 'hvsync-migrate-')), 'gap.db'));
  try {
    const table = (version: number, name: string) => ({
      version,
      name,
      sql: `CREATE TABLE t${version} (x INTEGER)`,
    });
    // A build that had migrations 1 and 3 made the file; the next one also has 2.
    migrate(db, [table(1, 'one'), table(3, 'three')]);
    migrate(db, [table(1, 'one'), table(2, 'two'), table(3, 'three')]);
    const versions = db
      .prepare<[], { version: number }>('SELECT version FROM schema_migrations ORDER BY version')
      .all()
      .map((row) => row.version);
    assert.deepEqual(versions, [1, 2, 3]);
    assert.ok(db.prepare("SELECT 1 FROM sqlite_schema WHERE name = 't2'").get());
  } finally {
    db.close();
  }
});
