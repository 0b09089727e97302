// The reconcile's copy of this host's records, on a real SQLite file: kept current by the
// engine's writes (creates, updates, conflicts, moves to another host, failures), read in full
// when it is time to, and correct across a full read that writes land in the middle of and
// across a restart on the same file.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  openSqliteStore,
  type EngineStore,
  type InstanceRecord,
  type InstanceWrite,
  type Store,
  type WriteResult,
} from '../../src/store/index.ts';
import { HostRecords } from '../../src/sync/host-records.ts';
import { instanceFields } from '../support/records.ts';

const HOST = 'host-a';

interface Fixture {
  readonly store: Store;
  readonly records: HostRecords;
  /** Whole-host reads the cache made of the store. */
  readonly fullReads: () => number;
  /** A write through the cache's door, as the engine's writer makes it. */
  write(write: InstanceWrite): Promise<WriteResult>;
  reopen(): Promise<Fixture>;
}

async function fixture(fullReadEvery: number, dir: string): Promise<Fixture> {
  const store = await openSqliteStore(join(dir, 'hvsync.db'));
  let fullReads = 0;
  const fx: Fixture = {
    store,
    records: new HostRecords({
      store: {
        ...pick(store),
        async listInstances(filter) {
          if (filter.after === undefined) fullReads++;
          return store.listInstances(filter);
        },
      },
      hostName: () => HOST,
      fullReadEvery,
    }),
    fullReads: () => fullReads,
    async write(write) {
      const result = await store.write(write);
      fx.records.written(write, result);
      return result;
    },
    async reopen() {
      await store.close();
      return fixture(fullReadEvery, dir);
    },
  };
  return fx;
}

/** The engine's slice of a store, bound to it. */
function pick(store: Store): EngineStore {
  return {
    getInstance: (uuid) => store.getInstance(uuid),
    listInstances: (filter) => store.listInstances(filter),
    write: (write) => store.write(write),
    upsertHost: (host) => store.upsertHost(host),
    recordConnectionError: (host, error) => store.recordConnectionError(host, error),
    listHosts: () => store.listHosts(),
    get writeFailure() {
      return store.writeFailure;
    },
  };
}

