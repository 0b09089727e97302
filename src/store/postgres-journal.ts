// Agents' outage journals on PostgreSQL: the entries of a batch that a journal has already had
// are answered duplicate and left out, the others are applied, and each journal's high-water mark
// moves up, all in the caller's transaction. Each journal is locked first (a transaction-scoped
// advisory lock, which also covers a journal with no mark yet), so two batches of one journal, a
// resend racing its lost original say, never interleave.
import type postgres from 'postgres';
import { applyInRounds } from './postgres-batch.ts';
import type { WriteRow } from './postgres-batch.ts';
import type { InstanceRow } from './sqlite-rows.ts';
import type { InstanceWrite } from './types.ts';

/** An entry already processed: not applied again; the row as it stands (null when none). */
export interface DuplicateRow {
  readonly duplicate: InstanceRow | null;
}

export type JournaledRow = WriteRow | undefined | DuplicateRow;

export function isDuplicate(row: JournaledRow | { error: unknown }): row is DuplicateRow {
  return row !== undefined && 'duplicate' in row;
}

/** The advisory-lock space of journals (the first key of the two-key form). */
const JOURNAL_LOCKS = 0x6a726e6c;

/** applyInRounds, with journal entries processed once; `sent` as there. */
export async function applyJournaled(
  tx: postgres.ISql,
  writes: readonly InstanceWrite[],
  now: number,
  sent?: () => void,
): Promise<JournaledRow[]> {
  const ids = [...new Set(writes.flatMap((w) => (w.journal === undefined ? [] : [w.journal.id])))];
  if (ids.length === 0) return applyInRounds(tx, writes, now, sent);

  // Statements sent together run one after another on the server, each with its own snapshot,
  // so the marks are read once the locks are held, one round trip for both. The locks are taken
  // in one order everywhere, so that batches naming several journals cannot deadlock.
  const [, marks] = await Promise.all([
    tx`
      SELECT pg_advisory_xact_lock(${JOURNAL_LOCKS}::int, hashtext(id))
      FROM (SELECT DISTINCT jsonb_array_elements_text(${tx.json(ids)}::jsonb) AS id ORDER BY 1) j`,
    tx<{ journal_id: string; last_seq: number }[]>`
      SELECT journal_id, last_seq FROM journal_applied
      WHERE journal_id IN (SELECT jsonb_array_elements_text(${tx.json(ids)}::jsonb))
      FOR UPDATE`,
  ]);
  const last = new Map(marks.map((m) => [m.journal_id, m.last_seq]));
  const hosts = new Map<string, string>();
  const duplicate = writes.map((write) => {
    const tag = write.journal;
    if (tag === undefined) return false;
    const seen = last.get(tag.id);
    if (seen !== undefined && tag.seq <= seen) return true;
    last.set(tag.id, tag.seq);
    hosts.set(tag.id, tag.host);
    return false;
  });

  // The marks move up in the same round trip as the writes (they depend on nothing written).
  const records = [...hosts].map(([id, host]) => ({ id, host, seq: last.get(id)! }));
  const marked =
    records.length === 0
      ? null
      : tx`
          INSERT INTO journal_applied (journal_id, host, last_seq, updated_at)
          SELECT id, host, seq, ${now}::bigint
          FROM jsonb_to_recordset(${tx.json(records)}::jsonb) AS j(id text, host text, seq bigint)
          ON CONFLICT (journal_id) DO UPDATE SET
            last_seq = greatest(journal_applied.last_seq, excluded.last_seq),
            updated_at = excluded.updated_at`.execute();
  const fresh = writes.filter((_, i) => !duplicate[i]);
  if (fresh.length === 0) sent?.();
  const [applied] = await Promise.all([
    fresh.length === 0 ? [] : applyInRounds(tx, fresh, now, sent),
    marked,
  ]);
  // After the writes: a duplicate is answered with the row as it stands now.
  const dupUuids = [...new Set(writes.filter((_, i) => duplicate[i]).map((w) => w.uuid))];
  const current =
    dupUuids.length === 0
      ? []
      : await tx<InstanceRow[]>`
          SELECT * FROM instances
          WHERE uuid IN (SELECT jsonb_array_elements_text(${tx.json(dupUuids)}::jsonb))`;
  const currentByUuid = new Map(current.map((row) => [row.uuid, row]));

  let next = 0;
  return writes.map((write, i) =>
    duplicate[i]
      ? { duplicate: currentByUuid.get(write.uuid) ?? null }
      : (applied[next++] as WriteRow | undefined),
  );
}
