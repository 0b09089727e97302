// The agent's waits between attempts to reach the control plane: doubling to a cap, each drawn
// from the upper half of its range so that agents that lost the control plane together spread out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff } from '../../src/agent/index.ts';

test('waits double from the first to the cap, and start over after a success', () => {
  const highest = new Backoff(250, 5_000, () => 1);
  assert.deepEqual(
    Array.from({ length: 7 }, () => highest.next()),
    [250, 500, 1_000, 2_000, 4_000, 5_000, 5_000],
  );
  highest.reset();
  assert.equal(highest.next(), 250);
});

test('each wait is drawn from the upper half of its range', () => {
  const lowest = new Backoff(250, 5_000, () => 0);
  assert.deepEqual(
    Array.from({ length: 6 }, () => lowest.next()),
    [125, 250, 500, 1_000, 2_000, 2_500],
  );
  const drawn = Array.from({ length: 200 }, () => new Backoff(1_000, 1_000).next());
  assert.ok(drawn.every((wait) => wait >= 500 && wait <= 1_000));
  assert.ok(new Set(drawn).size > 100, 'agents do not all wait the same');
});
