// The Store on PostgreSQL, for a control plane that several processes share. Writes that arrive
// together are committed as one transaction of a few set-based statements, sent in one round trip
// (postgres-commit.ts); only when one write fails are they redone one savepoint each, so it fails
// alone. Every writing transaction takes its revisions from the single revision_counter row,
// locked after its own rows, so revisions are assigned in commit order across processes (see
// postgres-schema.ts), and NOTIFYs on commit so that other processes' subscribers are woken; the
// change log stays the truth that they read.
import postgres from 'postgres';
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
  retainedChanges,
  reportCommit,
  WriteHealth,
} from './common.ts';
import type { ChangeListener } from './common.ts';
import { PostgresCredentials } from './postgres-credentials.ts';
import { ChangeFeed } from './postgres-feed.ts';
import { changesChannel, changesOfPayload, revocationsChannel } from './postgres-notify.ts';
import { commitIsolated, commitPipelined, WriteFailure } from './postgres-commit.ts';
import type { Outcome } from './postgres-commit.ts';
import { ensureSchema, migratePostgres } from './postgres-schema.ts';
import { instanceFromRow, snapshotRecord, transitionFromRow } from './sqlite-rows.ts';
import type { InstanceRow, TransitionRow } from './sqlite-rows.ts';
import type { Store } from './ports.ts';
import { StoreError } from './types.ts';
import type {
  ChangeRecord,
  ChangesPage,
  HostRecord,
  HostStatus,
  InstanceFilter,
  InstanceRecord,
  InstanceWrite,
  StoreOptions,
  StoreStats,
  TransitionRecord,
  WriteResult,
} from './types.ts';

export interface PostgresStoreOptions extends StoreOptions {
  /** Schema the tables live in (created if missing). Default: the connection's search_path. */
  readonly schema?: string;
  /** Most connections open at once, the one that listens for other processes included. Default 4. */
  readonly maxConnections?: number;
  /** Told when following other processes' commits fails; the next notification retries. */
  readonly onFeedError?: (error: unknown) => void;
}

const DEFAULT_MAX_CONNECTIONS = 4;

/** The longest wait between attempts to reconnect, in seconds. */
const RECONNECT_CAP_SECONDS = 1;

/**
 * Seconds the driver waits before connecting again after `attempt` failed attempts in a row;
 * until then it refuses queries with the last connect error. The driver's default grows to 20 s
 * over a few seconds of outage, so a store would keep failing for up to 20 s after its database
 * returned. Doubling from 50 ms to a 1 s cap (with jitter, so replicas do not retry in step) costs
 * one connect attempt a second while the database is down.
 */
export function reconnectDelaySeconds(attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(0.05 * 2 ** Math.max(0, attempt - 1), RECONNECT_CAP_SECONDS);
  return ceiling * (0.5 + random() / 2);
}

type SqlValue = string | number | boolean | null;

interface HostRow {
  name: string;
  driver: string;
  connected: boolean;
  last_seen_at: number;
  last_reconcile_at: number | null;
  connection_error: string | null;
  backlog: number;
}

interface ChangeRow {
  revision: number;
  type: ChangeRecord['type'];
  instance: InstanceRecord;
  at: number;
}

interface PendingWrite {
  readonly write: InstanceWrite;
  readonly resolve: (result: WriteResult) => void;
  readonly reject: (error: unknown) => void;
  /** performance.now() when it was handed over. */
  readonly queuedAt: number;
}

// int8 columns (timestamps, revisions, ids) as numbers: epoch ms and counters stay far below 2^53.
const TYPES = {
  bigint: {
    to: 20,
    from: [20],
    serialize: (value: number) => String(value),
    parse: (text: string) => Number(text),
  },
};

/** Connects to `url`, migrates under an advisory lock, and returns the store. */
export async function openPostgresStore(
  url: string,
  options: PostgresStoreOptions = {},
): Promise<PostgresStore> {
  const settings = {
    types: TYPES,
    onnotice: false,
    connect_timeout: 10,
    backoff: reconnectDelaySeconds,
    ...(options.schema === undefined ? {} : { connection: { search_path: options.schema } }),
  } as const;
  const sql = postgres(url, {
    ...settings,
    max: Math.max(2, options.maxConnections ?? DEFAULT_MAX_CONNECTIONS),
  });
  // The write batches' own connection: one batch commits at a time anyway, and it never waits
  // behind reads (hundreds of watch streams catching up after a restart, say) for a connection.
  // Each batch is planned for its own input: with the generic plan PostgreSQL settles on after a
  // few runs of the batch statement, a fleet's event reached the watch 1.5 times later (README,
  // fleet).
  const writer = postgres(url, {
    ...settings,
    connection: { ...settings.connection, plan_cache_mode: 'force_custom_plan' },
    max: 1,
  });
  try {
    if (options.schema !== undefined) await ensureSchema(sql, options.schema);
    await migratePostgres(sql);
    const [counter] = await sql<{ value: number }[]>`SELECT value FROM revision_counter`;
    const [bounds] = await sql<{ oldest: number | null }[]>`
      SELECT min(revision) AS oldest FROM changes`;
    return new PostgresStore(sql, writer, options, counter?.value ?? 0, bounds?.oldest ?? null);
  } catch (error) {
    await sql.end({ timeout: 1 }).catch(() => {});
    await writer.end({ timeout: 1 }).catch(() => {});
    throw asStoreError(error, `cannot open ${redact(url)}`);
  }
}

