// One batch of writes as one PostgreSQL transaction: the writes (postgres-batch.ts), their
// revisions from the one-row counter, the change log, pruning and a NOTIFY. The counter's lock
// orders revisions by commit; it is taken after the batch's own rows and held only to COMMIT, so
// replicas apply their batches side by side and queue only to number, log and commit them.
import type postgres from 'postgres';
import { prepareBatch } from './postgres-batch.ts';
import { changesPayload } from './postgres-notify.ts';
import type { BatchRow, BatchSettings, PreparedBatch } from './postgres-batch.ts';
import { instanceFromRow } from './sqlite-rows.ts';
import type { ChangeRecord, InstanceWrite, WriteResult } from './types.ts';

/** What became of one write of a batch. */
export type Outcome =
  | { readonly result: WriteResult; readonly change: ChangeRecord | null }
  | { readonly error: unknown };

/** A batch committed: each write's outcome, and what pruning removed (null: none ran). */
export interface BatchDone {
  readonly outcomes: Outcome[];
  readonly pruned: { readonly removed: number; readonly oldestKept: number } | null;
}

/** An error of the writes (not of BEGIN or COMMIT): the batch is retried one write at a time. */
export class WriteFailure {
  constructor(readonly cause: unknown) {}
}

/**
 * A batch in one round trip, on a connection of its own: BEGIN, the batch, pruning when `keep`
 * is set (down to the latest `keep` revisions), COMMIT, all sent at once. Under load every round
 * trip waits to be scheduled on both ends, so this is what a commit costs. A batch that writes
 * one uuid twice takes a few more (commitInSteps). The writes' errors are thrown as a
 * WriteFailure.
 */
export async function commitPipelined(
  writer: postgres.Sql,
  writes: readonly InstanceWrite[],
  settings: BatchSettings,
  keep: number | null,
): Promise<BatchDone> {
  let batch: PreparedBatch;
  try {
    batch = prepareBatch(writes, settings, true);
  } catch (error) {
    throw new WriteFailure(error);
  }
  if (!batch.numbers) {
    return writer.begin((tx) => commitInSteps(tx, batch, writes, settings, keep));
  }
  const conn = await writer.reserve();
  try {
    const began = conn`BEGIN`.execute();
    const sent = batch.send(conn);
    const pruned = keep === null ? null : pruneLog(conn, keep);
    const committed = conn`COMMIT`.execute();
    const [begin, rows, prune, commit] = await Promise.allSettled([began, sent, pruned, committed]);
    if (begin.status === 'rejected') throw begin.reason;
    if (rows.status === 'rejected') throw new WriteFailure(rows.reason);
    if (prune.status === 'rejected') throw prune.reason;
    if (commit.status === 'rejected') throw commit.reason;
    if (commit.value.command !== 'COMMIT') {
      throw new Error(`the write transaction ended in ${commit.value.command}`);
    }
    return {
      outcomes: rows.value.map((row, i) => outcomeOf(row, writes[i]!, settings.now)),
      pruned: prune.value === null ? null : pruneDone(prune.value),
    };
  } catch (error) {
    // Harmless when COMMIT went through (a notice: no transaction in progress).
    await conn`ROLLBACK`.catch(() => {});
    throw error;
  } finally {
    conn.release();
  }
}

/** The retry of a failed batch, in `tx`: each write in its own savepoint, so only that write fails. */
export async function commitIsolated(
  tx: postgres.TransactionSql,
  writes: readonly InstanceWrite[],
  settings: BatchSettings,
  keep: number | null,
): Promise<BatchDone> {
  const rows: (BatchRow | { error: unknown })[] = [];
  for (const write of writes) {
    try {
      const batch = prepareBatch([write], settings, false);
      const [row] = await tx.savepoint((sp) => batch.send(sp));
      rows.push(row!);
    } catch (error) {
      rows.push({ error });
    }
  }
  return numberAndLog(tx, rows, writes, settings, keep);
}

/** A batch of several rounds: the writes, then their revisions and log once all are done. */
async function commitInSteps(
  tx: postgres.TransactionSql,
  batch: PreparedBatch,
  writes: readonly InstanceWrite[],
  settings: BatchSettings,
  keep: number | null,
): Promise<BatchDone> {
  let rows: BatchRow[];
  try {
    rows = await batch.send(tx);
  } catch (error) {
    throw new WriteFailure(error);
  }
  return numberAndLog(tx, rows, writes, settings, keep);
}

