// Principals and the route policy on a real server over a real SQLite file: the admin token, a
// reader's token and host tokens issued through the admin API, each refused what it may not do.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Registry } from 'prom-client';
import { ActionRejected, buildServer, listen } from '../../src/server/index.ts';
import { openPostgresStore, openSqliteStore } from '../../src/store/index.ts';
import type { InstanceWrite, NewTransition, SqliteStore } from '../../src/store/index.ts';
import { FakeActions, FakeReadiness, create, errorOf, fields, uuidOf, waitFor } from './harness.ts';
import type { Harness, Reply } from './harness.ts';
import { call as callHarness } from './harness.ts';
import { describePostgres, freshSchema } from '../support/postgres.ts';

const ADMIN = 'admin-secret';

interface Replica {
  readonly url: string;
  close(): Promise<void>;
}

interface SqliteReplica extends Replica {
  readonly app: FastifyInstance;
  readonly store: SqliteStore;
  readonly actions: FakeActions;
}

/** A server as `hvsync server` builds it, with the agents' routes: a refused write refuses the request. */
async function startReplica(
  path: string,
  options: { token?: string; now?: () => number } = {},
): Promise<SqliteReplica> {
  const store = await openSqliteStore(path, { exclusive: false });
  const actions = new FakeActions(store);
  const app = buildServer({
    store,
    actions,
    readiness: new FakeReadiness(),
    registry: new Registry(),
    token: 'token' in options ? options.token : ADMIN,
    credentials: store.credentials,
    agents: store,
    now: options.now,
  });
  const { url } = await listen(app, '127.0.0.1:0');
  return {
    url,
    app,
    store,
    actions,
    async close() {
      actions.cancelPending();
      await app.close();
      await store.close();
    },
  };
}

function call(
  replica: Replica,
  path: string,
  token: string | undefined,
  init: RequestInit & { json?: unknown } = {},
): Promise<Reply> {
  const headers = new Headers(init.headers);
  if (token !== undefined) headers.set('authorization', `Bearer ${token}`);
  return callHarness({ url: replica.url } as Harness, path, { ...init, headers });
}

function forbidden(reply: Reply, pattern: RegExp): void {
  assert.equal(reply.status, 403, reply.text);
  const body = errorOf(reply);
  assert.equal(body.error, 'forbidden');
  assert.match(body.message, pattern);
}

async function issue(replica: Replica, path: string): Promise<string> {
  const reply = await call(replica, path, ADMIN, { method: 'POST' });
  assert.equal(reply.status, 201, reply.text);
  const token = (reply.body as { token: string }).token;
  assert.match(token, /^hvs_[A-Za-z0-9_-]{43}$/);
  return token;
}

const migration: NewTransition = {
  from: 'running',
  to: 'running',
  vmStateFrom: 'active',
  vmStateTo: 'active',
  cause: 'migration',
  detail: 'host-b → host-a',
  outOfBand: false,
  observedAt: 1,
};

