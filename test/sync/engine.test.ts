// The engine on the simulated hypervisor and a real SQLite file: the everyday scenarios and the
// pitfalls of DESIGN.md section 3 that events alone raise (reboot race, crash vs shutdown,
// migration, other hosts, adoption, deletion).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { HOST, adoptRunning, assertChained, harness, waitFor, waitForRecord } from './harness.ts';
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

describe('engine: events', () => {
  test('a guest shutdown is recorded from its events: vmState stopped, cause event, out-of-band', () =>
    withHarness({}, async (h) => {
      const uuid = await adoptRunning(h, 'web-1');
      await h.sim.guestShutdown(uuid);
      const record = await waitForRecord(h, uuid, 'stopped', (r) => r.vmState === 'stopped');
      assert.equal(record.powerState, 'shutoff');
      assert.equal(record.powerReason, 'shutdown');
      const last = (await h.history(uuid)).at(-1)!;
      assert.equal(last.cause, 'event');
      assert.equal(last.to, 'shutoff');
      assert.equal(last.vmStateTo, 'stopped');
      assert.equal(last.outOfBand, true);
      assert.equal(last.detail, 'shutdown');
      const commit = h.commits.find((c) => c.uuid === uuid && c.vmStateTo === 'stopped');
      assert.ok(commit && commit.latencyMs !== null, 'a detection-latency sample for the event');
      assert.ok((h.engine.stats.eventsReceived.shutdown ?? 0) >= 1);
      assert.ok((h.engine.stats.eventsReceived.stopped ?? 0) >= 1);
    }));

  test('enforce: a stop announced by SHUTDOWN needs no settle window; a bare STOPPED waits for one', () =>
    withHarness({ policy: 'enforce', engine: { stopSettleMs: 60_000 } }, async (h) => {
      const announced = await adoptRunning(h, 'announced');
      const bare = await adoptRunning(h, 'bare');
      h.sim.destroy(bare);
      await h.sim.guestShutdown(announced);
      // Recorded well inside the (huge) window: the SHUTDOWN said the guest went down for real.
      await waitForRecord(h, announced, 'stopped', (r) => r.vmState === 'stopped');
      assert.equal((await h.record(bare)).vmState, 'active', 'still inside its window');
      // Any further event ends the window: the pass starts over and confirms.
      h.sim.start(bare);
      await waitFor(
        'the bare one confirmed running',
        () => h.commits.length > 0 && h.engine.stats.eventsReceived.started === 3,
      );
      await h.quiesce();
      assert.equal((await h.record(bare)).vmState, 'active');
      assert.ok((await h.history(bare)).every((t) => t.vmStateTo === 'active'));
    }));

  test('observe: a bare STOPPED is recorded at once, nothing acts on the record to guard', () =>
    withHarness({ engine: { stopSettleMs: 60_000 } }, async (h) => {
      const uuid = await adoptRunning(h, 'bare');
      await h.quiesce();
      h.sim.destroy(uuid);
      // Recorded well inside the (huge) window, which holds only where a decision could act.
      const record = await waitForRecord(h, uuid, 'stopped', (r) => r.vmState === 'stopped');
      assert.equal(record.powerState, 'shutoff');
      assert.equal((await h.history(uuid)).at(-1)!.detail, 'destroyed');
    }));

  test('observe: an undefine is still held, a deletion is final in the record', () =>
    withHarness({ engine: { stopSettleMs: 60_000 } }, async (h) => {
      const uuid = h.sim.define('short-lived');
      await waitForRecord(h, uuid, 'adopted', () => true);
      h.sim.undefine(uuid);
      await waitFor('the UNDEFINED event', () => h.engine.stats.eventsReceived.undefined === 1);
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal((await h.record(uuid)).vmState, 'stopped', 'still inside its window');
      // Defined again: the DEFINED event ends the wait, and the record was never marked deleted.
      h.sim.define('short-lived', { uuid });
      await h.quiesce();
      assert.equal((await h.record(uuid)).vmState, 'stopped');
    }));

  test('observe follows out-of-band pause, resume, start and destroy', () =>
    withHarness({}, async (h) => {
      const uuid = await adoptRunning(h, 'web-1');
      h.sim.pause(uuid);
      await waitForRecord(
        h,
        uuid,
        'paused',
        (r) => r.vmState === 'paused' && r.powerState === 'paused',
      );
      h.sim.resume(uuid);
      await waitForRecord(
        h,
        uuid,
        'active',
        (r) => r.vmState === 'active' && r.powerState === 'running',
      );
      h.sim.destroy(uuid);
      await waitForRecord(
        h,
        uuid,
        'stopped',
        (r) => r.vmState === 'stopped' && r.powerState === 'shutoff',
      );
      h.sim.start(uuid);
      await waitForRecord(h, uuid, 'active again', (r) => r.vmState === 'active');
      await h.quiesce();
      const history = await h.history(uuid);
      assertChained(history);
      assert.deepEqual(
        history.map((t) => t.vmStateTo),
        ['active', 'paused', 'active', 'stopped', 'active'],
      );
      assert.ok(history.slice(1).every((t) => t.outOfBand && t.cause === 'event'));
      assert.equal(h.engine.stats.enforcements, 0);
    }));

  test('enforce powers off an out-of-band start and records both steps', () =>
    withHarness({ policy: 'enforce' }, async (h) => {
      const uuid = h.sim.define('db-1');
      await waitForRecord(h, uuid, 'adopted stopped', (r) => r.vmState === 'stopped');
      h.sim.start(uuid);
      await waitFor(
        'powered off again',
        () => h.sim.get(uuid)?.powerState === 'shutoff' && h.engine.stats.enforcements === 1,
      );
      await h.quiesce();
      const record = await h.record(uuid);
      assert.equal(record.vmState, 'stopped');
      assert.equal(record.powerState, 'shutoff');
      assert.equal(record.taskState, null);
      assert.equal(record.taskError, null);
      const history = await h.history(uuid);
      assertChained(history);
      const started = history.find((t) => t.to === 'running')!;
      assert.equal(started.cause, 'event');
      assert.equal(started.outOfBand, true);
      const stopped = history.at(-1)!;
      assert.equal(stopped.to, 'shutoff');
      assert.equal(stopped.cause, 'action');
      assert.equal(stopped.outOfBand, false);
    }));

  test('a crash is recorded as a crash, not a shutdown, and enforce takes no action', () =>
    withHarness({ policy: 'enforce' }, async (h) => {
      const a = await adoptRunning(h, 'crash-stopped');
      const b = await adoptRunning(h, 'crash-panicked');
      const c = await adoptRunning(h, 'crash-failed');
      h.sim.crash(a);
      h.sim.crash(b, { mode: 'panicked' });
      h.sim.crash(c, { mode: 'failed' });
      for (const [uuid, reason] of [
        [a, 'crashed'],
        [b, 'panicked'],
        [c, 'failed'],
      ] as const) {
        const record = await waitForRecord(h, uuid, 'crash', (r) => r.vmState === 'stopped');
        assert.equal(record.powerState, 'crashed');
        assert.equal(record.powerReason, reason);
        const last = (await h.history(uuid)).at(-1)!;
        assert.equal(last.to, 'crashed');
        assert.equal(last.detail, reason);
        assert.equal(last.outOfBand, true);
      }
      await h.quiesce();
      assert.equal(h.engine.stats.enforcements, 0);
    }));

  test('an instance whose record is on another host is never touched', () =>
    withHarness(
      {
        policy: 'enforce',
        before: async (store, sim) => {
          const uuid = sim.define('elsewhere', { powerState: 'running' });
          const result = await store.write({
            kind: 'create',
            uuid,
            fields: {
              name: 'elsewhere',
              host: 'host-b',
              vmState: 'stopped',
              taskState: null,
              taskAction: null,
              taskStartedAt: null,
              taskError: null,
              powerState: 'shutoff',
              powerReason: 'shutdown',
              policy: null,
            },
          });
          assert.ok(result.ok);
        },
      },
      async (h) => {
        const uuid = h.sim.list().find((i) => i.name === 'elsewhere')!.uuid;
        const before = await h.record(uuid);
        h.sim.destroy(uuid);
        h.sim.start(uuid);
        await h.quiesce();
        await h.engine.reconcile();
        await h.quiesce();
        assert.deepEqual(await h.record(uuid), before);
        assert.equal(h.sim.get(uuid)?.powerState, 'running', 'enforce did not power it off');
      },
    ));

  test('an unknown domain is adopted with cause adopt and a vmState from its power state', () =>
    withHarness({ instances: 2 }, async (h) => {
      // The two that existed before start were adopted by the first reconcile.
      assert.equal(h.engine.stats.adopted, 2);
      assert.equal(h.engine.ready, true);
      const paused = h.sim.define('paused-one', { powerState: 'paused' });
      const off = h.sim.define('off-one');
      await waitForRecord(h, paused, 'paused adopted', (r) => r.vmState === 'paused');
      await waitForRecord(h, off, 'shutoff adopted', (r) => r.vmState === 'stopped');
      await h.quiesce();
      for (const { uuid } of h.sim.list()) {
        const first = (await h.history(uuid))[0]!;
        assert.equal(first.cause, 'adopt');
        assert.equal(first.from, null);
        assert.equal(first.outOfBand, false);
        assert.equal((await h.record(uuid)).host, HOST);
      }
    }));

  test('a confirmed undefine marks the record deleted', () =>
    withHarness({}, async (h) => {
      const uuid = await adoptRunning(h, 'short-lived');
      h.sim.destroy(uuid);
      h.sim.undefine(uuid);
      const record = await waitForRecord(h, uuid, 'deleted', (r) => r.vmState === 'deleted');
      assert.equal(record.powerState, 'nostate');
      await h.quiesce();
      const report = await h.engine.reconcile();
      assert.equal(report.drift, 0, 'a deleted record is not probed again');
      assertChained(await h.history(uuid));
    }));
});

