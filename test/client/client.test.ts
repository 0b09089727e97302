// The shared API client over fetch (the dashboard's transport), against a real server: the same
// answers and errors the CLI's node:http transport gets, and the metrics text read back.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ApiClient,
  ClientError,
  fetchTransport,
  histogramOf,
  parseMetricsText,
  sumOf,
} from '../../src/client/index.ts';
import type { WatchMessage } from '../../src/client/index.ts';
import { create, patch, startServer, uuidOf } from '../server/harness.ts';
import type { Harness } from '../server/harness.ts';

describe('ApiClient over fetch', () => {
  let harness: Harness;
  let api: ApiClient;

  before(async () => {
    harness = await startServer({ token: 'sesame' });
    api = new ApiClient({ server: harness.url, token: 'sesame', transport: fetchTransport });
    for (let n = 1; n <= 5; n++) await create(harness.store, uuidOf(n), { name: `vm-${n}` });
  });
  after(() => harness.close());

  test('pages through instances with the cursor', async () => {
    const first = await api.listInstances({ limit: 2 });
    assert.deepEqual(
      first.instances.map((i) => i.name),
      ['vm-1', 'vm-2'],
    );
    const rest = await api.listInstances({ limit: 10, after: first.next! });
    assert.deepEqual(
      rest.instances.map((i) => i.name),
      ['vm-3', 'vm-4', 'vm-5'],
    );
    assert.equal(rest.next, null);
  });

  test('a wrong token is an http error with the API code', async () => {
    const wrong = new ApiClient({ server: harness.url, token: 'nope', transport: fetchTransport });
    await assert.rejects(wrong.hosts(), (error: unknown) => {
      assert.ok(error instanceof ClientError);
      assert.equal(error.code, 'http');
      assert.equal(error.status, 401);
      assert.equal(error.apiError, 'unauthorized');
      return true;
    });
  });

  test('a server that is not there is unreachable', async () => {
    const gone = new ApiClient({ server: 'http://127.0.0.1:1', transport: fetchTransport });
    await assert.rejects(gone.hosts(), (error: unknown) => {
      assert.ok(error instanceof ClientError);
      assert.equal(error.code, 'unreachable');
      assert.match(error.message, /cannot reach hvsync at http:\/\/127\.0\.0\.1:1/);
      return true;
    });
  });

  test('the watch stream streams changes through the body reader', async () => {
    const watch = await api.watch();
    assert.equal(typeof watch.startRevision, 'number');
    await patch(harness.store, uuidOf(3), { powerState: 'shutoff' });
    const seen: WatchMessage[] = [];
    for await (const message of watch) {
      seen.push(message);
      break;
    }
    assert.equal(seen[0]?.kind, 'change');
    if (seen[0]?.kind === 'change') {
      assert.equal(seen[0].change.instance.uuid, uuidOf(3));
      assert.equal(seen[0].change.instance.powerState, 'shutoff');
      assert.ok(seen[0].change.revision > watch.startRevision!);
    }
  });

  test('the metrics text is read into samples', async () => {
    await api.hosts();
    const samples = parseMetricsText(await api.metricsText());
    assert.ok((sumOf(samples, 'hvsync_http_requests_total') ?? 0) > 0);
  });
});

test('metrics text: labels with escapes, histograms summed over labels, infinities', () => {
  const text = [
    '# HELP x_total things',
    '# TYPE x_total counter',
    'x_total{kind="a \\"quoted\\" one",n="1"} 3',
    'x_total{kind="b"} 4 1700000000000',
    'lat_bucket{cause="event",le="0.001"} 1',
    'lat_bucket{cause="event",le="+Inf"} 5',
    'lat_bucket{cause="reconcile",le="0.001"} 2',
    'lat_bucket{cause="reconcile",le="+Inf"} 2',
    'not a sample line',
  ].join('\n');
  const samples = parseMetricsText(text);
  assert.equal(sumOf(samples, 'x_total'), 7);
  assert.equal(sumOf(samples, 'x_total', { kind: 'a "quoted" one' }), 3);
  assert.equal(sumOf(samples, 'absent'), null);
  assert.deepEqual(histogramOf(samples, 'lat'), [
    { le: 0.001, count: 3 },
    { le: Infinity, count: 7 },
  ]);
});
