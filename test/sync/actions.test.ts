// Actions through the engine: the checks before a task starts, taskState while it runs, vmState
// set to the intent when it succeeds, the error kept when it fails, and tasks that never end.
import { describe, test } from 'node:test';
import type { ActionName } from '../../src/model/index.ts';
import { instanceFields } from '../support/records.ts';
import assert from 'node:assert/strict';
import { SyncError } from '../../src/sync/index.ts';
import type { SyncErrorCode } from '../../src/sync/index.ts';
import type { InstanceFields } from '../../src/store/index.ts';
import { HOST, adoptRunning, assertChained, harness, waitForRecord } from './harness.ts';
import type { Harness } from './harness.ts';

async function withHarness(
  options: Parameters<typeof harness>[0],
  body: (h: Harness) => Promise<void>,
): Promise<void> {
  const h = await harness(options);
  try {
    await body(h);
  } finally {
    await h.close();
  }
}

async function rejectsWith(work: Promise<unknown>, code: SyncErrorCode): Promise<void> {
  await assert.rejects(work, (error: unknown) => {
    assert.ok(error instanceof SyncError, 'a SyncError');
    assert.equal(error.code, code);
    return true;
  });
}

function taskRecord(name: string, overrides: Partial<InstanceFields>): InstanceFields {
  return instanceFields({ name, host: HOST, ...overrides });
}

