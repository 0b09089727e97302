// The settle-window table of docs/decisions.md, read from the document and checked against
// settleWindowFor(), and the reboot rules that put reboots into the history.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Policy } from '../../src/model/index.ts';
import {
  rebootSeen,
  rebootSign,
  settleWindowFor,
  strongerSign,
  type Decision,
  type Observation,
  type RebootInput,
  type SettleCue,
} from '../../src/sync/index.ts';
import type { LifecycleEvent } from '../../src/virt/index.ts';

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

function settleTable(): string[][] {
  const lines = doc.split('\n');
  const start = lines.findIndex((line) => cells(line)[0] === 'sign the pass has');
  assert.ok(start >= 0, 'docs/decisions.md has the settle-window table');
  const rows: string[][] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(cells(line));
  }
  return rows;
}

type EventFields = Pick<LifecycleEvent, 'transition' | 'detail' | 'powerState'>;
const event = (
  transition: EventFields['transition'],
  detail: string,
  powerState: EventFields['powerState'],
): SettleCue => ({
  kind: 'event',
  event: { transition, detail, powerState },
});

const changesVmState: Pick<Decision, 'write' | 'action'> = {
  write: { powerState: 'shutoff', powerReason: 'destroyed', vmState: 'stopped' },
  action: null,
};
const acts: Pick<Decision, 'write' | 'action'> = { write: null, action: 'force-stop' };
const recordsOnly: Pick<Decision, 'write' | 'action'> = {
  write: { powerState: 'shutoff', powerReason: 'migrated' },
  action: null,
};
const leftByMigration: Pick<Decision, 'write' | 'action'> = {
  write: { powerState: 'missing', powerReason: 'migrated' },
  action: null,
};
const deletes: Pick<Decision, 'write' | 'action'> = {
  write: { powerState: 'nostate', powerReason: 'undefined', vmState: 'deleted' },
  action: null,
};
const found = (
  observation: Observation,
  decision: Pick<Decision, 'write' | 'action'>,
): SettleCue => ({
  kind: 'decision',
  observation,
  decision,
});
const present = (
  powerState: 'running' | 'paused' | 'suspended' | 'shutoff' | 'crashed',
): Observation => ({
  kind: 'present',
  powerState,
  reason: 'x',
});

/** Concrete cues for each row of the table, keyed by the row's first cell. */
const CUES: Record<string, SettleCue[]> = {
  'event STOPPED (destroyed, shutdown, crashed, failed, saved...)': [
    event('stopped', 'destroyed', 'shutoff'),
    event('stopped', 'shutdown', 'shutoff'),
    event('stopped', 'crashed', 'shutoff'),
    event('stopped', 'failed', 'shutoff'),
    event('stopped', 'saved', 'shutoff'),
  ],
  'event CRASHED (panicked)': [event('crashed', 'panicked', 'crashed')],
  'event STOPPED/migrated': [event('stopped', 'migrated', 'shutoff')],
  'event UNDEFINED': [event('undefined', 'removed', null)],
  'any other event (DEFINED, STARTED, SUSPENDED, RESUMED, SHUTDOWN, reboot)': [
    event('defined', 'added', null),
    event('started', 'booted', 'running'),
    event('suspended', 'paused', 'paused'),
    event('resumed', 'unpaused', 'running'),
    event('shutdown', 'finished', 'shutdown'),
    event('rebooted', 'reboot', null),
  ],
  'found shutoff or crashed, and the decision changes vmState or acts': [
    found(present('shutoff'), changesVmState),
    found(present('crashed'), changesVmState),
    found(present('shutoff'), acts),
  ],
  'found shutoff or crashed, and the decision only records': [
    found(present('shutoff'), recordsOnly),
    found(present('crashed'), { write: null, action: null }),
  ],
  'found gone, and the decision marks it deleted': [found({ kind: 'gone' }, deletes)],
  'found running, paused, suspended or missing': [
    found(present('running'), acts),
    found(present('paused'), changesVmState),
    found(present('suspended'), changesVmState),
    found({ kind: 'missing' }, recordsOnly),
  ],
  'found left by migration (the decision records `missing`, reason `migrated`)': [
    found({ kind: 'gone' }, leftByMigration),
    found({ kind: 'missing' }, leftByMigration),
    found({ kind: 'present', powerState: 'shutoff', reason: 'migrated' }, leftByMigration),
  ],
};

