// One batch of writes as one PostgreSQL transaction: the writes (postgres-journal.ts,
// postgres-batch.ts), then their revisions from the one-row counter, the change log, pruning and
// a NOTIFY. The counter's lock orders revisions by commit; it is taken after the batch's own rows
// and held only to COMMIT, so replicas apply their batches side by side and queue only to number,
// log and commit them.
import type postgres from 'postgres';
import { applyJournaled, isDuplicate } from './postgres-journal.ts';
import type { JournaledRow } from './postgres-journal.ts';
import { instanceFromRow } from './sqlite-rows.ts';
import type { ChangeRecord, InstanceRecord, InstanceWrite, WriteResult } from './types.ts';

/** The channel every writing transaction notifies on commit, with its last revision. */
export const CHANGES_CHANNEL = 'hvsync_changes';

/** What became of one write of a batch. */
export type Outcome =
  | { readonly result: WriteResult; readonly change: ChangeRecord | null }
  | { readonly error: unknown };

/** A batch committed: each write's outcome, and what pruning removed (null: none was due). */
export interface BatchDone {
  readonly outcomes: Outcome[];
  readonly pruned: { readonly removed: number; readonly oldestKept: number } | null;
}

/** Marks an error thrown by one write (as opposed to BEGIN or COMMIT) so the batch can isolate it. */
export class WriteFailure {
  constructor(readonly cause: unknown) {}
}

/** The revision up to which the log is pruned once `changes` are in it, or null. */
export type PruneCutoff = (changes: readonly ChangeRecord[]) => number | null;

/**
 * A batch in three round trips on a connection of its own, sending together what needs no
 * other's answer: BEGIN with the journals' locks and marks; the writes with the marks' move and
 * the revision lock; the change log with COMMIT. A transaction through `begin()` adds a round
 * trip for BEGIN and one for COMMIT, and under load every round trip waits to be scheduled on
 * both ends. Statements sent together still run in order, so the revision lock is taken after the
 * batch's rows. A write's error is thrown as a WriteFailure.
 */
export async function commitPipelined(
  writer: postgres.Sql,
  writes: readonly InstanceWrite[],
  now: number,
  cutoffFor: PruneCutoff,
): Promise<BatchDone> {
  const conn = await writer.reserve();
  try {
    const began = conn`BEGIN`.execute();
    began.catch(() => {});
    const lock: { counter?: Promise<{ value: number }[]> } = {};
    let rows: JournaledRow[];
    try {
      rows = await applyJournaled(conn, writes, now, () => {
        lock.counter = conn<{ value: number }[]>`
          SELECT value FROM revision_counter FOR UPDATE`.execute();
        lock.counter.catch(() => {});
      });
    } catch (error) {
      await began;
      throw new WriteFailure(error);
    }
    await began;
    // applyJournaled calls `sent` for every batch it is given (never an empty one).
    if (lock.counter === undefined) throw new Error('the revision lock was never asked for');
    const [counter] = await lock.counter;
    const { outcomes, changes } = numbered(
      rows.map((row, i) => appliedOutcome(row, writes[i]!)),
      counter?.value ?? 0,
      now,
    );
    const cutoff = cutoffFor(changes);
    // In this order on the server: the log, then pruning (which must see the log's new rows: a
    // batch larger than what is kept prunes itself), then COMMIT.
    const logged = logChanges(conn, changes);
    const answers = await Promise.all([
      ...logged,
      cutoff === null ? null : conn`DELETE FROM changes WHERE revision <= ${cutoff}::bigint`,
      conn`COMMIT`,
    ]);
    const deleted = answers[logged.length] ?? null;
    const done = answers[logged.length + 1];
    if (done?.command !== 'COMMIT') {
      throw new Error(`the write transaction ended in ${done?.command ?? 'nothing'}`);
    }
    return { outcomes, pruned: pruneDone(cutoff, deleted) };
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
  now: number,
  cutoffFor: PruneCutoff,
): Promise<BatchDone> {
  const rows: (JournaledRow | { error: unknown })[] = [];
  for (const write of writes) {
    try {
      const [row] = await tx.savepoint((sp) => applyJournaled(sp, [write], now));
      rows.push(row);
    } catch (error) {
      rows.push({ error });
    }
  }
  const applied = rows.map((row, i) => appliedOutcome(row, writes[i]!));
  if (!applied.some(isWritten)) {
    return { outcomes: numbered(applied, 0, now).outcomes, pruned: null };
  }
  const [counter] = await tx<{ value: number }[]>`SELECT value FROM revision_counter FOR UPDATE`;
  const { outcomes, changes } = numbered(applied, counter?.value ?? 0, now);
  await Promise.all(logChanges(tx, changes));
  // After the insert, never beside it: a batch larger than what is kept must prune itself.
  const cutoff = cutoffFor(changes);
  const deleted =
    cutoff === null ? null : await tx`DELETE FROM changes WHERE revision <= ${cutoff}::bigint`;
  return { outcomes, pruned: pruneDone(cutoff, deleted) };
}

/** A write the batch applied, not numbered yet: it gets its revision under the counter's lock. */
interface Written {
  readonly written: { readonly instance: InstanceRecord; readonly type: ChangeRecord['type'] };
}

function isWritten(outcome: Outcome | Written): outcome is Written {
  return 'written' in outcome;
}

function appliedOutcome(
  row: JournaledRow | { error: unknown },
  write: InstanceWrite,
): Outcome | Written {
  if (row !== undefined && 'error' in row) return { error: row.error };
  if (isDuplicate(row)) {
    const current = row.duplicate === null ? null : instanceFromRow(row.duplicate);
    return { result: { ok: false, reason: 'duplicate', current }, change: null };
  }
  if (row === undefined || !row.written) {
    const current = row === undefined ? null : instanceFromRow(row);
    const reason = write.kind === 'create' ? 'exists' : current === null ? 'not-found' : 'conflict';
    return { result: { ok: false, reason, current }, change: null };
  }
  return {
    written: {
      instance: instanceFromRow(row),
      type: write.kind === 'create' ? 'created' : 'updated',
    },
  };
}

/** Numbers the applied writes from `base` on, in batch order: their results and log records. */
function numbered(
  applied: readonly (Outcome | Written)[],
  base: number,
  now: number,
): { outcomes: Outcome[]; changes: ChangeRecord[] } {
  let revision = base;
  const changes: ChangeRecord[] = [];
  const outcomes = applied.map((a): Outcome => {
    if (!isWritten(a)) return a;
    revision += 1;
    const { instance, type } = a.written;
    const change: ChangeRecord = { revision, type, instance, at: now };
    changes.push(change);
    return { result: { ok: true, instance, revision }, change };
  });
  return { outcomes, changes };
}

/** The statements that log `changes` (none when empty): the change rows, the counter, the wake-up. */
function logChanges(
  tx: postgres.ISql,
  changes: readonly ChangeRecord[],
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
    tx`SELECT pg_notify(${CHANGES_CHANNEL}::text, ${String(latest)}::text)`,
  ];
}

function pruneDone(
  cutoff: number | null,
  deleted: { readonly count: number } | null,
): BatchDone['pruned'] {
  return cutoff === null || deleted === null
    ? null
    : { removed: deleted.count, oldestKept: cutoff + 1 };
}
