// Tasks recorded by someone else — a control-plane replica the user reached — and performed by
// the engine of the instance's host: picked up from recordChanged (the agent's watch), at start
// (recorded while the engine was away) and by the reconcile after a reconnect; run once however
// often they are announced; expired instead when their time is up.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { taskMark } from '../../src/model/index.ts';
import type { ActionName } from '../../src/model/index.ts';
import type { InstanceRecord, Store } from '../../src/store/index.ts';
import type { HypervisorDriver } from '../../src/virt/index.ts';
import type { SimDriver } from '../../src/virt/index.ts';
import { HOST, adoptRunning, harness, waitFor, waitForRecord } from './harness.ts';
import type { Harness, HarnessOptions } from './harness.ts';

/** Counts the driver's action calls, by action. */
function countingDriver(calls: Map<string, number>): (driver: SimDriver) => HypervisorDriver {
  return (driver) => {
    for (const name of ['start', 'stop', 'forceStop', 'reboot', 'pause', 'resume'] as const) {
      const original = driver[name].bind(driver) as (...args: unknown[]) => Promise<void>;
      Object.defineProperty(driver, name, {
        value: (...args: unknown[]) => {
          calls.set(name, (calls.get(name) ?? 0) + 1);
          return original(...args);
        },
      });
    }
    return driver;
  };
}

async function withHarness(options: HarnessOptions, body: (h: Harness) => Promise<void>) {
  const h = await harness(options);
  try {
    await body(h);
  } finally {
    await h.close();
  }
}

/** Records the task the way a control-plane replica does: a conditional write of the task's mark. */
async function recordTask(
  store: Store,
  uuid: string,
  action: ActionName,
  startedAt = Date.now(),
): Promise<InstanceRecord> {
  const record = await store.getInstance(uuid);
  assert.ok(record, `a record for ${uuid}`);
  const result = await store.write({
    kind: 'update',
    uuid,
    expectedVersion: record.version,
    patch: taskMark(action, startedAt),
  });
  assert.ok(result.ok, 'the task is recorded');
  return result.instance;
}

const taskCleared = (r: InstanceRecord): boolean => r.taskState === null;

