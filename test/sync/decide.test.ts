// Every row of docs/decisions.md, checked against decide(). The policy and adoption tables are
// read from the document itself, so the specification and the code cannot drift apart; guard
// rows need richer inputs than a table cell holds, so they are cases here keyed by the doc's ids.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { POWER_STATES, VM_STATES } from '../../src/model/index.ts';
import type { Policy, PowerState, VmState } from '../../src/model/index.ts';
import { adopt, decide, type DecideInput, type Observation } from '../../src/sync/index.ts';

const doc = readFileSync(
  fileURLToPath(new URL('../../docs/decisions.md', import.meta.url)),
  'utf8',
);

/** The rows of the first markdown table whose header's first cell is `firstHeader`. */
function table(firstHeader: string): string[][] {
  const lines = doc.split('\n');
  const start = lines.findIndex((line) => cells(line)[0] === firstHeader);
  assert.ok(start >= 0, `docs/decisions.md has a table starting with "${firstHeader}"`);
  const rows: string[][] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(cells(line));
  }
  return rows;
}

function cells(line: string): string[] {
  return line
    .split('|')
    .slice(1, -1)
    .map((cell) => cell.trim());
}

function list(cell: string): string[] {
  return cell.split(',').map((item) => item.trim());
}

const HOST = 'host-a';

const activeRunning: DecideInput['record'] = {
  vmState: 'active',
  taskState: null,
  powerState: 'running',
  powerReason: 'booted',
  host: HOST,
};

function input(overrides: Partial<DecideInput> & { observation: Observation }): DecideInput {
  return {
    record: activeRunning,
    event: null,
    thisHost: HOST,
    policy: 'observe',
    cause: 'event',
    ...overrides,
  };
}

/** A recorded power state different from the observed one, so that the write is visible. */
function previousPower(observed: PowerState): PowerState {
  return observed === 'nostate' ? 'running' : 'nostate';
}

describe('decide: policy table', () => {
  const rows = table('policy');
  const covered = new Map<string, number>();

  for (const [policyCell, vmCell, observedCell, becomes, action, warn, reason] of rows) {
    const policies: Policy[] =
      policyCell === 'both' ? ['observe', 'enforce'] : [policyCell as Policy];
    for (const policy of policies) {
      for (const vmState of list(vmCell!) as VmState[]) {
        for (const observed of list(observedCell!) as PowerState[]) {
          const key = `${policy} ${vmState} ${observed}`;
          covered.set(key, (covered.get(key) ?? 0) + 1);
          test(`${key} → ${becomes} / ${action} / ${reason}`, () => {
            const decision = decide(
              input({
                policy,
                record: {
                  vmState,
                  taskState: null,
                  powerState: previousPower(observed),
                  powerReason: 'unknown',
                  host: HOST,
                },
                observation: { kind: 'present', powerState: observed, reason: 'unknown' },
              }),
            );
            assert.equal(decision.reason, reason);
            assert.deepEqual(decision.write, {
              powerState: observed,
              powerReason: 'unknown',
              ...(becomes === '—' ? {} : { vmState: becomes }),
            });
            assert.equal(decision.action, action === '—' ? null : action);
            assert.equal(decision.warn, warn === 'yes');
            assert.equal(decision.outOfBand, true, 'every policy-table write is out-of-band');
          });
        }
      }
    }
  }

  test('covers every policy × vmState × power state exactly once', () => {
    for (const policy of ['observe', 'enforce'] as const) {
      for (const vmState of VM_STATES) {
        for (const power of POWER_STATES) {
          assert.equal(
            covered.get(`${policy} ${vmState} ${power}`),
            1,
            `${policy} ${vmState} ${power}`,
          );
        }
      }
    }
    assert.equal(covered.size, 2 * VM_STATES.length * POWER_STATES.length);
  });
});

interface GuardCase {
  readonly name: string;
  readonly input: DecideInput;
  readonly expect: Partial<ReturnType<typeof decide>>;
}

const running: Observation = { kind: 'present', powerState: 'running', reason: 'booted' };
const shutoff: Observation = { kind: 'present', powerState: 'shutoff', reason: 'shutdown' };

