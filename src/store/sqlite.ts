// The embedded Store: one SQLite file through better-sqlite3. Calls are synchronous underneath;
// what matters on the hot path is the number of transactions, so writes that arrive together are
// queued and committed as one transaction on the next turn of the event loop.
import Database from 'better-sqlite3';
import {
  INSTANCE_COLUMNS,
  INSTANCE_FIELDS,
  changeFromRow,
  encodeSnapshot,
  fieldValue,
  hostFromRow,
  hostValues,
  instanceFromRow,
  transitionFromRow,
  transitionValues,
} from './sqlite-rows.ts';
import type {
  ChangeRow,
  HostRow,
  InstanceField,
  InstanceRow,
  SqlValue,
  TransitionRow,
} from './sqlite-rows.ts';
import { SqliteCredentials } from './sqlite-credentials.ts';
import { openSqliteFile } from './sqlite-open.ts';
import { migrate } from './sqlite-schema.ts';
import {
  CHANGES_PAGE,
  DEFAULT_MAX_BATCH,
  DEFAULT_MAX_CHANGES,
  HISTORY_PAGE,
  INSTANCE_PAGE,
  closedError,
  describeWrite,
  pageSize,
  pruneCutoff,
  reportCommit,
  WriteHealth,
} from './common.ts';
import { Emitter } from '../lib/index.ts';
import type { CredentialStore, Store } from './ports.ts';
import { StoreError } from './types.ts';
import type {
  ChangeRecord,
  ChangesPage,
  HostRecord,
  HostStatus,
  InstanceFilter,
  InstanceRecord,
  InstanceWrite,
  RefusalReason,
  StoreOptions,
  StoreStats,
  TransitionRecord,
  WriteResult,
} from './types.ts';

export interface SqliteStoreOptions extends StoreOptions {
  /** How long to wait for another connection's write lock, ms. Default 5 000. */
  readonly busyTimeoutMs?: number;
  /**
   * Hold an exclusive lock on the file while open, so that a second process is refused at open
   * (its watchers would never see this one's commits). Default true; tests that share a file
   * between two stores turn it off.
   */
  readonly exclusive?: boolean;
  /** Run SQLite's quick_check at open and refuse a damaged file. Default true. */
  readonly integrityCheck?: boolean;
}

export type SqliteStoreStats = StoreStats;

const DEFAULT_BUSY_TIMEOUT_MS = 5_000;

/** Opens (creating if needed) and migrates the database at `path`; `:memory:` works for tests. */
export async function openSqliteStore(
  path: string,
  options: SqliteStoreOptions = {},
): Promise<SqliteStore> {
  return SqliteStore.open(path, options);
}

interface PendingWrite {
  readonly write: InstanceWrite;
  readonly resolve: (result: WriteResult) => void;
  readonly reject: (error: unknown) => void;
  /** performance.now() when it was handed over. */
  readonly queuedAt: number;
}

type Outcome =
  | { readonly result: WriteResult; readonly change: ChangeRecord | null }
  | { readonly error: unknown };

interface BatchOutcome {
  readonly outcomes: Outcome[];
  /** Set when retention ran: change rows removed and the new lower bound of what is kept. */
  readonly prune: { readonly removed: number; readonly oldestKept: number } | null;
}

/** Marks an error thrown by one write (as opposed to BEGIN or COMMIT) so the batch can isolate it. */
class WriteFailure {
  constructor(readonly cause: unknown) {}
}

type Statement<P extends unknown[], R = unknown> = Database.Statement<P, R>;

export class SqliteStore implements Store {
  private readonly maxChanges: number;
  private readonly maxBatch: number;
  private readonly now: () => number;

  private queue: PendingWrite[] = [];
  private flushHandle: NodeJS.Immediate | null = null;
  private closed = false;
  private readonly listeners: Emitter<[readonly ChangeRecord[]]>;
  private readonly counters = {
    commits: 0,
    writes: 0,
    refused: 0,
    failed: 0,
    retried: 0,
    pruned: 0,
    listenerErrors: 0,
  };
  private readonly writeHealth: WriteHealth;
  private readonly onCommit: StoreOptions['onCommit'];
  /** Lower bound of the oldest revision kept; only decides when to prune. */
  private oldestKept: number | null;

