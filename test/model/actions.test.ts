// The action table of docs/decisions.md, read from the document and checked row by row against
// the model's rules, so the documented rulebook and the one the engine and API use cannot drift.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  ACTION_RULES,
  ACTIONS,
  actionShows,
  checkAction,
  POWER_STATES,
  VM_STATES,
  vmStateAfterTask,
} from '../../src/model/index.ts';
import type { ActionName, VmState } from '../../src/model/index.ts';

const doc = readFileSync(
  fileURLToPath(new URL('../../docs/decisions.md', import.meta.url)),
  'utf8',
);

function cells(line: string): string[] {
  return line
    .split('|')
    .slice(1, -1)
    .map((cell) => cell.trim());
}

const list = (cell: string): string[] => cell.split(',').map((item) => item.trim());

function actionTable(): string[][] {
  const lines = doc.split('\n');
  const start = lines.findIndex((line) => cells(line)[0] === 'action');
  assert.ok(start >= 0, 'docs/decisions.md has the action table');
  const rows: string[][] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(cells(line));
  }
  return rows;
}

const rows = actionTable();

describe('action table (docs/decisions.md)', () => {
  test('has one row per action, and only those', () => {
    assert.deepEqual(rows.map((row) => row[0]).sort(), [...ACTIONS].sort());
  });

  for (const [action, allowedFrom, taskState, intent, doneWhen] of rows) {
    const name = action as ActionName;
    test(`${action}: the model's rule matches the row`, () => {
      const rule = ACTION_RULES[name];
      assert.ok(rule, `the model knows ${action}`);
      assert.deepEqual([...rule.allowedFrom].sort(), list(allowedFrom!).sort());
      assert.equal(rule.taskState, taskState);
      assert.equal(rule.intent, intent);
      assert.deepEqual([...rule.expectedPower].sort(), list(doneWhen!).sort());
    });

    test(`${action}: checkAction allows exactly the listed vmStates`, () => {
      const allowed = new Set(list(allowedFrom!));
      for (const vmState of VM_STATES) {
        const refusal = checkAction({ uuid: 'u', vmState, taskState: null }, name);
        if (allowed.has(vmState)) assert.equal(refusal, null, `${action} from ${vmState}`);
        else assert.equal(refusal?.code, 'invalid-action', `${action} from ${vmState}`);
      }
    });

    test(`${action}: done exactly in the listed power states`, () => {
      const done = new Set(list(doneWhen!));
      for (const powerState of POWER_STATES) {
        assert.equal(actionShows(name, powerState), done.has(powerState), powerState);
      }
    });
  }
});

describe('checkAction', () => {
  test('refuses any action while a task is in flight, whatever the vmState', () => {
    for (const action of ACTIONS) {
      const refusal = checkAction(
        { uuid: 'u', vmState: ACTION_RULES[action].allowedFrom[0]!, taskState: 'rebooting' },
        action,
      );
      assert.equal(refusal?.code, 'task-in-flight');
      assert.match(refusal.message, /rebooting/);
    }
  });
});

describe('vmStateAfterTask', () => {
  const before: VmState = 'paused';
  test('success leaves the intent; failure leaves the vmState it began in', () => {
    for (const action of ACTIONS) {
      assert.equal(vmStateAfterTask(action, true, before, false), ACTION_RULES[action].intent);
      assert.equal(vmStateAfterTask(action, false, before, false), before);
    }
  });
  test('an instance confirmed gone is deleted, success or not', () => {
    assert.equal(vmStateAfterTask('start', true, 'stopped', true), 'deleted');
    assert.equal(vmStateAfterTask('stop', false, 'active', true), 'deleted');
  });
});