describe('engine: reboot race', () => {
  test('enforce: out-of-band hard reboot storms never stop anything, and each shows as hard-reboot', () =>
    withHarness({ policy: 'enforce', instances: 20 }, async (h) => {
      const uuids = h.sim.list().map((i) => i.uuid);
      for (let round = 0; round < 5; round++) {
        await Promise.all(
          uuids.map((uuid, i) => h.sim.hardReboot(uuid, { withResumed: (i + round) % 2 === 0 })),
        );
      }
      await h.quiesce();
      assert.ok((h.engine.stats.eventsReceived.stopped ?? 0) >= 100);
      assert.deepEqual(
        h.commits.filter((c) => c.vmStateTo !== 'active'),
        [],
        'no write ever left active',
      );
      assert.equal(h.engine.stats.enforcements, 0);
      for (const uuid of uuids) {
        const record = await h.record(uuid);
        assert.equal(record.vmState, 'active');
        assert.equal(record.powerState, 'running');
        assert.equal(h.sim.get(uuid)?.powerState, 'running');
        const history = await h.history(uuid);
        assertChained(history);
        const reboots = history.filter((t) => t.cause === 'hard-reboot');
        assert.ok(reboots.length >= 1, 'the power cycles are in the history');
        for (const t of reboots) {
          assert.deepEqual(
            [t.from, t.to, t.vmStateTo, t.detail],
            ['running', 'running', 'active', 'destroyed'],
          );
          assert.equal(t.outOfBand, true);
        }
      }
    }));

  test('observe: hard reboot storms end running and active, the stops recorded as they happened', () =>
    withHarness({ instances: 20 }, async (h) => {
      const uuids = h.sim.list().map((i) => i.uuid);
      for (let round = 0; round < 5; round++) {
        await Promise.all(
          uuids.map((uuid, i) => h.sim.hardReboot(uuid, { withResumed: (i + round) % 2 === 0 })),
        );
      }
      await h.quiesce();
      assert.equal(h.engine.stats.enforcements, 0);
      for (const uuid of uuids) {
        const record = await h.record(uuid);
        assert.equal(record.vmState, 'active');
        assert.equal(record.powerState, 'running');
        const history = await h.history(uuid);
        assertChained(history);
        // Each cycle is either caught off (shutoff → running) or seen as one hard-reboot entry.
        const cycles =
          history.filter((t) => t.to === 'shutoff').length +
          history.filter((t) => t.cause === 'hard-reboot').length;
        assert.ok(cycles >= 1 && cycles <= 5, `between 1 and 5 cycles seen, got ${cycles}`);
      }
    }));

  test('observe: a hard reboot caught off is shutoff → running in the history', () =>
    withHarness({ timing: { rebootGapMs: 200 } }, async (h) => {
      const uuid = await adoptRunning(h, 'cycled');
      await h.sim.hardReboot(uuid);
      await h.quiesce();
      const history = await h.history(uuid);
      assert.deepEqual(
        history.map((t) => [t.cause, t.from, t.to, t.vmStateTo]),
        [
          ['adopt', null, 'running', 'active'],
          ['event', 'running', 'shutoff', 'stopped'],
          ['event', 'shutoff', 'running', 'active'],
        ],
      );
    }));

  test('enforce: a hard reboot is one entry, running → running, cause hard-reboot', () =>
    withHarness({ policy: 'enforce' }, async (h) => {
      const uuid = await adoptRunning(h, 'cycled');
      await h.sim.hardReboot(uuid);
      await h.quiesce();
      const history = await h.history(uuid);
      assert.deepEqual(
        history.map((t) => [t.cause, t.from, t.to, t.vmStateTo, t.detail, t.outOfBand]).slice(1),
        [['hard-reboot', 'running', 'running', 'active', 'destroyed', true]],
      );
    }));

  for (const policy of ['observe', 'enforce'] as const) {
    test(`${policy}: libvirt's reboot event is an entry, cause reboot, running → running`, () =>
      withHarness({ policy }, async (h) => {
        const uuid = await adoptRunning(h, 'rebooted');
        h.sim.softReboot(uuid);
        const entry = await waitFor('the reboot entry', async () =>
          (await h.history(uuid)).find((t) => t.cause === 'reboot'),
        );
        assert.deepEqual(
          [entry.from, entry.to, entry.vmStateFrom, entry.vmStateTo, entry.detail, entry.outOfBand],
          ['running', 'running', 'active', 'active', 'reboot', true],
        );
        await h.quiesce();
        assert.equal((await h.history(uuid)).length, 2, 'adopt and the reboot, nothing else');
      }));
  }

  test('a reboot action is one entry (cause action), not a second one from its event', () =>
    withHarness({ policy: 'enforce' }, async (h) => {
      const uuid = await adoptRunning(h, 'asked');
      for (const action of ['reboot', 'hard-reboot'] as const) {
        const task = await h.engine.act(uuid, action);
        assert.equal((await task.done).ok, true);
        await h.quiesce();
      }
      const history = await h.history(uuid);
      assertChained(history);
      const entries = history.slice(1).map((t) => [t.cause, t.detail, t.from, t.to, t.outOfBand]);
      assert.deepEqual(entries, [
        ['action', 'reboot', 'running', 'running', false],
        ['action', 'hard-reboot', 'running', 'running', false],
      ]);
    }));

  for (const withResumed of [false, true]) {
    test(`hard reboots via act (RESUMED in between: ${withResumed}) complete and never stop`, () =>
      withHarness({ policy: 'enforce', instances: 10 }, async (h) => {
        h.sim.hardRebootEmitsResumed = withResumed;
        const uuids = h.sim.list().map((i) => i.uuid);
        for (let round = 0; round < 3; round++) {
          const tasks = await Promise.all(uuids.map((uuid) => h.engine.act(uuid, 'hard-reboot')));
          const outcomes = await Promise.all(tasks.map((task) => task.done));
          assert.ok(
            outcomes.every((o) => o.ok),
            'every reboot succeeded',
          );
        }
        await h.quiesce();
        assert.deepEqual(
          h.commits.filter((c) => c.vmStateTo !== 'active'),
          [],
        );
        assert.equal(h.engine.stats.enforcements, 0);
        assert.equal(h.engine.stats.actions.ok, 30);
        for (const uuid of uuids) {
          const record = await h.record(uuid);
          assert.equal(record.vmState, 'active');
          assert.equal(record.taskState, null);
          assert.equal(record.powerState, 'running');
        }
      }));
  }

  test('a real stop after a reboot storm is still recorded', () =>
    withHarness({ policy: 'enforce', instances: 1 }, async (h) => {
      const [uuid] = h.sim.list().map((i) => i.uuid);
      await h.sim.hardReboot(uuid!);
      h.sim.destroy(uuid!);
      const record = await waitForRecord(h, uuid!, 'stopped', (r) => r.vmState === 'stopped');
      assert.equal(record.powerState, 'shutoff');
      assert.equal((await h.history(uuid!)).at(-1)!.detail, 'destroyed');
    }));
});

