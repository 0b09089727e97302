import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  changesChannel,
  changesOfPayload,
  changesPayload,
  NOTIFY_PAYLOAD_MAX,
} from '../../src/store/postgres-notify.ts';
import type { ChangeRecord } from '../../src/store/index.ts';
import { instanceFields } from '../support/records.ts';

function change(revision: number, uuid = `uuid-${revision}`): ChangeRecord {
  return {
    revision,
    type: revision === 1 ? 'created' : 'updated',
    instance: {
      ...instanceFields(),
      uuid,
      version: revision,
      createdAt: 1,
      updatedAt: revision,
      powerReason: 'ä "quoted"',
    },
    at: 1_000 + revision,
  };
}

test('a payload carries the changes while they fit, and reads back as they were', () => {
  const changes = [change(1), change(2), change(3)];
  const payload = changesPayload(changes);
  assert.deepEqual(changesOfPayload(payload), changes);
});

test('changes past the size PostgreSQL takes are announced by their last revision', () => {
  const changes = Array.from({ length: 40 }, (_, i) => change(i + 1));
  const payload = changesPayload(changes);
  assert.equal(payload, '40');
  assert.equal(changesOfPayload(payload), null);
  // The bound is on bytes, not characters.
  const wide = [
    { ...change(1), instance: { ...change(1).instance, powerReason: 'é'.repeat(4_000) } },
  ];
  assert.ok(JSON.stringify(wide).length <= NOTIFY_PAYLOAD_MAX);
  assert.equal(changesPayload(wide), '1');
});

test('a payload that cannot be trusted as a whole is not taken at all', () => {
  const good = change(1);
  const cases: Record<string, string> = {
    'a bare revision': '12',
    'cut short': JSON.stringify([good]).slice(0, 50),
    'an empty list': '[]',
    'not a list of changes': '[1, 2]',
    'a revision that is not a whole number': JSON.stringify([{ ...good, revision: 1.5 }]),
    'an unknown type': JSON.stringify([{ ...good, type: 'deleted' }]),
    'an instance without a uuid': JSON.stringify([{ ...good, instance: { version: 1 } }]),
    'no time': JSON.stringify([{ ...good, at: '1' }]),
    'revisions with a hole': JSON.stringify([change(1), change(3)]),
  };
  for (const [what, payload] of Object.entries(cases)) {
    assert.equal(changesOfPayload(payload), null, what);
  }
});

test('each schema has its own channel, of a length PostgreSQL takes', () => {
  assert.equal(changesChannel(undefined), 'hvsync_changes');
  const long = 'x'.repeat(63);
  assert.notEqual(changesChannel('a'), changesChannel('b'));
  assert.ok(changesChannel(long).length < 64);
});
