// Prometheus text exposition (version 0.0.4), read into samples: the dashboard charts the
// server's own /metrics rather than a second, JSON copy of the same numbers.

export interface MetricSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$/;

/** Every sample in the text; lines that are not samples (comments, garbage) are skipped. */
export function parseMetricsText(text: string): MetricSample[] {
  const samples: MetricSample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = SAMPLE.exec(line);
    if (match === null) continue;
    const labels = match[2] === undefined ? {} : parseLabels(match[2]);
    if (labels === null) continue;
    samples.push({ name: match[1]!, labels, value: parseValue(match[3]!) });
  }
  return samples;
}

function parseValue(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  return Number(text);
}

/** `a="x",b="y\"z"` → {a: 'x', b: 'y"z'}; null when malformed. */
function parseLabels(text: string): Record<string, string> | null {
  const labels: Record<string, string> = {};
  let at = 0;
  while (at < text.length) {
    const eq = text.indexOf('=', at);
    if (eq < 0 || text[eq + 1] !== '"') return null;
    const key = text.slice(at, eq).trim();
    let value = '';
    let i = eq + 2;
    for (; i < text.length && text[i] !== '"'; i++) {
      if (text[i] === '\\' && i + 1 < text.length) {
        i++;
        value += text[i] === 'n' ? '\n' : text[i];
      } else {
        value += text[i];
      }
    }
    if (i >= text.length) return null;
    labels[key] = value;
    at = i + 1;
    if (text[at] === ',') at++;
  }
  return labels;
}

/** The sum of every sample of `name` whose labels include `match`. */
export function sumOf(
  samples: readonly MetricSample[],
  name: string,
  match: Readonly<Record<string, string>> = {},
): number | null {
  let total: number | null = null;
  for (const sample of samples) {
    if (sample.name !== name) continue;
    if (!Object.entries(match).every(([key, value]) => sample.labels[key] === value)) continue;
    total = (total ?? 0) + sample.value;
  }
  return total;
}

export interface HistogramBucket {
  /** Upper bound, seconds (Infinity for the last). */
  readonly le: number;
  /** Observations at or under `le`, cumulative. */
  readonly count: number;
}

/** A histogram's cumulative buckets, summed over its other labels; empty when absent. */
export function histogramOf(samples: readonly MetricSample[], name: string): HistogramBucket[] {
  const byBound = new Map<number, number>();
  for (const sample of samples) {
    if (sample.name !== `${name}_bucket`) continue;
    const le = sample.labels.le;
    if (le === undefined) continue;
    const bound = parseValue(le);
    byBound.set(bound, (byBound.get(bound) ?? 0) + sample.value);
  }
  return [...byBound].sort(([a], [b]) => a - b).map(([le, count]) => ({ le, count }));
}
