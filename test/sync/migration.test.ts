// Cross-host live migration end to end in one process: two sync engines (hosts A and B), each on
// its own simulated hypervisor, the two hypervisors on one fabric, both engines on one real
// store. The sim emits libvirt's own sequence on both sides; the engines only see their own host.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openPostgresStore, openSqliteStore } from '../../src/store/index.ts';
import type { Store, TransitionRecord } from '../../src/store/index.ts';
import { describePostgres, freshSchema } from '../support/postgres.ts';
import { waitFor } from './harness.ts';
import { twoHosts } from './two-hosts.ts';
import type { TwoHosts, TwoHostsOptions } from './two-hosts.ts';

/** Runs `body` on two fresh hosts, A having one running instance already recorded. */
async function withHosts(
  options: TwoHostsOptions,
  body: (h: TwoHosts, uuid: string) => Promise<void>,
): Promise<void> {
  const h = await twoHosts(options);
  try {
    const uuid = h.a.sim.list()[0]!.uuid;
    const adopted = await h.record(uuid);
    assert.equal(adopted.host, 'host-a');
    await body(h, uuid);
  } finally {
    await h.close();
  }
}

/** Nothing in the history says the instance stopped, and vmState never left `active`. */
function assertNeverStopped(history: readonly TransitionRecord[]): void {
  for (const entry of history) {
    assert.ok(!['shutoff', 'crashed', 'nostate'].includes(entry.to), `${entry.to} in the history`);
    assert.equal(entry.vmStateTo, 'active', `${entry.cause}/${entry.detail} kept vmState active`);
  }
}

function migrations(history: readonly TransitionRecord[]): TransitionRecord[] {
  return history.filter((entry) => entry.cause === 'migration');
}

async function assertOnB(h: TwoHosts, uuid: string): Promise<void> {
  const record = await h.record(uuid);
  assert.equal(record.host, 'host-b');
  assert.equal(record.powerState, 'running');
  assert.equal(record.vmState, 'active');
}

describe('migration: a live migration moves the record to the destination', () => {
  for (const source of ['keep', 'remove'] as const) {
    test(`one migration entry, A's own events change nothing (source ${source}, enforce)`, () =>
      withHosts({ policy: 'enforce' }, async (h, uuid) => {
        assert.equal(await h.a.sim.migrate(uuid, h.b.sim, { source }), true);
        await h.quiesce();
        await assertOnB(h, uuid);
        const history = await h.history(uuid);
        assert.deepEqual(
          history.map((entry) => entry.cause),
          ['adopt', 'migration'],
        );
        const [moved] = migrations(history);
        assert.equal(moved!.detail, 'host-a → host-b');
        assert.equal(moved!.from, 'running');
        assert.equal(moved!.to, 'running');
        assertNeverStopped(history);
        // A did hear its side: the switch-over and the departure, and recorded neither.
        assert.equal(h.a.engine.stats.eventsReceived.suspended, 1);
        assert.equal(h.a.engine.stats.eventsReceived.stopped, 1);
        assert.equal(h.a.engine.stats.enforcements + h.b.engine.stats.enforcements, 0);

        // Each host's reconcile agrees: A finds it gone or left behind, B finds it running.
        await h.a.engine.reconcile();
        await h.b.engine.reconcile();
        await h.quiesce();
        assert.equal((await h.history(uuid)).length, history.length);
        await assertOnB(h, uuid);
      }));
  }

  test('A restarted after the migration lists what it left behind and does not adopt it again', () =>
    withHosts({}, async (h, uuid) => {
      await h.a.sim.migrate(uuid, h.b.sim);
      await h.quiesce();
      const before = await h.history(uuid);
      assert.equal(h.a.sim.get(uuid)?.reason, 'migrated', 'the shut-off definition stays on A');
      await h.restart(h.a);
      await h.quiesce();
      assert.equal(h.a.engine.stats.adopted, 0);
      assert.deepEqual(await h.history(uuid), before);
      await assertOnB(h, uuid);
    }));

  test('B restarted right after the migration claims it from its listing', () =>
    withHosts({ faults: { b: { dropEventRate: 1 } } }, async (h, uuid) => {
      await h.a.sim.migrate(uuid, h.b.sim);
      await h.quiesce();
      // B heard nothing; the record left A (missing, reason migrated) and waits for a claim.
      const waiting = await h.record(uuid);
      assert.equal(waiting.host, 'host-a');
      assert.equal(waiting.powerState, 'missing');
      assert.equal(waiting.powerReason, 'migrated');
      assert.equal(waiting.vmState, 'active');
      await h.restart(h.b);
      await h.quiesce();
      await assertOnB(h, uuid);
      const history = await h.history(uuid);
      assert.equal(migrations(history).length, 1);
      assert.equal(migrations(history)[0]!.from, 'missing');
      assertNeverStopped(history);
    }));

  test('an arrival whose signs are gone (paused and resumed since) is claimed once A lost it', () =>
    withHosts({ stopSettleMs: 20, faults: { b: { dropEventRate: 1 } } }, async (h, uuid) => {
      await h.a.sim.migrate(uuid, h.b.sim);
      await h.quiesce();
      h.b.sim.pause(uuid);
      h.b.sim.resume(uuid);
      assert.equal(h.b.sim.get(uuid)?.reason, 'unpaused');
      assert.equal((await h.record(uuid)).powerState, 'missing', 'A recorded the departure');
      await h.b.engine.reconcile();
      await h.quiesce();
      await assertOnB(h, uuid);
      assert.equal(migrations(await h.history(uuid)).length, 1);
    }));

  test('the record follows the instance back: B → A is a claim by A', () =>
    withHosts({}, async (h, uuid) => {
      await h.a.sim.migrate(uuid, h.b.sim, { source: 'remove' });
      await h.quiesce();
      await h.b.sim.migrate(uuid, h.a.sim, { source: 'remove' });
      await h.quiesce();
      const record = await h.record(uuid);
      assert.equal(record.host, 'host-a');
      assert.equal(record.powerState, 'running');
      assert.deepEqual(
        migrations(await h.history(uuid)).map((entry) => entry.detail),
        ['host-a → host-b', 'host-b → host-a'],
      );
    }));
});

