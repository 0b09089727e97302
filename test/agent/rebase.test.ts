// A journaled observation refused on replay because the record changed meanwhile, rewritten
// onto the record as it stands: every rule of rebaseObservation, one case each.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rebaseObservation } from '../../src/agent/index.ts';
import type { InstanceRecord, InstanceWrite, NewTransition } from '../../src/store/index.ts';
import { instanceFields } from '../support/records.ts';

const UUID = '00000000-0000-4000-8000-000000000001';

function record(overrides: Partial<InstanceRecord> = {}): InstanceRecord {
  return {
    ...instanceFields(),
    uuid: UUID,
    version: 7,
    createdAt: 1,
    updatedAt: 2,
    ...overrides,
  };
}

const stop: NewTransition = {
  from: 'running',
  to: 'shutoff',
  vmStateFrom: 'active',
  vmStateTo: 'stopped',
  cause: 'event',
  detail: 'destroyed',
  outOfBand: true,
  observedAt: 1234,
};

const observedStop: InstanceWrite = {
  kind: 'update',
  uuid: UUID,
  expectedVersion: 5,
  patch: { powerState: 'shutoff', powerReason: 'destroyed', vmState: 'stopped' },
  transition: stop,
};

test('the power state observed is applied on the current version; decisions are dropped', () => {
  // A user's task was recorded meanwhile: the record is at version 7 with a task in flight.
  const current = record({ taskState: 'powering-off', version: 7 });
  assert.deepEqual(rebaseObservation(observedStop, current, 'host-a'), {
    kind: 'update',
    uuid: UUID,
    expectedVersion: 7,
    patch: { powerState: 'shutoff', powerReason: 'destroyed' },
    transition: { ...stop, vmStateTo: 'active' },
  });
});

test('the transition starts from the power state recorded now and keeps its observation time', () => {
  const current = record({ powerState: 'paused', powerReason: 'user', vmState: 'paused' });
  const rebased = rebaseObservation(observedStop, current, 'host-a');
  assert.equal(rebased?.transition?.from, 'paused');
  assert.equal(rebased?.transition?.vmStateFrom, 'paused');
  assert.equal(rebased?.transition?.vmStateTo, 'paused');
  assert.equal(rebased?.transition?.observedAt, 1234);
});

test('already recorded as such: dropped', () => {
  const current = record({ powerState: 'shutoff', powerReason: 'destroyed', vmState: 'stopped' });
  assert.equal(rebaseObservation(observedStop, current, 'host-a'), null);
});

test("a reboot's history entry is kept although the power state is unchanged", () => {
  const reboot: InstanceWrite = {
    kind: 'update',
    uuid: UUID,
    expectedVersion: 3,
    patch: { powerState: 'running', powerReason: 'booted' },
    transition: { ...stop, from: 'running', to: 'running', cause: 'reboot', detail: 'reboot' },
  };
  const rebased = rebaseObservation(reboot, record(), 'host-a');
  assert.equal(rebased?.transition?.cause, 'reboot');
  assert.equal(rebased?.kind === 'update' && rebased.expectedVersion, 7);
});

test('a record gone from the control plane, or moved to another host: dropped', () => {
  assert.equal(rebaseObservation(observedStop, null, 'host-a'), null);
  assert.equal(rebaseObservation(observedStop, record({ host: 'host-b' }), 'host-a'), null);
});

test('a decision without a power state (a task cleared, a vmState): dropped', () => {
  const decision: InstanceWrite = {
    kind: 'update',
    uuid: UUID,
    expectedVersion: 5,
    patch: { taskState: null, taskStartedAt: null, vmState: 'stopped' },
  };
  assert.equal(rebaseObservation(decision, record(), 'host-a'), null);
});

test('an adoption refused because the record exists becomes an update of its power state', () => {
  const adopt: InstanceWrite = {
    kind: 'create',
    uuid: UUID,
    fields: instanceFields({ powerState: 'paused', powerReason: 'user', vmState: 'paused' }),
    transition: { ...stop, from: null, to: 'paused', cause: 'adopt', vmStateFrom: null },
  };
  const rebased = rebaseObservation(adopt, record(), 'host-a');
  assert.equal(rebased?.kind, 'update');
  assert.deepEqual(rebased?.kind === 'update' && rebased.patch, {
    powerState: 'paused',
    powerReason: 'user',
  });
  assert.equal(rebased?.transition?.from, 'running');
});