/**
 * Numbers the writes `rows` say were written, in batch order, under the counter's lock, and logs
 * them; then prunes. The lock comes after every row of the batch, never between them.
 */
async function numberAndLog(
  tx: postgres.TransactionSql,
  rows: readonly (BatchRow | { error: unknown })[],
  writes: readonly InstanceWrite[],
  { now, channel }: BatchSettings,
  keep: number | null,
): Promise<BatchDone> {
  if (!rows.some((row) => 'kind' in row && row.kind === 'written')) {
    return { outcomes: rows.map((row, i) => outcomeOf(row, writes[i]!, now)), pruned: null };
  }
  const [counter] = await tx<{ value: number }[]>`SELECT value FROM revision_counter FOR UPDATE`;
  let revision = counter?.value ?? 0;
  const numbered = rows.map((row) =>
    'kind' in row && row.kind === 'written' ? { ...row, revision: ++revision } : row,
  );
  const outcomes = numbered.map((row, i) => outcomeOf(row, writes[i]!, now));
  const changes = outcomes.flatMap((o) => ('change' in o && o.change !== null ? [o.change] : []));
  await Promise.all(logChanges(tx, changes, channel));
  // After the log, never beside it: a batch larger than what is kept must prune itself.
  const pruned = keep === null ? null : pruneDone(await pruneLog(tx, keep));
  return { outcomes, pruned };
}

function outcomeOf(row: BatchRow | { error: unknown }, write: InstanceWrite, now: number): Outcome {
  if ('error' in row) return { error: row.error };
  const current = row.row === null ? null : instanceFromRow(row.row);
  switch (row.kind) {
    case 'duplicate':
      return { result: { ok: false, reason: 'duplicate', current }, change: null };
    case 'refused': {
      const reason =
        write.kind === 'create' ? 'exists' : current === null ? 'not-found' : 'conflict';
      return { result: { ok: false, reason, current }, change: null };
    }
    case 'written': {
      if (current === null || row.revision === null)
        throw new Error('a written row has no revision');
      const type = write.kind === 'create' ? 'created' : 'updated';
      const change: ChangeRecord = { revision: row.revision, type, instance: current, at: now };
      return { result: { ok: true, instance: current, revision: row.revision }, change };
    }
  }
}

/** The statements that log `changes` (none when empty): the change rows, the counter, the wake-up. */
function logChanges(
  tx: postgres.ISql,
  changes: readonly ChangeRecord[],
  channel: string,
): postgres.PendingQuery<postgres.Row[]>[] {
  if (changes.length === 0) return [];
  const latest = changes[changes.length - 1]!.revision;
  const records = changes.map((c) => ({
    revision: c.revision,
    uuid: c.instance.uuid,
    type: c.type,
    instance: c.instance,
    at: c.at,
  }));
  return [
    tx`
      INSERT INTO changes (revision, uuid, type, instance, at)
      SELECT revision, uuid, type, instance, at
      FROM jsonb_to_recordset(${tx.json(records)}::jsonb)
        AS c(revision bigint, uuid text, type text, instance jsonb, at bigint)`,
    tx`UPDATE revision_counter SET value = ${latest}::bigint`,
    tx`SELECT pg_notify(${channel}::text, ${changesPayload(changes)}::text)`,
  ];
}

interface Pruned {
  readonly cutoff: number;
  readonly removed: number;
}

/** Sends the statement that deletes the log's rows older than the latest `keep` revisions. */
function pruneLog(tx: postgres.ISql, keep: number): postgres.PendingQuery<Pruned[]> {
  return tx<Pruned[]>`
    WITH cut AS (SELECT value - ${keep}::bigint AS cutoff FROM revision_counter),
      gone AS (DELETE FROM changes WHERE revision <= (SELECT cutoff FROM cut) RETURNING 1)
    SELECT (SELECT cutoff FROM cut) AS cutoff, (SELECT count(*) FROM gone)::int AS removed
  `.execute();
}

function pruneDone([pruned]: readonly Pruned[]): BatchDone['pruned'] {
  return pruned === undefined ? null : { removed: pruned.removed, oldestKept: pruned.cutoff + 1 };
}
