// HTTPS: the server with --tls-cert/--tls-key, the client with --ca, on a certificate made for
// the test by openssl; and every bad certificate option refused in one line before anything opens.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClientError, HvsyncClient } from '../../src/cli/client.ts';
import { ServerError, tlsOptions } from '../../src/server/index.ts';
import { create, startServer, uuidOf } from '../server/harness.ts';
import type { Harness } from '../server/harness.ts';
import { hvsync, selfSignedCertificate } from '../support/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'hvsync-tls-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const { cert, key } = selfSignedCertificate(dir, 'server');
const { cert: otherCert, key: otherKey } = selfSignedCertificate(dir, 'other');

describe('an https server', () => {
  let h: Harness;
  before(async () => {
    h = await startServer({
      token: 'admin',
      tls: { cert: readFileSync(cert), key: readFileSync(key) },
    });
    await create(h.store, uuidOf(1), { name: 'over-tls' });
  });
  after(() => h.close());

  test('listens at an https URL and answers a client that trusts its CA', async () => {
    assert.match(h.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const client = new HvsyncClient({ server: h.url, token: 'admin', ca: readFileSync(cert) });
    const page = await client.listInstances();
    assert.deepEqual(
      page.instances.map((i) => i.name),
      ['over-tls'],
    );
  });

  test('a client that does not trust it is told to give --ca', async () => {
    const client = new HvsyncClient({ server: h.url, token: 'admin' });
    await assert.rejects(client.listInstances(), (error: unknown) => {
      assert.ok(error instanceof ClientError);
      assert.equal(error.code, 'unreachable');
      assert.match(error.message, /not trusted: give the CA's certificate with --ca FILE/);
      return true;
    });
    const wrongCa = new HvsyncClient({
      server: h.url,
      token: 'admin',
      ca: readFileSync(otherCert),
    });
    await assert.rejects(wrongCa.listInstances(), /not trusted/);
  });

  test('the CLI with --ca or HVSYNC_CA', async () => {
    const withOption = await hvsync(['instances', 'list', '--server', h.url, '--ca', cert], {
      HVSYNC_TOKEN: 'admin',
    });
    assert.equal(withOption.code, 0, withOption.stderr);
    assert.match(withOption.stdout, /over-tls/);
    const withEnv = await hvsync(['instances', 'list', '--server', h.url], {
      HVSYNC_TOKEN: 'admin',
      HVSYNC_CA: cert,
    });
    assert.equal(withEnv.code, 0, withEnv.stderr);
    const without = await hvsync(['instances', 'list', '--server', h.url], {
      HVSYNC_TOKEN: 'admin',
    });
    assert.equal(without.code, 1);
    assert.match(
      without.stderr,
      /not trusted: give the CA's certificate with --ca FILE or HVSYNC_CA/,
    );
    const missing = await hvsync(['instances', 'list', '--server', h.url, '--ca', join(dir, 'no')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read CA certificate .*no: no such file/);
  });
});

test('a certificate and a key that do not belong together are refused', () => {
  assert.throws(
    () => tlsOptions({ cert: readFileSync(cert), key: readFileSync(otherKey) }),
    (error: unknown) =>
      error instanceof ServerError &&
      error.code === 'invalid-tls' &&
      /the key does not belong to the certificate/.test(error.message),
  );
  assert.throws(
    () => tlsOptions({ cert: readFileSync(key), key: readFileSync(cert) }),
    /is not a PEM certificate/,
  );
});

describe('bad TLS options: one line, status 1, before anything opens', () => {
  // Nothing listens on port 1: a command that got as far as the database would say so instead.
  const db = 'postgres://nobody@127.0.0.1:1/none';

  for (const command of ['server', 'all-in-one']) {
    const base =
      command === 'server'
        ? ['server', '--db', db, '--listen', '127.0.0.1:0']
        : ['all-in-one', '--sim', '1', '--db', join(dir, 'never.db'), '--listen', '127.0.0.1:0'];

    test(`${command}: a key of another certificate`, async () => {
      const run = await hvsync([...base, '--tls-cert', cert, '--tls-key', otherKey]);
      assert.equal(run.code, 1, run.stderr);
      assert.match(
        run.stderr,
        /cannot use certificate .*server-cert\.pem with key .*other-key\.pem: the key does not belong to the certificate/,
      );
      assert.doesNotMatch(run.stderr, /127\.0\.0\.1:1|never\.db/);
      assert.ok(!existsSync(join(dir, 'never.db')), 'the database was not created');
    });
  }

  test('an unreadable file, one of the two alone, a swapped pair', async () => {
    const server = ['server', '--db', db, '--listen', '127.0.0.1:0'];
    const missing = await hvsync([
      ...server,
      '--tls-cert',
      join(dir, 'nope.pem'),
      '--tls-key',
      key,
    ]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read TLS certificate .*nope\.pem: no such file/);
    const alone = await hvsync([...server, '--tls-cert', cert]);
    assert.equal(alone.code, 1);
    assert.match(alone.stderr, /give both --tls-cert and --tls-key/);
    const swapped = await hvsync([...server, '--tls-cert', key, '--tls-key', cert]);
    assert.equal(swapped.code, 1);
    assert.match(swapped.stderr, /certificate .*server-key\.pem is not a PEM certificate/);
  });

  test('TLS is no authentication: a non-loopback address still needs a token', async () => {
    const run = await hvsync([
      'server',
      '--db',
      db,
      '--listen',
      '0.0.0.0:0',
      '--tls-cert',
      cert,
      '--tls-key',
      key,
    ]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /refusing to listen on 0\.0\.0\.0:0 without a token/);
  });
});
