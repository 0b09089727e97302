// `hvsync server` replicas on one PostgreSQL database, as a user runs them: a third process's
// commits (standing in for an agent) reach every replica's watch stream, every revision in order;
// a watcher whose replica is killed resumes on another from the revision it had, with no gap.
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientError, HvsyncClient, type WatchSubscription } from '../../src/cli/client.ts';
import { openPostgresStore, type PostgresStore, type WriteResult } from '../../src/store/index.ts';
import { describePostgres } from '../support/postgres.ts';
import { startServerProcess, type ServerProcess } from '../support/server-process.ts';
import { instanceFields } from '../support/records.ts';

/** Ends a stream that stops delivering, so a lost change fails the test instead of hanging it. */
const giveUp = (): AbortSignal => AbortSignal.timeout(20_000);

function revisionOf(result: WriteResult): number {
  if (!result.ok) throw new Error(`write refused: ${result.reason}`);
  return result.revision;
}

/** Reads the stream until it has delivered `count` changes; their revisions, in stream order. */
async function take(stream: WatchSubscription, count: number): Promise<number[]> {
  const revisions: number[] = [];
  if (count === 0) return revisions;
  for await (const message of stream) {
    if (message.kind === 'end') throw new Error(`stream ended: ${JSON.stringify(message.error)}`);
    revisions.push(message.change.revision);
    if (revisions.length === count) break;
  }
  return revisions;
}

/** The unlabelled samples of a replica's /metrics, by name. */
async function metrics(client: HvsyncClient): Promise<Map<string, number>> {
  const samples = new Map<string, number>();
  for (const line of (await client.metricsText()).split('\n')) {
    const match = /^([a-z_]+) (\S+)$/.exec(line);
    if (match) samples.set(match[1]!, Number(match[2]));
  }
  return samples;
}

