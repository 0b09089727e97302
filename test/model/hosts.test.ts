// Host reachability, whether a power state is believed, and when the control plane ends a task,
// row by row over (host's last report, now, limits).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  hostReachability,
  overdueTask,
  powerStateBelieved,
  taskEnd,
  taskMark,
} from '../../src/model/index.ts';
import type { HostReport, TaskState } from '../../src/model/index.ts';

const NOW = Date.parse('2026-01-01T12:00:00Z');
const TIMEOUT = 30_000;
const report = (agoMs: number, connected = true): HostReport => ({
  name: 'h1',
  lastSeenAt: NOW - agoMs,
  connected,
});

describe('hostReachability', () => {
  const rows: [string, HostReport | null, boolean, RegExp | null][] = [
    ['reported just now', report(0), true, null],
    ['reported 29.999 s ago', report(29_999), true, null],
    ['reported exactly at the timeout', report(30_000), true, null],
    ['silent 1 ms past the timeout', report(30_001), false, /since 2026-01-01T11:59:29\.999Z/],
    ['silent for an hour', report(3_600_000), false, /h1's agent has not reported since/],
    ['never reported', null, false, /no agent has reported for host h1/],
    ['a report from the future (clock skew)', report(-5_000), true, null],
  ];
  for (const [name, host, reachable, reason] of rows) {
    test(name, () => {
      const result = hostReachability('h1', host, NOW, TIMEOUT);
      assert.equal(result.reachable, reachable);
      if (!result.reachable) assert.match(result.reason, reason!);
    });
  }
});

describe('powerStateBelieved', () => {
  const rows: [string, boolean, HostReport | null, boolean][] = [
    ['reachable and connected', true, report(0), true],
    ['reachable, hypervisor lost', true, report(0, false), false],
    ['unreachable', false, report(60_000), false],
    ['never reported', false, null, false],
  ];
  for (const [name, reachable, host, believed] of rows) {
    test(name, () => assert.equal(powerStateBelieved(reachable, host), believed));
  }
});

describe('overdueTask', () => {
  const limits = { hostTimeoutMs: TIMEOUT, taskTimeoutMs: 120_000 };
  const task = (taskState: TaskState | null, agoMs: number) => ({
    uuid: 'u1',
    host: 'h1',
    taskState,
    taskStartedAt: taskState === null ? null : NOW - agoMs,
  });
  const rows: [string, ReturnType<typeof task>, HostReport | null, RegExp | null][] = [
    ['no task', task(null, 0), null, null],
    ['fresh task, host reports', task('powering-off', 1_000), report(0), null],
    [
      'task at the task timeout: the agent times it out itself',
      task('rebooting', 120_001),
      report(0),
      null,
    ],
    ['task within the margin after the task timeout', task('rebooting', 150_000), report(0), null],
    [
      'task past the task timeout and the margin',
      task('rebooting', 150_001),
      report(0),
      /rebooting did not complete within 120000 ms/,
    ],
    [
      'host silent past the host timeout',
      task('pausing', 1_000),
      report(30_001),
      /has not reported since/,
    ],
    ['host never reported', task('pausing', 1_000), null, /no agent has reported for host h1/],
    [
      'host reachable but disconnected from its hypervisor',
      task('pausing', 1_000),
      report(0, false),
      null,
    ],
  ];
  for (const [name, t, host, reason] of rows) {
    test(name, () => {
      const result = overdueTask(t, host, NOW, limits);
      if (reason === null) assert.equal(result, null);
      else assert.match(result ?? '', reason);
    });
  }
});

describe('task mark and end', () => {
  test('a mark carries the action, its task state and start; an end clears all three', () => {
    assert.deepEqual(taskMark('force-stop', 5), {
      taskState: 'powering-off',
      taskAction: 'force-stop',
      taskStartedAt: 5,
      taskError: null,
    });
    assert.deepEqual(taskEnd('gone'), {
      taskState: null,
      taskAction: null,
      taskStartedAt: null,
      taskError: 'gone',
    });
  });
});
