// A batch of writes as a few set-based statements, sent together without waiting for answers:
// writes are split into rounds so that a uuid appears at most once per round (its first write in
// round 0, its second in round 1, ...), and each round is one statement, fed as one JSON array,
// that inserts its creates and updates its updates. A batch of one round (the usual case) also
// numbers what it wrote from the revision counter, logs it and wakes other processes in that
// statement, so it needs no answer before COMMIT. Statements run in the order sent, so writes to
// one uuid still see each other.
import type postgres from 'postgres';
import { lockJournals, markJournals, repeatedInBatch } from './postgres-journal.ts';
import { NOTIFY_CHANGES_MAX, NOTIFY_PAYLOAD_MAX } from './postgres-notify.ts';
import { INSTANCE_COLUMNS, INSTANCE_FIELDS, RECORD_COLUMNS, fieldValue } from './sqlite-rows.ts';
import type { InstanceField, InstanceRow } from './sqlite-rows.ts';
import type { InstanceWrite, NewTransition } from './types.ts';

/** What became of one write, before COMMIT. */
export type BatchRow =
  /** Applied, with its revision (null: the batch did not number its writes). */
  | { readonly kind: 'written'; readonly row: InstanceRow; readonly revision: number | null }
  /** A journal entry already processed: not applied again. */
  | { readonly kind: 'duplicate'; readonly row: InstanceRow | null }
  /** Refused by its condition (version, or an existing uuid); null: no such instance. */
  | { readonly kind: 'refused'; readonly row: InstanceRow | null };

/** What the statements read per write; `mask` has bit i set when INSTANCE_FIELDS[i] is written. */
type InputRow = Record<string, string | number | boolean | null>;

/** A statement's answer: one row per write of its round. */
type RoundRow = InstanceRow & {
  ord: number;
  outcome: BatchRow['kind'];
  revision: number | null;
};

const COLUMNS = INSTANCE_FIELDS.map((f) => INSTANCE_COLUMNS[f]);

function columnType(field: InstanceField): string {
  return field === 'taskStartedAt' ? 'bigint' : 'text';
}

const INPUT = `jsonb_to_recordset($1::jsonb) AS w(
    ord integer, kind text, uuid text, expected integer, expected_host text, mask integer,
    ${INSTANCE_FIELDS.map((f) => `${INSTANCE_COLUMNS[f]} ${columnType(f)}`).join(', ')},
    t_from text, t_to text, t_vm_from text, t_vm_to text, t_cause text, t_detail text,
    t_out_of_band boolean, t_observed_at bigint,
    j_id text, j_seq bigint, j_repeated boolean)`;

// The change log's copy of a record, in the shape instanceFromRow gives.
const SNAPSHOT = `jsonb_build_object(${Object.entries(RECORD_COLUMNS)
  .map(([field, column]) => `'${field}', written.${column}`)
  .join(', ')})`;

const ROW_COLUMNS = Object.values(RECORD_COLUMNS);

/** A written row's place among the round's writes: its revision is the counter's before it plus this. */
const RANK = 'row_number() OVER (ORDER BY ord)';

/**
 * One round: its creates and its updates in one statement, so that the revision counter is read
 * after all of the round's rows. $3 says whether the statement numbers and logs what it wrote
 * (and notifies channel $4); when not, the caller does, before COMMIT.
 */