describePostgres('hvsync server replicas on one database', (database) => {
  let store: PostgresStore;
  let replicaA: ServerProcess;
  let replicaB: ServerProcess;
  let clientA: HvsyncClient;
  let clientB: HvsyncClient;
  const versions = new Map<string, number>();
  const uuids = new Map<string, string>();
  /** The instance's UUID by a readable name, made up on first use. */
  const uuidOf = (name: string): string => {
    if (!uuids.has(name)) uuids.set(name, randomUUID());
    return uuids.get(name)!;
  };

  /** Commits `count` changes through the test's own connection; their revisions. */
  async function commit(count: number, prefix: string): Promise<number[]> {
    const revisions: number[] = [];
    for (let i = 0; i < count; i += 1) {
      const uuid = uuidOf(`${prefix}-${i % 5}`);
      const version = versions.get(uuid);
      const result =
        version === undefined
          ? await store.write({ kind: 'create', uuid, fields: instanceFields() })
          : await store.write({
              kind: 'update',
              uuid,
              expectedVersion: version,
              patch: { powerReason: `change ${i}` },
            });
      versions.set(uuid, (version ?? 0) + 1);
      revisions.push(revisionOf(result));
    }
    return revisions;
  }

  before(async () => {
    // Started together: the migration lock keeps their first start on an empty database safe.
    replicaA = startServerProcess(['--db', database.url, '--listen', '127.0.0.1:0']);
    replicaB = startServerProcess(['--db', database.url, '--listen', '127.0.0.1:0']);
    clientA = new HvsyncClient({ server: await replicaA.started() });
    clientB = new HvsyncClient({ server: await replicaB.started() });
    store = await openPostgresStore(database.url);
  });
  after(async () => {
    await Promise.all([replicaA.stop(), replicaB.stop()]);
    await store?.close();
  });

  test('every replica streams every revision committed by another process, in order', async () => {
    const onA = await clientA.watch({ signal: giveUp() });
    const onB = await clientB.watch({ signal: giveUp() });
    const committed = await commit(40, 'fan-out');
    const [seenA, seenB] = await Promise.all([take(onA, 40), take(onB, 40)]);
    onA.close();
    onB.close();
    assert.deepEqual(seenA, committed);
    assert.deepEqual(seenB, committed);
    for (let i = 1; i < committed.length; i += 1) {
      assert.equal(committed[i], committed[i - 1]! + 1, 'the writer is alone: no gap expected');
    }
  });

  test('an action on a replica with no agent is refused as unavailable', async () => {
    await commit(1, 'action');
    await assert.rejects(clientB.act(uuidOf('action-0'), 'stop'), (error: unknown) => {
      assert.ok(error instanceof ClientError);
      assert.equal(error.status, 503);
      assert.equal(error.apiError, 'unavailable');
      assert.match(error.message, /no agent has reported for host host-a/);
      return true;
    });
  });

  test("a replica's /metrics shows how long its writes queued and committed", async () => {
    const before = await metrics(clientB);
    const writes = [1, 2, 3].map((i) => ({
      kind: 'create' as const,
      uuid: uuidOf(`metrics-${i}`),
      fields: instanceFields({ host: 'host-m' }),
    }));
    const { results } = await clientB.agentWrites('host-m', { writes });
    assert.ok(results.every((result) => result.ok));
    const after = await metrics(clientB);
    const grew = (name: string): number => (after.get(name) ?? 0) - (before.get(name) ?? 0);
    assert.equal(grew('hvsync_store_write_queue_seconds_count'), 3, 'one per write');
    assert.equal(grew('hvsync_store_commit_writes_count'), 1, 'handed over together');
    assert.equal(grew('hvsync_store_commit_writes_sum'), 3);
    assert.equal(grew('hvsync_store_commit_seconds_count'), 1);
    assert.ok(grew('hvsync_store_commit_seconds_sum') > 0);
  });

  test('a watcher resumes on another replica from its last revision after SIGKILL', async () => {
    const watcher = await clientA.watch({ signal: giveUp() });
    const before = await commit(10, 'resume');
    const seenOnA = await take(watcher, 10);
    assert.deepEqual(seenOnA, before);
    replicaA.child.kill('SIGKILL');
    await replicaA.exit();
    // Committed while the watcher has no replica: it must not lose them.
    const during = await commit(10, 'resume');
    const resumed = await clientB.watch({ since: seenOnA[seenOnA.length - 1]!, signal: giveUp() });
    const afterwards = await commit(5, 'resume');
    const seenOnB = await take(resumed, 15);
    resumed.close();
    assert.deepEqual(seenOnB, [...during, ...afterwards]);
  });
});

test('an SQLite --db is refused: replicas cannot share a file', async () => {
  const refused = startServerProcess(['--db', './hvsync.db', '--listen', '127.0.0.1:0']);
  assert.equal(await refused.exit(), 1);
  assert.match(refused.output(), /--db must be a postgres:\/\/ URL for hvsync server/);
  assert.doesNotMatch(refused.output(), /serving/);
});

test('the server checks its options as the all-in-one does', async () => {
  for (const [args, message] of [
    [[], /--db \(or HVSYNC_DB\) is required/],
    [['--token', ''], /--token \(or HVSYNC_TOKEN\) is empty/],
    [['--listen', '0.0.0.0:0'], /refusing to listen on 0\.0\.0\.0:0 without a token/],
    [['--host-timeout', '0'], /--host-timeout must be a number > 0, got "0"/],
    [['--host-timeout', 'soon'], /--host-timeout must be a number > 0, got "soon"/],
  ] as const) {
    const db = args.length === 0 ? [] : ['--db', 'postgres://127.0.0.1:1/never-opened'];
    const refused = startServerProcess([...db, ...args]);
    assert.equal(await refused.exit(), 1, refused.output());
    assert.match(refused.output(), message);
    assert.doesNotMatch(refused.output(), /serving|cannot open/);
  }
});
