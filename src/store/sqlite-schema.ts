// The SQLite schema as an ordered list of migrations. Plain SQL that maps one to one onto
// PostgreSQL (INTEGER PRIMARY KEY AUTOINCREMENT ↔ identity column, TEXT ↔ text/jsonb), so a second
// backend can follow the same shape. Never edit a migration that has shipped: add the next one.
import type Database from 'better-sqlite3';
import { StoreError } from './types.ts';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial',
    sql: `
      CREATE TABLE hosts (
        name              TEXT    PRIMARY KEY,
        driver            TEXT    NOT NULL,
        connected         INTEGER NOT NULL,
        last_seen_at      INTEGER NOT NULL,
        last_reconcile_at INTEGER
      );

      -- host is not a foreign key: an agent may report instances before its host row exists.
      CREATE TABLE instances (
        uuid            TEXT    PRIMARY KEY,
        name            TEXT    NOT NULL,
        host            TEXT    NOT NULL,
        vm_state        TEXT    NOT NULL,
        task_state      TEXT,
        task_started_at INTEGER,
        task_error      TEXT,
        power_state     TEXT    NOT NULL,
        power_reason    TEXT    NOT NULL,
        policy          TEXT,
        version         INTEGER NOT NULL,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
      );
      -- uuid second so that a filtered listing pages by keyset without a sort.
      CREATE INDEX instances_host ON instances (host, uuid);
      CREATE INDEX instances_vm_state ON instances (vm_state, uuid);
      CREATE INDEX instances_power_state ON instances (power_state, uuid);

      CREATE TABLE transitions (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid          TEXT    NOT NULL REFERENCES instances (uuid) ON DELETE CASCADE,
        power_from    TEXT,
        power_to      TEXT    NOT NULL,
        vm_state_from TEXT,
        vm_state_to   TEXT    NOT NULL,
        cause         TEXT    NOT NULL,
        detail        TEXT    NOT NULL,
        out_of_band   INTEGER NOT NULL,
        observed_at   INTEGER NOT NULL,
        recorded_at   INTEGER NOT NULL
      );
      CREATE INDEX transitions_uuid_id ON transitions (uuid, id);

      -- AUTOINCREMENT so that a revision is never handed out twice, even after pruning; the log
      -- outlives instances, hence no foreign key.
      CREATE TABLE changes (
        revision INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid     TEXT    NOT NULL,
        type     TEXT    NOT NULL,
        instance TEXT    NOT NULL,
        at       INTEGER NOT NULL
      );
    `,
  },
  {
    version: 2,
    name: 'host connection error',
    sql: `ALTER TABLE hosts ADD COLUMN connection_error TEXT;`,
  },
  {
    version: 3,
    name: 'credentials',
    sql: `
      -- Host and reader tokens by their sha256 only. Revoked rows stay, so that a revoked token
      -- is told so; at most one valid credential per name.
      CREATE TABLE credentials (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        kind       TEXT    NOT NULL,
        name       TEXT    NOT NULL,
        token_hash TEXT    NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
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
        journal_id TEXT    PRIMARY KEY,
        host       TEXT    NOT NULL,
        last_seq   INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      );
      ALTER TABLE hosts ADD COLUMN backlog INTEGER NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 5,
    name: 'task action',
    // The task's action, which its taskState alone does not say (stop or force-stop...), so that
    // a task recorded by one process can be performed by another. The partial index serves the
    // control plane's sweep of tasks in flight.
    sql: `
      ALTER TABLE instances ADD COLUMN task_action TEXT;
      CREATE INDEX instances_task ON instances (uuid) WHERE task_state IS NOT NULL;
    `,
  },
];

export const SCHEMA_VERSION = MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0);

/**
 * Brings the schema up to SCHEMA_VERSION. Each migration runs in its own IMMEDIATE transaction
 * and re-reads the version inside it, so two processes opening the same file at once apply each
 * migration exactly once.
 */
export function migrate(
  db: Database.Database,
  migrations: readonly Migration[] = MIGRATIONS,
): void {
  const known = Math.max(0, ...migrations.map((m) => m.version));
  const hasLedger =
    db
      .prepare<[], { n: number }>(
        `SELECT count(*) AS n FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'`,
      )
      .get()?.n === 1;
  if (!hasLedger) {
    // Refuse to scribble our tables into somebody else's database.
    const foreign = db
      .prepare<[], { name: string }>(
        `SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' LIMIT 1`,
      )
      .get();
    if (foreign !== undefined) {
      throw new StoreError(
        'migration-failed',
        `database has tables (${foreign.name}) but no schema_migrations: not an hvsync database`,
      );
    }
    db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version    INTEGER PRIMARY KEY,
      name       TEXT    NOT NULL,
      applied_at INTEGER NOT NULL
    )`);
  }

  const currentVersion = db.prepare<[], { v: number | null }>(
    'SELECT max(version) AS v FROM schema_migrations',
  );
  const record = db.prepare<[number, string, number]>(
    'INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)',
  );
  const readVersion = (): number => currentVersion.get()?.v ?? 0;
  const appliedStatement = db.prepare<[number], { v: number }>(
    'SELECT version AS v FROM schema_migrations WHERE version = ?',
  );
  // Each version on its own, not "everything above the highest": a file made by a build that
  // had 5 but not yet 4 still gets 4.
  const applied = (version: number): boolean => appliedStatement.get(version) !== undefined;

  const found = readVersion();
  if (found > known) {
    throw new StoreError(
      'migration-failed',
      `database schema version ${found} is newer than this hvsync supports (${known}); ` +
        'upgrade hvsync or use a different database file',
    );
  }

  const ordered = [...migrations].sort((a, b) => a.version - b.version);
  for (const migration of ordered) {
    const apply = db.transaction(() => {
      if (applied(migration.version)) return;
      db.exec(migration.sql);
      record.run(migration.version, migration.name, Date.now());
    });
    try {
      apply.immediate();
    } catch (error) {
      throw new StoreError(
        'migration-failed',
        `migration ${migration.version} (${migration.name}) failed: ${errorMessage(error)}`,
        { cause: error },
      );
    }
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