const ROUND = `WITH input AS (SELECT * FROM ${INPUT}),
  -- A journal entry at or below its journal's mark was processed before (postgres-journal.ts).
  fresh AS (
    SELECT * FROM input w
    WHERE w.j_id IS NULL OR (NOT w.j_repeated AND NOT EXISTS (
      SELECT 1 FROM journal_applied m WHERE m.journal_id = w.j_id AND m.last_seq >= w.j_seq))),
  inserted AS (
    INSERT INTO instances (uuid, ${COLUMNS.join(', ')}, version, created_at, updated_at)
    SELECT uuid, ${COLUMNS.join(', ')}, 1, $2::bigint, $2::bigint
    FROM fresh WHERE kind = 'create' ORDER BY ord
    ON CONFLICT (uuid) DO NOTHING
    RETURNING *),
  updated AS (
    UPDATE instances i SET
      ${COLUMNS.map((c, bit) => `${c} = CASE WHEN w.mask & ${1 << bit} <> 0 THEN w.${c} ELSE i.${c} END`).join(',\n      ')},
      version = i.version + 1, updated_at = $2::bigint
    FROM fresh w
    WHERE w.kind = 'update' AND i.uuid = w.uuid AND i.version = w.expected
      AND (w.expected_host IS NULL OR i.host = w.expected_host)
    RETURNING w.ord, i.*),
  written AS (
    SELECT w.ord, 'created' AS type, ${ROW_COLUMNS.map((c) => `inserted.${c}`).join(', ')}
    FROM inserted JOIN fresh w USING (uuid)
    UNION ALL
    SELECT ord, 'updated', ${ROW_COLUMNS.join(', ')} FROM updated),
  -- Read through written, the counter's row lock is taken after the round's own rows and held
  -- only to COMMIT: replicas apply batches side by side and queue only to number and commit.
  -- The NOTIFY carries the changes when they fit (postgres-notify.ts), else the last revision.
  counter AS (
    UPDATE revision_counter SET value = value + (SELECT count(*) FROM written)
    WHERE $3::boolean AND EXISTS (SELECT 1 FROM written)
    RETURNING value, pg_notify($4::text, (
      SELECT CASE WHEN octet_length(carried) <= ${NOTIFY_PAYLOAD_MAX} THEN carried
        ELSE revision_counter.value::text END
      FROM (
        SELECT jsonb_agg(jsonb_build_object('revision', revision_counter.value - n + rank,
          'type', type, 'instance', ${SNAPSHOT}, 'at', $2::bigint) ORDER BY rank)::text AS carried
        FROM (SELECT *, ${RANK} AS rank, count(*) OVER () AS n FROM written) written
        WHERE n <= ${NOTIFY_CHANGES_MAX}) payload))),
  numbered AS (
    SELECT ord, c.value - (SELECT count(*) FROM written) + ${RANK} AS revision
    FROM written CROSS JOIN counter c),
  logged AS (
    INSERT INTO changes (revision, uuid, type, instance, at)
    SELECT revision, uuid, type, ${SNAPSHOT}, $2::bigint FROM written JOIN numbered USING (ord)),
  transition AS (
    INSERT INTO transitions (uuid, power_from, power_to, vm_state_from, vm_state_to, cause,
      detail, out_of_band, observed_at, recorded_at)
    SELECT w.uuid, w.t_from, w.t_to, w.t_vm_from, w.t_vm_to, w.t_cause, w.t_detail,
      w.t_out_of_band, w.t_observed_at, $2::bigint
    FROM written JOIN input w USING (ord)
    WHERE w.t_to IS NOT NULL
    ORDER BY ord)
  -- Writes not applied come back with the row as it stands (all nulls when there is none).
  SELECT ord, 'written'::text AS outcome, n.revision,
    ${ROW_COLUMNS.map((c) => `written.${c}`).join(', ')}
  FROM written LEFT JOIN numbered n USING (ord)
  UNION ALL
  SELECT w.ord,
    CASE WHEN EXISTS (SELECT 1 FROM fresh f WHERE f.ord = w.ord) THEN 'refused'
      ELSE 'duplicate' END,
    NULL, ${ROW_COLUMNS.map((c) => `i.${c}`).join(', ')}
  FROM input w LEFT JOIN instances i ON i.uuid = w.uuid
  WHERE NOT EXISTS (SELECT 1 FROM written WHERE written.ord = w.ord)`;

/** What every statement of one batch shares. */
export interface BatchSettings {
  /** The batch's time: the records' updatedAt, the log's and the transitions' recordedAt. */
  readonly now: number;
  /** The channel to notify on commit (postgres-notify.ts). */
  readonly channel: string;
}