const GUARDS: Record<string, readonly GuardCase[]> = {
  G1: [
    {
      name: 'another host: a shutoff changes nothing, even in enforce',
      input: input({
        record: { ...activeRunning, host: 'host-b' },
        observation: shutoff,
        policy: 'enforce',
      }),
      expect: { write: null, action: null, outOfBand: false, reason: 'other-host' },
    },
    {
      name: 'another host: gone deletes nothing',
      input: input({ record: { ...activeRunning, host: 'host-b' }, observation: { kind: 'gone' } }),
      expect: { write: null, action: null, reason: 'other-host' },
    },
  ],
  G2: [
    {
      name: 'gone marks an active record deleted',
      input: input({ observation: { kind: 'gone' }, cause: 'reconcile' }),
      expect: {
        write: { powerState: 'nostate', powerReason: 'undefined', vmState: 'deleted' },
        action: null,
        outOfBand: true,
        reason: 'gone',
      },
    },
    {
      name: 'gone deletes even with a task in flight, and never acts in enforce',
      input: input({
        record: {
          vmState: 'stopped',
          taskState: 'powering-on',
          powerState: 'shutoff',
          powerReason: 'shutdown',
          host: HOST,
        },
        observation: { kind: 'gone' },
        policy: 'enforce',
      }),
      expect: {
        write: { powerState: 'nostate', powerReason: 'undefined', vmState: 'deleted' },
        action: null,
        reason: 'gone',
      },
    },
    {
      name: 'gone keeps a shelved record shelved (its domain is meant to be gone)',
      input: input({
        record: {
          vmState: 'shelved',
          taskState: null,
          powerState: 'shutoff',
          powerReason: 'shutdown',
          host: HOST,
        },
        observation: { kind: 'gone' },
      }),
      expect: {
        write: { powerState: 'nostate', powerReason: 'undefined' },
        action: null,
        reason: 'gone',
      },
    },
    {
      name: 'gone on a record already deleted writes nothing',
      input: input({
        record: {
          vmState: 'deleted',
          taskState: null,
          powerState: 'nostate',
          powerReason: 'undefined',
          host: HOST,
        },
        observation: { kind: 'gone' },
      }),
      expect: { write: null, action: null, outOfBand: false, reason: 'gone' },
    },
  ],
  G3: [
    {
      name: 'missing records missing and leaves vmState alone',
      input: input({ observation: { kind: 'missing' }, cause: 'reconcile' }),
      expect: {
        write: { powerState: 'missing', powerReason: 'unlisted' },
        action: null,
        outOfBand: false,
        reason: 'missing',
      },
    },
    {
      name: 'missing never powers anything off in enforce, even for a stopped record',
      input: input({
        record: {
          vmState: 'stopped',
          taskState: null,
          powerState: 'running',
          powerReason: 'booted',
          host: HOST,
        },
        observation: { kind: 'missing' },
        policy: 'enforce',
      }),
      expect: {
        write: { powerState: 'missing', powerReason: 'unlisted' },
        action: null,
        reason: 'missing',
      },
    },
  ],
  G4: [
    {
      name: 'a task in flight: a shutoff is recorded, vmState waits for the task',
      input: input({
        record: {
          vmState: 'active',
          taskState: 'rebooting',
          powerState: 'running',
          powerReason: 'booted',
          host: HOST,
        },
        observation: shutoff,
        policy: 'enforce',
      }),
      expect: {
        write: { powerState: 'shutoff', powerReason: 'shutdown' },
        action: null,
        outOfBand: false,
        reason: 'task-in-flight',
      },
    },
    {
      name: 'a task in flight: enforce does not fight a start in progress',
      input: input({
        record: {
          vmState: 'stopped',
          taskState: 'powering-on',
          powerState: 'shutoff',
          powerReason: 'shutdown',
          host: HOST,
        },
        observation: running,
        policy: 'enforce',
      }),
      expect: {
        write: { powerState: 'running', powerReason: 'booted' },
        action: null,
        reason: 'task-in-flight',
      },
    },
  ],
  G5: [
    {
      name: 'SHUTOFF/crashed is a crash',
      input: input({ observation: { kind: 'present', powerState: 'shutoff', reason: 'crashed' } }),
      expect: {
        write: { powerState: 'crashed', powerReason: 'crashed', vmState: 'stopped' },
        outOfBand: true,
        reason: 'crashed',
      },
    },
    {
      name: 'SHUTOFF/failed (the emulator died) is a crash',
      input: input({
        observation: { kind: 'present', powerState: 'shutoff', reason: 'failed' },
        policy: 'enforce',
      }),
      expect: {
        write: { powerState: 'crashed', powerReason: 'failed', vmState: 'stopped' },
        action: null,
        reason: 'crashed',
      },
    },
    {
      name: 'SHUTOFF confirmed after CRASHED/panicked is a crash',
      input: input({
        event: { transition: 'crashed', detail: 'panicked' },
        observation: { kind: 'present', powerState: 'shutoff', reason: 'unknown' },
      }),
      expect: {
        write: { powerState: 'crashed', powerReason: 'panicked', vmState: 'stopped' },
        reason: 'crashed',
      },
    },
    {
      name: 'SHUTOFF confirmed after STOPPED/crashed is a crash',
      input: input({
        event: { transition: 'stopped', detail: 'crashed' },
        observation: { kind: 'present', powerState: 'shutoff', reason: 'unknown' },
      }),
      expect: {
        write: { powerState: 'crashed', powerReason: 'crashed', vmState: 'stopped' },
        reason: 'crashed',
      },
    },
    {
      name: 'SHUTOFF/shutdown after STOPPED/shutdown is a plain stop',
      input: input({ event: { transition: 'stopped', detail: 'shutdown' }, observation: shutoff }),
      expect: {
        write: { powerState: 'shutoff', powerReason: 'shutdown', vmState: 'stopped' },
        reason: 'stopped',
      },
    },
  ],
  G6: [
    {
      name: 'nothing differs: no write',
      input: input({ observation: running }),
      expect: { write: null, action: null, outOfBand: false, reason: 'in-sync' },
    },
    {
      name: 'only the reason differs: no write',
      input: input({ observation: { kind: 'present', powerState: 'running', reason: 'unpaused' } }),
      expect: { write: null, reason: 'in-sync' },
    },
    {
      name: 'already recorded running on a stopped record: enforce still powers off',
      input: input({
        record: {
          vmState: 'stopped',
          taskState: null,
          powerState: 'running',
          powerReason: 'booted',
          host: HOST,
        },
        observation: running,
        policy: 'enforce',
      }),
      expect: { write: null, action: 'force-stop', reason: 'power-off' },
    },
    {
      name: 'a crash already recorded on a stopped record: no write',
      input: input({
        record: {
          vmState: 'stopped',
          taskState: null,
          powerState: 'crashed',
          powerReason: 'crashed',
          host: HOST,
        },
        observation: { kind: 'present', powerState: 'shutoff', reason: 'crashed' },
        cause: 'reconcile',
      }),
      expect: { write: null, reason: 'in-sync' },
    },
  ],
};

