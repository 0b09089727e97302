// A separate process writing through the PostgreSQL store, for the commit-order test: creates its
// own instances, then commits `rounds` transactions of a few updates each as fast as it can, and
// prints the revisions it was given as one JSON line.
//
//   node --import tsx test/support/pg-writer.ts URL SCHEMA WRITER ROUNDS
import { openPostgresStore } from '../../src/store/postgres.ts';
import type { WriteResult } from '../../src/store/index.ts';
import { instanceFields } from './records.ts';

const [url, schema, writer, roundsText] = process.argv.slice(2);
if (url === undefined || schema === undefined || writer === undefined) {
  throw new Error('usage: pg-writer URL SCHEMA WRITER ROUNDS');
}
const rounds = Number.parseInt(roundsText ?? '100', 10);
const instances = 8;

const store = await openPostgresStore(url, { schema, maxConnections: 2 });
const revisions: number[] = [];
function keep(results: readonly WriteResult[]): void {
  for (const result of results) {
    if (!result.ok) throw new Error(`writer ${writer}: write refused (${result.reason})`);
    revisions.push(result.revision);
  }
}

const uuids = Array.from({ length: instances }, (_, i) => `${writer}-${i}`);
keep(
  await Promise.all(
    uuids.map((uuid) => store.write({ kind: 'create', uuid, fields: instanceFields() })),
  ),
);
const versions = uuids.map(() => 1);
for (let round = 0; round < rounds; round += 1) {
  // 1 to `instances` updates per transaction, so commits differ in size.
  const count = 1 + (round % instances);
  const writes = uuids.slice(0, count).map((uuid, i) =>
    store.write({
      kind: 'update',
      uuid,
      expectedVersion: versions[i]!,
      patch: { powerReason: `round ${round}` },
    }),
  );
  keep(await Promise.all(writes));
  for (let i = 0; i < count; i += 1) versions[i]! += 1;
}
await store.close();
process.stdout.write(`${JSON.stringify({ writer, revisions })}\n`);