/** A batch ready to send: its statements' inputs, checked. */
export interface PreparedBatch {
  /** Whether its statements number and log what they write; when not, the caller does. */
  readonly numbers: boolean;
  /**
   * Sends the batch on `tx` (the journals' locks, the rounds, the marks), all at once, and
   * resolves to what became of each write, in their order. Any database error rejects the whole;
   * the caller isolates the writes then. Whatever `tx` is sent next runs after them, still in the
   * transaction.
   */
  send(tx: postgres.ISql): Promise<BatchRow[]>;
}

/**
 * Prepares `writes`; throws on a write no statement can carry. With `mayNumber`, a batch of one
 * round (no uuid written twice) also takes its revisions and logs its changes in its statement.
 * A batch of several rounds cannot: it would hold the counter's lock while its later rounds wait
 * for rows that another transaction, itself waiting for the counter, holds.
 */
export function prepareBatch(
  writes: readonly InstanceWrite[],
  { now, channel }: BatchSettings,
  mayNumber: boolean,
): PreparedBatch {
  const repeated = repeatedInBatch(writes);
  const rounds: InputRow[][] = [];
  const seen = new Map<string, number>();
  writes.forEach((write, ord) => {
    const round = seen.get(write.uuid) ?? 0;
    seen.set(write.uuid, round + 1);
    (rounds[round] ??= []).push(inputRow(ord, write, repeated[ord]!));
  });
  const numbers = mayNumber && rounds.length === 1;
  return {
    numbers,
    send(tx) {
      const locks = lockJournals(tx, writes);
      const statements = rounds.map((input) =>
        tx.unsafe<RoundRow[]>(ROUND, [input, now, numbers, channel], { prepare: true }).execute(),
      );
      const marks = markJournals(tx, writes, now);
      return Promise.all([locks, Promise.all(statements), marks]).then(([, answers]) => {
        const rows = new Array<BatchRow>(writes.length);
        for (const answer of answers) {
          for (const { ord, outcome, revision, ...row } of answer) {
            rows[ord] = batchRow(outcome, row, revision);
          }
        }
        return rows;
      });
    },
  };
}

function batchRow(
  outcome: RoundRow['outcome'],
  row: InstanceRow,
  revision: number | null,
): BatchRow {
  if (outcome === 'written') return { kind: outcome, row, revision };
  return { kind: outcome, row: row.uuid === null ? null : row };
}

function inputRow(ord: number, write: InstanceWrite, repeated: boolean): InputRow {
  if (write.kind !== 'create' && write.kind !== 'update') {
    throw new TypeError(`unknown write kind ${String((write as { kind: unknown }).kind)}`);
  }
  const row: InputRow = {
    ord,
    kind: write.kind,
    uuid: write.uuid,
    expected: null,
    expected_host: null,
    mask: 0,
  };
  const fields = write.kind === 'create' ? write.fields : write.patch;
  let mask = 0;
  INSTANCE_FIELDS.forEach((field, bit) => {
    // A create writes every field: one left out becomes NULL, which NOT NULL refuses.
    if (write.kind === 'create' || fields[field] !== undefined) mask |= 1 << bit;
    row[INSTANCE_COLUMNS[field]] = fieldValue(fields, field);
  });
  row.mask = mask;
  if (write.kind === 'update') {
    row.expected = write.expectedVersion;
    row.expected_host = write.expectedHost ?? null;
  }
  if (write.transition !== undefined) Object.assign(row, transitionInput(write.transition));
  if (write.journal !== undefined) {
    Object.assign(row, { j_id: write.journal.id, j_seq: write.journal.seq, j_repeated: repeated });
  }
  return row;
}

function transitionInput(t: NewTransition): InputRow {
  return {
    t_from: t.from,
    t_to: t.to,
    t_vm_from: t.vmStateFrom,
    t_vm_to: t.vmStateTo,
    t_cause: t.cause,
    t_detail: t.detail,
    t_out_of_band: t.outOfBand,
    t_observed_at: t.observedAt,
  };
}
