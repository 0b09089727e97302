// `hvsync agent` reporting to `hvsync server` over HTTPS (a certificate signed by a CA made for
// the test), with a host token: with the CA given, everything the agent does over the API works
// (listing, the watch that brings it a user's action, its writes, its status); without it, or
// with another CA, it sends nothing, says why, keeps what it journaled and waits, and the same
// journal drains once it is started with the CA; a CA file it cannot use stops it at start.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Journal } from '../../src/agent/index.ts';
import { startAgent } from '../../src/app/index.ts';
import { HvsyncClient } from '../../src/cli/client.ts';
import { nodeHttpTransport } from '../../src/cli/http-transport.ts';
import { clientCa } from '../../src/cli/options.ts';
import { hvsync } from '../support/cli.ts';
import { describePostgres } from '../support/postgres.ts';
import {
  startHvsyncProcess,
  startServerProcess,
  type ServerProcess,
} from '../support/server-process.ts';
import { describeTls } from '../support/tls.ts';
import { until } from '../support/until.ts';

const ADMIN = 'tls-admin-token';
const dir = mkdtempSync(join(tmpdir(), 'hvsync-agent-tls-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const logger = pino({ level: process.env.HVSYNC_TEST_LOG ?? 'silent' });

/** What the agent logs, once, while it cannot list its records because of the certificate. */
const UNTRUSTED_LOG =
  /cannot list this host's records yet \(cannot reach hvsync at https:\/\/127\.0\.0\.1:\d+ \(its TLS certificate is not trusted: give the CA's certificate with --ca FILE or HVSYNC_CA\)\); retrying/;

/** The journal's entries, read while no agent holds it (it is opened exclusively). */
function journalBacklog(path: string, host: string): number {
  const journal = Journal.open(path, { host, maxEntries: 1_000_000 });
  try {
    return journal.size;
  } finally {
    journal.close();
  }
}

test('hvsync agent refuses a --ca it cannot use with one line and exit code 1, before connecting', async () => {
  const notPem = join(dir, 'not-a-certificate.txt');
  writeFileSync(notPem, 'just some text\n');
  const missing = join(dir, 'no-such-ca.pem');
  // Nothing listens there: an agent that connected would say so in a second line.
  const server = ['--sim', '2', '--server', 'https://127.0.0.1:9'];
  for (const [args, message] of [
    [['--ca', missing], /cannot read CA certificate \S+no-such-ca\.pem: no such file/],
    [
      ['--ca', notPem],
      /CA certificate \S+not-a-certificate\.txt is not PEM \(no -----BEGIN line\)/,
    ],
    [['--ca', dir], /cannot read CA certificate \S+: it is a directory/],
  ] as const) {
    const agent = startHvsyncProcess('agent', [...server, ...args], /never/);
    assert.equal(await agent.exit(), 1, agent.output());
    assert.match(agent.output(), message);
    assert.equal(agent.output().trim().split('\n').length, 1, agent.output());
  }
  // HVSYNC_CA, when --ca is not given, is held to the same.
  const fromEnv = await hvsync(['agent', ...server], { HVSYNC_CA: missing });
  assert.equal(fromEnv.code, 1, fromEnv.stderr);
  assert.match(fromEnv.stderr, /cannot read CA certificate \S+no-such-ca\.pem: no such file/);
  assert.equal(`${fromEnv.stdout}${fromEnv.stderr}`.trim().split('\n').length, 1, fromEnv.stderr);
});