const dir = mkdtempSync(join(tmpdir(), 'hvsync-auth-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;
const freshPath = () => join(dir, `auth-${(files += 1)}.db`);

describe('tokens and what each may do', () => {
  let server: SqliteReplica;
  let reader: string;
  let hostA: string;
  let hostB: string;

  before(async () => {
    server = await startReplica(freshPath());
    await create(server.store, uuidOf(1), { name: 'a1', host: 'host-a' });
    await create(server.store, uuidOf(2), { name: 'b1', host: 'host-b' });
    reader = await issue(server, '/v1/readers/dashboard/token');
    hostA = await issue(server, '/v1/hosts/host-a/token');
    hostB = await issue(server, '/v1/hosts/host-b/token');
  });
  after(() => server.close());

  test('no token or an unknown one is 401; the admin token may do everything', async () => {
    assert.equal((await call(server, '/v1/instances', undefined)).status, 401);
    const unknown = await call(server, '/v1/instances', 'hvs_not-a-real-token');
    assert.equal(unknown.status, 401);
    assert.equal(errorOf(unknown).error, 'unauthorized');
    assert.equal((await call(server, '/v1/instances', ADMIN)).status, 200);
    assert.equal((await call(server, '/v1/hosts', ADMIN)).status, 200);
    assert.equal((await call(server, '/v1/credentials', ADMIN)).status, 200);
    const action = await call(server, `/v1/instances/${uuidOf(1)}/actions`, ADMIN, {
      method: 'POST',
      json: { action: 'pause' },
    });
    assert.equal(action.status, 202, action.text);
    // The task finishes a moment later and moves the record's version: let it, so the tests that
    // follow write against a record nothing else is changing.
    await waitFor('the pause to finish', async () => {
      return (await server.store.getInstance(uuidOf(1)))?.taskState === null;
    });
    assert.equal((await call(server, '/healthz', undefined)).status, 200, 'public');
  });

  test('the token is shown once; the credential list has names and times, never hashes', async () => {
    const list = await call(server, '/v1/credentials', ADMIN);
    const credentials = (list.body as { credentials: Record<string, unknown>[] }).credentials;
    assert.deepEqual(
      credentials.map((c) => `${String(c.kind)} ${String(c.name)}`),
      ['host host-a', 'host host-b', 'reader dashboard'],
    );
    assert.ok(!list.text.includes(hostA) && !/[0-9a-f]{64}/.test(list.text), list.text);
  });

  test('a reader reads everything and changes nothing', async () => {
    for (const path of ['/v1/instances', `/v1/instances/${uuidOf(2)}`, '/v1/hosts', '/readyz']) {
      assert.equal((await call(server, path, reader)).status, 200, path);
    }
    const action = await call(server, `/v1/instances/${uuidOf(2)}/actions`, reader, {
      method: 'POST',
      json: { action: 'stop' },
    });
    forbidden(action, /reader 'dashboard' may only read \(GET\)/);
    assert.deepEqual(
      server.actions.submitted.filter((s) => s.uuid === uuidOf(2)),
      [],
    );
    forbidden(
      await call(server, '/v1/hosts/evil/token', reader, { method: 'POST' }),
      /may only read/,
    );
    forbidden(await call(server, '/v1/credentials', reader), /needs the admin token/);
  });

  test("a host token reads only its own host's instances, with host= given", async () => {
    const own = await call(server, '/v1/instances?host=host-a', hostA);
    assert.equal(own.status, 200, own.text);
    const instances = (own.body as { instances: { uuid: string }[] }).instances;
    assert.deepEqual(
      instances.map((i) => i.uuid),
      [uuidOf(1)],
    );
    forbidden(
      await call(server, '/v1/instances', hostA),
      /host 'host-a' must give host=host-a on GET \/v1\/instances/,
    );
    forbidden(
      await call(server, '/v1/instances?host=host-b', hostA),
      /may not read the instances of host 'host-b'/,
    );
    forbidden(
      await call(server, '/v1/instances?host=host-a&host=host-b', hostA),
      /must give host=host-a once on GET \/v1\/instances/,
    );
    const record = await call(server, `/v1/instances/${uuidOf(1)}`, hostA);
    assert.equal(record.status, 200, record.text);
    assert.equal((record.body as { host: string }).host, 'host-a');
    const elsewhere = await call(server, `/v1/instances/${uuidOf(2)}`, hostA);
    forbidden(elsewhere, new RegExp(`instance ${uuidOf(2)} is recorded on host 'host-b'`));
    assert.ok(!elsewhere.text.includes('"name"'), 'nothing of the record is in the answer');
    const unknown = await call(server, `/v1/instances/${uuidOf(99)}`, hostA);
    assert.equal(unknown.status, 404);
    forbidden(
      await call(server, `/v1/instances/${uuidOf(1)}/history`, hostA),
      /may not use GET \/v1\/instances\/:uuid\/history/,
    );
    forbidden(await call(server, '/v1/hosts', hostA), /own host's instances/);
    forbidden(
      await call(server, `/v1/instances/${uuidOf(1)}/actions`, hostA, {
        method: 'POST',
        json: { action: 'stop' },
      }),
      /may not use POST/,
    );
    forbidden(
      await call(server, '/v1/hosts/host-a/token', hostA, { method: 'DELETE' }),
      /may not use DELETE/,
    );
  });

  test("a host token writes its own host's instances", async () => {
    const { version } = (await server.store.getInstance(uuidOf(1)))!;
    const reply = await call(server, '/v1/hosts/host-a/writes', hostA, {
      method: 'POST',
      json: {
        writes: [
          { kind: 'create', uuid: uuidOf(10), fields: fields({ host: 'host-a' }) },
          { kind: 'update', uuid: uuidOf(1), expectedVersion: version, patch: { name: 'renamed' } },
        ],
      },
    });
    assert.equal(reply.status, 200, reply.text);
    assert.deepEqual(
      (reply.body as { results: { ok: boolean }[] }).results.map((r) => r.ok),
      [true, true],
      reply.text,
    );
    assert.equal((await server.store.getInstance(uuidOf(10)))?.host, 'host-a');
    assert.equal((await server.store.getInstance(uuidOf(1)))?.name, 'renamed');
  });

  test("another host's instance: 403, and nothing of the request is written", async () => {
    const before = await server.store.getInstance(uuidOf(2));
    const reply = await call(server, '/v1/hosts/host-a/writes', hostA, {
      method: 'POST',
      json: {
        writes: [
          { kind: 'create', uuid: uuidOf(11), fields: fields({ host: 'host-a' }) },
          { kind: 'update', uuid: uuidOf(2), expectedVersion: 1, patch: { powerState: 'shutoff' } },
        ],
      },
    });
    forbidden(reply, new RegExp(`instance ${uuidOf(2)} is recorded on host 'host-b'`));
    assert.deepEqual(await server.store.getInstance(uuidOf(2)), before);
    assert.equal(await server.store.getInstance(uuidOf(11)), null);
  });

  test('a new instance claiming another host: 403', async () => {
    const reply = await call(server, '/v1/hosts/host-a/writes', hostA, {
      method: 'POST',
      json: { writes: [{ kind: 'create', uuid: uuidOf(12), fields: fields({ host: 'host-b' }) }] },
    });
    forbidden(reply, /host 'host-a' may not create instance .* on host 'host-b'/);
    assert.equal(await server.store.getInstance(uuidOf(12)), null);
  });

  test("a replayed journal of another host: 403 on its path, 403 on the host's own", async () => {
    // host-b's journal, sent with host-a's token: the path names host-b...
    const journal = {
      writes: [
        { kind: 'update', uuid: uuidOf(2), expectedVersion: 1, patch: { powerState: 'paused' } },
      ],
    };
    forbidden(
      await call(server, '/v1/hosts/host-b/writes', hostA, { method: 'POST', json: journal }),
      /the token of host 'host-a' may not act for host 'host-b'/,
    );
    // ...or the path names host-a: the writes are host-b's instances all the same.
    forbidden(
      await call(server, '/v1/hosts/host-a/writes', hostA, { method: 'POST', json: journal }),
      /recorded on host 'host-b'/,
    );
    assert.equal((await server.store.getInstance(uuidOf(2)))?.powerState, 'running');
  });

  test("another host that knows a journal's id cannot move that journal's mark", async () => {
    const send = async (host: string, token: string, uuid: string, seq: number) => {
      const reply = await call(server, `/v1/hosts/${host}/writes`, token, {
        method: 'POST',
        json: {
          journal: 'journal-of-b',
          writes: [{ kind: 'create', uuid, fields: fields({ host }), seq }],
        },
      });
      assert.equal(reply.status, 200, reply.text);
      return (reply.body as { results: { ok: boolean; reason?: string }[] }).results[0]!;
    };
    assert.equal((await send('host-b', hostB, uuidOf(40), 1)).ok, true);
    // host-a sends under host-b's journal id, far ahead: its own instance, its own mark.
    assert.equal((await send('host-a', hostA, uuidOf(41), 100)).ok, true);
    // host-b's next entry is still applied, and its first one, sent again, still a duplicate.
    assert.equal((await send('host-b', hostB, uuidOf(42), 2)).ok, true);
    assert.equal((await send('host-b', hostB, uuidOf(40), 1)).reason, 'duplicate');
    assert.equal((await server.store.getInstance(uuidOf(42)))?.host, 'host-b');
  });

  test('a host may not hand its instance to another; the destination claims it by migration', async () => {
    await create(server.store, uuidOf(20), { host: 'host-b' });
    forbidden(
      await call(server, '/v1/hosts/host-b/writes', hostB, {
        method: 'POST',
        json: {
          writes: [
            { kind: 'update', uuid: uuidOf(20), expectedVersion: 1, patch: { host: 'host-a' } },
          ],
        },
      }),
      /host 'host-b' may not move instance .* to host 'host-a'/,
    );
    const claim = await call(server, '/v1/hosts/host-a/writes', hostA, {
      method: 'POST',
      json: {
        writes: [
          {
            kind: 'update',
            uuid: uuidOf(20),
            expectedVersion: 1,
            patch: { host: 'host-a', powerState: 'running' },
            transition: migration,
          },
        ],
      },
    });
    assert.equal(claim.status, 200, claim.text);
    assert.equal((await server.store.getInstance(uuidOf(20)))?.host, 'host-a');
  });

  test('a host may not move its instance away by a later write of the same request', async () => {
    await create(server.store, uuidOf(21), { host: 'host-b' });
    const before = await server.store.getInstance(uuidOf(21));
    const writes = (uuid: string, first: object): object => ({
      writes: [first, { kind: 'update', uuid, expectedVersion: 2, patch: { host: 'host-a' } }],
    });
    forbidden(
      await call(server, '/v1/hosts/host-b/writes', hostB, {
        method: 'POST',
        json: writes(uuidOf(21), {
          kind: 'update',
          uuid: uuidOf(21),
          expectedVersion: 1,
          patch: { name: 'renamed first' },
        }),
      }),
      /host 'host-b' may not move instance .* to host 'host-a'/,
    );
    assert.deepEqual(await server.store.getInstance(uuidOf(21)), before);
    const created = writes(uuidOf(22), {
      kind: 'create',
      uuid: uuidOf(22),
      fields: fields({ host: 'host-b' }),
    }) as { writes: { expectedVersion?: number }[] };
    created.writes[1]!.expectedVersion = 1;
    forbidden(
      await call(server, '/v1/hosts/host-b/writes', hostB, { method: 'POST', json: created }),
      /host 'host-b' may not move instance .* to host 'host-a'/,
    );
    assert.equal(await server.store.getInstance(uuidOf(22)), null);
  });

  test("a host's writes are checked against the record as it now is, read only when not known", async () => {
    let reads = 0;
    const getInstances = server.store.getInstances.bind(server.store);
    server.store.getInstances = (uuids) => {
      reads += 1;
      return getInstances(uuids);
    };
    try {
      // host-b's requests, one write each.
      const send = async (write: object): Promise<Reply> =>
        call(server, '/v1/hosts/host-b/writes', hostB, {
          method: 'POST',
          json: { writes: [write] },
        });
      const uuid = uuidOf(23);
      const update = (expectedVersion: number, patch: object): Promise<Reply> =>
        send({ kind: 'update', uuid, expectedVersion, patch });
      const created = await send({ kind: 'create', uuid, fields: fields({ host: 'host-b' }) });
      assert.equal(created.status, 200, created.text);
      assert.equal(reads, 0, 'a create alone needs no read: the store refuses a recorded uuid');
      const renamed = await update(1, { name: 'known' });
      assert.equal(renamed.status, 200, renamed.text);
      assert.equal(reads, 0, 'version 1 came through the change feed: no read');

      // Moved by a commit this replica only hears of through its feed.
      const claim = await server.store.write({
        kind: 'update',
        uuid,
        expectedVersion: 2,
        patch: { host: 'host-a', powerState: 'running' },
        transition: migration,
      });
      assert.ok(claim.ok);
      forbidden(
        await update(3, { powerState: 'shutoff' }),
        new RegExp(`instance ${uuid} is recorded on host 'host-a'`),
      );
      assert.equal(reads, 0);
      const stale = await update(2, { powerState: 'shutoff' });
      assert.equal(stale.status, 200, stale.text);
      assert.equal(
        (stale.body as { results: { reason: string }[] }).results[0]!.reason,
        'conflict',
      );
      assert.equal(reads, 1, 'a version it does not know is read');
      assert.equal((await server.store.getInstance(uuid))?.host, 'host-a');
    } finally {
      server.store.getInstances = getInstances;
    }
  });

  test("a commit between the check and the write cannot make a host write another host's record", async () => {
    const uuid = uuidOf(24);
    await create(server.store, uuid, { host: 'host-b' });
    // host-a claims it by migration after host-b's request was checked, before it is written.
    const claim = {
      kind: 'update' as const,
      uuid,
      expectedVersion: 1,
      patch: { host: 'host-a', powerState: 'running' as const },
      transition: migration,
    };
    const write = server.store.write.bind(server.store);
    const handed: InstanceWrite[] = [];
    let claimed: Promise<unknown> | null = null;
    server.store.write = (next) => {
      handed.push(next);
      claimed ??= write(claim);
      return claimed.then(() => write(next));
    };
    let reply: Reply;
    try {
      reply = await call(server, '/v1/hosts/host-b/writes', hostB, {
        method: 'POST',
        json: {
          writes: [
            { kind: 'update', uuid, expectedVersion: 1, patch: { name: 'renamed' } },
            { kind: 'update', uuid, expectedVersion: 2, patch: { powerState: 'shutoff' } },
          ],
        },
      });
    } finally {
      server.store.write = write;
    }
    assert.equal(reply.status, 200, reply.text);
    assert.deepEqual(
      (reply.body as { results: { reason?: string }[] }).results.map((r) => r.reason),
      ['conflict', 'conflict'],
    );
    assert.deepEqual(
      handed.map((w) => (w.kind === 'update' ? w.expectedHost : null)),
      ['host-b', 'host-b'],
    );
    const record = await server.store.getInstance(uuid);
    assert.equal(record?.host, 'host-a');
    assert.equal(record?.powerState, 'running');
    assert.equal(record?.version, 2);
  });

  test('a second token for a name is refused unless replaced; the replaced one is revoked', async () => {
    const again = await call(server, '/v1/readers/dashboard/token', ADMIN, { method: 'POST' });
    assert.equal(again.status, 409);
    assert.equal(errorOf(again).error, 'credential-exists');
    assert.match(errorOf(again).message, /reader 'dashboard' already has a token/);
    const replaced = await issue(server, '/v1/readers/dashboard/token?replace=true');
    assert.equal((await call(server, '/v1/hosts', replaced)).status, 200);
    forbidden(
      await call(server, '/v1/hosts', reader),
      /the token of reader 'dashboard' was revoked/,
    );
    reader = replaced;
  });

  test('invalid names are refused; revoking a name without a token is 404', async () => {
    const bad = await call(server, '/v1/hosts/-x/token', ADMIN, { method: 'POST' });
    assert.equal(bad.status, 400, bad.text);
    const none = await call(server, '/v1/hosts/nobody/token', ADMIN, { method: 'DELETE' });
    assert.equal(none.status, 404);
    assert.match(errorOf(none).message, /host 'nobody' has no valid token/);
  });

  test("a revoked host's token: 403 at once on the replica that revoked it", async () => {
    const token = await issue(server, '/v1/hosts/host-c/token');
    assert.equal((await call(server, '/v1/instances?host=host-c', token)).status, 200);
    const revoked = await call(server, '/v1/hosts/host-c/token', ADMIN, { method: 'DELETE' });
    assert.equal(revoked.status, 200, revoked.text);
    assert.equal(typeof (revoked.body as { revokedAt: unknown }).revokedAt, 'string');
    forbidden(
      await call(server, '/v1/instances?host=host-c', token),
      /the token of host 'host-c' was revoked at .*hvsync hosts add host-c/,
    );
    forbidden(
      await call(server, '/v1/hosts/host-c/writes', token, {
        method: 'POST',
        json: {
          writes: [{ kind: 'create', uuid: uuidOf(30), fields: fields({ host: 'host-c' }) }],
        },
      }),
      /was revoked/,
    );
    assert.equal(await server.store.getInstance(uuidOf(30)), null);
  });
});

test('a token revoked on one replica stops working on another once its cache time has passed', async () => {
  const path = freshPath();
  let clock = 1_000_000;
  const a = await startReplica(path);
  const b = await startReplica(path, { now: () => clock });
  try {
    const token = await issue(a, '/v1/hosts/host-a/token');
    assert.equal((await call(b, '/v1/instances?host=host-a', token)).status, 200);
    assert.equal(
      (await call(a, '/v1/hosts/host-a/token', ADMIN, { method: 'DELETE' })).status,
      200,
    );
    // B believes what it looked up for up to 5 s: that is the bound on revocation.
    clock += 4_000;
    assert.equal((await call(b, '/v1/instances?host=host-a', token)).status, 200);
    clock += 1_001;
    forbidden(await call(b, '/v1/instances?host=host-a', token), /was revoked/);
  } finally {
    await b.close();
    await a.close();
  }
});

describePostgres('host tokens on replicas over PostgreSQL', (database) => {
  async function postgresReplica(schema: string, credentialCacheMs?: number): Promise<Replica> {
    const store = await openPostgresStore(database.url, { schema });
    const app = buildServer({
      store,
      actions: {
        submit: () => Promise.reject(new ActionRejected('unavailable', 'no hypervisor here')),
      },
      readiness: new FakeReadiness(),
      registry: new Registry(),
      token: ADMIN,
      credentials: store.credentials,
      agents: store,
      credentialCacheMs,
    });
    const { url } = await listen(app, '127.0.0.1:0');
    return {
      url,
      async close() {
        await app.close();
        await store.close();
      },
    };
  }

  test('a token revoked on one replica is refused by the other as soon as the revocation is announced', async () => {
    const schema = freshSchema();
    const a = await postgresReplica(schema);
    // Were the revocation not announced, B would believe what it looked up for ten minutes.
    const b = await postgresReplica(schema, 600_000);
    try {
      const token = await issue(a, '/v1/hosts/host-a/token');
      assert.equal((await call(b, '/v1/instances?host=host-a', token)).status, 200);
      const revoked = await call(a, '/v1/hosts/host-a/token', ADMIN, { method: 'DELETE' });
      assert.equal(revoked.status, 200, revoked.text);
      await waitFor(
        'replica B to refuse the revoked token',
        async () => (await call(b, '/v1/instances?host=host-a', token)).status !== 200,
        30_000,
      );
      forbidden(await call(b, '/v1/instances?host=host-a', token), /was revoked/);
    } finally {
      await b.close();
      await a.close();
    }
  });
});

test('without an admin token (loopback) a request without a token is the admin, a host token is still a host', async () => {
  const server = await startReplica(freshPath(), { token: undefined });
  try {
    await create(server.store, uuidOf(1), { host: 'host-b' });
    assert.equal((await call(server, '/v1/hosts', undefined)).status, 200);
    const issued = await call(server, '/v1/hosts/host-a/token', undefined, { method: 'POST' });
    const token = (issued.body as { token: string }).token;
    forbidden(await call(server, '/v1/hosts', token), /host 'host-a' may not use GET/);
    forbidden(
      await call(server, '/v1/hosts/host-a/writes', token, {
        method: 'POST',
        json: {
          writes: [{ kind: 'update', uuid: uuidOf(1), expectedVersion: 1, patch: { name: 'x' } }],
        },
      }),
      /recorded on host 'host-b'/,
    );
  } finally {
    await server.close();
  }
});
