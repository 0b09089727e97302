// The server's own metrics, sampled from /metrics (Prometheus text) every few seconds: events/s
// from the events counter's growth, and the detection latency histogram as it stands.
import { histogramOf, parseMetricsText, sumOf } from '../../src/client/index.ts';
import type { HistogramBucket } from '../../src/client/index.ts';

export const EVENTS = 'hvsync_events_received_total';
export const COMMITS = 'hvsync_watch_events_total';
export const LATENCY = 'hvsync_detection_latency_seconds';

export interface Sample {
  readonly at: number;
  readonly events: number | null;
  readonly latency: HistogramBucket[];
}

export function sample(text: string, at: number): Sample {
  const samples = parseMetricsText(text);
  return { at, events: sumOf(samples, EVENTS), latency: histogramOf(samples, LATENCY) };
}

/** Events per second between consecutive samples; a counter reset (restart) gives no point. */
export function rates(samples: readonly Sample[]): { at: number; perSecond: number }[] {
  const out: { at: number; perSecond: number }[] = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1]!;
    const b = samples[i]!;
    if (a.events === null || b.events === null || b.events < a.events) continue;
    out.push({ at: b.at, perSecond: ((b.events - a.events) * 1000) / (b.at - a.at) });
  }
  return out;
}

/** Per-bucket counts (not cumulative) of a histogram's cumulative buckets. */
export function bucketCounts(buckets: readonly HistogramBucket[]): { le: number; n: number }[] {
  return buckets.map((bucket, i) => ({
    le: bucket.le,
    n: bucket.count - (i === 0 ? 0 : buckets[i - 1]!.count),
  }));
}

/** The bucket bound under which `q` of observations fall (an upper estimate). */
export function quantile(buckets: readonly HistogramBucket[], q: number): number | null {
  const total = buckets.at(-1)?.count ?? 0;
  if (total === 0) return null;
  return buckets.find((bucket) => bucket.count >= q * total)?.le ?? null;
}