describe('engine: actions', () => {
  test('stop, start, pause, resume and reboot: intent recorded, cause action, not out-of-band', () =>
    withHarness({ policy: 'enforce' }, async (h) => {
      const uuid = await adoptRunning(h, 'app-1');
      const steps: [ActionName, string, string][] = [
        ['stop', 'stopped', 'shutoff'],
        ['start', 'active', 'running'],
        ['pause', 'paused', 'paused'],
        ['resume', 'active', 'running'],
        ['reboot', 'active', 'running'],
        ['force-stop', 'stopped', 'shutoff'],
      ];
      for (const [action, vmState, powerState] of steps) {
        const task = await h.engine.act(uuid, action);
        assert.equal(task.action, action);
        assert.notEqual((await h.record(uuid)).taskState, null, `${action} marked in flight`);
        const outcome = await task.done;
        assert.ok(outcome.ok, `${action} succeeded`);
        assert.equal(outcome.instance.vmState, vmState);
        assert.equal(outcome.instance.powerState, powerState);
        assert.equal(outcome.instance.taskState, null);
        assert.equal(outcome.instance.taskError, null);
      }
      await h.quiesce();
      const history = await h.history(uuid);
      assertChained(history);
      const byAction = history.filter((t) => t.cause === 'action');
      assert.ok(byAction.length >= 5);
      assert.ok(byAction.every((t) => !t.outOfBand));
      assert.equal(h.engine.stats.enforcements, 0, 'enforce never fought the actions');
      assert.equal(h.engine.stats.actions.ok, steps.length);
    }));

  test('events during a task are recorded but not acted on', () =>
    withHarness({ policy: 'enforce', timing: { shutdownGapMs: 100 } }, async (h) => {
      const uuid = await adoptRunning(h, 'app-1');
      const task = await h.engine.act(uuid, 'stop');
      const during = await waitForRecord(
        h,
        uuid,
        'shutting down',
        (r) => r.powerState === 'shutdown',
      );
      assert.equal(during.taskState, 'powering-off');
      assert.equal(during.vmState, 'active');
      const outcome = await task.done;
      assert.ok(outcome.ok);
      const history = await h.history(uuid);
      const shuttingDown = history.find((t) => t.to === 'shutdown')!;
      assert.equal(shuttingDown.cause, 'event');
      assert.equal(shuttingDown.outOfBand, false, 'our own task did it');
      assert.equal(shuttingDown.vmStateTo, 'active');
      assert.equal(history.at(-1)!.vmStateTo, 'stopped');
    }));

  test('actions that make no sense are refused with typed errors', () =>
    withHarness(
      {
        before: async (store, sim) => {
          const uuid = sim.define('foreign', { powerState: 'running' });
          await store.write({
            kind: 'create',
            uuid,
            fields: taskRecord('foreign', { host: 'host-b' }),
          });
        },
      },
      async (h) => {
        const uuid = await adoptRunning(h, 'app-1');
        await rejectsWith(
          h.engine.act('00000000-0000-4000-8000-000000000000', 'start'),
          'not-found',
        );
        await rejectsWith(h.engine.act(uuid, 'start'), 'invalid-action');
        await rejectsWith(h.engine.act(uuid, 'resume'), 'invalid-action');
        const foreign = h.sim.list().find((i) => i.name === 'foreign')!.uuid;
        await rejectsWith(h.engine.act(foreign, 'stop'), 'wrong-host');

        h.sim.setFaults({ hangActions: new Set([uuid]) });
        const first = await h.engine.act(uuid, 'pause');
        await rejectsWith(h.engine.act(uuid, 'stop'), 'task-in-flight');
        h.sim.clearFaults();
        assert.ok((await first.done).ok);
        assert.equal(h.engine.stats.actions.rejected, 5);
      },
    ));

  test('a hung action times out: taskState cleared, the error kept, vmState left alone', () =>
    withHarness({ engine: { taskTimeoutMs: 300 } }, async (h) => {
      const uuid = await adoptRunning(h, 'app-1');
      h.sim.setFaults({ hangActions: new Set([uuid]) });
      const task = await h.engine.act(uuid, 'pause');
      const outcome = await task.done;
      assert.equal(outcome.ok, false);
      const record = await h.record(uuid);
      assert.equal(record.taskState, null);
      assert.equal(record.taskStartedAt, null);
      assert.match(record.taskError ?? '', /pause/);
      assert.equal(record.vmState, 'active');
      assert.equal(h.engine.stats.actions.timeout, 1);
      // The hypervisor call is abandoned, not the instance: a later action works.
      h.sim.clearFaults();
      await h.quiesce();
      const next = await h.engine.act(uuid, 'stop');
      assert.ok((await next.done).ok);
    }));

  test('a failed action keeps its error and lets the policy look again', () =>
    withHarness({}, async (h) => {
      const uuid = await adoptRunning(h, 'app-1');
      h.sim.setFaults({ actionFailRate: 1 });
      const outcome = await (await h.engine.act(uuid, 'stop')).done;
      assert.equal(outcome.ok, false);
      const record = await h.record(uuid);
      assert.equal(record.taskState, null);
      assert.match(record.taskError ?? '', /failed/);
      assert.equal(record.vmState, 'active');
      assert.equal(h.engine.stats.actions.failed, 1);
      h.sim.clearFaults();
      const retried = await (await h.engine.act(uuid, 'stop')).done;
      assert.ok(retried.ok);
      assert.equal((await h.record(uuid)).taskError, null, 'a new task clears the old error');
    }));

  test('tasks left behind by a previous process are cleared: expired at start, others when due', () => {
    const names = { old: 'left-old', young: 'left-young' };
    const uuids: Record<string, string> = {};
    return withHarness(
      {
        engine: { taskTimeoutMs: 1_000 },
        before: async (store, sim) => {
          for (const [key, startedAgo] of [
            ['old', 3_600_000],
            ['young', 700],
          ] as const) {
            const uuid = sim.define(names[key], { powerState: 'running' });
            uuids[key] = uuid;
            const fields = taskRecord(names[key], {
              taskState: 'powering-off',
              taskStartedAt: Date.now() - startedAgo,
            });
            assert.ok((await store.write({ kind: 'create', uuid, fields })).ok);
          }
        },
      },
      async (h) => {
        const old = await h.record(uuids.old!);
        assert.equal(old.taskState, null, 'cleared before start resolved');
        assert.match(old.taskError ?? '', /powering-off did not complete/);
        const young = await waitForRecord(
          h,
          uuids.young!,
          'young cleared',
          (r) => r.taskState === null,
        );
        assert.match(young.taskError ?? '', /powering-off did not complete/);
        assert.equal(young.vmState, 'active');
        assert.equal(h.engine.stats.tasksExpired, 2);
      },
    );
  });
});