const elsewhere = (observation: Observation, extra: Partial<DecideInput> = {}): DecideInput =>
  input({
    record: { ...activeRunning, host: 'host-a' },
    thisHost: 'host-b',
    observation,
    ...extra,
  });

const leftRecord: DecideInput['record'] = {
  ...activeRunning,
  powerState: 'missing',
  powerReason: 'migrated',
};

const MIGRATION: Record<string, readonly GuardCase[]> = {
  M1: [
    {
      name: 'RESUMED/migrated on the destination claims the record, running',
      input: elsewhere(
        { kind: 'present', powerState: 'running', reason: 'migrated' },
        { event: { transition: 'resumed', detail: 'migrated' }, policy: 'enforce' },
      ),
      expect: {
        write: { host: 'host-b', powerState: 'running', powerReason: 'migrated' },
        action: null,
        outOfBand: true,
        warn: false,
        reason: 'claimed',
        migration: { from: 'host-a', to: 'host-b' },
      },
    },
    {
      name: 'a listing that shows it running with reason migrated claims it',
      input: elsewhere(
        { kind: 'present', powerState: 'running', reason: 'migrated' },
        { cause: 'reconcile' },
      ),
      expect: {
        write: { host: 'host-b', powerState: 'running', powerReason: 'migrated' },
        reason: 'claimed',
      },
    },
    {
      name: 'STARTED/migrated confirmed running (post-copy) claims it',
      input: elsewhere(
        { kind: 'present', powerState: 'running', reason: 'postcopy' },
        { event: { transition: 'started', detail: 'migrated' } },
      ),
      expect: { reason: 'claimed', migration: { from: 'host-a', to: 'host-b' } },
    },
    {
      name: 'a record its host already lost is claimed whatever the running reason',
      input: elsewhere(running, { record: { ...leftRecord, host: 'host-a' }, cause: 'reconcile' }),
      expect: {
        write: { host: 'host-b', powerState: 'running', powerReason: 'booted' },
        reason: 'claimed',
      },
    },
    {
      name: 'a record deleted from absence comes back active where it runs',
      input: elsewhere(running, {
        record: {
          vmState: 'deleted',
          taskState: null,
          powerState: 'nostate',
          powerReason: 'undefined',
          host: 'host-a',
        },
        cause: 'reconcile',
      }),
      expect: {
        write: { host: 'host-b', powerState: 'running', powerReason: 'booted', vmState: 'active' },
        reason: 'claimed',
      },
    },
  ],
  M2: [
    {
      name: 'running here with no sign of arrival, while the record runs there: warn only',
      input: elsewhere(
        { kind: 'present', powerState: 'running', reason: 'unpaused' },
        { cause: 'reconcile', policy: 'enforce' },
      ),
      expect: { write: null, action: null, warn: true, reason: 'running-elsewhere' },
    },
    {
      name: 'a plain STARTED/booted is no arrival',
      input: elsewhere(running, { event: { transition: 'started', detail: 'booted' } }),
      expect: { write: null, reason: 'running-elsewhere' },
    },
  ],
  M3: [
    {
      name: 'another host: a shutoff changes nothing, even in enforce',
      input: elsewhere(shutoff, { policy: 'enforce' }),
      expect: { write: null, action: null, outOfBand: false, warn: false, reason: 'other-host' },
    },
    {
      name: 'another host: gone deletes nothing',
      input: elsewhere({ kind: 'gone' }),
      expect: { write: null, action: null, reason: 'other-host' },
    },
    {
      name: 'the source after the claim: STOPPED/migrated changes nothing',
      input: elsewhere(
        { kind: 'present', powerState: 'shutoff', reason: 'migrated' },
        { event: { transition: 'stopped', detail: 'migrated' } },
      ),
      expect: { write: null, reason: 'other-host' },
    },
    {
      name: 'the source after the claim: absence changes nothing',
      input: elsewhere({ kind: 'missing' }, { cause: 'reconcile' }),
      expect: { write: null, reason: 'other-host' },
    },
    {
      name: 'the destination while it is paused for the incoming copy: nothing yet',
      input: elsewhere(
        { kind: 'present', powerState: 'paused', reason: 'migration' },
        { event: { transition: 'started', detail: 'migrated' } },
      ),
      expect: { write: null, reason: 'other-host' },
    },
    {
      name: 'the destination of a failed migration: STOPPED/failed, gone, nothing',
      input: elsewhere({ kind: 'gone' }, { event: { transition: 'stopped', detail: 'failed' } }),
      expect: { write: null, reason: 'other-host' },
    },
  ],
  M4: [
    {
      name: 'STOPPED/migrated before the claim: missing, never shutoff, never stopped',
      input: input({
        event: { transition: 'stopped', detail: 'migrated' },
        observation: { kind: 'present', powerState: 'shutoff', reason: 'migrated' },
        policy: 'enforce',
      }),
      expect: {
        write: { powerState: 'missing', powerReason: 'migrated' },
        action: null,
        outOfBand: false,
        reason: 'migrated-away',
      },
    },
    {
      name: 'STOPPED/migrated and the domain removed: missing, not deleted',
      input: input({
        event: { transition: 'stopped', detail: 'migrated' },
        observation: { kind: 'gone' },
      }),
      expect: {
        write: { powerState: 'missing', powerReason: 'migrated' },
        reason: 'migrated-away',
      },
    },
    {
      name: 'a reconcile finding SHUTOFF/migrated (events lost): missing',
      input: input({
        observation: { kind: 'present', powerState: 'shutoff', reason: 'migrated' },
        cause: 'reconcile',
      }),
      expect: {
        write: { powerState: 'missing', powerReason: 'migrated' },
        reason: 'migrated-away',
      },
    },
    {
      name: 'gone after it left: nothing more, not a deletion',
      input: input({ record: leftRecord, observation: { kind: 'gone' }, cause: 'reconcile' }),
      expect: { write: null, action: null, reason: 'migrated-away' },
    },
    {
      name: 'missing after it left keeps that memory',
      input: input({ record: leftRecord, observation: { kind: 'missing' }, cause: 'reconcile' }),
      expect: { write: null, reason: 'migrated-away' },
    },
    {
      name: 'a record an older version left shut off with reason migrated: gone is not a deletion',
      input: input({
        record: { ...activeRunning, powerState: 'shutoff', powerReason: 'migrated' },
        observation: { kind: 'gone' },
      }),
      expect: {
        write: { powerState: 'missing', powerReason: 'migrated' },
        reason: 'migrated-away',
      },
    },
  ],
  M5: [
    {
      name: 'SUSPENDED/migrated (the switch-over): nothing recorded',
      input: input({
        event: { transition: 'suspended', detail: 'migrated' },
        observation: { kind: 'present', powerState: 'paused', reason: 'migration' },
      }),
      expect: { write: null, action: null, reason: 'switching-over' },
    },
    {
      name: 'the switch-over on a stopped record in enforce is no reason to power off',
      input: input({
        record: {
          vmState: 'stopped',
          taskState: null,
          powerState: 'running',
          powerReason: 'booted',
          host: HOST,
        },
        event: { transition: 'suspended', detail: 'migrated' },
        observation: { kind: 'present', powerState: 'paused', reason: 'migration' },
        policy: 'enforce',
      }),
      expect: { write: null, action: null, reason: 'switching-over' },
    },
  ],
  M6: [
    {
      name: 'RESUMED/migrated after a failed migration: running as before, nothing to write',
      input: input({
        event: { transition: 'resumed', detail: 'migrated' },
        observation: { kind: 'present', powerState: 'running', reason: 'migration-canceled' },
      }),
      expect: { write: null, action: null, reason: 'migration' },
    },
    {
      name: 'RESUMED/migrated after a stalled one was recorded paused: running again',
      input: input({
        record: { ...activeRunning, powerState: 'paused', powerReason: 'migration' },
        event: { transition: 'resumed', detail: 'migrated' },
        observation: { kind: 'present', powerState: 'running', reason: 'migration-canceled' },
      }),
      expect: {
        write: { powerState: 'running', powerReason: 'migration-canceled' },
        reason: 'migration',
      },
    },
    {
      name: 'a reconcile that still finds it paused for a migration records paused, not vmState',
      input: input({
        observation: { kind: 'present', powerState: 'paused', reason: 'migration' },
        cause: 'reconcile',
      }),
      expect: {
        write: { powerState: 'paused', powerReason: 'migration' },
        action: null,
        reason: 'migration',
      },
    },
  ],
};

