// Agents' outage journals on PostgreSQL: an entry a journal has already had is answered duplicate
// and left out, the others are applied, and each journal's high-water mark moves up, all in the
// caller's transaction. Each journal is locked first (a transaction-scoped advisory lock, which
// also covers a journal with no mark yet), so two batches of one journal, a resend racing its lost
// original say, never interleave. The write statements compare each entry with the mark
// (postgres-batch.ts); statements sent together run one after another on the server, each with
// its own snapshot, so they read the marks once the locks are held.
import type postgres from 'postgres';
import type { InstanceWrite } from './types.ts';

/** The advisory-lock space of journals (the first key of the two-key form). */
const JOURNAL_LOCKS = 0x6a726e6c;

/**
 * Sends the statement that locks the journals `writes` name (null when none), in one order
 * everywhere, so that batches naming several journals cannot deadlock.
 */
export function lockJournals(
  tx: postgres.ISql,
  writes: readonly InstanceWrite[],
): postgres.PendingQuery<postgres.Row[]> | null {
  const ids = [...new Set(writes.flatMap((w) => (w.journal === undefined ? [] : [w.journal.id])))];
  if (ids.length === 0) return null;
  return tx`
    SELECT pg_advisory_xact_lock(${JOURNAL_LOCKS}::int, hashtext(id))
    FROM (SELECT DISTINCT jsonb_array_elements_text(${tx.json(ids)}::jsonb) AS id ORDER BY 1) j
  `.execute();
}

/**
 * For each write, whether an earlier entry of the same batch already carried its journal's seq
 * or a later one (a resend inside one request). The database's mark answers for earlier batches;
 * an entry at or below an earlier entry of its batch is at or below the mark that entry makes.
 */
export function repeatedInBatch(writes: readonly InstanceWrite[]): boolean[] {
  const highest = new Map<string, number>();
  return writes.map(({ journal }) => {
    if (journal === undefined) return false;
    const seen = highest.get(journal.id);
    if (seen !== undefined && journal.seq <= seen) return true;
    highest.set(journal.id, journal.seq);
    return false;
  });
}

/**
 * Sends the statement that moves each journal's mark up to its highest seq in `writes` (null when
 * none): refused and duplicate entries count as processed too. Sent after the writes, which must
 * still see the marks as they were.
 */
export function markJournals(
  tx: postgres.ISql,
  writes: readonly InstanceWrite[],
  now: number,
): postgres.PendingQuery<postgres.Row[]> | null {
  const marks = new Map<string, { id: string; host: string; seq: number }>();
  for (const { journal } of writes) {
    if (journal === undefined) continue;
    const mark = marks.get(journal.id);
    if (mark === undefined || journal.seq > mark.seq) {
      marks.set(journal.id, { id: journal.id, host: journal.host, seq: journal.seq });
    }
  }
  if (marks.size === 0) return null;
  return tx`
    INSERT INTO journal_applied (journal_id, host, last_seq, updated_at)
    SELECT id, host, seq, ${now}::bigint
    FROM jsonb_to_recordset(${tx.json([...marks.values()])}::jsonb)
      AS j(id text, host text, seq bigint)
    ON CONFLICT (journal_id) DO UPDATE SET
      last_seq = greatest(journal_applied.last_seq, excluded.last_seq),
      updated_at = excluded.updated_at
  `.execute();
}
