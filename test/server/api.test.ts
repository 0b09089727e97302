import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Registry } from 'prom-client';
import {
  ServerError,
  buildServer,
  checkListen,
  isLoopback,
  listen,
  parseListen,
} from '../../src/server/index.ts';
import {
  apiErrorIn,
  call,
  create,
  errorOf,
  patch,
  rawExchange,
  startServer,
  uuidOf,
} from './harness.ts';
import type { Harness } from './harness.ts';
import type { ActionName, VmState } from '../../src/model/index.ts';

const INSTANCE_KEYS = [
  'createdAt',
  'host',
  'name',
  'policy',
  'powerReason',
  'powerState',
  'powerStateStale',
  'taskAction',
  'taskError',
  'taskStartedAt',
  'taskState',
  'updatedAt',
  'uuid',
  'version',
  'vmState',
];

describe('instances', () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
    // Created out of uuid order: listing must still come back sorted by uuid.
    await create(h.store, uuidOf(5), {
      name: 'web-5',
      host: 'host-b',
      vmState: 'stopped',
      powerState: 'shutoff',
    });
    await create(h.store, uuidOf(1), { name: 'web-1' });
    await create(h.store, uuidOf(3), { name: 'web-3', host: 'host-b' });
    await create(h.store, uuidOf(2), { name: 'web-2', vmState: 'paused', powerState: 'paused' });
    await create(h.store, uuidOf(4), { name: 'web-4', powerState: 'missing', policy: 'enforce' });
  });
  after(() => h.close());

  test('lists every instance sorted by uuid, with exactly the documented fields', async () => {
    const reply = await call(h, '/v1/instances');
    assert.equal(reply.status, 200);
    const body = reply.body as { instances: Record<string, unknown>[]; next: unknown };
    assert.deepEqual(
      body.instances.map((i) => i.uuid),
      [1, 2, 3, 4, 5].map(uuidOf),
    );
    assert.equal(body.next, null);
    for (const instance of body.instances) {
      assert.deepEqual(Object.keys(instance).sort(), INSTANCE_KEYS);
    }
    const four = body.instances[3]!;
    assert.equal(four.powerState, 'missing');
    assert.equal(four.policy, 'enforce');
    assert.equal(four.version, 1);
    assert.equal(four.taskState, null);
    assert.match(String(four.updatedAt), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  test('filters by host, vmState and powerState, together', async () => {
    const names = async (query: string) =>
      (
        (await call(h, `/v1/instances?${query}`)).body as { instances: { name: string }[] }
      ).instances.map((i) => i.name);
    assert.deepEqual(await names('host=host-b'), ['web-3', 'web-5']);
    assert.deepEqual(await names('vmState=paused'), ['web-2']);
    assert.deepEqual(await names('powerState=running'), ['web-1', 'web-3']);
    assert.deepEqual(await names('host=host-a&powerState=running'), ['web-1']);
    assert.deepEqual(await names('host=nowhere'), []);
  });

  test('paginates with the next cursor until null, no instance twice or missed', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const query: string = cursor === null ? 'limit=2' : `limit=2&after=${cursor}`;
      const body = (await call(h, `/v1/instances?${query}`)).body as {
        instances: { uuid: string }[];
        next: string | null;
      };
      seen.push(...body.instances.map((i) => i.uuid));
      cursor = body.next;
      pages++;
    } while (cursor !== null && pages < 10);
    assert.deepEqual(seen, [1, 2, 3, 4, 5].map(uuidOf));
    assert.equal(pages, 3);
  });

  test('a page that ends exactly at the last instance has no next cursor', async () => {
    const body = (await call(h, `/v1/instances?limit=5`)).body as { next: unknown };
    assert.equal(body.next, null);
    const filtered = (await call(h, `/v1/instances?host=host-b&limit=2`)).body as { next: unknown };
    assert.equal(filtered.next, null);
    const first = (await call(h, `/v1/instances?limit=4`)).body as { next: unknown };
    assert.equal(first.next, uuidOf(4));
  });

  test('400 names the bad query parameter and its value', async () => {
    const cases: [string, RegExp][] = [
      ['vmState=bogus', /vmState.*one of.*active.*'bogus'/],
      ['powerState=off', /powerState.*one of.*running.*missing.*'off'/],
      ['limit=0', /limit.*integer from 1 to 1000.*'0'/],
      ['limit=1001', /limit.*integer from 1 to 1000.*'1001'/],
      ['limit=ten', /limit.*integer.*'ten'/],
      ['after=nope', /after.*UUID/],
      ['colour=blue', /unknown query parameter 'colour'/],
      ['host=', /host.*empty/],
    ];
    for (const [query, message] of cases) {
      const reply = await call(h, `/v1/instances?${query}`);
      assert.equal(reply.status, 400, query);
      const error = errorOf(reply);
      assert.equal(error.error, 'invalid-request', query);
      assert.match(error.message, message, query);
    }
  });

  test('shows one instance; upper-case uuids are the same instance', async () => {
    const reply = await call(h, `/v1/instances/${uuidOf(3)}`);
    assert.equal(reply.status, 200);
    const body = reply.body as Record<string, unknown>;
    assert.deepEqual(Object.keys(body).sort(), INSTANCE_KEYS);
    assert.equal(body.name, 'web-3');
    assert.equal(body.host, 'host-b');
    const upper = await call(h, `/v1/instances/${uuidOf(3).toUpperCase()}`);
    assert.equal(upper.status, 200);
    assert.equal((upper.body as { uuid: string }).uuid, uuidOf(3));
  });

  test('400 for a malformed uuid, 404 naming an unknown one', async () => {
    const bad = await call(h, '/v1/instances/not-a-uuid');
    assert.equal(bad.status, 400);
    assert.match(errorOf(bad).message, /uuid.*UUID.*'not-a-uuid'/);
    const unknown = await call(h, `/v1/instances/${uuidOf(99)}`);
    assert.equal(unknown.status, 404);
    assert.deepEqual(unknown.body, {
      error: 'not-found',
      message: `no instance ${uuidOf(99)}`,
    });
  });

  test('history: newest first, every documented field, limit, 404 for unknown', async () => {
    const uuid = uuidOf(1);
    const base = {
      cause: 'event' as const,
      outOfBand: true,
      observedAt: Date.parse('2024-05-01T10:00:00Z'),
    };
    await patch(
      h.store,
      uuid,
      { vmState: 'stopped', powerState: 'shutoff' },
      {
        ...base,
        from: 'running',
        to: 'shutoff',
        vmStateFrom: 'active',
        vmStateTo: 'stopped',
        detail: 'shutdown',
      },
    );
    await patch(
      h.store,
      uuid,
      { vmState: 'active', powerState: 'running' },
      {
        ...base,
        from: 'shutoff',
        to: 'running',
        vmStateFrom: 'stopped',
        vmStateTo: 'active',
        detail: 'booted',
        cause: 'reconcile',
        outOfBand: false,
      },
    );
    const reply = await call(h, `/v1/instances/${uuid}/history`);
    assert.equal(reply.status, 200);
    const transitions = (reply.body as { transitions: Record<string, unknown>[] }).transitions;
    assert.equal(transitions.length, 2);
    assert.deepEqual(Object.keys(transitions[0]!).sort(), [
      'cause',
      'detail',
      'from',
      'observedAt',
      'outOfBand',
      'recordedAt',
      'to',
      'vmStateFrom',
      'vmStateTo',
    ]);
    assert.deepEqual(
      { ...transitions[0], recordedAt: undefined },
      {
        from: 'shutoff',
        to: 'running',
        vmStateFrom: 'stopped',
        vmStateTo: 'active',
        cause: 'reconcile',
        detail: 'booted',
        outOfBand: false,
        observedAt: '2024-05-01T10:00:00.000Z',
        recordedAt: undefined,
      },
    );
    assert.equal(transitions[1]!.detail, 'shutdown');
    assert.match(String(transitions[1]!.recordedAt), /^\d{4}-\d\d-\d\dT.*Z$/);

    const limited = await call(h, `/v1/instances/${uuid}/history?limit=1`);
    assert.equal((limited.body as { transitions: unknown[] }).transitions.length, 1);
    const none = await call(h, `/v1/instances/${uuidOf(98)}/history`);
    assert.equal(none.status, 404);
    assert.equal(errorOf(none).error, 'not-found');
    const bad = await call(h, `/v1/instances/${uuid}/history?limit=-1`);
    assert.equal(bad.status, 400);
  });

  test('history: reboots are entries of their own although the power state stays', async () => {
    await create(h.store, uuidOf(6), { name: 'rebooted' });
    for (const [cause, detail] of [
      ['reboot', 'reboot'],
      ['hard-reboot', 'destroyed'],
    ] as const) {
      await patch(
        h.store,
        uuidOf(6),
        {},
        {
          from: 'running',
          to: 'running',
          vmStateFrom: 'active',
          vmStateTo: 'active',
          cause,
          detail,
          outOfBand: true,
          observedAt: Date.parse('2024-05-01T10:00:00Z'),
        },
      );
    }
    const reply = await call(h, `/v1/instances/${uuidOf(6)}/history`);
    assert.equal(reply.status, 200);
    const transitions = (reply.body as { transitions: Record<string, unknown>[] }).transitions;
    assert.deepEqual(
      transitions.map((t) => [t.cause, t.detail, t.from, t.to]),
      [
        ['hard-reboot', 'destroyed', 'running', 'running'],
        ['reboot', 'reboot', 'running', 'running'],
      ],
    );
  });
});

