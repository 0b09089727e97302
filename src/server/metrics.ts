// The server's own metrics, on the registry the process wiring hands in (which also carries the
// engine's). Route labels are route patterns, never raw URLs, so label sets stay bounded
// whatever clients send.
import { Counter, Gauge, Histogram } from 'prom-client';
import type { Metric, Registry } from 'prom-client';
import { ServerError } from './types.ts';

export interface ServerMetrics {
  readonly requests: Counter<'method' | 'route' | 'status'>;
  readonly duration: Histogram<'method' | 'route'>;
  readonly watchStreams: Gauge;
  readonly watchEvents: Counter;
  readonly watchEnded: Counter<'reason'>;
  /** Where hvsync_watch_buffered_bytes reads from at scrape time; set by the watch hub's owner. */
  readonly watchBuffered: { read: () => number };
}

/**
 * Creates the metrics on `registry`, or returns the ones already there: a second server on the
 * same registry (tests, a restart in-process) must not fail on duplicate names.
 */
export function serverMetrics(registry: Registry): ServerMetrics {
  const watchBuffered = { read: () => 0 };
  reuse(registry, 'hvsync_watch_buffered_bytes', Gauge, (name) => {
    return new Gauge({
      name,
      help: 'Bytes watch streams hold for clients that have not read them yet',
      registers: [registry],
      collect() {
        this.set(watchBuffered.read());
      },
    });
  });
  return {
    watchBuffered,
    requests: reuse(registry, 'hvsync_http_requests_total', Counter, (name) => {
      return new Counter({
        name,
        help: 'HTTP requests answered, by method, route pattern and status code',
        labelNames: ['method', 'route', 'status'] as const,
        registers: [registry],
      });
    }),
    duration: reuse(registry, 'hvsync_http_request_duration_seconds', Histogram, (name) => {
      return new Histogram({
        name,
        help: 'Time to answer an HTTP request, by method and route pattern (watch streams excluded)',
        labelNames: ['method', 'route'] as const,
        buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
        registers: [registry],
      });
    }),
    watchStreams: reuse(registry, 'hvsync_watch_streams', Gauge, (name) => {
      return new Gauge({ name, help: 'Watch streams open now', registers: [registry] });
    }),
    watchEvents: reuse(registry, 'hvsync_watch_events_sent_total', Counter, (name) => {
      return new Counter({
        name,
        help: 'Instance change events written to watch streams',
        registers: [registry],
      });
    }),
    watchEnded: reuse(registry, 'hvsync_watch_streams_ended_total', Counter, (name) => {
      return new Counter({
        name,
        help:
          'Watch streams ended, by reason (client-closed, too-slow, revision-too-old, ' +
          'shutting-down, internal)',
        labelNames: ['reason'] as const,
        registers: [registry],
      });
    }),
  };
}

function reuse<M extends Metric>(
  registry: Registry,
  name: string,
  kind: abstract new (...args: never[]) => unknown,
  create: (name: string) => M,
): M {
  const existing = registry.getSingleMetric(name);
  if (existing === undefined) return create(name);
  if (!(existing instanceof kind)) {
    throw new ServerError('invalid-option', `metric ${name} is already registered as another type`);
  }
  return existing as M;
}
