// The behaviour every Store must have, run against each implementation on a real database:
// test/store/sqlite.test.ts and test/store/postgres.test.ts call storeContract with their own.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { StoreError } from '../../src/store/index.ts';
import type {
  AddCredentialResult,
  ChangeRecord,
  CommitTiming,
  InstanceFields,
  InstanceWrite,
  NewTransition,
  Store,
  StoreOptions,
  StoreStats,
  WriteResult,
} from '../../src/store/index.ts';
import { instanceFields } from '../support/records.ts';

export interface ContractStore extends Store {
  readonly stats: StoreStats;
}

export interface StoreUnderTest {
  /** A new, empty place for a store (a file, a schema) that `open` understands. */
  freshLocation(): Promise<string>;
  /** Opens (creating and migrating if needed) the store at `location`. */
  open(location: string, options?: StoreOptions): Promise<ContractStore>;
}

export function uuidOf(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

export function create(uuid: string, overrides: Partial<InstanceFields> = {}): InstanceWrite {
  return { kind: 'create', uuid, fields: instanceFields(overrides) };
}

export function update(
  uuid: string,
  expectedVersion: number,
  patch: Partial<InstanceFields>,
  transition?: NewTransition,
): InstanceWrite {
  return transition === undefined
    ? { kind: 'update', uuid, expectedVersion, patch }
    : { kind: 'update', uuid, expectedVersion, patch, transition };
}

export function ok(result: WriteResult): Extract<WriteResult, { ok: true }> {
  assert.equal(result.ok, true, `write refused: ${JSON.stringify(result)}`);
  return result as Extract<WriteResult, { ok: true }>;
}

function ok2(result: AddCredentialResult): void {
  assert.equal(result.ok, true, `credential refused: ${JSON.stringify(result)}`);
}

export async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof StoreError, `expected StoreError, got ${String(error)}`);
    assert.equal(error.code, code);
    return true;
  });
}

function stopTransition(observedAt: number, detail = 'shutdown'): NewTransition {
  return {
    from: 'running',
    to: 'shutoff',
    vmStateFrom: 'active',
    vmStateTo: 'stopped',
    cause: 'event',
    detail,
    outOfBand: true,
    observedAt,
  };
}

const fields = instanceFields;