describe('engine: migration', () => {
  test('migrating away is not a stop and not a deletion, not even after a reconcile', () =>
    withHarness({ policy: 'enforce' }, async (h) => {
      const uuid = await adoptRunning(h, 'mover');
      h.sim.migrateAway(uuid);
      const record = await waitForRecord(h, uuid, 'left', (r) => r.powerState === 'missing');
      assert.equal(record.vmState, 'active');
      assert.equal(record.powerReason, 'migrated');
      await h.quiesce();
      await h.engine.reconcile();
      await h.quiesce();
      const after = await h.record(uuid);
      assert.equal(after.vmState, 'active');
      assert.equal(after.powerState, 'missing');
      assert.equal(h.engine.stats.enforcements, 0);
    }));

  test('a failed migration (SUSPENDED/migrated, RESUMED/migrated) changes no vmState', () =>
    withHarness({ policy: 'observe' }, async (h) => {
      const uuid = await adoptRunning(h, 'stayer');
      await h.sim.failedMigration(uuid, { gapMs: 50 });
      await h.quiesce();
      const history = await h.history(uuid);
      assert.ok(history.every((t) => t.vmStateTo === 'active'));
      assert.equal((await h.record(uuid)).powerState, 'running');
    }));

  test('an incoming migration is adopted as active', () =>
    withHarness({}, async (h) => {
      const uuid = h.sim.migrateIn('arrival');
      const record = await waitForRecord(h, uuid, 'adopted', (r) => r.vmState === 'active');
      assert.equal(record.powerState, 'running');
    }));
});

describe('engine: start-up log', () => {
  test('one summary line for the whole start-up; each adoption only at debug', async () => {
    const lines: { level: string; msg: string | undefined; fields: object }[] = [];
    const logAt =
      (level: string) =>
      (fields: object, msg?: string): void => {
        lines.push({ level, msg, fields });
      };
    const logger = {
      debug: logAt('debug'),
      info: logAt('info'),
      warn: logAt('warn'),
      error: logAt('error'),
    };
    await withHarness({ instances: 200, engine: { logger } }, async (h) => {
      await h.quiesce();
      const info = lines.filter((line) => line.level !== 'debug');
      assert.deepEqual(
        info.map((line) => line.msg),
        ['adopted 200 instances, 0 changed since last run'],
      );
      assert.equal(lines.filter((line) => line.msg === 'adopted').length, 200);
      // Later reconciles keep their own short line.
      await h.engine.reconcile();
      assert.equal(lines.at(-1)?.msg, 'reconciled');
    });
  });
});
