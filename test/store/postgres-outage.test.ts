// The store after its database comes back, on a PostgreSQL cluster of the test's own (the
// machine's server is shared and never stopped): reads and writes fail with a typed error while
// it is down, and work again within about a second of its return, not after the driver's
// reconnect backoff has grown through the outage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openPostgresStore, reconnectDelaySeconds, StoreError } from '../../src/store/index.ts';
import { describePrivatePostgres, PrivatePostgres } from '../support/private-postgres.ts';
import { create, uuidOf } from './contract.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('the reconnect wait doubles from 50 ms up to a second, jittered below that', () => {
  const highest = (attempt: number) => reconnectDelaySeconds(attempt, () => 1);
  const lowest = (attempt: number) => reconnectDelaySeconds(attempt, () => 0);
  assert.deepEqual([1, 2, 3, 4, 5].map(highest), [0.05, 0.1, 0.2, 0.4, 0.8]);
  for (const attempt of [6, 7, 20, 1_000]) assert.equal(highest(attempt), 1);
  assert.equal(lowest(1), 0.025);
  assert.equal(lowest(1_000), 0.5);
});

describePrivatePostgres('PostgresStore across a database outage', () => {
  test('fails with a typed error while down; works again soon after the database returns', async () => {
    const cluster = await PrivatePostgres.create();
    const store = await openPostgresStore(cluster.url);
    try {
      await store.write(create(uuidOf(1), { name: 'before' }));
      await cluster.stop();
      // Readers keep asking through the outage, as an engine and a readiness probe do: each
      // failed attempt lengthens the driver's wait before it tries to connect again.
      const downUntil = Date.now() + 6_000;
      let failures = 0;
      while (Date.now() < downUntil) {
        await assert.rejects(store.getInstance(uuidOf(1)), (error: unknown) => {
          assert.ok(error instanceof StoreError, String(error));
          assert.equal(error.code, 'io');
          return true;
        });
        failures += 1;
        await sleep(50);
      }
      assert.ok(failures > 10, `${failures} reads were refused while down`);
      await cluster.start();
      // Back. The driver's own backoff would by now refuse every read for another 4–20 s with the
      // outage's error; hvsync caps the wait at a second. The bound is loose for a noisy machine.
      const back = Date.now();
      let record = null;
      while (record === null && Date.now() - back < 20_000) {
        record = await store.getInstance(uuidOf(1)).catch(() => null);
        if (record === null) await sleep(50);
      }
      const waited = Date.now() - back;
      console.log(`# failures ${failures}, first read after return ${waited} ms`);
      assert.equal(record?.name, 'before');
      assert.ok(
        waited < 5_000,
        `the first read after the database returned came ${waited} ms later`,
      );
      await store.write(create(uuidOf(2), { name: 'after' }));
      assert.equal((await store.getInstance(uuidOf(2)))?.name, 'after');
    } finally {
      await store.close().catch(() => {});
      await cluster.cleanup();
    }
  });
});