describeTls('hvsync agent and an https control plane', (certs) => {
  describePostgres('hvsync server with --tls-cert on PostgreSQL', (database) => {
    let server: ServerProcess;
    let url: string;
    let admin: HvsyncClient;

    const startServer = async (): Promise<void> => {
      server = startServerProcess([
        '--db',
        database.url,
        '--listen',
        '127.0.0.1:0',
        '--token',
        ADMIN,
        '--tls-cert',
        certs.serverCert,
        '--tls-key',
        certs.serverKey,
      ]);
      url = await server.started();
      assert.match(url, /^https:\/\/127\.0\.0\.1:\d+$/);
      admin = new HvsyncClient({ server: url, token: ADMIN, ca: readFileSync(certs.caCert) });
    };

    /** The host's agent token, issued as an admin does: `hvsync hosts add` with --ca. */
    const hostToken = async (host: string): Promise<string> => {
      const issued = await hvsync([
        'hosts',
        'add',
        host,
        '--server',
        url,
        '--token',
        ADMIN,
        '--ca',
        certs.caCert,
      ]);
      assert.equal(issued.code, 0, issued.stderr);
      const token = issued.stdout.trim();
      assert.match(token, /^hvs_\S+$/);
      return token;
    };

    before(startServer);
    after(async () => {
      await server?.stop();
    });

    test("with --ca: the host's instances are listed, its change recorded, a user's action performed", async () => {
      const host = 'tls-a';
      // An agent that cannot list its records waits for the control plane as long as it takes:
      // here that is the failure, not a hang.
      const startup = new AbortController();
      const deadline = setTimeout(
        () => startup.abort(new Error('the agent did not list its records within 60 s')),
        60_000,
      );
      const agent = await startAgent({
        // What `hvsync agent --ca FILE` builds: the file read as the CLI reads it, kept-alive
        // connections for every request (listing, the watch, writes, status).
        transport: nodeHttpTransport({ ca: clientCa({ ca: certs.caCert }, {}), keepAlive: true }),
        hypervisor: { kind: 'sim', instances: 3, ratePerSecond: 0 },
        server: url,
        token: await hostToken(host),
        host,
        journal: join(dir, `${host}.journal`),
        journalLimit: 1_000,
        policy: 'observe',
        reconcileIntervalMs: 0,
        statusIntervalMs: 200,
        retryMaxMs: 300,
        requestTimeoutMs: 5_000,
        logger,
        signal: startup.signal,
      }).finally(() => clearTimeout(deadline));
      try {
        const listed = await until('3 instances of tls-a over https', async () => {
          const page = await admin.listInstances({ host });
          return page.instances.length === 3 ? page.instances : null;
        });
        assert.ok(listed.every((i) => i.powerState === 'running'));

        const [changed, acted] = listed.map((i) => i.uuid) as [string, string];
        agent.sim!.destroy(changed);
        const stopped = await until('the destroy on the host recorded', async () => {
          const record = await admin.getInstance(changed);
          return record.powerState === 'shutoff' ? record : null;
        });
        assert.equal(stopped.vmState, 'stopped');
        const [destroyed] = await admin.history(changed, 1);
        assert.equal(destroyed!.cause, 'event');
        assert.equal(destroyed!.detail, 'destroyed');

        // The action reaches the agent only through its watch of the control plane.
        const accepted = await admin.act(acted, 'pause');
        assert.equal(accepted.task.action, 'pause');
        const paused = await until('the pause performed and its task finished', async () => {
          const record = await admin.getInstance(acted);
          return record.taskState === null && record.powerState === 'paused' ? record : null;
        });
        assert.equal(paused.taskError, null);
        assert.equal(agent.sim!.get(acted)!.powerState, 'paused');
        const [action] = await admin.history(acted, 1);
        assert.equal(action!.cause, 'action');
        assert.equal(action!.outOfBand, false);

        const status = await until('the host reported with nothing unacknowledged', async () =>
          (await admin.hosts()).find((h) => h.name === host && h.backlog === 0),
        );
        assert.equal(status.connected, true);
        assert.equal(agent.store.stats.rejected, 0);
      } finally {
        await agent.stop();
      }
    });

    test('without the CA, or with another, it sends nothing, says why and keeps its journal; with it, the journal drains', async () => {
      const host = 'tls-b';
      const journal = join(dir, `${host}.journal`);
      const token = await hostToken(host);
      const agentArgs = (ca: readonly string[]): string[] => [
        '--sim',
        '4',
        '--sim-rate',
        '5',
        '--server',
        url,
        '--token',
        token,
        '--host',
        host,
        '--journal',
        journal,
        '--reconcile-interval',
        '0',
        '--status-interval',
        '1',
        ...ca,
      ];
      const READY = /agent for \S+ .*reporting to/;

      // A run with the CA that journals while the control plane is away, and is stopped then:
      // what it observed waits in the journal for the next run.
      const first = startHvsyncProcess('agent', agentArgs(['--ca', certs.caCert]), READY);
      try {
        await first.started();
        await until('4 instances of tls-b', async () => {
          const page = await admin.listInstances({ host });
          return page.instances.length === 4;
        });
        await server.stop();
        const outageFrom = Date.now();
        await until('the agent to journal during the outage', async () =>
          /journaling observations until it does/.test(first.output()),
        );
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        assert.equal(await first.stop(), 0, first.output());
        const outageTo = Date.now();
        const backlog = journalBacklog(journal, host);
        assert.ok(backlog > 0, `nothing journaled during the outage:\n${first.output()}`);

        await startServer();
        const recordedBefore = await admin.listInstances({ host });
        const seenBefore = (await admin.hosts()).find((h) => h.name === host)!.lastSeenAt;

        for (const ca of [[], ['--ca', certs.otherCaCert]]) {
          const untrusting = startHvsyncProcess('agent', agentArgs(ca), UNTRUSTED_LOG);
          try {
            await untrusting.started();
            // It neither gives up nor retries in a tight loop: still running, having said it once.
            await new Promise((resolve) => setTimeout(resolve, 3_000));
            const output = untrusting.output();
            assert.equal(untrusting.child.exitCode, null, `it exited:\n${output}`);
            assert.equal(output.match(new RegExp(UNTRUSTED_LOG, 'g'))?.length, 1, output);
            // The certificate's own problem, as TLS names it, is in the logged error.
            assert.match(output, /unable to verify the first certificate/, output);
            assert.doesNotMatch(output, READY, output);
          } finally {
            assert.equal(await untrusting.stop(), 0, untrusting.output());
          }
          assert.equal(journalBacklog(journal, host), backlog, 'the journal changed');
        }
        // Nothing reached the control plane: no status, no record written.
        assert.equal((await admin.hosts()).find((h) => h.name === host)!.lastSeenAt, seenBefore);
        assert.deepEqual(
          (await admin.listInstances({ host })).instances.map((i) => [i.uuid, i.version]),
          recordedBefore.instances.map((i) => [i.uuid, i.version]),
        );

        const trusting = startHvsyncProcess('agent', agentArgs(['--ca', certs.caCert]), READY);
        try {
          await trusting.started();
          assert.match(trusting.output(), /sending \d+ observations journaled by an earlier run/);
          await until('the journal drained, as the host reports', async () =>
            (await admin.hosts()).find(
              (h) => h.name === host && h.backlog === 0 && h.lastSeenAt > seenBefore,
            ),
          );
          // The outage's observations are recorded with the time they were observed.
          let fromOutage = 0;
          for (const instance of (await admin.listInstances({ host })).instances) {
            for (const t of await admin.history(instance.uuid, 100)) {
              const observed = Date.parse(t.observedAt);
              if (t.cause === 'event' && observed >= outageFrom && observed <= outageTo) {
                fromOutage++;
              }
            }
          }
          assert.ok(fromOutage > 0, 'no transition observed during the outage was recorded');
        } finally {
          assert.equal(await trusting.stop(), 0, trusting.output());
        }
        assert.equal(journalBacklog(journal, host), 0);
      } finally {
        await first.stop();
      }
    });
  });
});