describe('migration: a failed migration leaves the record on the source', () => {
  for (const fail of ['at-switchover', 'before-switchover'] as const) {
    test(`failed ${fail}: on A, running, no entry at all`, () =>
      withHosts({ policy: 'enforce' }, async (h, uuid) => {
        assert.equal(await h.a.sim.migrate(uuid, h.b.sim, { fail, gapMs: 30 }), false);
        await h.quiesce();
        const record = await h.record(uuid);
        assert.equal(record.host, 'host-a');
        assert.equal(record.powerState, 'running');
        assert.equal(record.vmState, 'active');
        assert.deepEqual(
          (await h.history(uuid)).map((entry) => entry.cause),
          ['adopt'],
        );
        // B saw its half (STARTED/migrated, STOPPED/failed) and wrote nothing.
        assert.equal(h.b.engine.stats.eventsReceived.started, 1);
        assert.equal(h.b.engine.stats.writes, 0);
      }));
  }
});

describe('migration: the two hosts hear their events in either order', () => {
  test("B's claim first, A's STOPPED/migrated later: A changes nothing", () =>
    withHosts({ faults: { a: { eventDelayMs: [300, 300] } } }, async (h, uuid) => {
      await h.a.sim.migrate(uuid, h.b.sim);
      // The claim lands while A's events are still on their way.
      await waitFor('the claim', async () => (await h.record(uuid)).host === 'host-b');
      await h.quiesce();
      const history = await h.history(uuid);
      assert.deepEqual(
        history.map((entry) => entry.cause),
        ['adopt', 'migration'],
      );
      assertNeverStopped(history);
    }));

  test("A's STOPPED/migrated first, past its settle window: missing, then B's claim", () =>
    withHosts(
      { stopSettleMs: 20, faults: { b: { eventDelayMs: [1_500, 1_500] } } },
      async (h, uuid) => {
        await h.a.sim.migrate(uuid, h.b.sim);
        const left = await waitFor('A records the departure', async () => {
          const record = await h.record(uuid);
          return record.powerState === 'missing' ? record : undefined;
        });
        assert.equal(left.host, 'host-a');
        assert.equal(left.powerReason, 'migrated');
        await h.quiesce();
        await assertOnB(h, uuid);
        const history = await h.history(uuid);
        assert.deepEqual(
          history.map((entry) => `${entry.cause} ${entry.from}→${entry.to}`),
          ['adopt null→running', 'event running→missing', 'migration missing→running'],
        );
        assert.equal(history[1]!.detail, 'migrated');
        assertNeverStopped(history);
      },
    ));

  test("A's STOPPED/migrated first, within its settle window: the claim wins, one entry", () =>
    withHosts(
      { stopSettleMs: 2_000, faults: { b: { eventDelayMs: [100, 100] } } },
      async (h, uuid) => {
        await h.a.sim.migrate(uuid, h.b.sim);
        await h.quiesce();
        await assertOnB(h, uuid);
        assert.deepEqual(
          (await h.history(uuid)).map((entry) => entry.cause),
          ['adopt', 'migration'],
        );
      },
    ));

  test('no claim ever (B unmanaged): A keeps it missing with reason migrated, never stopped', () =>
    withHosts({ policy: 'enforce', stopSettleMs: 20 }, async (h, uuid) => {
      await h.b.engine.stop();
      await h.a.sim.migrate(uuid, h.b.sim, { source: 'remove' });
      await h.quiesce();
      await h.a.engine.reconcile();
      await h.quiesce();
      const record = await h.record(uuid);
      assert.equal(record.host, 'host-a');
      assert.equal(record.powerState, 'missing');
      assert.equal(record.powerReason, 'migrated');
      assert.equal(record.vmState, 'active');
      assert.equal(h.a.engine.stats.enforcements, 0);
      assertNeverStopped(await h.history(uuid));
    }));
});

