// The process's own metrics (CPU, memory, handles, GC, event loop), all read at scrape time so that
// a process with nothing to do does nothing between scrapes.
//
// prom-client's defaults include an event-loop delay histogram that samples the loop on a timer,
// every 10 ms unless told otherwise: at rest those wakeups cost more CPU than everything else
// the service does. prom-client has no switch to leave it out, so its period is set to an hour
// (one wakeup an hour) and the percentile gauges it feeds, which one sample an hour makes
// meaningless, are removed. What shows a blocked loop instead costs nothing until a scrape:
// nodejs_eventloop_lag_seconds (prom-client's, one setImmediate per scrape) and the loop's
// utilisation since the previous scrape.
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { Gauge, collectDefaultMetrics, type Registry } from 'prom-client';

const DELAY_HISTOGRAM_PERIOD_MS = 3_600_000;

const DELAY_HISTOGRAM_GAUGES = [
  'nodejs_eventloop_lag_min_seconds',
  'nodejs_eventloop_lag_max_seconds',
  'nodejs_eventloop_lag_mean_seconds',
  'nodejs_eventloop_lag_stddev_seconds',
  'nodejs_eventloop_lag_p50_seconds',
  'nodejs_eventloop_lag_p90_seconds',
  'nodejs_eventloop_lag_p99_seconds',
] as const;

export function registerProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({
    register: registry,
    eventLoopMonitoringPrecision: DELAY_HISTOGRAM_PERIOD_MS,
  });
  for (const name of DELAY_HISTOGRAM_GAUGES) registry.removeSingleMetric(name);

  let previous: EventLoopUtilization = performance.eventLoopUtilization();
  new Gauge({
    name: 'nodejs_eventloop_utilization_ratio',
    help: 'Share of wall time the event loop was busy since the previous scrape (0 to 1).',
    registers: [registry],
    collect() {
      const now = performance.eventLoopUtilization();
      this.set(performance.eventLoopUtilization(now, previous).utilization);
      previous = now;
    },
  });
}