describe('actions', () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
    await create(h.store, uuidOf(1), {
      name: 'stopped-one',
      vmState: 'stopped',
      powerState: 'shutoff',
    });
    await create(h.store, uuidOf(2), { name: 'running-one' });
  });
  after(() => h.close());

  const post = (uuid: string, body: unknown) =>
    call(h, `/v1/instances/${uuid}/actions`, { method: 'POST', json: body });

  test('202 with the task and the instance showing its taskState', async () => {
    h.actions.finishAfterMs = null;
    const reply = await post(uuidOf(1), { action: 'start' });
    assert.equal(reply.status, 202);
    const body = reply.body as {
      task: Record<string, unknown>;
      instance: Record<string, unknown>;
    };
    assert.deepEqual(Object.keys(body.task).sort(), ['action', 'startedAt', 'taskState', 'uuid']);
    assert.equal(body.task.uuid, uuidOf(1));
    assert.equal(body.task.action, 'start');
    assert.equal(body.task.taskState, 'powering-on');
    assert.match(String(body.task.startedAt), /^\d{4}-.*Z$/);
    assert.equal(body.instance.taskState, 'powering-on');
    assert.deepEqual(Object.keys(body.instance).sort(), INSTANCE_KEYS);

    // The port's refusals map to statuses, each with its code and message.
    const again = await post(uuidOf(1), { action: 'start' });
    assert.equal(again.status, 409);
    assert.equal(errorOf(again).error, 'task-in-flight');

    await h.actions.finish(uuidOf(1), 'start');
    const nonsense = await post(uuidOf(1), { action: 'resume' });
    assert.equal(nonsense.status, 409);
    assert.deepEqual(nonsense.body, {
      error: 'invalid-action',
      message: 'cannot resume an instance that is active',
    });
  });

  test('the API accepts and refuses by the engine rulebook (stop from suspended, hard-reboot from paused)', async () => {
    h.actions.finishAfterMs = null;
    const cases: [number, VmState, ActionName, number][] = [
      [11, 'suspended', 'stop', 202],
      [12, 'error', 'stop', 202],
      [13, 'paused', 'hard-reboot', 202],
      [14, 'suspended', 'hard-reboot', 202],
      [15, 'paused', 'reboot', 409],
    ];
    for (const [n, vmState, action, status] of cases) {
      await create(h.store, uuidOf(n), { vmState });
      const reply = await post(uuidOf(n), { action });
      assert.equal(reply.status, status, `${action} from ${vmState}`);
    }
  });

  test('404 for an unknown instance, 503 while the hypervisor is disconnected', async () => {
    const unknown = await post(uuidOf(77), { action: 'stop' });
    assert.equal(unknown.status, 404);
    assert.equal(errorOf(unknown).error, 'not-found');

    h.actions.connected = false;
    try {
      const down = await post(uuidOf(2), { action: 'stop' });
      assert.equal(down.status, 503);
      assert.deepEqual(down.body, { error: 'unavailable', message: 'hypervisor is disconnected' });
    } finally {
      h.actions.connected = true;
    }
  });

  test('an unexpected port failure is a 500 that leaks nothing, and the server carries on', async () => {
    h.actions.crash = new Error('secret database path /var/lib/x');
    try {
      const reply = await post(uuidOf(2), { action: 'pause' });
      assert.equal(reply.status, 500);
      assert.equal(errorOf(reply).error, 'internal');
      assert.doesNotMatch(reply.text, /secret/);
    } finally {
      h.actions.crash = null;
    }
    assert.equal((await call(h, '/healthz')).status, 200);
  });

  test('bad bodies are 400 (or 413/415) naming the problem, and never reach the port', async () => {
    const before = h.actions.submitted.length;
    const uuid = uuidOf(2);
    const url = `/v1/instances/${uuid}/actions`;
    const json = { 'content-type': 'application/json' };
    const cases: [RequestInit, number, RegExp][] = [
      [{ body: '{"action":"explode"}', headers: json }, 400, /action.*one of.*start.*'explode'/],
      [{ body: '{}', headers: json }, 400, /'action' is required/],
      [
        { body: '{"action":"stop","force":true}', headers: json },
        400,
        /unknown body field 'force'/,
      ],
      [{ body: '{"action":7}', headers: json }, 400, /action/],
      [{ body: '["stop"]', headers: json }, 400, /body must be a JSON object/],
      [{ body: '{"action": "stop"', headers: json }, 400, /not valid JSON/],
      [{ body: '', headers: json }, 400, /empty/],
      [{ body: '{"__proto__":{"action":"stop"}}', headers: json }, 400, /./],
      [
        { body: 'action=stop', headers: { 'content-type': 'text/plain' } },
        415,
        /application\/json/,
      ],
      [
        { body: JSON.stringify({ action: 'stop', pad: 'x'.repeat(200_000) }), headers: json },
        413,
        /larger/,
      ],
    ];
    for (const [init, status, message] of cases) {
      const reply = await call(h, url, { ...init, method: 'POST' });
      assert.equal(reply.status, status, String(init.body).slice(0, 60));
      assert.match(errorOf(reply).message, message, String(init.body).slice(0, 60));
    }
    const badUuid = await post('1234', { action: 'stop' });
    assert.equal(badUuid.status, 400);
    assert.equal(h.actions.submitted.length, before);
  });
});