export class PostgresStore implements Store {
  private readonly maxChanges: number;
  private readonly maxBatch: number;
  /** Where this store's commits are announced (its schema's own channel). */
  private readonly channel: string;
  private readonly now: () => number;
  private readonly onFeedError: (error: unknown) => void;
  private readonly writeHealth: WriteHealth;
  private readonly onCommit: StoreOptions['onCommit'];
  readonly credentials: PostgresCredentials;

  private queue: PendingWrite[] = [];
  private flushHandle: NodeJS.Immediate | null = null;
  /** The batch being committed; one at a time, so local commits are delivered in order. */
  private flushing: Promise<void> | null = null;
  private closed = false;
  private readonly feed: ChangeFeed;
  private listening: Promise<unknown> | null = null;
  private readonly counters = {
    commits: 0,
    writes: 0,
    refused: 0,
    failed: 0,
    retried: 0,
    pruned: 0,
  };

  constructor(
    private readonly sql: postgres.Sql,
    private readonly writer: postgres.Sql,
    options: PostgresStoreOptions,
    latestRevision: number,
    /** Lower bound of the oldest revision kept; only decides when to prune. */
    private oldestKept: number | null,
  ) {
    this.maxChanges = Math.max(1, Math.floor(options.maxChanges ?? DEFAULT_MAX_CHANGES));
    this.maxBatch = Math.max(1, Math.floor(options.maxBatch ?? DEFAULT_MAX_BATCH));
    this.channel = changesChannel(options.schema);
    this.now = options.now ?? Date.now;
    this.feed = new ChangeFeed({
      latestRevision,
      readLog: async (since) => (await this.changesPage(since, CHANGES_PAGE.cap)).changes,
      pageSize: CHANGES_PAGE.cap,
      onListenerError: options.onListenerError,
      onFeedError: (error) => this.onFeedError(error),
    });
    this.onFeedError = options.onFeedError ?? (() => {});
    this.writeHealth = new WriteHealth(options.onWriteHealth);
    this.onCommit = options.onCommit;
    this.credentials = new PostgresCredentials(
      sql,
      (query) => this.read(query),
      this.now,
      revocationsChannel(options.schema),
    );
  }

  get stats(): StoreStats {
    return {
      ...this.counters,
      listenerErrors: this.feed.listenerErrors,
      commitFailures: this.writeHealth.failures,
    };
  }

  /** Why writes cannot commit right now, or null while they do. */
  get writeFailure(): StoreError | null {
    return this.writeHealth.failure;
  }

  async getInstance(uuid: string): Promise<InstanceRecord | null> {
    const rows = await this.read(
      () => this.sql<InstanceRow[]>`SELECT * FROM instances WHERE uuid = ${uuid}::text`,
    );
    return rows[0] === undefined ? null : instanceFromRow(rows[0]);
  }

  async getInstances(uuids: readonly string[]): Promise<ReadonlyMap<string, InstanceRecord>> {
    const rows = await this.read(async () =>
      uuids.length === 0
        ? []
        : this.sql<InstanceRow[]>`
            SELECT * FROM instances WHERE uuid = ANY(${uuids}::text[])`,
    );
    return new Map(rows.map((row) => [row.uuid, instanceFromRow(row)]));
  }