describe('engine: tasks recorded elsewhere', () => {
  test('recordChanged performs a recorded force-stop and finishes it, once', async () => {
    const calls = new Map<string, number>();
    await withHarness({ wrapDriver: countingDriver(calls) }, async (h) => {
      const uuid = await adoptRunning(h, 'picked-1');
      const recorded = await recordTask(h.store, uuid, 'force-stop');
      assert.equal(recorded.taskState, 'powering-off');
      assert.equal(recorded.taskAction, 'force-stop');

      h.engine.recordChanged(recorded);
      h.engine.recordChanged(recorded); // the same notice twice, in the same turn
      const done = await waitForRecord(h, uuid, 'the task finished', taskCleared);
      assert.equal(done.taskError, null);
      assert.equal(done.taskAction, null);
      assert.equal(done.vmState, 'stopped');
      assert.equal(done.powerState, 'shutoff');
      // A late notice of the same task, after it finished: nothing more happens.
      h.engine.recordChanged(recorded);
      await h.quiesce();
      assert.equal(calls.get('forceStop'), 1, 'the hypervisor was asked once');
      assert.equal(calls.get('stop'), undefined, 'a force-stop is not performed as a stop');
      const last = (await h.history(uuid)).at(-1);
      assert.equal(last?.cause, 'action');
      assert.equal(last?.detail, 'force-stop');
      assert.equal(last?.to, 'shutoff');
      assert.equal(h.engine.stats.actions.ok, 1);
    });
  });

  test('a hard reboot recorded elsewhere is performed as a hard reboot', async () => {
    const calls = new Map<string, number>();
    await withHarness({ wrapDriver: countingDriver(calls) }, async (h) => {
      const uuid = await adoptRunning(h, 'picked-2');
      h.engine.recordChanged(await recordTask(h.store, uuid, 'hard-reboot'));
      const done = await waitForRecord(h, uuid, 'the task finished', taskCleared);
      assert.equal(done.taskError, null);
      assert.equal(done.powerState, 'running');
      await h.quiesce();
      assert.equal(calls.get('reboot'), 1);
      const last = (await h.history(uuid)).at(-1);
      assert.equal(last?.detail, 'hard-reboot');
    });
  });

  test('notices that do not call for a task are ignored: another host, cleared since, none', async () => {
    const calls = new Map<string, number>();
    await withHarness({ wrapDriver: countingDriver(calls) }, async (h) => {
      const uuid = await adoptRunning(h, 'picked-3');
      const recorded = await recordTask(h.store, uuid, 'stop');
      // Cleared by someone else (the control plane's sweeper) before the notice arrives.
      const cleared = await h.store.write({
        kind: 'update',
        uuid,
        expectedVersion: recorded.version,
        patch: { taskState: null, taskAction: null, taskStartedAt: null, taskError: 'swept' },
      });
      assert.ok(cleared.ok);
      h.engine.recordChanged(recorded); // a stale notice
      h.engine.recordChanged({ ...recorded, host: 'host-b' }); // not this host's
      h.engine.recordChanged(cleared.instance); // no task
      await h.quiesce();
      assert.equal(calls.size, 0, 'the hypervisor was not asked anything');
      const record = await h.record(uuid);
      assert.equal(record.taskError, 'swept');
      assert.equal(record.powerState, 'running');
    });
  });

  test('a task whose time is up is expired, not performed', async () => {
    const calls = new Map<string, number>();
    await withHarness(
      { wrapDriver: countingDriver(calls), engine: { taskTimeoutMs: 1_000 } },
      async (h) => {
        const uuid = await adoptRunning(h, 'picked-4');
        h.engine.recordChanged(await recordTask(h.store, uuid, 'stop', Date.now() - 5_000));
        const done = await waitForRecord(h, uuid, 'the task expired', taskCleared);
        assert.match(done.taskError ?? '', /powering-off did not complete within 1000 ms/);
        assert.equal(done.vmState, 'active');
        await h.quiesce();
        assert.equal(calls.size, 0);
        assert.equal(h.engine.stats.tasksExpired, 1);
      },
    );
  });

  test('a task recorded while the engine was away is performed when it starts', async () => {
    const calls = new Map<string, number>();
    let uuid = '';
    await withHarness(
      {
        wrapDriver: countingDriver(calls),
        noStart: true,
        before: async (store, sim) => {
          uuid = sim.define('picked-5', { powerState: 'running' });
          const { instanceFields } = await import('../support/records.ts');
          const created = await store.write({
            kind: 'create',
            uuid,
            fields: instanceFields({ name: 'picked-5', host: HOST }),
          });
          assert.ok(created.ok);
          await recordTask(store, uuid, 'pause');
        },
      },
      async (h) => {
        await h.engine.start();
        const done = await waitForRecord(h, uuid, 'the task finished', taskCleared);
        assert.equal(done.taskError, null);
        assert.equal(done.vmState, 'paused');
        assert.equal(done.powerState, 'paused');
        await h.quiesce();
        assert.equal(calls.get('pause'), 1);
      },
    );
  });

  test('a task announced while the hypervisor is disconnected is performed after reconnecting', async () => {
    const calls = new Map<string, number>();
    await withHarness({ wrapDriver: countingDriver(calls) }, async (h) => {
      const uuid = await adoptRunning(h, 'picked-6');
      h.sim.disconnect();
      await waitFor('the engine sees the disconnect', () => !h.engine.ready);
      const recorded = await recordTask(h.store, uuid, 'stop');
      h.engine.recordChanged(recorded);
      await h.engine.whenIdle();
      assert.equal((await h.record(uuid)).taskState, 'powering-off', 'still waiting');
      assert.equal(calls.size, 0);
      h.sim.reconnect();
      const done = await waitForRecord(h, uuid, 'the task finished', taskCleared);
      assert.equal(done.taskError, null);
      assert.equal(done.vmState, 'stopped');
      await h.quiesce();
      assert.equal(calls.get('stop'), 1);
    });
  });
});
