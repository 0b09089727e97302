// What a hostile or careless client sends, and that each gets a clear answer in the one error
// shape while the server carries on.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { API_ERRORS } from '../../src/server/errors.ts';
import { apiErrorIn, call, create, errorOf, rawExchange, startServer, uuidOf } from './harness.ts';
import type { Harness } from './harness.ts';

describe('bad input', () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
    await create(h.store, uuidOf(1));
  });
  after(() => h.close());

  const actionsUrl = () => `/v1/instances/${uuidOf(1)}/actions`;
  const json = { 'content-type': 'application/json' };

  test('JSON nested 5,000 levels deep is a 400 naming the field, not a 500', async () => {
    const deepObject = `{"action":${'{"a":'.repeat(5000)}1${'}'.repeat(5001)}`;
    const deepArray = `${'['.repeat(5000)}${']'.repeat(5000)}`;
    for (const [body, message] of [
      [deepObject, /body field 'action' must be one of start.*; got an object/],
      [deepArray, /body must be a JSON object; got an array/],
    ] as const) {
      assert.ok(body.length >= 10_000);
      const reply = await call(h, actionsUrl(), { method: 'POST', body, headers: json });
      assert.equal(reply.status, 400);
      assert.equal(errorOf(reply).error, 'invalid-request');
      assert.match(errorOf(reply).message, message);
    }
    assert.equal(h.actions.submitted.length, 0);
  });

  test('a wrong value is quoted as sent: null is null, not an empty string', async () => {
    const reply = await call(h, actionsUrl(), { method: 'POST', json: { action: null } });
    assert.equal(reply.status, 400);
    assert.equal(
      errorOf(reply).message,
      "body field 'action' must be one of start, stop, force-stop, reboot, hard-reboot, pause, " +
        'resume; got null',
    );
  });

  test('every numeric parameter on every route is a decimal integer in range, or a 400', async () => {
    const bad = [
      'Infinity',
      '-Infinity',
      '1e400',
      '1e3',
      '0x10',
      '-1',
      '',
      '1.5',
      ' 5',
      '9'.repeat(8000),
    ];
    const places: [string, (value: string) => [string, RequestInit?]][] = [
      ['limit', (v) => [`/v1/instances?limit=${encodeURIComponent(v)}`]],
      ['limit', (v) => [`/v1/instances/${uuidOf(1)}/history?limit=${encodeURIComponent(v)}`]],
      ['since', (v) => [`/v1/watch?since=${encodeURIComponent(v)}`]],
      ['last-event-id', (v) => ['/v1/watch', { headers: { 'last-event-id': v } }]],
    ];
    for (const [name, request] of places) {
      for (const value of bad) {
        // An empty Last-Event-ID means "no event yet" in SSE; it is not an error.
        // HTTP trims header values (' 5' arrives as '5'), and an empty Last-Event-ID means none.
        if (name === 'last-event-id' && (value.trim() !== value || value === '')) continue;
        const [path, init] = request(value);
        const reply = await call(h, path, init);
        const what = `${path.slice(0, 60)} ${name}=${value.slice(0, 20)}`;
        assert.equal(reply.status, 400, what);
        assert.equal(errorOf(reply).error, 'invalid-request', what);
        assert.match(errorOf(reply).message, new RegExp(`'${name}' must be an integer`), what);
      }
    }
    const twice = await call(h, '/v1/instances?limit=1&limit=2');
    assert.equal(twice.status, 400);
    assert.match(errorOf(twice).message, /'limit' given twice/);
  });

  test('limit=Infinity no longer truncates a page silently', async () => {
    for (let n = 2; n <= 1100; n++) await create(h.store, uuidOf(n));
    const infinite = await call(h, '/v1/instances?limit=Infinity');
    assert.equal(infinite.status, 400);
    const largest = await call(h, '/v1/instances?limit=1000');
    assert.equal(largest.status, 200);
    assert.equal((largest.body as { next: string | null }).next, uuidOf(1000));
  });

  test('a malformed percent-escape is a 400, in the query and in the path', async () => {
    const query = await call(h, '/v1/instances?host=%zz');
    assert.equal(query.status, 400);
    assert.equal(errorOf(query).error, 'bad-request');
    assert.match(errorOf(query).message, /percent-escape.*%zz/);
    const utf8 = await call(h, '/v1/instances?host=%ff');
    assert.equal(utf8.status, 400);
    const path = await call(h, '/v1/instances/%zz');
    assert.equal(path.status, 400);
    assert.equal(errorOf(path).error, 'bad-request');
  });

  test("what the framework and Node's parser refuse comes in the same shape", async () => {
    const segment = await call(h, `/v1/instances/${'a'.repeat(200)}`);
    assert.equal(segment.status, 414);
    assert.equal(errorOf(segment).error, 'uri-too-long');

    const url = await rawExchange(h, `GET /v1/instances?x=${'a'.repeat(20_000)} HTTP/1.1\r\n\r\n`);
    assert.match(url, /^HTTP\/1\.1 414 /);
    assert.equal(apiErrorIn(url), 'uri-too-long');

    const headers = await rawExchange(
      h,
      `GET /v1/hosts HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
    );
    assert.match(headers, /^HTTP\/1\.1 431 /);
    assert.equal(apiErrorIn(headers), 'headers-too-large');

    const notJson = await call(h, actionsUrl(), {
      method: 'POST',
      body: '{"action":',
      headers: json,
    });
    assert.equal(notJson.status, 400);
    assert.equal(errorOf(notJson).error, 'bad-request');
    const wrongType = await call(h, actionsUrl(), {
      method: 'POST',
      body: '<action>stop</action>',
      headers: { 'content-type': 'application/xml' },
    });
    assert.equal(wrongType.status, 415);
    assert.equal(errorOf(wrongType).error, 'unsupported-media-type');
    assert.equal((await call(h, '/healthz')).status, 200);
  });

  test('a 10 MB upload is answered 413 and the client reads it, by fetch and by socket', async () => {
    const tenMegabytes = `{"action":"${'x'.repeat(10_000_000)}"}`;
    for (let i = 0; i < 5; i++) {
      const reply = await call(h, actionsUrl(), {
        method: 'POST',
        body: tenMegabytes,
        headers: json,
      });
      assert.equal(reply.status, 413);
      assert.equal(errorOf(reply).error, 'payload-too-large');
    }

    // A client that sends its whole body before reading, then asks again on the same connection.
    const address = new URL(h.url);
    const size = 10_000_000;
    const exchange = await new Promise<{ text: string; error: string | null }>((resolve) => {
      const socket = connect(Number(address.port), address.hostname);
      let text = '';
      socket.on('data', (chunk) => {
        text += chunk.toString('latin1');
        if (text.includes('"status":"ok"')) socket.end();
      });
      socket.on('error', (error: NodeJS.ErrnoException) =>
        resolve({ text, error: error.code ?? 'error' }),
      );
      socket.on('close', () => resolve({ text, error: null }));
      socket.write(
        `POST ${actionsUrl()} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
          `Content-Length: ${size}\r\n\r\n`,
      );
      let sent = 0;
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const pump = (): void => {
        while (sent < size) {
          const part = chunk.subarray(0, Math.min(chunk.length, size - sent));
          sent += part.length;
          if (!socket.write(part)) {
            socket.once('drain', pump);
            return;
          }
        }
        socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      };
      pump();
    });
    assert.equal(exchange.error, null);
    assert.match(exchange.text, /^HTTP\/1\.1 413 /);
    assert.match(exchange.text, /"error":"payload-too-large"/);
    assert.match(exchange.text, /HTTP\/1\.1 200 OK[\s\S]*"status":"ok"/);
  });
});