  async listInstances(filter: InstanceFilter = {}): Promise<InstanceRecord[]> {
    const conditions: string[] = [];
    const params: SqlValue[] = [];
    const where = (column: string, value: string | undefined, op = '='): void => {
      if (value === undefined) return;
      params.push(value);
      conditions.push(`${column} ${op} $${params.length}::text`);
    };
    where('host', filter.host);
    where('vm_state', filter.vmState);
    where('power_state', filter.powerState);
    where('uuid', filter.after, '>');
    if (filter.hideDeleted === true) conditions.push("vm_state <> 'deleted'");
    if (filter.taskInFlight === true) conditions.push('task_state IS NOT NULL');
    params.push(pageSize(filter.limit, INSTANCE_PAGE));
    const clause = conditions.length === 0 ? '' : `WHERE ${conditions.join(' AND ')}`;
    const rows = await this.read(() =>
      this.sql.unsafe<InstanceRow[]>(
        `SELECT * FROM instances ${clause} ORDER BY uuid LIMIT $${params.length}::integer`,
        params,
        { prepare: true },
      ),
    );
    return rows.map(instanceFromRow);
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
    const beforeId = options.beforeId ?? Number.MAX_SAFE_INTEGER;
    const limit = pageSize(options.limit, HISTORY_PAGE);
    const rows = await this.read(
      () => this.sql<TransitionRow[]>`
        SELECT * FROM transitions WHERE uuid = ${uuid}::text AND id < ${beforeId}::bigint
        ORDER BY id DESC LIMIT ${limit}::integer`,
    );
    return rows.map(transitionFromRow);
  }

  /**
   * Changes after `since`, oldest first. The page is complete from `since` onwards only when
   * `since >= oldestRevision - 1`; otherwise retention dropped changes the watcher never saw.
   */
  async changesSince(since: number, limit?: number): Promise<ChangesPage> {
    return this.read(() => this.changesPage(since, pageSize(limit, CHANGES_PAGE)));
  }

  private async changesPage(since: number, size: number): Promise<ChangesPage> {
    // One snapshot for the page and its bounds.
    const [rows, bounds] = await this.sql.begin(
      'ISOLATION LEVEL REPEATABLE READ READ ONLY',
      (tx) => [
        tx<ChangeRow[]>`
          SELECT revision, type, instance, at FROM changes
          WHERE revision > ${since}::bigint ORDER BY revision LIMIT ${size}::integer`,
        tx<{ oldest: number | null; latest: number }[]>`
          SELECT (SELECT min(revision) FROM changes) AS oldest,
                 (SELECT value FROM revision_counter) AS latest`,
      ],
    );
    const latestRevision = bounds[0]?.latest ?? 0;
    return {
      changes: rows.map((row) => ({ ...row, instance: snapshotRecord(row.instance) })),
      oldestRevision: bounds[0]?.oldest ?? latestRevision + 1,
      latestRevision,
    };
  }

  /**
   * Listeners get every change committed after the store opened, by this process or any other
   * on the same database, in revision order: local commits as they commit, others' when their
   * NOTIFY arrives (carried in it when they fit, else read back from the change log, so a lost
   * notification costs latency only).
   */
  subscribe(listener: ChangeListener): () => void {
    if (this.closed) throw closedError();
    const unsubscribe = this.feed.on(listener);
    this.listening ??= this.sql
      .listen(
        this.channel,
        (payload) => this.feed.notified(changesOfPayload(payload)),
        () => this.feed.catchUp(),
      )
      .catch((error: unknown) => {
        this.listening = null;
        this.onFeedError(error);
      });
    return unsubscribe;
  }

  async upsertHost(host: HostStatus): Promise<void> {
    await this.read(
      () => this.sql`
        INSERT INTO hosts (name, driver, connected, last_seen_at, last_reconcile_at, backlog,
                           connection_error)
        VALUES (${host.name}::text, ${host.driver}::text, ${host.connected}::boolean,
                ${host.lastSeenAt}::bigint, ${host.lastReconcileAt}::bigint,
                ${host.backlog ?? 0}::integer, ${host.connectionError ?? null}::text)
        ON CONFLICT (name) DO UPDATE SET
          driver = excluded.driver,
          connected = excluded.connected,
          last_seen_at = excluded.last_seen_at,
          last_reconcile_at = excluded.last_reconcile_at,
          backlog = excluded.backlog,
          connection_error = CASE WHEN ${host.connectionError !== undefined}::boolean
            THEN excluded.connection_error ELSE hosts.connection_error END`,
    );
  }

  async recordConnectionError(host: string, error: string | null): Promise<void> {
    await this.read(
      () => this.sql`
        UPDATE hosts SET connection_error = ${error}::text WHERE name = ${host}::text`,
    );
  }

  async listHosts(): Promise<HostRecord[]> {
    const rows = await this.read(() => this.sql<HostRow[]>`SELECT * FROM hosts ORDER BY name`);
    return rows.map(hostFromRow);
  }

