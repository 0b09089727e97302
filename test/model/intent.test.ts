// The intent check the dashboard shows as drift and the engine uses for deleted-but-alive.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { intentWarning } from '../../src/model/index.ts';

test('a live vmState the hypervisor does not show differs from its intent', () => {
  assert.equal(intentWarning('active', 'running'), null);
  assert.equal(intentWarning('active', 'shutoff'), 'intent-differs');
  assert.equal(intentWarning('active', 'missing'), 'intent-differs');
  assert.equal(intentWarning('stopped', 'crashed'), null);
  assert.equal(intentWarning('stopped', 'running'), 'intent-differs');
  assert.equal(intentWarning('paused', 'running'), 'intent-differs');
  assert.equal(intentWarning('suspended', 'suspended'), null);
});

test('a guest on its way down is not drift; states that only record power never are', () => {
  assert.equal(intentWarning('active', 'shutdown'), null);
  assert.equal(intentWarning('building', 'shutoff'), null);
  assert.equal(intentWarning('error', 'running'), null);
});

test('a deleted record whose guest still runs is deleted-but-alive', () => {
  assert.equal(intentWarning('deleted', 'running'), 'deleted-but-alive');
  assert.equal(intentWarning('soft-deleted', 'paused'), 'deleted-but-alive');
  assert.equal(intentWarning('deleted', 'nostate'), null);
  assert.equal(intentWarning('deleted', 'shutoff'), null);
});