describe('migration: with every event lost, the reconciles converge', () => {
  const lost = { faults: { a: { dropEventRate: 1 }, b: { dropEventRate: 1 } }, stopSettleMs: 20 };
  for (const source of ['keep', 'remove'] as const) {
    for (const first of ['a', 'b'] as const) {
      test(`source ${source}, host ${first.toUpperCase()} reconciles first`, () =>
        withHosts(lost, async (h, uuid) => {
          await h.a.sim.migrate(uuid, h.b.sim, { source });
          await h.quiesce();
          assert.equal((await h.record(uuid)).host, 'host-a', 'no event reached either engine');
          const order = first === 'a' ? [h.a, h.b] : [h.b, h.a];
          for (const host of order) {
            await host.engine.reconcile();
            await h.quiesce();
          }
          await assertOnB(h, uuid);
          const history = await h.history(uuid);
          assert.equal(migrations(history).length, 1);
          assert.ok(!history.some((entry) => entry.to === 'shutoff'), 'never recorded shut off');
          if (source === 'remove' && first === 'a') {
            // Gone without a trace and nothing else known: A concluded deleted, and B's claim
            // undid it (docs/decisions.md, Migration).
            assert.equal(history.at(-2)!.vmStateTo, 'deleted');
            assert.equal(history.at(-1)!.vmStateTo, 'active');
          } else {
            assertNeverStopped(history);
          }
        }));
    }
  }
});

describe('migration: a storm of migrations and other changes on both hosts', () => {
  test('every record ends on the host that runs its instance, none ever left shut off', () =>
    withHosts({ instances: 30, stopSettleMs: 50 }, async (h) => {
      const mix = { migrate: 4, pause: 1, resume: 1, hardReboot: 1, softReboot: 1 };
      for (const host of [h.a, h.b]) {
        host.sim.startWorkload({ ratePerSecond: 100, mix, tickMs: 5 });
      }
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      for (const host of [h.a, h.b]) host.sim.stopWorkload();
      await h.quiesce();
      // A paused arrival is claimed once it runs (docs/decisions.md, Migration).
      for (const host of [h.a, h.b]) {
        for (const instance of host.sim.list()) {
          if (instance.powerState === 'paused') host.sim.resume(instance.uuid);
        }
      }
      await h.quiesce();
      await h.a.engine.reconcile();
      await h.b.engine.reconcile();
      await h.quiesce();

      const changes = h.a.sim.stats.operations + h.b.sim.stats.operations;
      assert.ok(changes > 30, `the workload made changes (${changes})`);
      let migrated = 0;
      for (const host of [h.a, h.b]) {
        for (const instance of host.sim.list()) {
          if (instance.powerState === 'shutoff' && instance.reason === 'migrated') continue;
          const record = await h.record(instance.uuid);
          assert.equal(record.host, host.name, `${instance.name} is recorded where it runs`);
          assert.equal(record.powerState, instance.powerState, instance.name);
          const history = await h.history(instance.uuid);
          migrated += migrations(history).length;
          for (const entry of history) {
            assert.ok(!(entry.to === 'shutoff' && entry.detail.includes('migrat')), entry.detail);
            assert.notEqual(entry.vmStateTo, 'deleted');
          }
        }
      }
      assert.ok(migrated > 0, 'some instances moved');
    }));
});

describe("migration: an engine that reads only its own host's records (an agent's cache)", () => {
  test('the create of an arrival is refused with the record: B claims that record', () =>
    withHosts(
      {
        stores: async (dir) => {
          const store = await openSqliteStore(join(dir, 'hvsync.db'));
          return [store, ownHostOnly(store, 'host-b')] as const;
        },
      },
      async (h, uuid) => {
        await h.a.sim.migrate(uuid, h.b.sim);
        await h.quiesce();
        await assertOnB(h, uuid);
        assert.equal(h.b.engine.stats.adopted, 0);
        assert.equal(migrations(await h.history(uuid)).length, 1);
      },
    ));
});

/** The store as a cache of one host's records sees it: another host's record reads as unknown. */
function ownHostOnly(store: Store, host: string): Store {
  return new Proxy(store, {
    get(target, property) {
      if (property === 'getInstance') {
        return async (uuid: string) => {
          const record = await target.getInstance(uuid);
          return record?.host === host ? record : null;
        };
      }
      // The harness closes the store it wraps.
      if (property === 'close') return async () => {};
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

describePostgres('migration on PostgreSQL: each host with its own connection', (database) => {
  test('migrate, and a race the other way round: on B, one migration entry', () =>
    withHosts(
      {
        stopSettleMs: 20,
        faults: { b: { eventDelayMs: [200, 200] } },
        stores: async () => {
          const schema = freshSchema();
          const a = await openPostgresStore(database.url, { schema });
          const b = await openPostgresStore(database.url, { schema });
          return [a, b] as const;
        },
      },
      async (h, uuid) => {
        await h.a.sim.migrate(uuid, h.b.sim);
        await h.quiesce();
        await assertOnB(h, uuid);
        const history = await h.history(uuid);
        assert.equal(migrations(history).length, 1);
        assert.equal(migrations(history)[0]!.detail, 'host-a → host-b');
        assertNeverStopped(history);
      },
    ));
});