  private readonly selectInstance: Statement<[string], InstanceRow>;
  private readonly selectInstances: Statement<[string], InstanceRow>;
  private readonly insertInstance: Statement<SqlValue[], InstanceRow>;
  private readonly updateStatements = new Map<number, Statement<SqlValue[], InstanceRow>>();
  private readonly insertTransition: Statement<SqlValue[]>;
  private readonly insertChange: Statement<[string, string, string, number], number>;
  private readonly pruneChanges: Statement<[number]>;
  private readonly selectChanges: Statement<[number, number], ChangeRow>;
  private readonly selectBounds: Statement<[], { oldest: number | null; latest: number | null }>;
  private readonly selectHistory: Statement<[string, number, number], TransitionRow>;
  private readonly listStatements = new Map<string, Statement<SqlValue[], InstanceRow>>();
  private readonly upsertHostStatement: Statement<SqlValue[]>;
  private readonly recordConnectionErrorStatement: Statement<[string | null, string]>;
  private readonly selectHosts: Statement<[], HostRow>;
  private readonly selectJournal: Statement<[string], number>;
  private readonly upsertJournal: Statement<[string, string, number, number]>;
  private readonly runBatch: Database.Transaction<
    (batch: readonly PendingWrite[], now: number, isolate: boolean) => BatchOutcome
  >;
  private readonly applyIsolated: Database.Transaction<
    (write: InstanceWrite, now: number) => Outcome
  >;
  private readonly readPage: Database.Transaction<(since: number, limit: number) => ChangesPage>;
  readonly credentials: CredentialStore;

  static open(path: string, options: SqliteStoreOptions = {}): SqliteStore {
    const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
    let db: Database.Database | undefined;
    try {
      db = openSqliteFile(path, {
        exclusive: options.exclusive ?? true,
        integrityCheck: options.integrityCheck ?? true,
        busyTimeoutMs,
      });
      migrate(db);
      return new SqliteStore(db, options);
    } catch (error) {
      db?.close();
      throw asStoreError(error, `cannot open ${path}`);
    }
  }

