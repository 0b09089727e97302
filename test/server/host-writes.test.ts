// mayHostWrite, row by row: a host writes its own host's instances, and takes another's only by
// reporting it running after a migration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mayHostWrite } from '../../src/server/index.ts';
import type { InstanceRecord, InstanceWrite, NewTransition } from '../../src/store/index.ts';
import { instanceFields } from '../support/records.ts';

const UUID = '00000000-0000-4000-8000-000000000001';

function recordOn(host: string): InstanceRecord {
  return {
    uuid: UUID,
    ...instanceFields({ host }),
    version: 3,
    createdAt: 1,
    updatedAt: 2,
  };
}

function transition(cause: NewTransition['cause']): NewTransition {
  return {
    from: 'running',
    to: 'running',
    vmStateFrom: 'active',
    vmStateTo: 'active',
    cause,
    detail: 'b → a',
    outOfBand: false,
    observedAt: 1,
  };
}

function create(host: string): InstanceWrite {
  return { kind: 'create', uuid: UUID, fields: instanceFields({ host }) };
}

function update(patch: Partial<InstanceRecord>, cause?: NewTransition['cause']): InstanceWrite {
  return cause === undefined
    ? { kind: 'update', uuid: UUID, expectedVersion: 3, patch }
    : { kind: 'update', uuid: UUID, expectedVersion: 3, patch, transition: transition(cause) };
}

const claim = { host: 'a', powerState: 'running' } as const;

// [what, write, current record's host (null: no record), allowed]
const ROWS: [string, InstanceWrite, string | null, boolean][] = [
  ['create on itself', create('a'), null, true],
  ['create on another host', create('b'), null, false],
  ['create of a uuid recorded on another host', create('a'), 'b', false],
  ['create of a uuid recorded on itself (the store says exists)', create('a'), 'a', true],
  ['update of its own instance', update({ powerState: 'shutoff' }, 'event'), 'a', true],
  ['update of its own instance naming itself', update({ host: 'a' }), 'a', true],
  ['update moving its own instance away', update({ host: 'b' }), 'a', false],
  ['update of an unknown uuid (the store says not-found)', update({ name: 'x' }), null, true],
  ["update of another host's instance", update({ powerState: 'shutoff' }, 'event'), 'b', false],
  ["update of another host's instance, claiming it without cause", update(claim), 'b', false],
  ['claim with cause event', update(claim, 'event'), 'b', false],
  ['claim not running', update({ host: 'a', powerState: 'paused' }, 'migration'), 'b', false],
  ['migration cause without taking it', update({ powerState: 'running' }, 'migration'), 'b', false],
  ['migration claim for a third host', update({ ...claim, host: 'c' }, 'migration'), 'b', false],
  ['migration claim: running here, cause migration', update(claim, 'migration'), 'b', true],
];

for (const [what, write, currentHost, allowed] of ROWS) {
  test(`host a: ${what} → ${allowed ? 'allowed' : 'refused'}`, () => {
    const refusal = mayHostWrite('a', write, currentHost === null ? null : recordOn(currentHost));
    if (allowed) assert.equal(refusal, null);
    else assert.match(refusal ?? '', /host 'a' may not|is recorded on host 'b'/);
  });
}
