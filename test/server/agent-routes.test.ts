// The routes a host's agent writes through, on a real SQLite store: a batch with each write's
// result, the status report with the server's clock, bad input refused with 400 before anything
// is applied, and the per-write authorisation refusing a whole request.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { call, errorOf, fields, startServer, uuidOf } from './harness.ts';
import type { Harness } from './harness.ts';

describe('agent routes', () => {
  let h: Harness;
  before(async () => {
    h = await startServer({
      agents: true,
      agentWriteRefusal: (_request, host, write) =>
        write.kind === 'create' && write.fields.host !== host
          ? `host ${host} may not create an instance on ${write.fields.host}`
          : null,
    });
  });
  after(() => h.close());

  test('a batch is applied with a result per write: ok with the record, conflict with the current one', async () => {
    const uuid = uuidOf(1);
    const reply = await call(h, '/v1/hosts/host-a/writes', {
      method: 'POST',
      json: {
        writes: [
          { kind: 'create', uuid, fields: fields() },
          { kind: 'update', uuid, expectedVersion: 1, patch: { powerState: 'paused' } },
          { kind: 'update', uuid, expectedVersion: 1, patch: { powerState: 'shutoff' } },
        ],
      },
    });
    assert.equal(reply.status, 200, reply.text);
    const { results } = reply.body as {
      results: {
        ok: boolean;
        reason?: string;
        instance?: { version: number };
        current?: { version: number };
        revision?: number;
      }[];
    };
    assert.deepEqual(
      results.map((r) => (r.ok ? 'ok' : r.reason)),
      ['ok', 'ok', 'conflict'],
    );
    assert.equal(results[1]!.instance!.version, 2);
    assert.ok(results[1]!.revision! > results[0]!.revision!);
    assert.equal(results[2]!.current!.version, 2);
    assert.equal((await h.store.getInstance(uuid))?.powerState, 'paused');
  });

  test('bad writes are refused with 400 and nothing of the request is applied', async () => {
    const uuid = uuidOf(2);
    for (const writes of [
      [{ kind: 'create', uuid }],
      [{ kind: 'update', uuid, patch: {} }],
      [{ kind: 'create', uuid, fields: fields(), extra: 1 }],
      [{ kind: 'create', uuid, fields: { ...fields(), powerState: 'flying' } }],
      [{ kind: 'create', uuid: 'not-a-uuid', fields: fields() }],
    ]) {
      const reply = await call(h, '/v1/hosts/host-a/writes', {
        method: 'POST',
        json: { writes: [{ kind: 'create', uuid, fields: fields() }, ...writes] },
      });
      assert.equal(reply.status, 400, `${JSON.stringify(writes)}: ${reply.text}`);
      assert.equal(errorOf(reply).error, 'invalid-request');
    }
    const unsequenced = await call(h, '/v1/hosts/host-a/writes', {
      method: 'POST',
      json: { journal: 'j', writes: [{ kind: 'create', uuid, fields: fields() }] },
    });
    assert.equal(unsequenced.status, 400);
    assert.match(errorOf(unsequenced).message, /no seq/);
    assert.equal(await h.store.getInstance(uuid), null);
  });

  test('a write the authorisation refuses makes the whole request 403', async () => {
    const reply = await call(h, '/v1/hosts/host-a/writes', {
      method: 'POST',
      json: {
        writes: [
          { kind: 'create', uuid: uuidOf(3), fields: fields() },
          { kind: 'create', uuid: uuidOf(4), fields: fields({ host: 'host-b' }) },
        ],
      },
    });
    assert.equal(reply.status, 403);
    assert.match(errorOf(reply).message, /may not create an instance on host-b/);
    assert.equal(await h.store.getInstance(uuidOf(3)), null);
  });

  test("a status report is stored with the server's clock, its backlog and connection error", async () => {
    const before = Date.now();
    const reply = await call(h, '/v1/hosts/host-s/status', {
      method: 'PUT',
      json: {
        driver: 'libvirt',
        connected: false,
        lastReconcileAt: 5,
        backlog: 17,
        connectionError: 'connect ENOENT',
      },
    });
    assert.equal(reply.status, 204, reply.text);
    const hosts = (await call(h, '/v1/hosts')).body as {
      hosts: {
        name: string;
        backlog: number;
        connectionError: string | null;
        lastSeenAt: string;
      }[];
    };
    const host = hosts.hosts.find((x) => x.name === 'host-s')!;
    assert.equal(host.backlog, 17);
    assert.equal(host.connectionError, 'connect ENOENT');
    assert.ok(Date.parse(host.lastSeenAt) >= before);
    const bad = await call(h, '/v1/hosts/host-s/status', {
      method: 'PUT',
      json: { driver: 'libvirt', connected: true, lastReconcileAt: null, backlog: -1 },
    });
    assert.equal(bad.status, 400);
  });
});