describe('hosts, health, readiness, metrics, openapi', () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
  });
  after(() => h.close());

  test('hosts with ISO times and a null last reconcile', async () => {
    await h.store.upsertHost({
      name: 'host-a',
      driver: 'libvirt',
      connected: true,
      lastSeenAt: Date.parse('2024-05-01T10:00:00Z'),
      lastReconcileAt: null,
    });
    await h.store.upsertHost({
      name: 'host-b',
      driver: 'sim',
      connected: false,
      lastSeenAt: Date.parse('2024-05-01T11:00:00Z'),
      lastReconcileAt: Date.parse('2024-05-01T11:00:05Z'),
    });
    const reply = await call(h, '/v1/hosts');
    assert.equal(reply.status, 200);
    assert.deepEqual(reply.body, {
      hosts: [
        {
          name: 'host-a',
          driver: 'libvirt',
          connected: true,
          lastSeenAt: '2024-05-01T10:00:00.000Z',
          reachable: true,
          lastReconcileAt: null,
          connectionError: null,
          backlog: 0,
        },
        {
          name: 'host-b',
          driver: 'sim',
          connected: false,
          lastSeenAt: '2024-05-01T11:00:00.000Z',
          reachable: true,
          lastReconcileAt: '2024-05-01T11:00:05.000Z',
          connectionError: null,
          backlog: 0,
        },
      ],
    });
  });

  test('healthz always 200; readyz 200 or 503 with the reasons', async () => {
    assert.deepEqual((await call(h, '/healthz')).body, { status: 'ok' });
    const ready = await call(h, '/readyz');
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body, { ready: true, reasons: [] });

    h.readiness.state = {
      ready: false,
      reasons: ['hypervisor disconnected', 'first reconcile pending'],
    };
    const notReady = await call(h, '/readyz');
    assert.equal(notReady.status, 503);
    assert.deepEqual(notReady.body, {
      ready: false,
      reasons: ['hypervisor disconnected', 'first reconcile pending'],
    });

    h.readiness.throws = new Error('engine gone');
    const broken = await call(h, '/readyz');
    assert.equal(broken.status, 503);
    assert.match((broken.body as { reasons: string[] }).reasons[0]!, /engine gone/);
    assert.equal((await call(h, '/healthz')).status, 200);
    h.readiness.throws = null;
    h.readiness.state = { ready: true, reasons: [] };
  });

  test('unknown routes are 404, known routes asked with another method 405, in the error shape', async () => {
    const reply = await call(h, '/v2/instances?x=1');
    assert.equal(reply.status, 404);
    assert.deepEqual(reply.body, { error: 'not-found', message: 'no route GET /v2/instances' });
    const method = await call(h, '/v1/hosts', { method: 'DELETE' });
    assert.equal(method.status, 405);
    assert.equal(errorOf(method).error, 'method-not-allowed');
    assert.equal(method.headers.get('allow'), 'GET, HEAD');
    const action = await call(h, `/v1/instances/${uuidOf(1)}/actions`);
    assert.equal(action.status, 405);
    assert.match(errorOf(action).message, /GET is not allowed.*use POST/);
    assert.equal(action.headers.get('allow'), 'POST');
  });

  test('/metrics serves the given registry plus request metrics by route pattern', async () => {
    const engineCounter = new Counter({
      name: 'hvsync_events_received_total',
      help: 'stands in for the engine metrics the wiring registers',
      registers: [h.registry],
    });
    engineCounter.inc(3);
    await call(h, `/v1/instances/${uuidOf(1)}`);
    await call(h, '/nowhere/at/all');
    const reply = await call(h, '/metrics');
    assert.equal(reply.status, 200);
    assert.match(reply.headers.get('content-type') ?? '', /^text\/plain/);
    assert.match(reply.text, /^hvsync_events_received_total 3$/m);
    assert.match(
      reply.text,
      /^hvsync_http_requests_total\{method="GET",route="\/v1\/instances\/:uuid",status="404"\} 1$/m,
    );
    assert.match(reply.text, /route="unmatched",status="404"/);
    assert.match(
      reply.text,
      /^hvsync_http_request_duration_seconds_count\{method="GET",route="\/healthz"\} \d+$/m,
    );
    assert.doesNotMatch(reply.text, /nowhere/);
  });

  test('/openapi.json documents every route with its schemas', async () => {
    const reply = await call(h, '/openapi.json');
    assert.equal(reply.status, 200);
    const doc = reply.body as {
      openapi: string;
      paths: Record<
        string,
        Record<
          string,
          {
            parameters?: { name: string }[];
            responses: Record<string, unknown>;
            requestBody?: unknown;
          }
        >
      >;
    };
    assert.match(doc.openapi, /^3\./);
    for (const path of [
      '/v1/instances',
      '/v1/instances/{uuid}',
      '/v1/instances/{uuid}/history',
      '/v1/instances/{uuid}/actions',
      '/v1/hosts',
      '/v1/watch',
      '/healthz',
      '/readyz',
      '/metrics',
    ]) {
      assert.ok(doc.paths[path], `${path} documented`);
    }
    const list = doc.paths['/v1/instances']!.get!;
    assert.deepEqual(list.parameters!.map((p) => p.name).sort(), [
      'after',
      'host',
      'includeDeleted',
      'limit',
      'powerState',
      'vmState',
    ]);
    assert.ok(list.responses['200']);
    const action = doc.paths['/v1/instances/{uuid}/actions']!.post!;
    assert.ok(action.requestBody);
    assert.ok(action.responses['202'] && action.responses['409']);
    assert.ok(doc.paths['/v1/watch']!.get!.responses['410']);
    assert.equal(doc.paths['/openapi.json'], undefined);
  });

  test('garbage on the socket gets an error answer and the server keeps serving', async () => {
    const answers = await Promise.all(
      [
        'GARBAGE\r\n\r\n',
        `GET /v1/hosts HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
        '\x00\x01\x02\xff\r\n\r\n',
      ].map((payload) => rawExchange(h, payload)),
    );
    assert.deepEqual(
      answers.map((answer) => [answer.split(' ')[1], apiErrorIn(answer)]),
      [
        ['400', 'bad-request'],
        ['431', 'headers-too-large'],
        ['400', 'bad-request'],
      ],
    );
    assert.equal((await call(h, '/healthz')).status, 200);
  });
});

describe('authentication', () => {
  let h: Harness;
  before(async () => {
    h = await startServer({ token: 's3cret-token' });
    await create(h.store, uuidOf(1));
  });
  after(() => h.close());

  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

  test('401 without a token or with a wrong one, on every route but /healthz', async () => {
    for (const path of [
      '/v1/instances',
      `/v1/instances/${uuidOf(1)}`,
      '/v1/hosts',
      '/readyz',
      '/metrics',
      '/openapi.json',
      '/v1/watch',
      '/no/such/route',
    ]) {
      for (const headers of [
        {},
        bearer('wrong'),
        bearer('s3cret-token-and-more'),
        { authorization: 's3cret-token' },
      ]) {
        const reply = await call(h, path, { headers });
        assert.equal(reply.status, 401, `${path} ${JSON.stringify(headers)}`);
        assert.equal(errorOf(reply).error, 'unauthorized');
        assert.match(reply.headers.get('www-authenticate') ?? '', /^Bearer/);
      }
    }
    const post = await call(h, `/v1/instances/${uuidOf(1)}/actions`, {
      method: 'POST',
      json: { action: 'stop' },
    });
    assert.equal(post.status, 401);
    assert.equal(h.actions.submitted.length, 0);
    assert.equal((await call(h, '/healthz')).status, 200);
  });

  test('the right token opens every route', async () => {
    assert.equal((await call(h, '/v1/instances', { headers: bearer('s3cret-token') })).status, 200);
    assert.equal(
      (await call(h, '/readyz', { headers: { authorization: 'bearer s3cret-token' } })).status,
      200,
    );
    const action = await call(h, `/v1/instances/${uuidOf(1)}/actions`, {
      method: 'POST',
      json: { action: 'stop' },
      headers: bearer('s3cret-token'),
    });
    assert.equal(action.status, 202);
    const doc = await call(h, '/openapi.json', { headers: bearer('s3cret-token') });
    assert.ok((doc.body as { components: { securitySchemes: object } }).components.securitySchemes);
  });
});

describe('listening', () => {
  const base = () => ({
    store: {} as never,
    actions: {
      submit: async () => {
        throw new Error('unused');
      },
    },
    readiness: { check: () => ({ ready: true, reasons: [] }) },
    registry: new Registry(),
  });

  test('parseListen: host and port, IPv6 in brackets, clear errors', () => {
    assert.deepEqual(parseListen('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080 });
    assert.deepEqual(parseListen('localhost:0'), { host: 'localhost', port: 0 });
    assert.deepEqual(parseListen('[::1]:9000'), { host: '::1', port: 9000 });
    assert.deepEqual(parseListen('0.0.0.0:80'), { host: '0.0.0.0', port: 80 });
    for (const bad of [
      '8080',
      '127.0.0.1',
      ':8080',
      '127.0.0.1:http',
      '127.0.0.1:70000',
      '::1:80',
      '[::zz]:80',
      '',
    ]) {
      assert.throws(
        () => parseListen(bad),
        (error) => error instanceof ServerError && error.code === 'invalid-listen',
        bad,
      );
    }
  });

  test('loopback is 127/8, ::1 and localhost; nothing else', () => {
    for (const host of [
      '127.0.0.1',
      '127.1.2.3',
      '::1',
      '0:0:0:0:0:0:0:1',
      '::ffff:127.0.0.1',
      'localhost',
      'LOCALHOST',
    ]) {
      assert.equal(isLoopback(host), true, host);
    }
    for (const host of [
      '0.0.0.0',
      '::',
      '10.0.0.1',
      '128.0.0.1',
      '::2',
      '::ffff:10.0.0.1',
      'example.com',
      'localhost.example.com',
      '1127.0.0.1',
    ]) {
      assert.equal(isLoopback(host), false, host);
    }
  });

  test('refuses a non-loopback address without a token, allows it with one', async () => {
    assert.throws(
      () => checkListen(parseListen('0.0.0.0:8080'), false),
      (error) =>
        error instanceof ServerError &&
        error.code === 'insecure-listen' &&
        /0\.0\.0\.0:8080.*token/.test(error.message),
    );
    checkListen(parseListen('127.0.0.1:8080'), false);
    checkListen(parseListen('0.0.0.0:8080'), true);

    const open = buildServer(base());
    await assert.rejects(
      listen(open, '0.0.0.0:0'),
      (error) => error instanceof ServerError && error.code === 'insecure-listen',
    );
    assert.equal(open.server.listening, false);
    await open.close();

    const guarded = buildServer({ ...base(), token: 't' });
    const bound = await listen(guarded, '0.0.0.0:0');
    assert.ok(bound.port > 0);
    await guarded.close();
  });

  test('an empty token is a configuration error, not "no auth"', () => {
    assert.throws(
      () => buildServer({ ...base(), token: '  ' }),
      (error) => error instanceof ServerError && error.code === 'invalid-option',
    );
  });
});
