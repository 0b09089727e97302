// The one place PostgreSQL suites learn whether a real server is reachable, and the database each
// test file gets to itself: created fresh under a unique name when the file starts, dropped after.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import postgres from 'postgres';

export const DEFAULT_TEST_PG = 'postgres://postgres@127.0.0.1:5432/postgres';
/** A server and a role allowed to create databases; the path's database is only for connecting. */
export const TEST_PG = process.env.HVSYNC_TEST_PG ?? DEFAULT_TEST_PG;
export const POSTGRES_REQUIRED =
  process.env.HVSYNC_REQUIRE_POSTGRES === '1' || process.env.HVSYNC_REQUIRE_LIBVIRT === '1';

const HINT =
  'start PostgreSQL 15 on 127.0.0.1:5432 with trust auth for user postgres, ' +
  'or name another server in HVSYNC_TEST_PG (postgres://user@host:port/db)';

export interface TestDatabase {
  /** URL of the fresh database. */
  readonly url: string;
  readonly name: string;
}

let unreachableReason = '';

async function createTestDatabase(): Promise<TestDatabase | null> {
  const admin = postgres(TEST_PG, { max: 1, connect_timeout: 5, onnotice: false });
  const name = `hvsync_test_${process.pid}_${Date.now().toString(36)}`;
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } catch (error) {
    unreachableReason = error instanceof Error ? error.message : String(error);
    await admin.end({ timeout: 1 }).catch(() => {});
    return null;
  }
  after(async () => {
    // FORCE: a connection a failed test left open must not keep the database alive.
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end({ timeout: 5 });
  });
  const url = new URL(TEST_PG);
  url.pathname = `/${name}`;
  return { url: url.toString(), name };
}

/** This file's own database, or null when the server did not answer. */
export const TEST_DATABASE = await createTestDatabase();

let schemaCounter = 0;
/** A schema name unused in this file's database: a fresh, empty place for one store. */
export function freshSchema(): string {
  schemaCounter += 1;
  return `store_${schemaCounter}`;
}

/**
 * node:test's describe for suites that need a real PostgreSQL. Reachable: the suite runs with
 * this file's database. Unreachable: with HVSYNC_REQUIRE_POSTGRES=1 or HVSYNC_REQUIRE_LIBVIRT=1
 * (CI) it fails with one test saying so, otherwise it is skipped with the reason.
 */
export function describePostgres(name: string, fn: (database: TestDatabase) => void): void {
  const database = TEST_DATABASE;
  if (database !== null) {
    describe(name, () => fn(database));
    return;
  }
  const why = `PostgreSQL is unreachable at ${redacted(TEST_PG)} (${unreachableReason})`;
  describe(name, () => {
    if (POSTGRES_REQUIRED) {
      test('PostgreSQL is reachable', () => {
        assert.fail(`${why}; HVSYNC_REQUIRE_POSTGRES=1 requires it: ${HINT}`);
      });
      return;
    }
    test('needs PostgreSQL', { skip: `${why}: ${HINT}` }, () => {});
  });
}

function redacted(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable HVSYNC_TEST_PG)';
  }
}