  /** Commits every queued write, then closes. Closing again is a no-op. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.flushHandle !== null) {
      clearImmediate(this.flushHandle);
      this.flushHandle = null;
    }
    while (this.flushing !== null || this.queue.length > 0) {
      if (this.flushing !== null) await this.flushing;
      else await this.flushOnce();
    }
    await this.feed.close();
    this.credentials.close();
    await Promise.all([this.sql.end({ timeout: 5 }), this.writer.end({ timeout: 5 })]);
  }

  private async read<T>(query: () => Promise<T>): Promise<T> {
    if (this.closed) throw closedError();
    try {
      return await query();
    } catch (error) {
      throw asStoreError(error, 'store read failed');
    }
  }

  private scheduleFlush(): void {
    if (this.flushHandle !== null || this.flushing !== null) return;
    this.flushHandle = setImmediate(() => {
      this.flushHandle = null;
      void this.flushOnce().then(() => {
        if (this.queue.length > 0 && !this.closed) this.scheduleFlush();
      });
    });
  }

  private flushOnce(): Promise<void> {
    const batch = this.queue.slice(0, this.maxBatch);
    this.queue = this.queue.slice(this.maxBatch);
    this.flushing = this.commit(batch).finally(() => {
      this.flushing = null;
    });
    return this.flushing;
  }

  private async commit(batch: readonly PendingWrite[]): Promise<void> {
    if (batch.length === 0) return;
    const startedAt = performance.now();
    const now = this.now();
    let outcomes: Outcome[];
    try {
      outcomes = await this.runBatch(batch, now, false);
    } catch (error) {
      if (!(error instanceof WriteFailure)) {
        this.failAll(batch, error);
        return;
      }
      // One write threw and took the transaction with it: redo the batch with each write in
      // its own savepoint so only that write fails.
      this.counters.retried++;
      try {
        outcomes = await this.runBatch(batch, now, true);
      } catch (retryError) {
        this.failAll(batch, retryError instanceof WriteFailure ? retryError.cause : retryError);
        return;
      }
    }

    this.counters.commits++;
    this.writeHealth.succeeded();
    reportCommit(this.onCommit, batch, startedAt);
    const changes: ChangeRecord[] = [];
    for (const outcome of outcomes) {
      if ('change' in outcome && outcome.change !== null) changes.push(outcome.change);
    }
    if (changes.length > 0) await this.feed.committed(changes);
    outcomes.forEach((outcome, i) => {
      const pending = batch[i]!;
      if ('error' in outcome) {
        this.counters.failed++;
        pending.reject(
          asStoreError(outcome.error, `write of ${describeWrite(pending.write)} failed`),
        );
        return;
      }
      if (outcome.result.ok) this.counters.writes++;
      else this.counters.refused++;
      pending.resolve(outcome.result);
    });
  }

  private failAll(batch: readonly PendingWrite[], error: unknown): void {
    this.counters.failed += batch.length;
    const failure = asStoreError(error, 'write transaction failed');
    if (failure.code !== 'closed') this.writeHealth.failed(failure);
    for (const pending of batch) pending.reject(failure);
  }

  private async runBatch(
    batch: readonly PendingWrite[],
    now: number,
    isolate: boolean,
  ): Promise<Outcome[]> {
    const writes = batch.map((p) => p.write);
    const settings = { now, channel: this.channel };
    // The batch learns its revisions only with its answer, so whether it takes the log past its
    // bound is judged from the latest revision known and the batch's size, at most one batch late.
    const due = pruneCutoff(
      this.oldestKept,
      this.feed.latest + 1,
      this.feed.latest + writes.length,
      this.maxChanges,
    );
    const keep = due === null ? null : retainedChanges(this.maxChanges);
    const { outcomes, pruned } = isolate
      ? await this.writer.begin((tx) => commitIsolated(tx, writes, settings, keep))
      : await commitPipelined(this.writer, writes, settings, keep);
    if (pruned !== null) {
      // Nothing removed means another process pruned first: everything up to the cutoff is gone
      // all the same, and the next batch must not try again.
      this.counters.pruned += pruned.removed;
      this.oldestKept = Math.max(this.oldestKept ?? 0, pruned.oldestKept);
    }
    const first = outcomes.find((o) => 'change' in o && o.change !== null);
    if (this.oldestKept === null && first !== undefined && 'change' in first) {
      this.oldestKept = first.change?.revision ?? null;
    }
    return outcomes;
  }
}

function hostFromRow(row: HostRow): HostRecord {
  return {
    name: row.name,
    driver: row.driver,
    connected: row.connected,
    lastSeenAt: row.last_seen_at,
    lastReconcileAt: row.last_reconcile_at,
    connectionError: row.connection_error,
    backlog: row.backlog,
  };
}

/** A URL fit for an error message: without its password. */
function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return 'the PostgreSQL database';
  }
}

function asStoreError(error: unknown, context: string): StoreError {
  if (error instanceof StoreError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new StoreError('io', `${context}: ${message}`, { cause: error });
}
