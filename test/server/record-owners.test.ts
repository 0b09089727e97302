// Whose each record is, as a replica last saw it: an entry answers only for the version it holds,
// an older sighting never replaces a newer one, and the map stays within its bound.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecordOwners } from '../../src/server/record-owners.ts';
import { instanceFields } from '../support/records.ts';

const owner = (uuid: string, host: string, version: number) => ({ uuid, host, version });

test('an entry answers for its own version only; an older sighting does not replace a newer', () => {
  const owners = new RecordOwners();
  owners.learn(owner('a', 'host-a', 2));
  assert.deepEqual(owners.at('a', 2), owner('a', 'host-a', 2));
  assert.equal(owners.at('a', 1), undefined);
  assert.equal(owners.at('a', 3), undefined);
  assert.equal(owners.at('b', 1), undefined);

  owners.learn(owner('a', 'host-a', 1)); // a read that started before the feed's change
  assert.deepEqual(owners.at('a', 2), owner('a', 'host-a', 2));
  owners.follow([
    {
      revision: 7,
      type: 'updated',
      at: 0,
      instance: {
        ...instanceFields({ host: 'host-b' }),
        uuid: 'a',
        version: 3,
        createdAt: 0,
        updatedAt: 0,
      },
    },
  ]);
  assert.deepEqual(owners.at('a', 3), owner('a', 'host-b', 3));
  assert.equal(owners.at('a', 2), undefined);
});

test('past its bound the map starts afresh instead of growing', () => {
  const owners = new RecordOwners(3);
  for (const uuid of ['a', 'b', 'c']) owners.learn(owner(uuid, 'h', 1));
  owners.learn(owner('a', 'h', 2)); // known: no growth
  assert.equal(owners.size, 3);
  owners.learn(owner('d', 'h', 1));
  assert.equal(owners.size, 1);
  assert.deepEqual(owners.at('d', 1), owner('d', 'h', 1));
  assert.equal(owners.at('a', 2), undefined, 'forgotten: the next check reads it');
});