describe('deleted instances', () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
    await create(h.store, uuidOf(1), { name: 'kept' });
    await create(h.store, uuidOf(2), { name: 'gone', vmState: 'deleted', powerState: 'missing' });
    await create(h.store, uuidOf(3), { name: 'stopped', vmState: 'stopped' });
  });
  after(() => h.close());

  const names = async (query: string) => {
    const reply = await call(h, `/v1/instances${query}`);
    assert.equal(reply.status, 200, query);
    return (reply.body as { instances: { name: string }[] }).instances.map((i) => i.name);
  };

  test('are left out by default, shown alone by vmState=deleted, with the rest by includeDeleted', async () => {
    assert.deepEqual(await names(''), ['kept', 'stopped']);
    assert.deepEqual(await names('?vmState=deleted'), ['gone']);
    assert.deepEqual(await names('?includeDeleted=true'), ['kept', 'gone', 'stopped']);
    assert.deepEqual(await names('?includeDeleted=false'), ['kept', 'stopped']);
    assert.deepEqual(await names('?includeDeleted=true&limit=1&after=' + uuidOf(1)), ['gone']);
    const bad = await call(h, '/v1/instances?includeDeleted=yes');
    assert.equal(bad.status, 400);
    assert.match(errorOf(bad).message, /'includeDeleted' must be true or false; got 'yes'/);
  });

  test('the next cursor skips deleted instances when they are hidden', async () => {
    const first = await call(h, '/v1/instances?limit=1');
    const cursor = (first.body as { next: string }).next;
    assert.equal(cursor, uuidOf(1));
    assert.deepEqual(await names(`?limit=1&after=${cursor}`), ['stopped']);
    const last = await call(h, `/v1/instances?limit=1&after=${uuidOf(1)}`);
    assert.equal((last.body as { next: string | null }).next, null);
  });
});

test('the README lists every API error code with its status', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  for (const [code, { status }] of Object.entries(API_ERRORS)) {
    assert.ok(new RegExp(`\\| ${status} +\\| \`${code}\``).test(readme), `${status} ${code}`);
  }
});