describe('decide: migration', () => {
  test('every row of the migration table has cases here, and no others', () => {
    const ids = table('id').map((row) => row[0]);
    assert.deepEqual(ids, Object.keys(MIGRATION));
  });
  for (const [id, cases] of Object.entries(MIGRATION)) {
    for (const migrationCase of cases) {
      test(`${id}: ${migrationCase.name}`, () => {
        const decision = decide(migrationCase.input);
        for (const [field, expected] of Object.entries(migrationCase.expect)) {
          assert.deepEqual(decision[field as keyof typeof decision], expected, field);
        }
      });
    }
  }
});

describe('decide: guards', () => {
  test('every guard in the doc has cases here, and no others', () => {
    const ids = table('#').map((row) => row[0]);
    assert.deepEqual(ids, Object.keys(GUARDS));
  });
  for (const [id, cases] of Object.entries(GUARDS)) {
    for (const guardCase of cases) {
      test(`${id}: ${guardCase.name}`, () => {
        const decision = decide(guardCase.input);
        for (const [field, expected] of Object.entries(guardCase.expect)) {
          assert.deepEqual(decision[field as keyof typeof decision], expected, field);
        }
      });
    }
  }
});

describe('adopt: adoption table', () => {
  const rows = table('observed');
  const covered = new Set<string>();
  for (const [observedCell, vmState] of rows) {
    for (const observed of list(observedCell!) as PowerState[]) {
      covered.add(observed);
      test(`${observed} → ${vmState}`, () => {
        assert.deepEqual(adopt({ powerState: observed, reason: 'unknown' }), {
          vmState,
          powerState: observed,
          powerReason: 'unknown',
        });
      });
    }
  }
  test('covers every power state', () => {
    assert.deepEqual([...covered].sort(), [...POWER_STATES].sort());
  });
  test('a domain paused for an incoming migration is adopted active', () => {
    assert.deepEqual(adopt({ powerState: 'paused', reason: 'migration' }), {
      vmState: 'active',
      powerState: 'paused',
      powerReason: 'migration',
    });
  });
  test('a SHUTOFF with a crash reason is adopted as a crash', () => {
    assert.deepEqual(adopt({ powerState: 'shutoff', reason: 'crashed' }), {
      vmState: 'stopped',
      powerState: 'crashed',
      powerReason: 'crashed',
    });
  });
});
