// A batch of writes as a few set-based statements instead of one statement per write: writes are
// split into rounds so that a uuid appears at most once per round (its first write in round 0,
// its second in round 1, ...), and each round is one INSERT for its creates and one UPDATE for its
// updates, fed as one JSON array. Rounds run in order, so writes to one uuid still see each other.
import type postgres from 'postgres';
import { INSTANCE_COLUMNS, INSTANCE_FIELDS, fieldValue } from './sqlite-rows.ts';
import type { InstanceField, InstanceRow } from './sqlite-rows.ts';
import type { InstanceWrite, NewTransition } from './types.ts';

/** A written row, or (written false) the row as it stands after a refused write. */
export type WriteRow = InstanceRow & { written: boolean };

/** What the statements read per write; `mask` has bit i set when INSTANCE_FIELDS[i] is written. */
type InputRow = Record<string, string | number | boolean | null>;

const COLUMNS = INSTANCE_FIELDS.map((f) => INSTANCE_COLUMNS[f]);

function columnType(field: InstanceField): string {
  return field === 'taskStartedAt' ? 'bigint' : 'text';
}

const INPUT = `jsonb_to_recordset($1::jsonb) AS w(
    ord integer, uuid text, expected integer, mask integer,
    ${INSTANCE_FIELDS.map((f) => `${INSTANCE_COLUMNS[f]} ${columnType(f)}`).join(', ')},
    t_from text, t_to text, t_vm_from text, t_vm_to text, t_cause text, t_detail text,
    t_out_of_band boolean, t_observed_at bigint)`;

const TRANSITIONS = `transition AS (
    INSERT INTO transitions (uuid, power_from, power_to, vm_state_from, vm_state_to, cause,
      detail, out_of_band, observed_at, recorded_at)
    SELECT w.uuid, w.t_from, w.t_to, w.t_vm_from, w.t_vm_to, w.t_cause, w.t_detail,
      w.t_out_of_band, w.t_observed_at, $2::bigint
    FROM written JOIN input w USING (ord)
    WHERE w.t_to IS NOT NULL
    ORDER BY ord)`;

// Refused writes come back with the row as it stands (all nulls when there is none).
const RESULT = `
  SELECT true AS written, * FROM written
  UNION ALL
  SELECT false, w.ord, i.* FROM input w LEFT JOIN instances i ON i.uuid = w.uuid
  WHERE NOT EXISTS (SELECT 1 FROM written WHERE written.ord = w.ord)`;

const CREATE_ROUND = `WITH input AS (SELECT * FROM ${INPUT}),
  inserted AS (
    INSERT INTO instances (uuid, ${COLUMNS.join(', ')}, version, created_at, updated_at)
    SELECT uuid, ${COLUMNS.join(', ')}, 1, $2::bigint, $2::bigint FROM input ORDER BY ord
    ON CONFLICT (uuid) DO NOTHING
    RETURNING *),
  written AS (SELECT w.ord, inserted.* FROM inserted JOIN input w USING (uuid)),
  ${TRANSITIONS}
  ${RESULT}`;

const UPDATE_ROUND = `WITH input AS (SELECT * FROM ${INPUT}),
  written AS (
    UPDATE instances i SET
      ${COLUMNS.map((c, bit) => `${c} = CASE WHEN w.mask & ${1 << bit} <> 0 THEN w.${c} ELSE i.${c} END`).join(',\n      ')},
      version = i.version + 1, updated_at = $2::bigint
    FROM input w
    WHERE i.uuid = w.uuid AND i.version = w.expected
    RETURNING w.ord, i.*),
  ${TRANSITIONS}
  ${RESULT}`;

type RoundRow = WriteRow & { ord: number };

/**
 * Applies `writes` in `tx` and returns, in their order, each one's row (undefined: an update of
 * an unknown uuid). Any database error fails the whole call; the caller isolates writes then.
 * `sent` is called once the last statement is sent, before its answer: a statement the caller
 * sends there shares that round trip.
 */
export async function applyInRounds(
  tx: postgres.ISql,
  writes: readonly InstanceWrite[],
  now: number,
  sent?: () => void,
): Promise<(WriteRow | undefined)[]> {
  const rounds: { creates: InputRow[]; updates: InputRow[] }[] = [];
  const seen = new Map<string, number>();
  writes.forEach((write, ord) => {
    const round = seen.get(write.uuid) ?? 0;
    seen.set(write.uuid, round + 1);
    rounds[round] ??= { creates: [], updates: [] };
    if (write.kind === 'create') rounds[round].creates.push(inputRow(ord, write));
    else if (write.kind === 'update') rounds[round].updates.push(inputRow(ord, write));
    else throw new TypeError(`unknown write kind ${String((write as { kind: unknown }).kind)}`);
  });

  const rows = new Array<WriteRow | undefined>(writes.length);
  for (const [index, { creates, updates }] of rounds.entries()) {
    const statements: Promise<RoundRow[]>[] = [];
    if (creates.length > 0) statements.push(run(tx, CREATE_ROUND, creates, now));
    if (updates.length > 0) statements.push(run(tx, UPDATE_ROUND, updates, now));
    if (index === rounds.length - 1) sent?.();
    for (const result of await Promise.all(statements)) {
      for (const { ord, ...row } of result) rows[ord] = row.uuid === null ? undefined : row;
    }
  }
  return rows;
}

function run(tx: postgres.ISql, text: string, input: InputRow[], now: number): Promise<RoundRow[]> {
  return tx.unsafe<RoundRow[]>(text, [input, now], { prepare: true });
}

function inputRow(ord: number, write: InstanceWrite): InputRow {
  const row: InputRow = { ord, uuid: write.uuid, expected: null, mask: 0 };
  const fields = write.kind === 'create' ? write.fields : write.patch;
  let mask = 0;
  INSTANCE_FIELDS.forEach((field, bit) => {
    // A create writes every field: one left out becomes NULL, which NOT NULL refuses.
    if (write.kind === 'create' || fields[field] !== undefined) mask |= 1 << bit;
    row[INSTANCE_COLUMNS[field]] = fieldValue(fields, field);
  });
  row.mask = mask;
  if (write.kind === 'update') row.expected = write.expectedVersion;
  if (write.transition !== undefined) Object.assign(row, transitionInput(write.transition));
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