export function storeContract(name: string, target: StoreUnderTest): void {
  async function fresh(options: StoreOptions = {}): Promise<ContractStore> {
    return target.open(await target.freshLocation(), options);
  }

  describe(`${name} writes`, () => {
    test('create, get and a conditional update', async () => {
      let clock = 1_000;
      const store = await fresh({ now: () => clock });
      const id = uuidOf(1);

      const created = ok(await store.write(create(id, { name: 'web-1' })));
      assert.equal(created.instance.version, 1);
      assert.equal(created.instance.createdAt, 1_000);
      assert.equal(created.instance.updatedAt, 1_000);
      assert.deepEqual(await store.getInstance(id), created.instance);

      clock = 2_000;
      const updated = ok(
        await store.write(update(id, 1, { powerState: 'shutoff', powerReason: 'shutdown' })),
      );
      assert.equal(updated.instance.version, 2);
      assert.equal(updated.instance.powerState, 'shutoff');
      assert.equal(updated.instance.powerReason, 'shutdown');
      assert.equal(updated.instance.name, 'web-1', 'fields left out of the patch are kept');
      assert.equal(updated.instance.createdAt, 1_000);
      assert.equal(updated.instance.updatedAt, 2_000);
      assert.ok(updated.revision > created.revision);
      assert.deepEqual(await store.getInstance(id), updated.instance);
      assert.equal(await store.getInstance(uuidOf(999)), null);
      await store.close();
    });

    test('a patch can set nullable fields to null and back', async () => {
      const store = await fresh();
      const id = uuidOf(1);
      await store.write(create(id));
      const busy = ok(
        await store.write(
          update(id, 1, { taskState: 'powering-off', taskStartedAt: 5, policy: 'observe' }),
        ),
      );
      assert.equal(busy.instance.taskState, 'powering-off');
      assert.equal(busy.instance.taskStartedAt, 5);
      assert.equal(busy.instance.policy, 'observe');
      const idle = ok(
        await store.write(
          update(id, 2, { taskState: null, taskStartedAt: null, taskError: 'timed out' }),
        ),
      );
      assert.equal(idle.instance.taskState, null);
      assert.equal(idle.instance.taskStartedAt, null);
      assert.equal(idle.instance.taskError, 'timed out');
      assert.equal(idle.instance.policy, 'observe');
      await store.close();
    });

    test('a stale version conflicts and reports the current record', async () => {
      const store = await fresh();
      const id = uuidOf(1);
      await store.write(create(id));
      ok(await store.write(update(id, 1, { powerState: 'paused' })));
      const stale = await store.write(update(id, 1, { powerState: 'shutoff' }));
      assert.equal(stale.ok, false);
      assert.ok(!stale.ok);
      assert.equal(stale.reason, 'conflict');
      assert.equal(stale.current?.version, 2);
      assert.equal(stale.current?.powerState, 'paused');
      assert.equal((await store.getInstance(id))?.powerState, 'paused');
      await store.close();
    });

    test('an update that expects the record on another host conflicts, alone or in a batch', async () => {
      const store = await fresh();
      const id = uuidOf(1);
      await store.write(create(id, { host: 'host-a' }));
      const on = (
        host: string,
        version: number,
        patch: Partial<InstanceFields>,
      ): InstanceWrite => ({
        kind: 'update',
        uuid: id,
        expectedVersion: version,
        patch,
        expectedHost: host,
      });
      const refused = await store.write(on('host-b', 1, { powerState: 'paused' }));
      assert.ok(!refused.ok);
      assert.equal(refused.reason, 'conflict');
      assert.equal(refused.current?.host, 'host-a');
      assert.equal(refused.current?.version, 1);
      // In one transaction: a move to host-b, then a write that expects host-a.
      const [moved, late] = await Promise.all([
        store.write(on('host-a', 1, { host: 'host-b' })),
        store.write(on('host-a', 2, { powerState: 'shutoff' })),
      ]);
      assert.equal(ok(moved!).instance.host, 'host-b');
      assert.ok(!late!.ok);
      assert.equal(late!.reason, 'conflict');
      ok(await store.write(on('host-b', 2, { powerState: 'paused' })));
      const record = await store.getInstance(id);
      assert.equal(record?.powerState, 'paused');
      assert.equal(record?.version, 3);
      await store.close();
    });

    test('create of a known uuid gives exists; update of an unknown one gives not-found', async () => {
      const store = await fresh();
      const id = uuidOf(1);
      await store.write(create(id, { name: 'first' }));
      const again = await store.write(create(id, { name: 'second' }));
      assert.ok(!again.ok);
      assert.equal(again.reason, 'exists');
      assert.equal(again.current?.name, 'first');

      const missing = await store.write(update(uuidOf(2), 1, { powerState: 'shutoff' }));
      assert.ok(!missing.ok);
      assert.equal(missing.reason, 'not-found');
      assert.equal(missing.current, null);

      const page = await store.changesSince(0);
      assert.equal(page.changes.length, 1, 'refused writes leave no change row');
      await store.close();
    });

    test('a patch cannot touch uuid, version or timestamps', async () => {
      const store = await fresh({ now: () => 7 });
      const id = uuidOf(1);
      await store.write(create(id));
      const sneaky = { name: 'renamed', uuid: uuidOf(2), version: 40, createdAt: 1 };
      const result = ok(
        await store.write(update(id, 1, sneaky as unknown as Partial<InstanceFields>)),
      );
      assert.equal(result.instance.uuid, id);
      assert.equal(result.instance.version, 2);
      assert.equal(result.instance.createdAt, 7);
      assert.equal(result.instance.name, 'renamed');
      await store.close();
    });
  });

  describe(`${name} agent journals`, () => {
    const tagged = (write: InstanceWrite, id: string, seq: number): InstanceWrite => ({
      ...write,
      journal: { id, seq, host: 'host-a' },
    });

    test('a journal entry sent twice is applied once, in the same transaction as its seq', async () => {
      const store = await fresh();
      const u = uuidOf(1);
      ok(await store.write(tagged(create(u), 'j1', 1)));
      const stop = update(u, 1, { powerState: 'shutoff' }, stopTransition(111));
      const first = await store.write(tagged(stop, 'j1', 2));
      ok(first);
      // The same entries again, as a replay after a lost answer does: nothing is applied twice.
      const again = await Promise.all([
        store.write(tagged(create(u), 'j1', 1)),
        store.write(tagged(stop, 'j1', 2)),
      ]);
      for (const result of again) {
        assert.equal(result.ok, false);
        assert.equal(!result.ok && result.reason, 'duplicate');
        assert.equal(!result.ok && result.current?.version, 2);
      }
      assert.equal((await store.history(u)).length, 1);
      assert.equal((await store.getInstance(u))?.version, 2);
      // Another journal's seq 2 is its own.
      ok(await store.write(tagged(update(u, 2, { powerReason: 'destroyed' }), 'j2', 2)));
      assert.equal((await store.getInstance(u))?.version, 3);
      await store.close();
    });

    test('a refused entry counts as processed; entries of one batch are taken in order', async () => {
      const store = await fresh();
      const u = uuidOf(2);
      ok(await store.write(create(u)));
      const stale = await store.write(tagged(update(u, 7, { powerState: 'paused' }), 'j', 5));
      assert.equal(!stale.ok && stale.reason, 'conflict');
      const replayed = await store.write(tagged(update(u, 1, { powerState: 'paused' }), 'j', 5));
      assert.equal(!replayed.ok && replayed.reason, 'duplicate');
      // One batch: 6 applies, a second 6 and an older 4 are duplicates, 7 applies after 6.
      const batch = await Promise.all([
        store.write(tagged(update(u, 1, { powerState: 'paused' }), 'j', 6)),
        store.write(tagged(update(u, 2, { powerState: 'shutoff' }), 'j', 6)),
        store.write(tagged(update(u, 2, { powerState: 'crashed' }), 'j', 4)),
        store.write(tagged(update(u, 2, { powerState: 'running' }), 'j', 7)),
      ]);
      assert.deepEqual(
        batch.map((r) => (r.ok ? 'ok' : r.reason)),
        ['ok', 'duplicate', 'duplicate', 'ok'],
      );
      const record = await store.getInstance(u);
      assert.equal(record?.version, 3);
      assert.equal(record?.powerState, 'running');
      await store.close();
    });

    test('the journal mark survives reopening', async () => {
      const location = await target.freshLocation();
      const first = await target.open(location);
      const u = uuidOf(3);
      ok(await first.write(tagged(create(u), 'j', 9)));
      await first.close();
      const second = await target.open(location);
      const again = await second.write(tagged(create(u), 'j', 9));
      assert.equal(!again.ok && again.reason, 'duplicate');
      await second.close();
    });

    test("a host's backlog is stored with its status", async () => {
      const store = await fresh();
      const status = { name: 'h', driver: 'sim', connected: true, lastReconcileAt: null };
      await store.upsertHost({ ...status, lastSeenAt: 1, backlog: 42 });
      assert.equal((await store.listHosts())[0]!.backlog, 42);
      await store.upsertHost({ ...status, lastSeenAt: 2 });
      assert.equal((await store.listHosts())[0]!.backlog, 0);
      await store.close();
    });
  });

  describe(`${name} history`, () => {
    test('transitions come back newest first with every field', async () => {
      let clock = 10_000;
      const store = await fresh({ now: () => clock });
      const id = uuidOf(1);
      await store.write({
        kind: 'create',
        uuid: id,
        fields: fields(),
        transition: {
          from: null,
          to: 'running',
          vmStateFrom: null,
          vmStateTo: 'active',
          cause: 'adopt',
          detail: 'found running',
          outOfBand: false,
          observedAt: 9_000,
        },
      });
      clock = 11_000;
      await store.write(
        update(id, 1, { vmState: 'stopped', powerState: 'shutoff' }, stopTransition(10_500)),
      );
      clock = 12_000;
      await store.write(update(id, 2, { taskState: 'powering-on' })); // no transition

      const history = await store.history(id);
      assert.equal(history.length, 2);
      const [newest, oldest] = history;
      assert.ok(newest !== undefined && oldest !== undefined);
      assert.ok(newest.id > oldest.id);
      assert.deepEqual(newest, {
        id: newest.id,
        uuid: id,
        from: 'running',
        to: 'shutoff',
        vmStateFrom: 'active',
        vmStateTo: 'stopped',
        cause: 'event',
        detail: 'shutdown',
        outOfBand: true,
        observedAt: 10_500,
        recordedAt: 11_000,
      });
      assert.deepEqual(oldest, {
        id: oldest.id,
        uuid: id,
        from: null,
        to: 'running',
        vmStateFrom: null,
        vmStateTo: 'active',
        cause: 'adopt',
        detail: 'found running',
        outOfBand: false,
        observedAt: 9_000,
        recordedAt: 10_000,
      });
      assert.deepEqual(await store.history(uuidOf(2)), []);
      await store.close();
    });

    test('history pages with beforeId, defaults to 100 and caps at 1000', async () => {
      const store = await fresh();
      const id = uuidOf(1);
      await store.write(create(id));
      const writes: Promise<WriteResult>[] = [];
      for (let v = 1; v <= 1_005; v += 1) {
        writes.push(
          store.write(update(id, v, { powerReason: `r${v}` }, stopTransition(v, `d${v}`))),
        );
      }
      for (const result of await Promise.all(writes)) ok(result);

      const first = await store.history(id);
      assert.equal(first.length, 100);
      assert.equal(first[0]?.detail, 'd1005');
      assert.equal((await store.history(id, { limit: 5_000 })).length, 1_000);

      const seen: string[] = [];
      let beforeId: number | undefined;
      for (;;) {
        const page = await store.history(
          id,
          beforeId === undefined ? { limit: 400 } : { limit: 400, beforeId },
        );
        if (page.length === 0) break;
        seen.push(...page.map((t) => t.detail));
        beforeId = page[page.length - 1]?.id;
      }
      assert.equal(seen.length, 1_005);
      assert.equal(seen[0], 'd1005');
      assert.equal(seen[1_004], 'd1');
      await store.close();
    });
  });

  describe(`${name} change log`, () => {
    test('the log holds each write as its result gave it, every field set or not', async () => {
      const store = await fresh({ now: () => 1_700_000_000_123 });
      const busy = {
        taskState: 'powering-off',
        taskAction: 'stop',
        taskStartedAt: 1_700_000_000_000,
        taskError: 'an earlier stop timed out',
        policy: 'observe',
      } as const;
      // One batch with a uuid written once, one with a uuid written twice: both ways of logging.
      const single = await Promise.all([
        store.write(create(uuidOf(1), busy)),
        store.write(create(uuidOf(2))),
      ]);
      const double = await Promise.all([
        store.write(update(uuidOf(2), 1, busy)),
        store.write(update(uuidOf(2), 2, { taskState: null, taskAction: null, policy: null })),
      ]);
      const results = [...single, ...double].map((r) => ok(r));
      const { changes } = await store.changesSince(0);
      assert.deepEqual(
        changes.map((c) => ({ revision: c.revision, type: c.type, instance: c.instance })),
        results.map((r, i) => ({
          revision: r.revision,
          type: i < 2 ? 'created' : 'updated',
          instance: r.instance,
        })),
      );
      assert.equal(changes[0]!.instance.taskStartedAt, busy.taskStartedAt);
      assert.equal(changes[3]!.instance.policy, null);
      await store.close();
    });

    test('revisions increase strictly and a watcher resumes from any revision', async () => {
      const store = await fresh();
      const results: WriteResult[] = [];
      for (let i = 0; i < 5; i += 1) results.push(await store.write(create(uuidOf(i))));
      for (let i = 0; i < 5; i += 1)
        results.push(await store.write(update(uuidOf(i), 1, { powerState: 'paused' })));
      const revisions = results.map((r) => ok(r).revision);
      for (let i = 1; i < revisions.length; i += 1) assert.ok(revisions[i]! > revisions[i - 1]!);

      const all = await store.changesSince(0);
      assert.deepEqual(
        all.changes.map((c) => c.revision),
        revisions,
      );
      assert.equal(all.oldestRevision, revisions[0]);
      assert.equal(all.latestRevision, revisions[9]);
      assert.deepEqual(all.changes[0]?.instance, ok(results[0]!).instance);
      assert.equal(all.changes[0]?.type, 'created');
      assert.equal(all.changes[9]?.type, 'updated');
      assert.equal(all.changes[9]?.instance.powerState, 'paused');

      // Resume page by page from the last revision seen.
      const resumed: number[] = [];
      let since = 0;
      for (;;) {
        const page = await store.changesSince(since, 3);
        if (page.changes.length === 0) break;
        assert.ok(page.changes.length <= 3);
        resumed.push(...page.changes.map((c) => c.revision));
        since = page.changes[page.changes.length - 1]!.revision;
      }
      assert.deepEqual(resumed, revisions);
      const tail = await store.changesSince(revisions[6]!);
      assert.deepEqual(
        tail.changes.map((c) => c.revision),
        revisions.slice(7),
      );
      await store.close();
    });

    test('an empty log reports latest 0 and nothing missed', async () => {
      const store = await fresh();
      const page = await store.changesSince(0);
      assert.deepEqual(page, { changes: [], oldestRevision: 1, latestRevision: 0 });
      await store.close();
    });

    test('retention keeps at most maxChanges rows and oldestRevision tells a watcher to re-list', async () => {
      const store = await fresh({ maxChanges: 50 });
      const id = uuidOf(1);
      await store.write(create(id));
      let version = 1;
      let maxRows = 0;
      for (let round = 0; round < 20; round += 1) {
        const batch: Promise<WriteResult>[] = [];
        for (let i = 0; i < 10; i += 1) {
          batch.push(store.write(update(id, version, { powerReason: `r${version}` })));
          version += 1;
        }
        for (const result of await Promise.all(batch)) ok(result);
        const page = await store.changesSince(0, 10_000);
        maxRows = Math.max(maxRows, page.changes.length);
        assert.ok(page.changes.length <= 50, `kept ${page.changes.length} rows`);
      }
      const page = await store.changesSince(0, 10_000);
      assert.equal(page.latestRevision, 201);
      assert.ok(page.oldestRevision > 1);
      assert.equal(page.changes[0]?.revision, page.oldestRevision);
      // What is kept is contiguous up to the latest revision.
      assert.deepEqual(
        page.changes.map((c) => c.revision),
        Array.from({ length: page.changes.length }, (_, i) => page.oldestRevision + i),
      );
      assert.ok(store.stats.pruned > 0);
      assert.ok(maxRows >= 45, 'pruning is occasional, not down to a handful of rows');

      const watcherAt = 5;
      assert.ok(watcherAt < page.oldestRevision - 1, 'a watcher this far behind must re-list');
      const current = await store.changesSince(page.latestRevision - 3);
      assert.ok(page.latestRevision - 3 >= current.oldestRevision - 1);
      assert.equal(current.changes.length, 3);
      await store.close();
    });

    test('one batch larger than maxChanges still keeps only the newest', async () => {
      const store = await fresh({ maxChanges: 50 });
      const writes: Promise<WriteResult>[] = [];
      for (let i = 0; i < 200; i += 1) writes.push(store.write(create(uuidOf(i))));
      for (const result of await Promise.all(writes)) ok(result);
      const page = await store.changesSince(0, 10_000);
      assert.equal(page.latestRevision, 200);
      assert.ok(page.changes.length <= 50, `kept ${page.changes.length} rows`);
      assert.equal(page.changes.at(-1)?.revision, 200, 'the newest change is kept');
      assert.equal(page.changes[0]?.revision, page.oldestRevision);
      await store.close();
    });

    test('revisions are never reused after pruning and reopening', async () => {
      const path = await target.freshLocation();
      const first = await target.open(path, { maxChanges: 3 });
      for (let i = 0; i < 10; i += 1) await first.write(create(uuidOf(i)));
      const before = await first.changesSince(0);
      assert.equal(before.latestRevision, 10);
      assert.ok(before.changes.length <= 3);
      await first.close();

      const second = await target.open(path, { maxChanges: 3 });
      const next = ok(await second.write(create(uuidOf(100))));
      assert.equal(next.revision, 11);
      await second.close();
    });
  });

  describe(`${name} batching`, () => {
    test('1000 writes fired together commit in far fewer transactions, each with its result', async () => {
      const store = await fresh();
      const commitsBefore = store.stats.commits;
      const writes: Promise<WriteResult>[] = [];
      for (let i = 0; i < 1_000; i += 1)
        writes.push(store.write(create(uuidOf(i), { name: `vm-${i}` })));
      const results = await Promise.all(writes);
      const commits = store.stats.commits - commitsBefore;
      assert.ok(commits <= 5, `${commits} commits for 1000 writes`);
      results.forEach((result, i) => assert.equal(ok(result).instance.name, `vm-${i}`));
      const revisions = results.map((r) => ok(r).revision);
      assert.equal(new Set(revisions).size, 1_000);

      // Updates with transitions batch the same way.
      const updates = results.map((r) =>
        store.write(update(ok(r).instance.uuid, 1, { powerState: 'shutoff' }, stopTransition(1))),
      );
      for (const result of await Promise.all(updates)) assert.equal(ok(result).instance.version, 2);
      assert.ok(store.stats.commits - commitsBefore <= 10);
      assert.equal(store.stats.retried, 0, 'no batch fell back to write-by-write');
      await store.close();
    });

    test('a batch is capped at maxBatch writes per transaction', async () => {
      const store = await fresh({ maxBatch: 100 });
      const writes: Promise<WriteResult>[] = [];
      for (let i = 0; i < 1_000; i += 1) writes.push(store.write(create(uuidOf(i))));
      for (const result of await Promise.all(writes)) ok(result);
      assert.equal(store.stats.commits, 10);
      await store.close();
    });

    test('writes to one uuid in one batch see each other; a conflict fails only itself', async () => {
      const store = await fresh();
      const id = uuidOf(1);
      const commitsBefore = store.stats.commits;
      const [created, first, second, stale, other] = await Promise.all([
        store.write(create(id)),
        store.write(update(id, 1, { powerState: 'paused' })),
        store.write(update(id, 2, { powerState: 'running' })),
        store.write(update(id, 2, { powerState: 'shutoff' })),
        store.write(create(uuidOf(2))),
      ]);
      assert.equal(store.stats.commits - commitsBefore, 1, 'all five in one transaction');
      assert.equal(ok(created!).instance.version, 1);
      assert.equal(ok(first!).instance.version, 2);
      assert.equal(ok(second!).instance.version, 3);
      assert.ok(!stale!.ok);
      assert.equal(stale.reason, 'conflict');
      assert.equal(stale.current?.version, 3);
      assert.equal(stale.current?.powerState, 'running');
      ok(other!);
      assert.equal((await store.getInstance(id))?.powerState, 'running');
      assert.equal(store.stats.retried, 0, 'refusals are answers, not failures');
      await store.close();
    });

    test('a write the database refuses fails alone; the rest of its batch commits', async () => {
      const store = await fresh();
      const broken = { ...fields(), name: null } as unknown as InstanceFields;
      const settled = await Promise.allSettled([
        store.write(create(uuidOf(1))),
        store.write({ kind: 'create', uuid: uuidOf(2), fields: broken }),
        store.write(create(uuidOf(3))),
      ]);
      assert.equal(settled[0]?.status, 'fulfilled');
      assert.equal(settled[2]?.status, 'fulfilled');
      const failure = settled[1];
      assert.ok(failure?.status === 'rejected');
      assert.ok(failure.reason instanceof StoreError);
      assert.equal(await store.getInstance(uuidOf(2)), null);
      assert.ok((await store.getInstance(uuidOf(3))) !== null);
      const page = await store.changesSince(0);
      assert.deepEqual(
        page.changes.map((c) => c.instance.uuid),
        [uuidOf(1), uuidOf(3)],
      );
      assert.equal(page.changes[1]!.revision, page.changes[0]!.revision + 1, 'no revision gap');
      assert.equal(store.stats.failed, 1);
      assert.equal(store.stats.retried, 1);
      await store.close();
    });
  });

  describe(`${name} commit timing`, () => {
    test('each committed transaction is told with one queued time per write; a throwing hook harms nobody', async () => {
      const commits: CommitTiming[] = [];
      let throwing = false;
      const store = await fresh({
        onCommit(commit) {
          commits.push(commit);
          if (throwing) throw new Error('hook bug');
        },
      });
      const before = performance.now();
      await Promise.all([
        store.write(create(uuidOf(1))),
        store.write(create(uuidOf(2))),
        store.write(update(uuidOf(1), 1, { powerState: 'paused' })),
      ]);
      const took = performance.now() - before;
      assert.equal(commits.length, 1, 'writes of one turn commit together');
      assert.equal(commits[0]!.queuedMs.length, 3);
      for (const ms of [...commits[0]!.queuedMs, commits[0]!.commitMs]) {
        assert.ok(ms >= 0 && ms <= took, `${ms} ms within the ${took} ms the writes took`);
      }

      throwing = true;
      const refused = await store.write(create(uuidOf(2)));
      assert.ok(!refused.ok, 'a transaction of refused writes commits too');
      ok(await store.write(update(uuidOf(2), 1, { powerState: 'shutoff' })));
      assert.deepEqual(
        commits.map((commit) => commit.queuedMs.length),
        [3, 1, 1],
      );
      assert.equal((await store.getInstance(uuidOf(2)))!.powerState, 'shutoff');
      assert.equal(store.stats.commitFailures, 0);
      await store.close();
    });
  });

  describe(`${name} subscribe`, () => {
    test('listeners get each commit in revision order; a throwing listener harms nobody', async () => {
      const errors: unknown[] = [];
      const store = await fresh({ onListenerError: (error) => errors.push(error) });
      const delivered: ChangeRecord[][] = [];
      const unsubscribeThrower = store.subscribe(() => {
        throw new Error('listener bug');
      });
      const unsubscribe = store.subscribe((changes) => delivered.push([...changes]));

      const batch = await Promise.all([
        store.write(create(uuidOf(1))),
        store.write(create(uuidOf(2))),
        store.write(update(uuidOf(1), 1, { powerState: 'paused' })),
      ]);
      assert.equal(delivered.length, 1, 'one call per commit');
      assert.deepEqual(
        delivered[0]!.map((c) => c.revision),
        batch.map((r) => ok(r).revision),
      );
      assert.equal(delivered[0]![2]!.instance.powerState, 'paused');
      assert.equal(errors.length, 1);
      assert.equal(store.stats.listenerErrors, 1);

      const refused = await store.write(create(uuidOf(1)));
      assert.ok(!refused.ok);
      assert.equal(delivered.length, 1, 'a commit without changes is not delivered');

      ok(await store.write(update(uuidOf(2), 1, { powerState: 'shutoff' })));
      assert.equal(delivered.length, 2);
      unsubscribe();
      unsubscribeThrower();
      ok(await store.write(update(uuidOf(2), 2, { powerState: 'running' })));
      assert.equal(delivered.length, 2);
      assert.equal(errors.length, 2);
      await store.close();
    });
  });

  describe(`${name} listing`, () => {
    test('filters by host, vmState and powerState and pages by uuid', async () => {
      const store = await fresh();
      const hosts = ['host-a', 'host-b', 'host-c'];
      const writes: Promise<WriteResult>[] = [];
      for (let i = 0; i < 30; i += 1) {
        writes.push(
          store.write(
            create(uuidOf(30 - i), {
              host: hosts[i % 3]!,
              vmState: i % 2 === 0 ? 'active' : 'stopped',
              powerState: i % 2 === 0 ? 'running' : 'shutoff',
            }),
          ),
        );
      }
      await Promise.all(writes);

      const all = await store.listInstances();
      assert.equal(all.length, 30);
      assert.deepEqual(
        all.map((r) => r.uuid),
        Array.from({ length: 30 }, (_, i) => uuidOf(i + 1)),
      );

      const onB = await store.listInstances({ host: 'host-b' });
      assert.equal(onB.length, 10);
      assert.ok(onB.every((r) => r.host === 'host-b'));
      const stoppedOnB = await store.listInstances({ host: 'host-b', vmState: 'stopped' });
      assert.ok(stoppedOnB.length > 0);
      assert.ok(stoppedOnB.every((r) => r.host === 'host-b' && r.vmState === 'stopped'));
      const shutoff = await store.listInstances({ powerState: 'shutoff' });
      assert.equal(shutoff.length, 15);
      assert.deepEqual(await store.listInstances({ powerState: 'missing' }), []);

      const paged: string[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await store.listInstances(
          after === undefined ? { host: 'host-a', limit: 4 } : { host: 'host-a', limit: 4, after },
        );
        if (page.length === 0) break;
        assert.ok(page.length <= 4);
        paged.push(...page.map((r) => r.uuid));
        after = page[page.length - 1]!.uuid;
      }
      assert.deepEqual(
        paged,
        all.filter((r) => r.host === 'host-a').map((r) => r.uuid),
      );
      await store.close();
    });

    test('hides deleted instances and lists only those with a task in flight when asked', async () => {
      const store = await fresh();
      await Promise.all([
        store.write(create(uuidOf(1))),
        store.write(create(uuidOf(2), { vmState: 'deleted', powerState: 'nostate' })),
        store.write(
          create(uuidOf(3), {
            taskState: 'rebooting',
            taskAction: 'hard-reboot',
            taskStartedAt: 7,
          }),
        ),
      ]);
      const visible = await store.listInstances({ hideDeleted: true });
      assert.deepEqual(
        visible.map((r) => r.uuid),
        [uuidOf(1), uuidOf(3)],
      );
      const busy = await store.listInstances({ taskInFlight: true });
      assert.deepEqual(
        busy.map((r) => [r.uuid, r.taskAction, r.taskStartedAt]),
        [[uuidOf(3), 'hard-reboot', 7]],
      );
      const cleared = ok(
        await store.write(
          update(uuidOf(3), 1, { taskState: null, taskAction: null, taskStartedAt: null }),
        ),
      );
      assert.equal(cleared.instance.taskAction, null);
      assert.deepEqual(await store.listInstances({ taskInFlight: true }), []);
      const { changes } = await store.changesSince(0);
      assert.equal(changes.at(-1)?.instance.taskAction, null);
      assert.equal(changes.at(-2)?.instance.taskAction, 'hard-reboot');
      await store.close();
    });

    test('many records are read by uuid at once; unknown ones are left out', async () => {
      const store = await fresh();
      const first = ok(await store.write(create(uuidOf(1), { name: 'one' }))).instance;
      const second = ok(await store.write(create(uuidOf(2), { name: 'two' }))).instance;
      await store.write(create(uuidOf(3)));

      assert.deepEqual(await store.getInstances([]), new Map());
      assert.deepEqual(await store.getInstances([uuidOf(404)]), new Map());
      assert.deepEqual(
        await store.getInstances([uuidOf(2), uuidOf(404), uuidOf(1), uuidOf(2)]),
        new Map([
          [uuidOf(2), second],
          [uuidOf(1), first],
        ]),
        'each recorded uuid once, duplicates and unknown uuids asked for or not',
      );
      // A uuid matches exactly, as in getInstance (callers lower-case what they are sent).
      const lower = uuidOf(10);
      const upper = lower.toUpperCase();
      assert.notEqual(upper, lower);
      ok(await store.write(create(lower, { name: 'lower' })));
      assert.deepEqual(await store.getInstances([upper]), new Map());
      ok(await store.write(create(upper, { name: 'upper' })));
      const both = await store.getInstances([upper, lower]);
      assert.deepEqual(
        [...both].map(([uuid, record]) => [uuid, record.name]).sort(),
        [
          [upper, 'upper'],
          [lower, 'lower'],
        ].sort(),
      );

      // More than a request of writes carries (500).
      const many = Array.from({ length: 600 }, (_, i) => uuidOf(i));
      assert.deepEqual([...(await store.getInstances(many)).keys()].sort(), [
        uuidOf(1),
        uuidOf(2),
        uuidOf(3),
        lower,
      ]);
      await store.close();
      await rejectsWithCode(store.getInstances([uuidOf(1)]), 'closed');
    });

    test('page size defaults to 100 and is capped at 1000', async () => {
      const store = await fresh();
      const writes: Promise<WriteResult>[] = [];
      for (let i = 0; i < 1_100; i += 1) writes.push(store.write(create(uuidOf(i))));
      await Promise.all(writes);
      assert.equal((await store.listInstances()).length, 100);
      assert.equal((await store.listInstances({ limit: 5_000 })).length, 1_000);
      assert.equal((await store.listInstances({ limit: 0 })).length, 0);
      await store.close();
    });

    test('hosts are upserted and listed', async () => {
      const store = await fresh();
      await store.upsertHost({
        name: 'host-b',
        driver: 'libvirt',
        connected: true,
        lastSeenAt: 10,
        lastReconcileAt: null,
      });
      await store.upsertHost({
        name: 'host-a',
        driver: 'sim',
        connected: false,
        lastSeenAt: 5,
        lastReconcileAt: 4,
      });
      await store.upsertHost({
        name: 'host-b',
        driver: 'libvirt',
        connected: false,
        lastSeenAt: 20,
        lastReconcileAt: 19,
      });
      assert.deepEqual(await store.listHosts(), [
        {
          name: 'host-a',
          driver: 'sim',
          connected: false,
          lastSeenAt: 5,
          lastReconcileAt: 4,
          connectionError: null,
          backlog: 0,
        },
        {
          name: 'host-b',
          driver: 'libvirt',
          connected: false,
          lastSeenAt: 20,
          lastReconcileAt: 19,
          connectionError: null,
          backlog: 0,
        },
      ]);
      await store.close();
    });

    test("a host's connection error is kept across status updates until cleared", async () => {
      const store = await fresh();
      const status = { name: 'h', driver: 'libvirt', lastReconcileAt: null };
      await store.upsertHost({ ...status, connected: true, lastSeenAt: 1 });
      await store.recordConnectionError('h', 'permission denied');
      await store.upsertHost({ ...status, connected: false, lastSeenAt: 2 });
      assert.equal((await store.listHosts())[0]!.connectionError, 'permission denied');
      await store.recordConnectionError('h', null);
      assert.equal((await store.listHosts())[0]!.connectionError, null);
      // An error for a host with no row yet creates nothing: the engine's status comes first.
      await store.recordConnectionError('unknown', 'no route to host');
      assert.deepEqual(
        (await store.listHosts()).map((h) => h.name),
        ['h'],
      );
      await store.close();
    });

    test('a status that carries the connection error records it with the rest, in one write', async () => {
      const store = await fresh();
      const status = { name: 'h', driver: 'libvirt', lastReconcileAt: null, connected: false };
      await store.upsertHost({ ...status, lastSeenAt: 1, connectionError: 'permission denied' });
      assert.equal((await store.listHosts())[0]!.connectionError, 'permission denied');
      await store.upsertHost({ ...status, lastSeenAt: 2 });
      assert.equal((await store.listHosts())[0]!.connectionError, 'permission denied');
      await store.upsertHost({ ...status, connected: true, lastSeenAt: 3, connectionError: null });
      const [host] = await store.listHosts();
      assert.equal(host!.connectionError, null);
      assert.equal(host!.connected, true);
      assert.equal(host!.lastSeenAt, 3);
      await store.close();
    });
  });

  describe(`${name} credentials`, () => {
    const hash = (n: number) => n.toString(16).padStart(64, '0');

    test('a credential is found by its hash, listed, and revoked once', async () => {
      const store = await fresh({ now: () => 1_000 });
      const added = await store.credentials.addCredential({
        kind: 'host',
        name: 'h1',
        tokenHash: hash(1),
      });
      assert.deepEqual(added, {
        ok: true,
        credential: {
          kind: 'host',
          name: 'h1',
          tokenHash: hash(1),
          createdAt: 1_000,
          revokedAt: null,
        },
      });
      ok2(
        await store.credentials.addCredential({
          kind: 'reader',
          name: 'dashboard',
          tokenHash: hash(2),
        }),
      );
      assert.equal((await store.credentials.findCredential(hash(1)))?.name, 'h1');
      assert.equal((await store.credentials.findCredential(hash(2)))?.kind, 'reader');
      assert.equal(await store.credentials.findCredential(hash(3)), null);

      const revoked = await store.credentials.revokeCredential('host', 'h1');
      assert.equal(revoked?.revokedAt, 1_000);
      assert.equal(
        await store.credentials.revokeCredential('host', 'h1'),
        null,
        'nothing left to revoke',
      );
      // Kept, so that the token is told it was revoked rather than that it is unknown.
      assert.equal((await store.credentials.findCredential(hash(1)))?.revokedAt, 1_000);
      assert.equal(
        await store.credentials.revokeCredential('reader', 'h1'),
        null,
        'kinds are apart',
      );
      assert.deepEqual(
        (await store.credentials.listCredentials()).map((c) => [c.kind, c.name, c.revokedAt]),
        [
          ['host', 'h1', 1_000],
          ['reader', 'dashboard', null],
        ],
      );
      await store.close();
    });

    test('a name has one valid credential: a second is refused unless it replaces', async () => {
      let clock = 10;
      const store = await fresh({ now: () => clock });
      ok2(await store.credentials.addCredential({ kind: 'host', name: 'h1', tokenHash: hash(1) }));
      const again = await store.credentials.addCredential({
        kind: 'host',
        name: 'h1',
        tokenHash: hash(2),
      });
      assert.equal(again.ok, false);
      assert.equal(!again.ok && again.current.tokenHash, hash(1));
      assert.equal(await store.credentials.findCredential(hash(2)), null);
      // The same name as another kind is another credential.
      ok2(
        await store.credentials.addCredential({ kind: 'reader', name: 'h1', tokenHash: hash(3) }),
      );

      clock = 20;
      ok2(
        await store.credentials.addCredential({
          kind: 'host',
          name: 'h1',
          tokenHash: hash(4),
          replace: true,
        }),
      );
      assert.equal((await store.credentials.findCredential(hash(1)))?.revokedAt, 20);
      assert.equal((await store.credentials.findCredential(hash(4)))?.revokedAt, null);
      // A revoked name can be given a new token.
      await store.credentials.revokeCredential('host', 'h1');
      ok2(await store.credentials.addCredential({ kind: 'host', name: 'h1', tokenHash: hash(5) }));
      const hosts = (await store.credentials.listCredentials()).filter((c) => c.kind === 'host');
      assert.deepEqual(
        hosts.map((c) => c.tokenHash),
        [hash(5), hash(4), hash(1)],
        'newest first',
      );
      await store.close();
    });

    test('adds of one name racing each other leave exactly one valid credential', async () => {
      const store = await fresh();
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          store.credentials.addCredential({ kind: 'host', name: 'race', tokenHash: hash(100 + i) }),
        ),
      );
      assert.equal(results.filter((r) => r.ok).length, 1);
      const valid = (await store.credentials.listCredentials()).filter((c) => c.revokedAt === null);
      assert.equal(valid.length, 1);
      await store.close();
    });

    test('credentials survive reopening; calls after close reject with closed', async () => {
      const path = await target.freshLocation();
      const first = await target.open(path);
      ok2(
        await first.credentials.addCredential({ kind: 'host', name: 'kept', tokenHash: hash(7) }),
      );
      await first.close();
      await rejectsWithCode(first.credentials.findCredential(hash(7)), 'closed');
      await rejectsWithCode(
        first.credentials.addCredential({ kind: 'host', name: 'x', tokenHash: hash(8) }),
        'closed',
      );
      const second = await target.open(path);
      assert.equal((await second.credentials.findCredential(hash(7)))?.name, 'kept');
      await second.close();
    });
  });

  describe(`${name} lifecycle`, () => {
    test('reopening keeps the data, hosts and versions', async () => {
      const path = await target.freshLocation();
      const first = await target.open(path);
      ok(await first.write(create(uuidOf(1), { name: 'kept' })));
      await first.upsertHost({
        name: 'h',
        driver: 'sim',
        connected: true,
        lastSeenAt: 1,
        lastReconcileAt: null,
      });
      await first.close();

      const second = await target.open(path);
      assert.equal((await second.getInstance(uuidOf(1)))?.name, 'kept');
      assert.equal((await second.listHosts()).length, 1);
      ok(await second.write(update(uuidOf(1), 1, { name: 'still kept' })));
      await second.close();
    });

    test('close commits pending writes; every later call rejects with closed', async () => {
      const path = await target.freshLocation();
      const store = await target.open(path);
      const pending: Promise<WriteResult>[] = [];
      for (let i = 0; i < 50; i += 1) pending.push(store.write(create(uuidOf(i))));
      await store.close();
      for (const result of await Promise.all(pending)) ok(result);

      await rejectsWithCode(store.write(create(uuidOf(99))), 'closed');
      await rejectsWithCode(store.getInstance(uuidOf(1)), 'closed');
      await rejectsWithCode(store.listInstances(), 'closed');
      await rejectsWithCode(store.history(uuidOf(1)), 'closed');
      await rejectsWithCode(store.changesSince(0), 'closed');
      await rejectsWithCode(store.listHosts(), 'closed');
      await rejectsWithCode(
        store.upsertHost({
          name: 'h',
          driver: 'sim',
          connected: true,
          lastSeenAt: 0,
          lastReconcileAt: null,
        }),
        'closed',
      );
      assert.throws(
        () => store.subscribe(() => {}),
        (error: unknown) => error instanceof StoreError && error.code === 'closed',
      );
      await store.close(); // closing twice is harmless

      const reopened = await target.open(path);
      assert.equal((await reopened.listInstances({ limit: 1_000 })).length, 50);
      await reopened.close();
    });
  });
}
