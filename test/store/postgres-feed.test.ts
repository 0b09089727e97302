// The PostgreSQL store's change feed on its own, with the change log as a list in memory: the
// order of what listeners get when commits and NOTIFYs come in any order, and when it reads the
// log. (The store on a real PostgreSQL is in postgres.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { ChangeFeed } from '../../src/store/postgres-feed.ts';
import type { ChangeRecord } from '../../src/store/index.ts';
import { instanceFields } from '../support/records.ts';
import { uuidOf } from './contract.ts';

function change(revision: number): ChangeRecord {
  return {
    revision,
    type: 'updated',
    at: revision,
    instance: { ...instanceFields(), uuid: uuidOf(revision), version: revision, updatedAt: 0 },
  } as ChangeRecord;
}

function feedOver(log: ChangeRecord[], options: { pageSize?: number; fail?: boolean } = {}) {
  const got: number[][] = [];
  const errors: unknown[] = [];
  const feed = new ChangeFeed({
    latestRevision: 10,
    pageSize: options.pageSize ?? 100,
    gapGraceMs: 30,
    readLog: async (since) => {
      if (options.fail === true) throw new Error('the log cannot be read');
      return log.filter((c) => c.revision > since).slice(0, options.pageSize ?? 100);
    },
    onFeedError: (error) => errors.push(error),
  });
  feed.on((changes) => got.push(changes.map((c) => c.revision)));
  return { feed, got, errors, delivered: () => got.flat() };
}

test('a commit that comes ahead of an earlier NOTIFY waits for it, and the log is not read', async () => {
  const { feed, delivered } = feedOver([]);
  let answered = false;
  const committed = feed.committed([change(12), change(13)]).then(() => (answered = true));
  await sleep(5);
  assert.equal(answered, false, 'answered before revision 11 was handed on');
  assert.deepEqual(delivered(), []);
  feed.notified([change(11)]);
  await committed;
  // The commit's own NOTIFY comes back too: handed on once only.
  feed.notified([change(12), change(13)]);
  feed.notified([change(14)]);
  assert.deepEqual(delivered(), [11, 12, 13, 14]);
  assert.equal(feed.logReads, 0);
  assert.equal(feed.latest, 14);
  await feed.close();
});

test('a gap still open after its grace is read from the log, once, in order', async () => {
  const log = [11, 12, 13, 14].map(change);
  const { feed, delivered } = feedOver(log);
  const committed = feed.committed([change(14)]);
  feed.notified([change(13)]);
  await committed;
  assert.deepEqual(delivered(), [11, 12, 13, 14]);
  assert.equal(feed.logReads, 1);
  await feed.close();
});

test('a NOTIFY that carries only a revision reads the log at once, page after page', async () => {
  const log = [11, 12, 13, 14, 15].map(change);
  const { feed, delivered } = feedOver(log, { pageSize: 2 });
  feed.notified(null);
  await feed.committed([change(15)]);
  assert.deepEqual(delivered(), [11, 12, 13, 14, 15]);
  // Pages of 2, 2 and 1: the short one ends the read.
  assert.equal(feed.logReads, 3);
  await feed.close();
});

test('a log that cannot be read is reported, and what is held goes on in order', async () => {
  const { feed, delivered, errors } = feedOver([], { fail: true });
  feed.notified([change(14)]);
  await feed.committed([change(13)]);
  assert.deepEqual(delivered(), [13, 14]);
  assert.equal(errors.length, 1);
  assert.match(String(errors[0]), /cannot be read/);
  await feed.close();
});

test('without listeners a commit is answered at once and nothing is read', async () => {
  const feed = new ChangeFeed({
    latestRevision: 10,
    pageSize: 100,
    readLog: () => Promise.reject(new Error('not to be read')),
    onFeedError: (error) => assert.fail(String(error)),
  });
  await feed.committed([change(15)]);
  assert.equal(feed.latest, 15);
  assert.equal(feed.logReads, 0);
  await feed.close();
});

test('closing lets go of a commit whose gap never closed', async () => {
  const { feed } = feedOver([], { fail: false });
  const committed = feed.committed([change(20)]);
  await feed.close();
  await committed;
});
