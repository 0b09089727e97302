// The PostgreSQL schema as an ordered list of migrations, the same shape as SQLite's. Never edit a
// migration that has shipped: add the next one.
import type postgres from 'postgres';
import type { Migration } from './sqlite-schema.ts';
import { StoreError } from './types.ts';

export const PG_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial',
    sql: `
      CREATE TABLE hosts (
        name              text    PRIMARY KEY,
        driver            text    NOT NULL,
        connected         boolean NOT NULL,
        last_seen_at      bigint  NOT NULL,
        last_reconcile_at bigint
      );

      -- host is not a foreign key: an agent may report instances before its host row exists.
      -- uuid is compared bytewise ("C") so keyset pages follow the same order as SQLite's.
      CREATE TABLE instances (
        uuid            text COLLATE "C" PRIMARY KEY,
        name            text    NOT NULL,
        host            text    NOT NULL,
        vm_state        text    NOT NULL,
        task_state      text,
        task_started_at bigint,
        task_error      text,
        power_state     text    NOT NULL,
        power_reason    text    NOT NULL,
        policy          text,
        version         integer NOT NULL,
        created_at      bigint  NOT NULL,
        updated_at      bigint  NOT NULL
      );
      CREATE INDEX instances_host ON instances (host, uuid);
      CREATE INDEX instances_vm_state ON instances (vm_state, uuid);
      CREATE INDEX instances_power_state ON instances (power_state, uuid);

      CREATE TABLE transitions (
        id            bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        uuid          text COLLATE "C" NOT NULL REFERENCES instances (uuid) ON DELETE CASCADE,
        power_from    text,
        power_to      text    NOT NULL,
        vm_state_from text,
        vm_state_to   text    NOT NULL,
        cause         text    NOT NULL,
        detail        text    NOT NULL,
        out_of_band   boolean NOT NULL,
        observed_at   bigint  NOT NULL,
        recorded_at   bigint  NOT NULL
      );
      CREATE INDEX transitions_uuid_id ON transitions (uuid, id);

      -- Revisions are not a sequence: sequence values are handed out at insert but become visible
      -- at commit, so a watcher could read 12 before 11 commits and skip 11 for ever. Each writing
      -- transaction instead locks this one row (after its own rows, just before it logs its
      -- changes and commits) and takes its revisions from it, so revisions are assigned in commit
      -- order. It also outlives pruning: never reused.
      CREATE TABLE revision_counter (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        value     bigint  NOT NULL
      );
      INSERT INTO revision_counter (value) VALUES (0);

      -- The log outlives instances, hence no foreign key.
      CREATE TABLE changes (
        revision bigint PRIMARY KEY,
        uuid     text   NOT NULL,
        type     text   NOT NULL,
        instance jsonb  NOT NULL,
        at       bigint NOT NULL
      );
    `,
  },
  {
    version: 2,
    name: 'host connection error',
    sql: `ALTER TABLE hosts ADD COLUMN connection_error text;`,
  },
  {
    version: 3,
    name: 'credentials',
    sql: `
      -- Host and reader tokens by their sha256 only. Revoked rows stay, so that a revoked token
      -- is told so; at most one valid credential per name.
      CREATE TABLE credentials (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind       text   NOT NULL,
        name       text   NOT NULL,
        token_hash text   NOT NULL UNIQUE,
        created_at bigint NOT NULL,
        revoked_at bigint
      );
      CREATE UNIQUE INDEX credentials_valid ON credentials (kind, name) WHERE revoked_at IS NULL;
    `,
  },
  {
    version: 4,
    name: 'agent journals and backlog',
    sql: `
      -- The highest entry of each agent's outage journal already processed, written in the same
      -- transaction as the entry's write: a replayed entry is answered duplicate, not applied.
      CREATE TABLE journal_applied (
        journal_id text   PRIMARY KEY,
        host       text   NOT NULL,
        last_seq   bigint NOT NULL,
        updated_at bigint NOT NULL
      );
      ALTER TABLE hosts ADD COLUMN backlog integer NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 5,
    name: 'task action',
    // See the SQLite migration of the same number.
    sql: `
      ALTER TABLE instances ADD COLUMN task_action text;
      CREATE INDEX instances_task ON instances (uuid) WHERE task_state IS NOT NULL;
    `,
  },
];

/** Any fixed key shared by every hvsync process: the advisory lock migrations run under. */
const MIGRATION_LOCK_KEY = 0x68767379; // "hvsy"

/** Creates `schema` if missing, under the migration lock: IF NOT EXISTS alone races. */
export async function ensureSchema(sql: postgres.Sql, schema: string): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY}::bigint)`;
    await tx`CREATE SCHEMA IF NOT EXISTS ${tx(schema)}`;
  });
}

/**
 * Brings the schema (in the connection's current schema) up to the newest migration. Each
 * migration runs in its own transaction that first takes a transaction-scoped advisory lock and
 * re-reads the version, so processes starting together apply each migration exactly once and a
 * failing migration leaves the ones before it applied and nothing of itself.
 */
export async function migratePostgres(
  sql: postgres.Sql,
  migrations: readonly Migration[] = PG_MIGRATIONS,
): Promise<void> {
  const known = Math.max(0, ...migrations.map((m) => m.version));
  const ordered = [...migrations].sort((a, b) => a.version - b.version);
  const found = await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY}::bigint)`;
    return ensureLedger(tx);
  });
  if (found > known) {
    throw new StoreError(
      'migration-failed',
      `database schema version ${found} is newer than this hvsync supports (${known}); ` +
        'upgrade hvsync or use a different database',
    );
  }
  // Each version on its own, not "everything above the highest": a database made by a build that
  // had 5 but not yet 4 still gets 4.
  for (const migration of ordered) {
    try {
      await sql.begin(async (tx) => {
        await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY}::bigint)`;
        const done = await tx`SELECT 1 FROM schema_migrations
                              WHERE version = ${migration.version}::integer`;
        if (done.length > 0) return;
        await tx.unsafe(migration.sql);
        await tx`INSERT INTO schema_migrations (version, name, applied_at)
                 VALUES (${migration.version}::integer, ${migration.name}::text, ${Date.now()}::bigint)`;
      });
    } catch (error) {
      throw new StoreError(
        'migration-failed',
        `migration ${migration.version} (${migration.name}) failed: ${errorMessage(error)}`,
        { cause: error },
      );
    }
  }
}

/** Creates the ledger in an empty schema; refuses a schema that holds somebody else's tables. */
async function ensureLedger(tx: postgres.TransactionSql): Promise<number> {
  const tables = await tx<{ name: string }[]>`
    SELECT table_name AS name FROM information_schema.tables
    WHERE table_schema = current_schema() ORDER BY table_name`;
  const names = tables.map((t) => t.name);
  if (names.includes('schema_migrations')) return ledgerVersion(tx);
  if (names.length > 0) {
    throw new StoreError(
      'migration-failed',
      `database has tables (${names[0]}) but no schema_migrations: not an hvsync database`,
    );
  }
  await tx`CREATE TABLE schema_migrations (
    version    integer PRIMARY KEY,
    name       text    NOT NULL,
    applied_at bigint  NOT NULL
  )`;
  return 0;
}

async function ledgerVersion(tx: postgres.TransactionSql): Promise<number> {
  const [row] = await tx<{ v: number | null }[]>`SELECT max(version) AS v FROM schema_migrations`;
  return row?.v ?? 0;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
