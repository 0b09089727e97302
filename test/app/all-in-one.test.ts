// The all-in-one service end to end: on a real libvirtd (API actions with their outcome, the CLI
// driving it, virsh changes in the watch stream) and `npm start` on a machine without libvirt.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { HvsyncClient, type WatchMessage } from '../../src/cli/client.ts';
import { LibvirtClient, type Domain } from '../../src/libvirt/index.ts';
import { startService, type RunningService } from '../../src/app/index.ts';
import { describeLibvirt, uniqueName, virsh } from '../support/libvirt.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const run = promisify(execFile);

async function eventually<T>(
  read: () => Promise<T>,
  done: (v: T) => boolean,
  what: string,
): Promise<T> {
  const deadline = Date.now() + 20_000;
  let last: T | undefined;
  while (Date.now() < deadline) {
    last = await read();
    if (done(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`${what}: last seen ${JSON.stringify(last)}`);
}

describeLibvirt('all-in-one service on a real libvirtd', () => {
  let dir: string;
  let service: RunningService;
  let api: HvsyncClient;
  // A second connection behind hvsync's back; it also keeps the test driver's domains alive.
  let other: LibvirtClient;
  let domain: Domain;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hvsync-service-'));
    other = await LibvirtClient.connect({ uri: 'test+unix:///default' });
    const name = uniqueName('hvsync-api');
    domain = await other.create(
      await other.defineXml(
        `<domain type='test'><name>${name}</name><memory>8192</memory><os><type>hvm</type></os></domain>`,
      ),
    );
    service = await startService({
      hypervisor: { kind: 'libvirt', uri: 'test+unix:///default' },
      db: join(dir, 'hvsync.db'),
      listen: '127.0.0.1:0',
      policy: 'observe',
      reconcileIntervalMs: 0,
      logger: pino({ level: 'silent' }),
    });
    api = new HvsyncClient({ server: service.url });
  });
  after(async () => {
    await service.stop();
    await other.destroy(domain).catch(() => undefined);
    await other.undefine(domain).catch(() => undefined);
    await other.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('an action through the API shows its task, then its outcome', async () => {
    const accepted = await api.act(domain.uuid, 'pause');
    assert.equal(accepted.task.action, 'pause');
    assert.equal(accepted.instance.taskState, 'pausing');
    const done = await eventually(
      () => api.getInstance(domain.uuid),
      (i) => i.taskState === null,
      'the pause task never finished',
    );
    assert.equal(done.powerState, 'paused');
    assert.equal(done.vmState, 'paused');
    assert.equal(done.taskError, null);
    // Its own host reports for as long as the engine runs, however old its host row's time.
    assert.equal(done.powerStateStale, false);
    const own = (await api.hosts()).find((h) => h.name === service.host);
    assert.equal(own?.reachable, true);
    assert.equal((await other.getState(domain)).state, 'paused');
    const [last] = await api.history(domain.uuid);
    assert.equal(last?.cause, 'action');
    assert.equal(last?.outOfBand, false);
  });

  test('the CLI drives it: resume waits for the task and prints the outcome', async () => {
    const cli = ['--import', 'tsx', 'src/cli/main.ts'];
    const { stdout } = await run(
      process.execPath,
      [...cli, 'resume', domain.uuid, '--server', service.url, '--json'],
      { cwd: root },
    );
    const outcome = JSON.parse(stdout) as { outcome: string; instance: { powerState: string } };
    assert.equal(outcome.outcome, 'succeeded');
    assert.equal(outcome.instance.powerState, 'running');
    const shown = await run(
      process.execPath,
      [...cli, 'instances', 'show', domain.uuid, '--server', service.url],
      { cwd: root },
    );
    assert.match(shown.stdout, /running/);
  });

  test('a virsh change on another connection appears in the watch stream', async () => {
    const watch = await api.watch();
    try {
      await virsh(['suspend', domain.name]);
      const iterator = watch[Symbol.asyncIterator]();
      let message: WatchMessage | undefined;
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline) {
        const next = await iterator.next();
        if (next.done) break;
        message = next.value;
        if (
          message.kind === 'change' &&
          message.change.instance.uuid === domain.uuid &&
          message.change.instance.powerState === 'paused'
        )
          break;
      }
      assert.ok(message?.kind === 'change', JSON.stringify(message));
      assert.equal(message.change.instance.powerState, 'paused');
      assert.ok(message.change.revision > 0);
      const [last] = await api.history(domain.uuid);
      assert.equal(last?.cause, 'event');
      assert.equal(last?.outOfBand, true);
    } finally {
      watch.close();
      await virsh(['resume', domain.name]).catch(() => undefined);
    }
  });
});

test('npm start without libvirt comes up on the simulated host and serves the API', async (t) => {
  const libvirtHere = existsSync('/var/run/libvirt');
  if (libvirtHere && process.getuid?.() !== 0) {
    t.skip('libvirt is installed here; hiding it takes root (a private mount namespace)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'hvsync-start-'));
  // With libvirt on this machine, npm start runs in a mount namespace where its sockets are
  // hidden: the real "no libvirt" condition, not a flag.
  const command = libvirtHere
    ? [
        'unshare',
        [
          '--mount',
          '--propagation',
          'private',
          'sh',
          '-c',
          'mount -t tmpfs none /var/run/libvirt && exec npm start',
        ],
      ]
    : ['npm', ['start']];
  const child = spawn(command[0] as string, command[1] as string[], {
    cwd: root,
    env: {
      ...process.env,
      // No HVSYNC_DB: a database (or a hypervisor) means a deployment, which never falls back to
      // the simulator. The demo records into ./hvsync-sim.db, beside package.json.
      HVSYNC_LISTEN: '127.0.0.1:0',
      HVSYNC_SIM_RATE: '5',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so that SIGINT reaches npm and node as Ctrl-C at a terminal would.
    detached: true,
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  try {
    const url = await eventually(
      async () => /serving the API at (http:\/\/[0-9.:]+)/.exec(output)?.[1],
      (u) => u !== undefined,
      `npm start never served the API; output:\n${output}`,
    );
    assert.match(output, /DEMO: .*20 FAKE instances/);
    assert.match(output, /simulated host of 20 instances/);
    const api = new HvsyncClient({ server: url! });
    const page = await eventually(
      () => api.listInstances(),
      (p) => p.instances.length === 20,
      'instances',
    );
    assert.ok(page.instances.every((i) => i.host === 'sim-host'));
    const ready = await fetch(`${url}/readyz`);
    assert.equal(ready.status, 200);
  } finally {
    // 'close', not 'exit': npm may exit before node (which holds the same pipes) has said its
    // last line.
    const exited = new Promise((resolve) => child.once('close', resolve));
    // A group already gone (npm start ended by itself) must not hide why the test failed.
    const signal = (name: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, name);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
      }
    };
    signal('SIGINT');
    const timer = setTimeout(() => signal('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
  }
  assert.match(output, /stopped cleanly/);
});