describe('settle window: every row of docs/decisions.md', () => {
  const rows = settleTable();
  test('the table and the cases name the same rows', () => {
    assert.deepEqual(rows.map((row) => row[0]).sort(), Object.keys(CUES).sort());
  });
  for (const [sign, observe, enforce] of rows) {
    for (const [policy, cell] of [
      ['observe', observe],
      ['enforce', enforce],
    ] as [Policy, string][]) {
      test(`${sign} under ${policy}: ${cell}`, () => {
        const [verdict, reason] = cell.split(':').map((part) => part.trim());
        for (const cue of CUES[sign!] ?? []) {
          assert.deepEqual(
            settleWindowFor(policy, cue),
            { hold: verdict === 'hold', reason },
            JSON.stringify(cue),
          );
        }
      });
    }
  }
});

describe('reboot rules', () => {
  test('signs: a reboot event, a power-off that is not a migration; nothing else', () => {
    assert.deepEqual(rebootSign({ transition: 'rebooted', detail: 'reboot', powerState: null }), {
      cause: 'reboot',
      detail: 'reboot',
    });
    assert.deepEqual(
      rebootSign({ transition: 'stopped', detail: 'destroyed', powerState: 'shutoff' }),
      {
        cause: 'hard-reboot',
        detail: 'destroyed',
      },
    );
    assert.deepEqual(
      rebootSign({ transition: 'crashed', detail: 'panicked', powerState: 'crashed' }),
      {
        cause: 'hard-reboot',
        detail: 'panicked',
      },
    );
    assert.equal(
      rebootSign({ transition: 'stopped', detail: 'migrated', powerState: 'shutoff' }),
      null,
    );
    assert.equal(
      rebootSign({ transition: 'undefined', detail: 'removed', powerState: null }),
      null,
    );
    assert.equal(
      rebootSign({ transition: 'started', detail: 'booted', powerState: 'running' }),
      null,
    );
    assert.equal(
      rebootSign({ transition: 'resumed', detail: 'unpaused', powerState: 'running' }),
      null,
    );
  });

  test('a power cycle outweighs a guest reboot when both are folded into one pass', () => {
    const soft = { cause: 'reboot', detail: 'reboot' } as const;
    const hard = { cause: 'hard-reboot', detail: 'destroyed' } as const;
    assert.equal(strongerSign(hard, soft), hard);
    assert.equal(strongerSign(soft, hard), hard);
    assert.equal(strongerSign(soft, undefined), soft);
    assert.equal(strongerSign(undefined, soft), soft);
    assert.equal(strongerSign(undefined, undefined), undefined);
  });

  const base: RebootInput = {
    record: { powerState: 'running', taskState: null },
    observation: present('running'),
    sign: { cause: 'hard-reboot', detail: 'destroyed' },
    decision: { write: null, action: null },
  };
  const cases: [string, Partial<RebootInput>, boolean][] = [
    ['running before and after, nothing else to write: recorded', {}, true],
    ['no sign: nothing', { sign: null }, false],
    [
      'the record was shutoff (the stop was recorded): the start tells it',
      { record: { powerState: 'shutoff', taskState: null } },
      false,
    ],
    ['found shut off: a stop, not a reboot', { observation: present('shutoff') }, false],
    ['found gone', { observation: { kind: 'gone' } }, false],
    [
      'a task in flight records its own outcome',
      { record: { powerState: 'running', taskState: 'rebooting' } },
      false,
    ],
    ['the decision writes: that entry tells it', { decision: changesVmState }, false],
    ['the decision acts: that entry tells it', { decision: acts }, false],
  ];
  for (const [name, change, recorded] of cases) {
    test(name, () => {
      const input = { ...base, ...change };
      assert.deepEqual(rebootSeen(input), recorded ? input.sign : null);
    });
  }
});
