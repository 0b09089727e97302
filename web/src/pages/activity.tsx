// What is happening across the fleet: every change as it streams in, with the cause read from
// the instance's history, and the server's events/s and detection latency from its /metrics.
import { useEffect, useRef, useState } from 'preact/hooks';
import type { ApiClient } from '../../../src/client/index.ts';
import type { ApiTransition } from '../../../src/server/index.ts';
import type { Fleet, FleetChange } from '../fleet.ts';
import { bound, count, duration } from '../format.ts';
import { useFleet, useInterval } from '../hooks.ts';
import { bucketCounts, quantile, rates, sample } from '../metrics.ts';
import type { Sample } from '../metrics.ts';

const SAMPLE_MS = 2000;
const KEEP_SAMPLES = 90;
const FEED_SHOWN = 60;
/** Causes looked up at once: a storm must not turn into a storm of history requests. */
const CAUSE_LOOKUPS = 4;

export function ActivityPage(props: { api: ApiClient; fleet: Fleet }) {
  const { api, fleet } = props;
  useFleet(fleet);
  const [samples, setSamples] = useState<Sample[]>([]);
  const [metricsError, setMetricsError] = useState<string | null>(null);
  useInterval(
    () => {
      api.metricsText().then(
        (text) => {
          setSamples((held) => [...held, sample(text, Date.now())].slice(-KEEP_SAMPLES));
          setMetricsError(null);
        },
        (error: unknown) => setMetricsError(error instanceof Error ? error.message : String(error)),
      );
    },
    SAMPLE_MS,
    [api],
  );
  const causes = useCauses(api, fleet.feed.slice(0, FEED_SHOWN));
  const latest = samples.at(-1);
  const series = rates(samples);
  const noEngine = latest !== undefined && latest.events === null;

  return (
    <>
      <h1>Activity</h1>
      {metricsError !== null && (
        <p class="banner error" role="alert">
          Metrics could not be read: {metricsError}
        </p>
      )}
      <div class="cards">
        <section class="card wide" aria-labelledby="rate">
          <h2 id="rate">Events per second</h2>
          {noEngine ? (
            <p>This server runs no engine (hvsync server): it receives no hypervisor events.</p>
          ) : (
            <RateChart points={series} />
          )}
        </section>
        <section class="card wide" aria-labelledby="latency">
          <h2 id="latency">Detection latency</h2>
          <LatencyChart sample={latest} />
        </section>
      </div>
      <section aria-labelledby="feed">
        <h2 id="feed">Live changes</h2>
        {fleet.feed.length === 0 ? (
          <p>No change since this page opened; changes appear here as they happen.</p>
        ) : (
          <ol class="feed" aria-live="off">
            {fleet.feed.slice(0, FEED_SHOWN).map((change) => (
              <FeedEntry key={change.revision} change={change} cause={causes.get(keyOf(change))} />
            ))}
          </ol>
        )}
      </section>
    </>
  );
}

function keyOf(change: FleetChange): string {
  return `${change.after.uuid}@${change.after.version}`;
}

/** The transition behind each shown change, looked up a few at a time. */
function useCauses(api: ApiClient, changes: FleetChange[]): Map<string, ApiTransition | null> {
  const cache = useRef(new Map<string, ApiTransition | null>());
  const inFlight = useRef(new Set<string>());
  const [, setTick] = useState(0);
  useEffect(() => {
    for (const change of changes) {
      if (inFlight.current.size >= CAUSE_LOOKUPS) break;
      const key = keyOf(change);
      const moved =
        change.before === null ||
        change.before.powerState !== change.after.powerState ||
        change.before.vmState !== change.after.vmState;
      if (!moved || cache.current.has(key) || inFlight.current.has(key)) continue;
      inFlight.current.add(key);
      // The newest transition this change could have made: the history may have moved on.
      api
        .history(change.after.uuid, 10)
        .then(
          (transitions) => {
            const made = transitions.find(
              (t) => t.to === change.after.powerState && t.recordedAt <= change.after.updatedAt,
            );
            cache.current.set(key, made ?? null);
          },
          () => cache.current.set(key, null),
        )
        .finally(() => {
          inFlight.current.delete(key);
          setTick((n) => n + 1);
        });
    }
  });
  return cache.current;
}

