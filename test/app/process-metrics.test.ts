// The process metrics the service exposes are read at scrape time: no continuously sampled
// event-loop histogram, and the loop's busy share since the previous scrape instead.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { registerProcessMetrics } from '../../src/app/index.ts';

test('process metrics: scrape-time loop readings, no timer-sampled delay percentiles', async () => {
  const registry = new Registry();
  registerProcessMetrics(registry);
  const names = (await registry.getMetricsAsJSON()).map((metric) => metric.name);
  assert.ok(names.includes('process_cpu_seconds_total'));
  assert.ok(names.includes('nodejs_eventloop_lag_seconds'));
  assert.ok(!names.includes('nodejs_eventloop_lag_p99_seconds'));
  const utilization = (await registry.getSingleMetric('nodejs_eventloop_utilization_ratio')?.get())
    ?.values[0]?.value;
  assert.ok(utilization !== undefined && utilization >= 0 && utilization <= 1, `${utilization}`);
});
