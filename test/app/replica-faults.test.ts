// A replica killed while many watchers are attached and another process keeps committing: each
// watcher resumes on the surviving replica from the last revision it had, and ends up having seen
// every revision exactly once, in order, with the records a fresh listing shows.
import { setMaxListeners } from 'node:events';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { HvsyncClient } from '../../src/cli/client.ts';
import type { ApiInstance } from '../../src/server/index.ts';
import { openPostgresStore, type PostgresStore, type WriteResult } from '../../src/store/index.ts';
import { describePostgres } from '../support/postgres.ts';
import { startServerProcess, type ServerProcess } from '../support/server-process.ts';
import { instanceFields } from '../support/records.ts';

const WATCHERS = 20;
const INSTANCES = 10;
/** The powerReason of the writer's last change: a watcher that sees it has seen everything. */
const LAST = 'the last change';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function revisionOf(result: WriteResult): number {
  if (!result.ok) throw new Error(`write refused: ${result.reason}`);
  return result.revision;
}

/** What one watcher saw, and how often it had to move to another replica. */
interface Followed {
  readonly revisions: number[];
  readonly records: Map<string, ApiInstance>;
  resumes: number;
}

/** The fields a listing and a watch event must agree on. */
function comparable(
  instance: ApiInstance,
): Pick<ApiInstance, 'uuid' | 'version' | 'powerReason' | 'powerState' | 'updatedAt'> {
  return {
    uuid: instance.uuid,
    version: instance.version,
    powerReason: instance.powerReason,
    powerState: instance.powerState,
    updatedAt: instance.updatedAt,
  };
}

describePostgres('a replica killed under watchers', (database) => {
  let store: PostgresStore;
  let replicaA: ServerProcess;
  let replicaB: ServerProcess;
  let clientA: HvsyncClient;
  let clientB: HvsyncClient;

  before(async () => {
    replicaA = startServerProcess(['--db', database.url, '--listen', '127.0.0.1:0']);
    replicaB = startServerProcess(['--db', database.url, '--listen', '127.0.0.1:0']);
    clientA = new HvsyncClient({ server: await replicaA.started() });
    clientB = new HvsyncClient({ server: await replicaB.started() });
    store = await openPostgresStore(database.url);
  });
  after(async () => {
    replicaA.child.kill('SIGKILL');
    await Promise.all([replicaA.exit(), replicaB.stop()]);
    await store?.close();
  });

  test('every watcher resumes on the other replica with no gap and no duplicate', async () => {
    const uuids = Array.from(
      { length: INSTANCES },
      (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    );
    let start = 0;
    for (const uuid of uuids) {
      start = revisionOf(await store.write({ kind: 'create', uuid, fields: instanceFields() }));
    }
    const listed = (await clientB.listInstances({ limit: 1000 })).instances;
    assert.equal(listed.length, INSTANCES);

    // Each watcher follows replica A from `start`, then B from its last revision once A is gone.
    const abandon = AbortSignal.timeout(45_000);
    // Every watcher's stream listens on it.
    setMaxListeners(WATCHERS * 2, abandon);
    const follow = async (): Promise<Followed> => {
      const followed: Followed = {
        revisions: [],
        records: new Map(listed.map((instance) => [instance.uuid, instance])),
        resumes: 0,
      };
      let client = clientA;
      let since = start;
      for (;;) {
        try {
          const stream = await client.watch({ since, signal: abandon });
          for await (const message of stream) {
            if (message.kind === 'end') {
              assert.equal(message.error.lastRevision, since, 'resume from the last revision seen');
              break;
            }
            const { revision, instance } = message.change;
            followed.revisions.push(revision);
            followed.records.set(instance.uuid, instance);
            since = revision;
            if (instance.powerReason === LAST) {
              stream.close();
              return followed;
            }
          }
        } catch (error) {
          if (abandon.aborted) throw error;
        }
        // The stream ended or its replica went away: carry on from the same revision on B.
        client = clientB;
        followed.resumes += 1;
        if (abandon.aborted) throw new Error(`watcher gave up at revision ${since}`);
        await sleep(50);
      }
    };
    const watchers = Array.from({ length: WATCHERS }, () => follow());

    // A steady stream of changes from this process while replica A dies under the watchers.
    const committed: number[] = [];
    const versions = uuids.map(() => 1);
    let stop = false;
    const writer = (async () => {
      for (let round = 0; !stop; round += 1) {
        const i = round % INSTANCES;
        const patch = { powerReason: `change ${round}` };
        committed.push(
          revisionOf(
            await store.write({
              kind: 'update',
              uuid: uuids[i]!,
              expectedVersion: versions[i]!,
              patch,
            }),
          ),
        );
        versions[i]! += 1;
        await sleep(3);
      }
      const patch = { powerReason: LAST };
      committed.push(
        revisionOf(
          await store.write({
            kind: 'update',
            uuid: uuids[0]!,
            expectedVersion: versions[0]!,
            patch,
          }),
        ),
      );
    })();
    await sleep(1_500);
    const committedBeforeKill = committed.length;
    replicaA.child.kill('SIGKILL');
    await replicaA.exit();
    await sleep(1_500);
    stop = true;
    await writer;

    const results = await Promise.all(watchers);
    const fresh = (await clientB.listInstances({ limit: 1000 })).instances;
    assert.ok(committedBeforeKill > 0, 'changes were committed before the kill');
    assert.ok(committed.length > committedBeforeKill, 'changes were committed after the kill');
    for (const [index, followed] of results.entries()) {
      assert.ok(followed.resumes >= 1, `watcher ${index} had to resume`);
      assert.deepEqual(
        followed.revisions,
        committed,
        `watcher ${index}: every revision once, in order`,
      );
      assert.deepEqual(
        [...followed.records.values()].map(comparable).sort(byUuid),
        fresh.map(comparable).sort(byUuid),
        `watcher ${index}: what it saw adds up to a fresh listing`,
      );
    }
  });
});

function byUuid(a: { uuid: string }, b: { uuid: string }): number {
  return a.uuid.localeCompare(b.uuid);
}
