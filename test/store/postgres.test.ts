import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  isPostgresUrl,
  openPostgresStore,
  openStore,
  PostgresStore,
  SqliteStore,
  StoreError,
} from '../../src/store/index.ts';
import type { ChangeRecord } from '../../src/store/index.ts';
import { PG_MIGRATIONS, migratePostgres } from '../../src/store/postgres-schema.ts';
import { changesChannel } from '../../src/store/postgres-notify.ts';

import { waitFor } from '../server/harness.ts';
import { describePostgres, freshSchema } from '../support/postgres.ts';
import { create, ok, rejectsWithCode, storeContract, update, uuidOf } from './contract.ts';

/** The newest migration shipped; numbers may have gaps where other changes took theirs. */
const LATEST = Math.max(...PG_MIGRATIONS.map((m) => m.version));

const WRITER = fileURLToPath(new URL('../support/pg-writer.ts', import.meta.url));

describePostgres('PostgresStore', (database) => {
  storeContract('PostgresStore', {
    freshLocation: async () => freshSchema(),
    open: (schema, options) => openPostgresStore(database.url, { ...options, schema }),
  });

  /** A plain connection into one schema, to look at what the store left behind. */
  async function inspect<T>(schema: string, body: (sql: postgres.Sql) => Promise<T>): Promise<T> {
    const sql = postgres(database.url, {
      max: 1,
      onnotice: false,
      connection: { search_path: schema },
    });
    try {
      return await body(sql);
    } finally {
      await sql.end({ timeout: 5 });
    }
  }

  test('the ledger records each migration once across reopening', async () => {
    const schema = freshSchema();
    await (await openPostgresStore(database.url, { schema })).close();
    const ledger = () =>
      inspect(schema, (sql) => sql`SELECT version, name, applied_at FROM schema_migrations`);
    const first = await ledger();
    assert.equal(first.length, PG_MIGRATIONS.length);
    await (await openPostgresStore(database.url, { schema })).close();
    assert.deepEqual(await ledger(), first);
  });

  test('processes starting together apply each migration exactly once', async () => {
    const schema = freshSchema();
    // Separate pools, so separate connections racing as separate processes would.
    const stores = await Promise.all(
      Array.from({ length: 4 }, () => openPostgresStore(database.url, { schema })),
    );
    const versions = await inspect(
      schema,
      (sql) => sql<{ version: number }[]>`SELECT version FROM schema_migrations ORDER BY version`,
    );
    assert.deepEqual(
      versions.map((v) => v.version),
      PG_MIGRATIONS.map((m) => m.version),
    );
    ok(await stores[0]!.write(create(uuidOf(1))));
    assert.equal((await stores[3]!.getInstance(uuidOf(1)))?.version, 1);
    await Promise.all(stores.map((s) => s.close()));
  });

  test('a database from a newer hvsync is refused', async () => {
    const schema = freshSchema();
    await (await openPostgresStore(database.url, { schema })).close();
    await inspect(
      schema,
      (sql) => sql`INSERT INTO schema_migrations (version, name, applied_at)
                   VALUES (${LATEST + 1}::integer, 'from the future', 0)`,
    );
    await assert.rejects(openPostgresStore(database.url, { schema }), (error: unknown) => {
      assert.ok(error instanceof StoreError);
      assert.equal(error.code, 'migration-failed');
      assert.match(error.message, /newer/);
      return true;
    });
  });

  test('a version 1 schema upgrades in place: its hosts gain a null connection error', async () => {
    const schema = freshSchema();
    await inspect(schema, async (sql) => {
      await sql`CREATE SCHEMA ${sql(schema)}`;
      await migratePostgres(sql, PG_MIGRATIONS.slice(0, 1));
      await sql`INSERT INTO hosts (name, driver, connected, last_seen_at, last_reconcile_at)
                VALUES ('h', 'libvirt', true, 5, NULL)`;
    });
    const store = await openPostgresStore(database.url, { schema });
    try {
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
    } finally {
      await store.close();
    }
  });

  test('a failing migration leaves nothing half applied', async () => {
    const schema = freshSchema();
    const broken = [
      ...PG_MIGRATIONS,
      {
        version: LATEST + 1,
        name: 'broken',
        sql: 'CREATE TABLE half_done (x integer); INSERT INTO no_such_table VALUES (1);',
      },
    ];
    await inspect(schema, async (sql) => {
      await sql`CREATE SCHEMA ${sql(schema)}`;
      await assert.rejects(
        migratePostgres(sql, broken),
        (error: unknown) => error instanceof StoreError && error.code === 'migration-failed',
      );
      const tables = await sql<{ name: string }[]>`
        SELECT table_name AS name FROM information_schema.tables
        WHERE table_schema = ${schema}::text`;
      const names = tables.map((t) => t.name);
      assert.ok(names.includes('instances'), 'earlier migrations stay applied');
      assert.ok(!names.includes('half_done'));
      const versions = await sql<{ version: number }[]>`SELECT version FROM schema_migrations`;
      assert.deepEqual(
        versions.map((v) => v.version),
        PG_MIGRATIONS.map((m) => m.version),
      );
    });
  });

  test('a schema that belongs to something else is left alone', async () => {
    const schema = freshSchema();
    await inspect(schema, async (sql) => {
      await sql`CREATE SCHEMA ${sql(schema)}`;
      await sql`CREATE TABLE invoices (id integer PRIMARY KEY)`;
    });
    await rejectsWithCode(openPostgresStore(database.url, { schema }), 'migration-failed');
    const tables = await inspect(
      schema,
      (sql) => sql`SELECT table_name FROM information_schema.tables
                   WHERE table_schema = ${schema}::text`,
    );
    assert.equal(tables.length, 1, 'nothing was added');
  });

  test('openStore picks PostgreSQL for a postgres:// URL and SQLite for a path', async () => {
    assert.ok(isPostgresUrl('postgres://h/db'));
    assert.ok(isPostgresUrl('postgresql://u@h:5433/db'));
    assert.ok(!isPostgresUrl('./hvsync.db'));
    assert.ok(!isPostgresUrl('/var/lib/postgres://odd.db'));
    const pg = await openStore(database.url);
    assert.ok(pg instanceof PostgresStore);
    ok(await pg.write(create(uuidOf(1))));
    await pg.close();
    const dir = mkdtempSync(join(tmpdir(), 'hvsync-open-store-'));
    try {
      const sqlite = await openStore(join(dir, 'x.db'));
      assert.ok(sqlite instanceof SqliteStore);
      await sqlite.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a server that does not answer gives a StoreError, not a hang', async () => {
    const url = new URL(database.url);
    url.port = '1';
    await rejectsWithCode(openPostgresStore(url.toString()), 'io');
  });

  /** Every change `store` hands its subscribers, and a wait for the first `count` of them. */
  function subscribed(store: PostgresStore): {
    delivered: ChangeRecord[];
    until(count: number): Promise<void>;
  } {
    const delivered: ChangeRecord[] = [];
    let wake: () => void = () => {};
    store.subscribe((changes) => {
      delivered.push(...changes);
      wake();
    });
    return {
      delivered,
      async until(count) {
        const deadline = Date.now() + 10_000;
        while (delivered.length < count) {
          assert.ok(Date.now() < deadline, `${delivered.length} of ${count} changes delivered`);
          await new Promise<void>((resolve) => {
            wake = resolve;
            setTimeout(resolve, 100);
          });
        }
      },
    };
  }

  test("subscribers get other processes' commits in revision order, interleaved with their own", async () => {
    const schema = freshSchema();
    const mine = await openPostgresStore(database.url, { schema });
    const other = await openPostgresStore(database.url, { schema });
    const { delivered, until } = subscribed(mine);

    ok(await other.write(create(uuidOf(1))));
    await until(1);
    ok(await mine.write(create(uuidOf(2))));
    ok(await other.write(update(uuidOf(1), 1, { powerState: 'paused' })));
    ok(await other.write(update(uuidOf(1), 2, { powerState: 'running' })));
    ok(await mine.write(update(uuidOf(2), 1, { powerState: 'shutoff' })));
    await until(5);
    assert.deepEqual(
      delivered.map((c) => c.revision),
      [1, 2, 3, 4, 5],
    );
    assert.deepEqual(
      delivered.map((c) => c.instance.uuid),
      [uuidOf(1), uuidOf(2), uuidOf(1), uuidOf(1), uuidOf(2)],
    );
    assert.equal(delivered[3]?.instance.powerState, 'running');
    await Promise.all([mine.close(), other.close()]);
  });

  test("other processes' commits reach subscribers as the log holds them, whether their NOTIFY carries them or not", async () => {
    const schema = freshSchema();
    const mine = await openPostgresStore(database.url, { schema });
    const other = await openPostgresStore(database.url, { schema });
    const feed = subscribed(mine);
    // One write: its statement numbers it and the NOTIFY carries it, built in SQL.
    ok(await other.write(create(uuidOf(1), { powerReason: 'quote " and ü' })));
    await feed.until(1);
    // Forty records do not fit in a NOTIFY: it carries the last revision, and the log is read.
    const many = Array.from({ length: 40 }, (_, i) => other.write(create(uuidOf(100 + i))));
    (await Promise.all(many)).forEach(ok);
    // One uuid written twice in a batch: numbered and logged by the client, carried as its JSON.
    const twice = await Promise.all([
      other.write(create(uuidOf(2))),
      other.write(update(uuidOf(2), 1, { powerState: 'paused', taskStartedAt: 5 })),
    ]);
    twice.forEach(ok);
    await feed.until(43);
    const log = await mine.changesSince(0, 100);
    assert.deepEqual(feed.delivered, log.changes);
    assert.equal(feed.delivered[0]?.instance.powerReason, 'quote " and ü');
    await Promise.all([mine.close(), other.close()]);
  });

  test("a store never takes another schema's changes for its own", async () => {
    const [mySchema, theirSchema] = [freshSchema(), freshSchema()];
    assert.notEqual(changesChannel(mySchema), changesChannel(theirSchema));
    const mine = await openPostgresStore(database.url, { schema: mySchema });
    const other = await openPostgresStore(database.url, { schema: mySchema });
    const theirs = await openPostgresStore(database.url, { schema: theirSchema });
    const feed = subscribed(mine);
    ok(await other.write(create(uuidOf(1))));
    await feed.until(1);
    // Their revision 1 and 2 would follow ours if this store listened on their channel.
    ok(await theirs.write(create(uuidOf(7))));
    ok(await theirs.write(create(uuidOf(8))));
    ok(await other.write(create(uuidOf(2))));
    await feed.until(2);
    assert.deepEqual(feed.delivered, (await mine.changesSince(0, 10)).changes);
    assert.deepEqual(
      feed.delivered.map((c) => c.instance.uuid),
      [uuidOf(1), uuidOf(2)],
    );
    await Promise.all([mine.close(), other.close(), theirs.close()]);
  });

  test("a revocation is announced to every store on the schema, and to no other schema's", async () => {
    const [schema, otherSchema] = [freshSchema(), freshSchema()];
    const revoking = await openPostgresStore(database.url, { schema });
    const watching = await openPostgresStore(database.url, { schema });
    const elsewhere = await openPostgresStore(database.url, { schema: otherSchema });
    const heard: boolean[] = [];
    const heardElsewhere: boolean[] = [];
    watching.credentials.watchRevocations((h) => heard.push(h));
    elsewhere.credentials.watchRevocations((h) => heardElsewhere.push(h));
    // Told once when listening starts: what was revoked before could not be heard.
    await waitFor('listening', () => heard.length === 1 && heardElsewhere.length === 1);
    const hash = (c: string) => c.repeat(64);
    const { credentials } = revoking;
    assert.ok(
      (await credentials.addCredential({ kind: 'host', name: 'a', tokenHash: hash('a') })).ok,
    );
    assert.ok((await credentials.revokeCredential('host', 'a')) !== null);
    await waitFor('the revocation', () => heard.length === 2);
    // Replacing a token revokes the one it replaces.
    await credentials.addCredential({ kind: 'reader', name: 'b', tokenHash: hash('b') });
    await credentials.addCredential({
      kind: 'reader',
      name: 'b',
      tokenHash: hash('c'),
      replace: true,
    });
    await waitFor('the replacement', () => heard.length === 3);
    // Nothing revoked, nothing announced: the next thing heard is the next revocation.
    assert.equal(await credentials.revokeCredential('host', 'a'), null);
    assert.ok((await credentials.revokeCredential('reader', 'b')) !== null);
    await waitFor('the last revocation', () => heard.length >= 4);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(heard, [true, true, true, true]);
    assert.deepEqual(heardElsewhere, [true]);
    await Promise.all([revoking.close(), watching.close(), elsewhere.close()]);
  });

  test('a NOTIFY that carries changes is taken as it comes; one that cannot be read, or skips revisions, sends the store to the log', async () => {
    const schema = freshSchema();
    const channel = changesChannel(schema);
    const mine = await openPostgresStore(database.url, { schema });
    const other = await openPostgresStore(database.url, { schema });
    const feed = subscribed(mine);
    const first = ok(await other.write(create(uuidOf(1)))).instance;
    await feed.until(1);
    const change = (revision: number, uuid: string): ChangeRecord => ({
      revision,
      type: 'created',
      instance: { ...first, uuid },
      at: 1,
    });
    await inspect(schema, async (sql) => {
      // What a writer that died between its log and a readable NOTIFY would leave: the log holds
      // revision 2, and the notification is garbage.
      const logged = change(2, uuidOf(2));
      await sql`INSERT INTO changes (revision, uuid, type, instance, at)
        VALUES (2, ${uuidOf(2)}, 'created', ${sql.json(logged.instance)}, 1)`;
      await sql`SELECT pg_notify(${channel}, ${'[{"revision": 2, "type": '})`;
      await feed.until(2);
      assert.deepEqual(feed.delivered[1], logged);
      // Carried and next in line: handed on as it came (the log does not even hold it).
      const carried = change(3, uuidOf(3));
      await sql`SELECT pg_notify(${channel}, ${JSON.stringify([carried])})`;
      await feed.until(3);
      assert.deepEqual(feed.delivered[2], carried);
      // Carried but revisions 4 to 9 never seen: the log is read instead of trusting it.
      const missed = change(4, uuidOf(4));
      await sql`INSERT INTO changes (revision, uuid, type, instance, at)
        VALUES (4, ${uuidOf(4)}, 'created', ${sql.json(missed.instance)}, 1)`;
      await sql`SELECT pg_notify(${channel}, ${JSON.stringify([change(10, uuidOf(10))])})`;
      await feed.until(4);
      assert.deepEqual(feed.delivered[3], missed);
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(feed.delivered.length, 4, 'revision 10 was not taken on trust');
    await Promise.all([mine.close(), other.close()]);
  });

  test('revisions follow commit order with writers in several processes', async () => {
    const schema = freshSchema();
    const reader: PostgresStore = await openPostgresStore(database.url, { schema });
    const writers = 4;
    const rounds = 120;
    const children = Array.from({ length: writers }, (_, w) =>
      runWriter(database.url, schema, w, rounds),
    );
    let childrenDone = false;
    const all = Promise.all(children).finally(() => {
      childrenDone = true;
    });
    all.catch(() => {}); // awaited below; polled meanwhile

    // A watcher that only ever asks for what follows the last revision it saw: with revisions
    // in commit order, every page starts right after it and has no holes.
    const seen: number[] = [];
    let since = 0;
    let polls = 0;
    for (;;) {
      const done = childrenDone;
      const page = await reader.changesSince(since, 500);
      polls += 1;
      page.changes.forEach((change, i) => {
        assert.equal(
          change.revision,
          since + i + 1,
          `after revision ${since} the log showed ${page.changes.map((c) => c.revision).join(',')}`,
        );
      });
      for (const change of page.changes) seen.push(change.revision);
      if (page.changes.length > 0) since = page.changes[page.changes.length - 1]!.revision;
      if (done && page.changes.length === 0) break;
    }
    const reported = (await all).flatMap((r) => r.revisions).sort((a, b) => a - b);
    let perWriter = 8; // its creates, then 1 to 8 updates per round as pg-writer.ts does
    for (let round = 0; round < rounds; round += 1) perWriter += 1 + (round % 8);
    const total = writers * perWriter;
    assert.equal(reported.length, total);
    assert.deepEqual(seen, reported, 'every committed revision seen exactly once, in order');
    assert.deepEqual(
      seen,
      Array.from({ length: total }, (_, i) => i + 1),
      'no gaps',
    );
    assert.ok(polls > 10, `the reader polled while the writers wrote (${polls} polls)`);
    await reader.close();
  });
});

interface WriterReport {
  readonly writer: string;
  readonly revisions: number[];
}

function runWriter(
  url: string,
  schema: string,
  writer: number,
  rounds: number,
): Promise<WriterReport> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', WRITER, url, schema, `w${writer}`, String(rounds)],
      { timeout: 120_000 },
      (error, stdout, stderr) => {
        if (error !== null) {
          reject(new Error(`writer ${writer} failed: ${error.message}\n${stderr}`));
          return;
        }
        resolve(JSON.parse(stdout) as WriterReport);
      },
    );
  });
}