function FeedEntry({
  change,
  cause,
}: {
  change: FleetChange;
  cause: ApiTransition | null | undefined;
}) {
  const { before, after } = change;
  const parts: string[] = [];
  if (before === null) parts.push(`new: ${after.vmState}, ${after.powerState}`);
  else {
    if (before.powerState !== after.powerState)
      parts.push(`${before.powerState} → ${after.powerState}`);
    if (before.vmState !== after.vmState)
      parts.push(`vmState ${before.vmState} → ${after.vmState}`);
    if (before.taskState !== after.taskState) {
      parts.push(
        after.taskState === null ? `task ${before.taskState} ended` : `task ${after.taskState}`,
      );
    }
  }
  if (parts.length === 0) parts.push('updated');
  const latency =
    cause === undefined || cause === null
      ? null
      : Date.parse(cause.recordedAt) - Date.parse(cause.observedAt);
  return (
    <li>
      <time dateTime={new Date(change.at).toISOString()}>
        {new Date(change.at).toLocaleTimeString()}
      </time>
      <a href={`#/instances/${after.uuid}`}>{after.name}</a>
      <span>{parts.join(', ')}</span>
      {cause !== undefined && cause !== null && (
        <span class="hint">
          <span class={`cause c-${cause.cause}`}>{cause.cause}</span>
          {cause.detail !== '' && ` ${cause.detail}`}
          {cause.outOfBand && ' · out of band'}
          {latency !== null && ` · recorded in ${duration(latency)}`}
        </span>
      )}
      <span class="hint">{after.host}</span>
    </li>
  );
}

const WIDTH = 600;
const HEIGHT = 160;

function RateChart({ points }: { points: { at: number; perSecond: number }[] }) {
  if (points.length < 2)
    return <p role="status">Collecting samples (every {SAMPLE_MS / 1000} s)…</p>;
  const max = Math.max(1, ...points.map((p) => p.perSecond));
  const t0 = points[0]!.at;
  const span = Math.max(1, points.at(-1)!.at - t0);
  const path = points
    .map((p, i) => {
      const x = ((p.at - t0) / span) * WIDTH;
      const y = HEIGHT - (p.perSecond / max) * (HEIGHT - 10);
      return `${i === 0 ? 'M' : 'L'}${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
  const now = points.at(-1)!.perSecond;
  return (
    <figure>
      <svg
        class="chart"
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        role="img"
        aria-label={`Events per second over the last ${Math.round(span / 1000)} s; now ${now.toFixed(1)}, peak ${max.toFixed(1)}`}
      >
        <line class="axis" x1="0" y1={HEIGHT} x2={WIDTH} y2={HEIGHT} />
        <path class="line" d={path} />
      </svg>
      <figcaption>
        now {now.toFixed(1)}/s · peak {max.toFixed(1)}/s · last {Math.round(span / 1000)} s
      </figcaption>
    </figure>
  );
}

function LatencyChart({ sample: latest }: { sample: Sample | undefined }) {
  if (latest === undefined) return <p role="status">Reading metrics…</p>;
  const buckets = bucketCounts(latest.latency);
  const total = latest.latency.at(-1)?.count ?? 0;
  if (total === 0) return <p>No change detected yet.</p>;
  const max = Math.max(1, ...buckets.map((b) => b.n));
  const width = WIDTH / buckets.length;
  const p50 = quantile(latest.latency, 0.5);
  const p99 = quantile(latest.latency, 0.99);
  return (
    <figure>
      <svg
        class="chart"
        viewBox={`0 0 ${WIDTH} ${HEIGHT + 20}`}
        role="img"
        aria-label={`Detection latency of ${total} changes: p50 under ${p50 === null ? '?' : bound(p50)}, p99 under ${p99 === null ? '?' : bound(p99)}`}
      >
        {buckets.map((bucket, i) => {
          const h = (bucket.n / max) * (HEIGHT - 10);
          return (
            <g key={bucket.le}>
              <rect class="bar-fill" x={i * width + 2} y={HEIGHT - h} width={width - 4} height={h}>
                <title>{`≤ ${bound(bucket.le)}: ${bucket.n}`}</title>
              </rect>
              <text class="tick" x={i * width + width / 2} y={HEIGHT + 14}>
                {bound(bucket.le)}
              </text>
            </g>
          );
        })}
      </svg>
      <figcaption>
        {count(total)} changes · p50 ≤ {p50 === null ? '?' : bound(p50)} · p99 ≤{' '}
        {p99 === null ? '?' : bound(p99)} (hypervisor saw it → store committed it)
      </figcaption>
    </figure>
  );
}
