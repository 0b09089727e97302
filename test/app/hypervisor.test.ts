// How the all-in-one reaches its hypervisor: a lost connection's every retry reason in the log
// and in GET /v1/hosts, and --poll-interval for a hypervisor without events. On the real
// libvirtd, reached through a socket this test controls so that it can take the socket away.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { HvsyncClient } from '../../src/cli/client.ts';
import { LibvirtClient, type Domain } from '../../src/libvirt/index.ts';
import { startService, type RunningService } from '../../src/app/index.ts';
import { describeLibvirt, LIBVIRT_SOCKET, uniqueName } from '../support/libvirt.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const run = promisify(execFile);

async function eventually<T>(
  read: () => Promise<T>,
  done: (v: T) => boolean,
  what: string,
): Promise<T> {
  const deadline = Date.now() + 30_000;
  let last: T | undefined;
  while (Date.now() < deadline) {
    last = await read();
    if (done(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`${what}: last seen ${JSON.stringify(last)}`);
}

/** A unix socket relaying to the real libvirtd, which the test can take away and bring back. */
class SocketRelay {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  constructor(readonly path: string) {}

  async open(): Promise<void> {
    const server = createServer((client) => {
      const daemon = createConnection({ path: LIBVIRT_SOCKET });
      for (const socket of [client, daemon]) {
        this.sockets.add(socket);
        socket.on('close', () => this.sockets.delete(socket));
        socket.on('error', () => undefined);
      }
      client.pipe(daemon).pipe(client);
      client.on('close', () => daemon.destroy());
      daemon.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, resolve);
    });
    this.server = server;
  }

  /** Stops listening (the socket file goes) and cuts every relayed connection. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server === null) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }
}

function logLines(): { stream: Writable; lines: Array<{ msg: string; reason?: string }> } {
  const lines: Array<{ msg: string; reason?: string }> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line !== '') lines.push(JSON.parse(line) as { msg: string; reason?: string });
      }
      done();
    },
  });
  return { stream, lines };
}

describeLibvirt('all-in-one: hypervisor connection', () => {
  let dir: string;
  // Keeps the test driver's domains alive between the service's connections.
  let other: LibvirtClient;
  let domain: Domain;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hvsync-hypervisor-'));
    other = await LibvirtClient.connect({ uri: 'test+unix:///default' });
    domain = await other.create(
      await other.defineXml(
        `<domain type='test'><name>${uniqueName('hvsync-conn')}</name><memory>8192</memory><os><type>hvm</type></os></domain>`,
      ),
    );
  });
  after(async () => {
    await other.destroy(domain).catch(() => undefined);
    await other.undefine(domain).catch(() => undefined);
    await other.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('every failed reconnect logs its reason and /v1/hosts shows the latest', async () => {
    const relay = new SocketRelay(join(dir, 'libvirt.sock'));
    await relay.open();
    const log = logLines();
    let service: RunningService | undefined;
    try {
      service = await startService({
        hypervisor: { kind: 'libvirt', uri: `test+unix:///default?socket=${relay.path}` },
        db: join(dir, 'reconnect.db'),
        listen: '127.0.0.1:0',
        policy: 'observe',
        reconcileIntervalMs: 0,
        logger: pino({ level: 'info' }, log.stream),
      });
      const api = new HvsyncClient({ server: service.url });
      assert.equal((await api.hosts())[0]?.connectionError, null);

      // The socket goes away: each retry fails because it is missing.
      await relay.close();
      const missing = await eventually(
        () => api.hosts(),
        (hosts) => /ENOENT/.test(hosts[0]?.connectionError ?? ''),
        'the missing socket never showed in /v1/hosts',
      );
      assert.equal(missing[0]!.connected, false);
      // Then something that is not a socket sits at the path: a different reason, also shown.
      writeFileSync(relay.path, '');
      await eventually(
        () => api.hosts(),
        (hosts) => /ECONNREFUSED/.test(hosts[0]?.connectionError ?? ''),
        'the refused connection never showed in /v1/hosts',
      );
      const retries = log.lines.filter((l) => /^reconnecting to libvirt at .* failed/.test(l.msg));
      assert.ok(
        retries.some((l) => /ENOENT/.test(l.reason ?? '')),
        JSON.stringify(retries),
      );
      assert.ok(
        retries.some((l) => /ECONNREFUSED/.test(l.reason ?? '')),
        JSON.stringify(retries),
      );
      assert.ok(
        log.lines.some((l) => /^lost the connection to libvirt/.test(l.msg)),
        'the loss itself is logged',
      );

      // Back again: the error is cleared.
      rmSync(relay.path);
      await relay.open();
      const back = await eventually(
        () => api.hosts(),
        (hosts) => hosts[0]?.connected === true && hosts[0].connectionError === null,
        'the host never came back clean',
      );
      assert.equal(back.length, 1);
    } finally {
      await service?.stop();
      await relay.close();
    }
  });

  test('with a poll interval the host is polled and changes still arrive', async () => {
    const service = await startService({
      hypervisor: { kind: 'libvirt', uri: 'test+unix:///default' },
      db: join(dir, 'polled.db'),
      listen: '127.0.0.1:0',
      policy: 'observe',
      reconcileIntervalMs: 0,
      pollIntervalMs: 200,
      logger: pino({ level: 'silent' }),
    });
    try {
      const api = new HvsyncClient({ server: service.url });
      assert.equal((await api.hosts())[0]?.driver, 'polling(libvirt)');
      await other.suspend(domain);
      const paused = await eventually(
        () => api.getInstance(domain.uuid),
        (i) => i.powerState === 'paused',
        'the pause was never seen by polling',
      );
      assert.equal(paused.vmState, 'paused');
      const [last] = await api.history(domain.uuid);
      assert.equal(last?.cause, 'event');
    } finally {
      await other.resume(domain).catch(() => undefined);
      await service.stop();
    }
  });
});

test('--poll-interval must be a positive number of seconds', async () => {
  const failed = await run(
    process.execPath,
    ['--import', 'tsx', 'src/cli/main.ts', 'all-in-one', '--sim', '--poll-interval', '0'],
    { cwd: root },
  ).then(
    () => null,
    (error: { code: number; stderr: string }) => error,
  );
  assert.ok(failed !== null, 'a zero poll interval was accepted');
  assert.equal(failed.code, 1);
  assert.match(failed.stderr, /--poll-interval.*must be a number > 0, got "0"/);
});