  private constructor(
    private readonly db: Database.Database,
    options: SqliteStoreOptions,
  ) {
    this.maxChanges = Math.max(1, Math.floor(options.maxChanges ?? DEFAULT_MAX_CHANGES));
    this.maxBatch = Math.max(1, Math.floor(options.maxBatch ?? DEFAULT_MAX_BATCH));
    this.now = options.now ?? Date.now;
    this.listeners = new Emitter(options.onListenerError);
    this.writeHealth = new WriteHealth(options.onWriteHealth);
    this.onCommit = options.onCommit;

    const columns = INSTANCE_FIELDS.map((f) => INSTANCE_COLUMNS[f]);
    this.selectInstance = db.prepare('SELECT * FROM instances WHERE uuid = ?');
    // The uuids as one JSON array: one statement whatever their number.
    this.selectInstances = db.prepare(
      'SELECT * FROM instances WHERE uuid IN (SELECT value FROM json_each(?))',
    );
    this.insertInstance = db.prepare<SqlValue[], InstanceRow>(
      `INSERT INTO instances (uuid, ${columns.join(', ')}, version, created_at, updated_at)
       VALUES (?, ${columns.map(() => '?').join(', ')}, 1, ?, ?)
       ON CONFLICT (uuid) DO NOTHING
       RETURNING *`,
    );
    this.insertTransition = db.prepare<SqlValue[]>(
      `INSERT INTO transitions (uuid, power_from, power_to, vm_state_from, vm_state_to, cause,
         detail, out_of_band, observed_at, recorded_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.insertChange = db
      .prepare<[string, string, string, number], number>(
        'INSERT INTO changes (uuid, type, instance, at) VALUES (?, ?, ?, ?) RETURNING revision',
      )
      .pluck();
    this.pruneChanges = db.prepare('DELETE FROM changes WHERE revision <= ?');
    this.selectChanges = db.prepare(
      'SELECT revision, type, instance, at FROM changes WHERE revision > ? ORDER BY revision LIMIT ?',
    );
    // Two subqueries rather than min() and max() side by side, which SQLite answers by a full scan.
    this.selectBounds = db.prepare(
      `SELECT (SELECT min(revision) FROM changes) AS oldest,
              (SELECT max(revision) FROM changes) AS latest`,
    );
    this.selectHistory = db.prepare(
      'SELECT * FROM transitions WHERE uuid = ? AND id < ? ORDER BY id DESC LIMIT ?',
    );
    this.upsertHostStatement = db.prepare<SqlValue[]>(
      `INSERT INTO hosts (name, driver, connected, last_seen_at, last_reconcile_at, backlog,
                          connection_error)
       VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET
         driver = excluded.driver,
         connected = excluded.connected,
         last_seen_at = excluded.last_seen_at,
         last_reconcile_at = excluded.last_reconcile_at,
         backlog = excluded.backlog,
         connection_error = CASE WHEN ? THEN excluded.connection_error
           ELSE hosts.connection_error END`,
    );
    this.recordConnectionErrorStatement = db.prepare(
      'UPDATE hosts SET connection_error = ? WHERE name = ?',
    );
    this.selectHosts = db.prepare('SELECT * FROM hosts ORDER BY name');
    this.selectJournal = db
      .prepare<[string], number>('SELECT last_seq FROM journal_applied WHERE journal_id = ?')
      .pluck();
    this.upsertJournal = db.prepare(
      `INSERT INTO journal_applied (journal_id, host, last_seq, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (journal_id) DO UPDATE SET
         last_seq = max(last_seq, excluded.last_seq), updated_at = excluded.updated_at`,
    );

    this.runBatch = db.transaction((batch, now, isolate) => this.applyBatch(batch, now, isolate));
    this.applyIsolated = db.transaction((write, now) => this.apply(write, now));
    this.readPage = db.transaction((since, limit) => this.changesPage(since, limit));

    this.oldestKept = this.selectBounds.get()?.oldest ?? null;
    this.credentials = new SqliteCredentials(db, (body) => this.guard(body), this.now);
  }

  get stats(): SqliteStoreStats {
    return { ...this.counters, commitFailures: this.writeHealth.failures };
  }

  /** Why writes cannot commit right now, or null while they do. */
  get writeFailure(): StoreError | null {
    return this.writeHealth.failure;
  }

  async getInstance(uuid: string): Promise<InstanceRecord | null> {
    return this.guard(() => {
      const row = this.selectInstance.get(uuid);
      return row === undefined ? null : instanceFromRow(row);
    });
  }

  async getInstances(uuids: readonly string[]): Promise<ReadonlyMap<string, InstanceRecord>> {
    return this.guard(() => {
      const records = new Map<string, InstanceRecord>();
      if (uuids.length === 0) return records;
      for (const row of this.selectInstances.all(JSON.stringify(uuids))) {
        const record = instanceFromRow(row);
        records.set(record.uuid, record);
      }
      return records;
    });
  }

  async listInstances(filter: InstanceFilter = {}): Promise<InstanceRecord[]> {
    return this.guard(() => {
      const conditions: string[] = [];
      const params: SqlValue[] = [];
      const where = (condition: string, value: string | undefined): void => {
        if (value === undefined) return;
        conditions.push(condition);
        params.push(value);
      };
      where('host = ?', filter.host);
      where('vm_state = ?', filter.vmState);
      where('power_state = ?', filter.powerState);
      where('uuid > ?', filter.after);
      if (filter.hideDeleted === true) conditions.push("vm_state <> 'deleted'");
      if (filter.taskInFlight === true) conditions.push('task_state IS NOT NULL');
      params.push(pageSize(filter.limit, INSTANCE_PAGE));
      return this.listStatement(conditions)
        .all(...params)
        .map(instanceFromRow);
    });
  }

  write(write: InstanceWrite): Promise<WriteResult> {
    if (this.closed) return Promise.reject(closedError());
    return new Promise<WriteResult>((resolve, reject) => {
      this.queue.push({ write, resolve, reject, queuedAt: performance.now() });
      this.scheduleFlush();
    });
  }

  async history(
    uuid: string,
    options: { limit?: number; beforeId?: number } = {},
  ): Promise<TransitionRecord[]> {
    return this.guard(() => {
      const beforeId = options.beforeId ?? Number.MAX_SAFE_INTEGER;
      const limit = pageSize(options.limit, HISTORY_PAGE);
      return this.selectHistory.all(uuid, beforeId, limit).map(transitionFromRow);
    });
  }

  /**
   * Changes after `since`, oldest first. The page is complete from `since` onwards only when
   * `since >= oldestRevision - 1`; otherwise retention dropped changes the watcher never saw.
   */
  async changesSince(since: number, limit?: number): Promise<ChangesPage> {
    return this.guard(() => this.readPage.deferred(since, pageSize(limit, CHANGES_PAGE)));
  }

  subscribe(listener: (changes: readonly ChangeRecord[]) => void): () => void {
    if (this.closed) throw closedError();
    return this.listeners.on(listener);
  }

  async upsertHost(host: HostStatus): Promise<void> {
    this.hostWrite(() => this.upsertHostStatement.run(...hostValues(host)));
  }

  async recordConnectionError(host: string, error: string | null): Promise<void> {
    this.hostWrite(() => this.recordConnectionErrorStatement.run(error, host));
  }

  private hostWrite(write: () => unknown): void {
    try {
      this.guard(write);
    } catch (error) {
      if (error instanceof StoreError && error.code !== 'closed') this.writeHealth.failed(error);
      throw error;
    }
    this.writeHealth.succeeded();
  }

  async listHosts(): Promise<HostRecord[]> {
    return this.guard(() => this.selectHosts.all().map(hostFromRow));
  }

  /** Commits every queued write, then closes. Closing again is a no-op. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.flushHandle !== null) {
      clearImmediate(this.flushHandle);
      this.flushHandle = null;
    }
    while (this.queue.length > 0) this.flushOnce();
    this.listeners.clear();
    this.db.close();
  }

  /** Runs a statement on an open store, turning database errors into StoreErrors. */
  private guard<T>(body: () => T): T {
    if (this.closed) throw closedError();
    try {
      return body();
    } catch (error) {
      throw asStoreError(error, 'store read failed');
    }
  }

  private listStatement(conditions: readonly string[]): Statement<SqlValue[], InstanceRow> {
    const key = conditions.join(' AND ');
    let statement = this.listStatements.get(key);
    if (statement === undefined) {
      const where = key === '' ? '' : `WHERE ${key}`;
      statement = this.db.prepare<SqlValue[], InstanceRow>(
        `SELECT * FROM instances ${where} ORDER BY uuid LIMIT ?`,
      );
      this.listStatements.set(key, statement);
    }
    return statement;
  }

  /** One statement per set of patched fields, so a partial patch never needs a read first. */
  private updateStatement(fields: readonly InstanceField[]): Statement<SqlValue[], InstanceRow> {
    let mask = 0;
    for (const field of fields) mask |= 1 << INSTANCE_FIELDS.indexOf(field);
    let statement = this.updateStatements.get(mask);
    if (statement === undefined) {
      const assignments = fields.map((f) => `${INSTANCE_COLUMNS[f]} = ?, `).join('');
      statement = this.db.prepare<SqlValue[], InstanceRow>(
        `UPDATE instances SET ${assignments}version = version + 1, updated_at = ?
         WHERE uuid = ? AND version = ? AND host = coalesce(?, host)
         RETURNING *`,
      );
      this.updateStatements.set(mask, statement);
    }
    return statement;
  }

  private changesPage(since: number, limit: number): ChangesPage {
    const changes = this.selectChanges.all(since, limit).map(changeFromRow);
    const bounds = this.selectBounds.get();
    const latestRevision = bounds?.latest ?? 0;
    return { changes, oldestRevision: bounds?.oldest ?? latestRevision + 1, latestRevision };
  }

  private scheduleFlush(): void {
    if (this.flushHandle !== null) return;
    this.flushHandle = setImmediate(() => {
      this.flushHandle = null;
      this.flushOnce();
      // Whatever is left (or was written by a listener) goes next turn, letting I/O in between.
      if (this.queue.length > 0) this.scheduleFlush();
    });
  }

  private flushOnce(): void {
    if (this.queue.length === 0) return;
    const batch = this.queue.slice(0, this.maxBatch);
    this.queue = this.queue.slice(this.maxBatch);
    this.commit(batch);
  }

  private commit(batch: readonly PendingWrite[]): void {
    const startedAt = performance.now();
    const now = this.now();
    let outcome: BatchOutcome;
    try {
      outcome = this.runBatch.immediate(batch, now, false);
    } catch (error) {
      if (!(error instanceof WriteFailure)) {
        this.failAll(batch, error);
        return;
      }
      // One write threw and took the transaction with it: redo the batch with each write in
      // its own savepoint so only that write fails.
      this.counters.retried++;
      try {
        outcome = this.runBatch.immediate(batch, now, true);
      } catch (retryError) {
        this.failAll(batch, retryError instanceof WriteFailure ? retryError.cause : retryError);
        return;
      }
    }

    this.counters.commits++;
    this.writeHealth.succeeded();
    reportCommit(this.onCommit, batch, startedAt);
    if (outcome.prune !== null) {
      this.counters.pruned += outcome.prune.removed;
      this.oldestKept = outcome.prune.oldestKept;
    }
    const changes: ChangeRecord[] = [];
    outcome.outcomes.forEach((result, i) => {
      const pending = batch[i]!;
      if ('error' in result) {
        this.counters.failed++;
        pending.reject(
          asStoreError(result.error, `write of ${describeWrite(pending.write)} failed`),
        );
        return;
      }
      if (result.change !== null) changes.push(result.change);
      if (result.result.ok) this.counters.writes++;
      else this.counters.refused++;
      pending.resolve(result.result);
    });
    if (this.oldestKept === null && changes.length > 0) this.oldestKept = changes[0]!.revision;
    if (changes.length > 0) this.notify(changes);
  }

  private failAll(batch: readonly PendingWrite[], error: unknown): void {
    this.counters.failed += batch.length;
    const failure = asStoreError(error, 'write transaction failed');
    this.writeHealth.failed(failure);
    for (const pending of batch) pending.reject(failure);
  }

  private applyBatch(batch: readonly PendingWrite[], now: number, isolate: boolean): BatchOutcome {
    const outcomes: Outcome[] = [];
    let firstRevision: number | null = null;
    let latestRevision: number | null = null;
    for (const { write } of batch) {
      let outcome: Outcome;
      if (isolate) {
        try {
          outcome = this.applyIsolated(write, now);
        } catch (error) {
          outcome = { error };
        }
      } else {
        try {
          outcome = this.apply(write, now);
        } catch (error) {
          throw new WriteFailure(error);
        }
      }
      if ('change' in outcome && outcome.change !== null) {
        firstRevision ??= outcome.change.revision;
        latestRevision = outcome.change.revision;
      }
      outcomes.push(outcome);
    }
    const prune =
      firstRevision === null || latestRevision === null
        ? null
        : this.pruneIfDue(firstRevision, latestRevision);
    return { outcomes, prune };
  }

  private pruneIfDue(firstRevision: number, latestRevision: number): BatchOutcome['prune'] {
    const cutoff = pruneCutoff(this.oldestKept, firstRevision, latestRevision, this.maxChanges);
    if (cutoff === null) return null;
    const removed = this.pruneChanges.run(cutoff).changes;
    return { removed, oldestKept: cutoff + 1 };
  }

  /** A journal entry is processed once: its seq is recorded with whatever the write did. */
  private apply(write: InstanceWrite, now: number): Outcome {
    const tag = write.journal;
    if (tag === undefined) return this.applyWrite(write, now);
    const last = this.selectJournal.get(tag.id);
    if (last !== undefined && tag.seq <= last) {
      return refused('duplicate', this.selectInstance.get(write.uuid));
    }
    const outcome = this.applyWrite(write, now);
    this.upsertJournal.run(tag.id, tag.host, tag.seq, now);
    return outcome;
  }

  private applyWrite(write: InstanceWrite, now: number): Outcome {
    let row: InstanceRow | undefined;
    let type: ChangeRecord['type'];
    if (write.kind === 'create') {
      const values = INSTANCE_FIELDS.map((f) => fieldValue(write.fields, f));
      row = this.insertInstance.get(write.uuid, ...values, now, now);
      if (row === undefined) return refused('exists', this.selectInstance.get(write.uuid));
      type = 'created';
    } else if (write.kind === 'update') {
      const fields = INSTANCE_FIELDS.filter((f) => write.patch[f] !== undefined);
      const values = fields.map((f) => fieldValue(write.patch, f));
      row = this.updateStatement(fields).get(
        ...values,
        now,
        write.uuid,
        write.expectedVersion,
        write.expectedHost ?? null,
      );
      if (row === undefined) {
        const current = this.selectInstance.get(write.uuid);
        return refused(current === undefined ? 'not-found' : 'conflict', current);
      }
      type = 'updated';
    } else {
      throw new TypeError(`unknown write kind ${String((write as { kind: unknown }).kind)}`);
    }

    const instance = instanceFromRow(row);
    if (write.transition !== undefined) {
      this.insertTransition.run(...transitionValues(write.uuid, write.transition, now));
    }
    const revision = this.insertChange.get(write.uuid, type, encodeSnapshot(instance), now);
    if (revision === undefined) throw new Error('change log insert returned no revision');
    return {
      result: { ok: true, instance, revision },
      change: { revision, type, instance, at: now },
    };
  }

  private notify(changes: readonly ChangeRecord[]): void {
    this.counters.listenerErrors += this.listeners.emit(changes);
  }
}

function refused(reason: RefusalReason, current: InstanceRow | undefined): Outcome {
  return {
    result: { ok: false, reason, current: current === undefined ? null : instanceFromRow(current) },
    change: null,
  };
}

function sqliteCode(error: unknown): string | undefined {
  if (error instanceof Database.SqliteError) return error.code;
  return undefined;
}

function asStoreError(error: unknown, context: string): StoreError {
  if (error instanceof StoreError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const code = sqliteCode(error);
  if (code === 'SQLITE_NOTADB' || code?.startsWith('SQLITE_CORRUPT')) {
    return new StoreError('corrupt', `${context}: not a usable SQLite database (${message})`, {
      cause: error,
    });
  }
  if (code?.startsWith('SQLITE_READONLY')) {
    return new StoreError('read-only', `${context}: ${message}`, { cause: error });
  }
  return new StoreError('io', `${context}: ${message}`, { cause: error });
}
