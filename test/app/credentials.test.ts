// Host tokens across `hvsync server` replicas on one PostgreSQL database, as a user runs them: a
// token issued straight in the database works on every replica, one replica serving HTTPS; a
// token revoked through one replica's admin API is refused by the other once it hears of it.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientError, HvsyncClient } from '../../src/cli/client.ts';
import { CREDENTIAL_CACHE_MS } from '../../src/server/index.ts';
import { openPostgresStore, type PostgresStore } from '../../src/store/index.ts';
import { hvsync, selfSignedCertificate } from '../support/cli.ts';
import { describePostgres } from '../support/postgres.ts';
import { startServerProcess, type ServerProcess } from '../support/server-process.ts';
import { instanceFields } from '../support/records.ts';

const ADMIN = 'replica-admin-token';
const dir = mkdtempSync(join(tmpdir(), 'hvsync-replica-tokens-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function refusedWith(promise: Promise<unknown>, status: number, pattern: RegExp) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ClientError, String(error));
    assert.equal(error.status, status, error.message);
    assert.match(error.message, pattern);
    return true;
  });
}

describePostgres('host tokens on hvsync server replicas', (database) => {
  let cert: string;
  let key: string;
  let store: PostgresStore;
  let plain: ServerProcess;
  let secure: ServerProcess;
  let urls: { plain: string; secure: string };

  before(async () => {
    ({ cert, key } = selfSignedCertificate(dir, 'replica'));
    const common = ['--db', database.url, '--listen', '127.0.0.1:0', '--token', ADMIN];
    plain = startServerProcess(common);
    secure = startServerProcess([...common, '--tls-cert', cert, '--tls-key', key]);
    urls = { plain: await plain.started(), secure: await secure.started() };
    store = await openPostgresStore(database.url);
    await store.write({
      kind: 'create',
      uuid: '00000000-0000-4000-8000-00000000000a',
      fields: instanceFields({ host: 'host-a' }),
    });
    await store.write({
      kind: 'create',
      uuid: '00000000-0000-4000-8000-00000000000b',
      fields: instanceFields({ host: 'host-b' }),
    });
  });
  after(async () => {
    await Promise.all([plain?.stop(), secure?.stop()]);
    await store?.close();
  });

  test('issued in the database, used on both replicas, revoked on one, refused on the other', async () => {
    assert.match(urls.secure, /^https:/);
    const issued = await hvsync(['hosts', 'add', 'host-a', '--db', database.url]);
    assert.equal(issued.code, 0, issued.stderr);
    const token = issued.stdout.trim();

    const onPlain = new HvsyncClient({ server: urls.plain, token });
    const onSecure = new HvsyncClient({ server: urls.secure, token, ca: readFileSync(cert) });
    for (const client of [onPlain, onSecure]) {
      const page = await client.listInstances({ host: 'host-a' });
      assert.deepEqual(
        page.instances.map((i) => i.host),
        ['host-a'],
      );
      await refusedWith(
        client.listInstances({ host: 'host-b' }),
        403,
        /may not read the instances of host 'host-b'/,
      );
      await refusedWith(client.hosts(), 403, /may not use GET \/v1\/hosts/);
    }

    const admin = new HvsyncClient({ server: urls.plain, token: ADMIN });
    const revoked = await admin.revokeToken('host', 'host-a');
    assert.equal(revoked.name, 'host-a');
    await refusedWith(onPlain.listInstances({ host: 'host-a' }), 403, /was revoked/);

    // The other replica hears of the revocation (a NOTIFY) and forgets what it looked up; were it
    // not told, it would still refuse it once CREDENTIAL_CACHE_MS had passed.
    const deadline = Date.now() + CREDENTIAL_CACHE_MS * 3;
    let answer: unknown;
    for (;;) {
      answer = await onSecure.listInstances({ host: 'host-a' }).catch((error: unknown) => error);
      if (answer instanceof ClientError || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.ok(answer instanceof ClientError, 'still accepted long after the revocation');
    assert.equal(answer.status, 403);
    assert.match(answer.message, /the token of host 'host-a' was revoked at /);
  });

  test('an admin API call to issue on one replica is a token the other accepts', async () => {
    const admin = new HvsyncClient({ server: urls.secure, token: ADMIN, ca: readFileSync(cert) });
    const issued = await admin.issueToken('reader', 'dashboard');
    const reader = new HvsyncClient({ server: urls.plain, token: issued.token });
    assert.equal((await reader.listInstances()).instances.length, 2);
    await refusedWith(
      reader.act('00000000-0000-4000-8000-00000000000a', 'stop'),
      403,
      /reader 'dashboard' may only read/,
    );
  });
});