async function withFixture(
  fullReadEvery: number,
  body: (fx: Fixture) => Promise<Fixture | void>,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hvsync-records-'));
  let fx = await fixture(fullReadEvery, dir);
  try {
    fx = (await body(fx)) ?? fx;
  } finally {
    await fx.store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function uuid(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

async function create(fx: Fixture, n: number, host = HOST): Promise<InstanceRecord> {
  const result = await fx.write({
    kind: 'create',
    uuid: uuid(n),
    fields: instanceFields({ name: `vm-${n}`, host }),
  });
  assert.ok(result.ok);
  return result.instance;
}

function update(
  record: InstanceRecord,
  patch: Partial<InstanceRecord>,
  expectedVersion = record.version,
): InstanceWrite {
  return { kind: 'update', uuid: record.uuid, expectedVersion, patch };
}

/** What the cache holds, as uuid → version. */
async function versions(fx: Fixture): Promise<Map<string, number>> {
  const all = await fx.records.read();
  return new Map([...all.values()].map((r) => [r.uuid, r.version]));
}

describe('sync: host records', () => {
  test('the first read reads the store in full; later ones only every Nth time', () =>
    withFixture(3, async (fx) => {
      await fx.store.write({ kind: 'create', uuid: uuid(1), fields: instanceFields() });
      await fx.store.write({
        kind: 'create',
        uuid: uuid(2),
        fields: instanceFields({ host: 'host-b' }),
      });
      assert.deepEqual([...(await fx.records.read()).keys()], [uuid(1)], 'this host only');
      assert.equal(fx.fullReads(), 1);
      await fx.records.read();
      await fx.records.read();
      assert.equal(fx.fullReads(), 1, 'two reads from memory');
      await fx.records.read();
      assert.equal(fx.fullReads(), 2, 'the third after a full read goes to the store');
    }));

  test('creates and updates through the writer are seen without a read of the store', () =>
    withFixture(100, async (fx) => {
      await fx.records.read();
      const first = await create(fx, 1);
      await create(fx, 2);
      const updated = await fx.write(update(first, { powerState: 'shutoff' }));
      assert.ok(updated.ok);
      const all = await fx.records.read();
      assert.equal(fx.fullReads(), 1);
      assert.deepEqual([...all.keys()].sort(), [uuid(1), uuid(2)]);
      assert.equal(all.get(uuid(1))!.powerState, 'shutoff');
      assert.equal(all.get(uuid(1))!.version, updated.instance.version);
    }));

  test('a conflict brings back the record another writer left', () =>
    withFixture(100, async (fx) => {
      const record = await create(fx, 1);
      await fx.records.read();
      // Another writer, past the cache: the engine has not heard of it.
      const other = await fx.store.write(update(record, { taskState: 'powering-off' }));
      assert.ok(other.ok);
      assert.equal((await fx.records.read()).get(uuid(1))!.taskState, null, 'not seen yet');
      const lost = await fx.write(update(record, { powerState: 'paused' }));
      assert.equal(lost.ok, false);
      const cached = (await fx.records.read()).get(uuid(1))!;
      assert.equal(cached.taskState, 'powering-off');
      assert.equal(cached.version, other.instance.version);
      assert.equal(fx.fullReads(), 1);
    }));

  test('a record moved to another host, or one an update finds gone, leaves the cache', () =>
    withFixture(100, async (fx) => {
      const moving = await create(fx, 1);
      await create(fx, 2);
      await fx.records.read();
      assert.ok((await fx.write(update(moving, { host: 'host-b' }))).ok);
      assert.deepEqual([...(await versions(fx)).keys()], [uuid(2)]);
      const notFound = await fx.write({
        kind: 'update',
        uuid: uuid(9),
        expectedVersion: 1,
        patch: { powerState: 'shutoff' },
      });
      assert.equal(notFound.ok, false);
      assert.equal((await fx.records.read()).has(uuid(9)), false);
    }));

  test('a write whose outcome is unknown drops the record; forget makes the next read full', () =>
    withFixture(100, async (fx) => {
      await create(fx, 1);
      const second = await create(fx, 2);
      await fx.records.read();
      fx.records.unsure(uuid(1));
      assert.deepEqual([...(await versions(fx)).keys()], [uuid(2)]);
      const other = await fx.store.write(update(second, { powerState: 'paused' }));
      assert.ok(other.ok);
      fx.records.forget();
      const all = await fx.records.read();
      assert.equal(fx.fullReads(), 2);
      assert.deepEqual([...all.keys()].sort(), [uuid(1), uuid(2)]);
      assert.equal(all.get(uuid(2))!.powerState, 'paused', 'the other writer seen on a full read');
    }));

  test('a full read answered with a record older than a write that landed meanwhile keeps the write', () =>
    withFixture(1, async (fx) => {
      const record = await create(fx, 1);
      // The store answers with the record as it was; the write lands before the answer arrives.
      let landed: WriteResult | undefined;
      const records = new HostRecords({
        store: {
          ...pick(fx.store),
          async listInstances() {
            const write = update(record, { powerState: 'paused' });
            landed = await fx.store.write(write);
            records.written(write, landed);
            return [record];
          },
        },
        hostName: () => HOST,
        fullReadEvery: 1,
      });
      const all = await records.readAll();
      assert.ok(landed?.ok);
      assert.equal(all.get(uuid(1))!.version, landed.instance.version);
      assert.equal(all.get(uuid(1))!.powerState, 'paused');
    }));

  test('after a restart on the same file the records are read again, as the last run left them', () =>
    withFixture(100, async (fx) => {
      const record = await create(fx, 1);
      await create(fx, 2);
      const updated = await fx.write(update(record, { vmState: 'stopped', powerState: 'shutoff' }));
      assert.ok(updated.ok);
      const before = await versions(fx);
      const again = await fx.reopen();
      const all = await again.records.read();
      assert.equal(again.fullReads(), 1);
      assert.deepEqual(await versions(again), before);
      assert.equal(all.get(uuid(1))!.vmState, 'stopped');
      return again;
    }));
});
