// `hvsync events` as a user runs it: JSON lines from a real libvirtd, a one-line error when it
// cannot connect, and a clear word plus exit 1 when the connection drops.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { LibvirtClient } from '../../src/libvirt/index.ts';
import { startFakeLibvirtd } from '../support/fake-libvirtd.ts';
import { describeLibvirt, uniqueName } from '../support/libvirt.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

interface Run {
  readonly stdout: () => string;
  readonly stderr: () => string;
  readonly exited: Promise<number | null>;
  waitFor(pattern: RegExp, stream?: 'stdout' | 'stderr'): Promise<void>;
  kill(): void;
}

function hvsync(args: string[]): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  return {
    stdout: () => out,
    stderr: () => err,
    exited,
    async waitFor(pattern, stream = 'stdout') {
      const deadline = Date.now() + 20_000;
      while (!pattern.test(stream === 'stdout' ? out : err)) {
        if (Date.now() > deadline)
          assert.fail(`never saw ${pattern}; stdout ${out}; stderr ${err}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    kill: () => child.kill('SIGINT'),
  };
}

describeLibvirt('hvsync events on a real libvirtd', () => {
  test('--json prints one JSON line per lifecycle event, with lower-case words', async () => {
    const other = await LibvirtClient.connect({ uri: 'test+unix:///default' });
    const run = hvsync(['events', '--uri', 'test+unix:///default', '--json']);
    try {
      await run.waitFor(/listening for events/, 'stderr');
      const name = uniqueName('hvsync-events');
      const domain = await other.defineXml(
        `<domain type='test'><name>${name}</name><memory>8192</memory><os><type>hvm</type></os></domain>`,
      );
      await other.create(domain);
      await other.destroy(domain);
      await other.undefine(domain);
      await run.waitFor(new RegExp(`"name":"${name}".*"event":"undefined"`));
      const lines = run
        .stdout()
        .trim()
        .split('\n')
        .map(
          (l) =>
            JSON.parse(l) as {
              time: string;
              domain: { name: string; uuid: string };
              event: string;
              detail: string;
            },
        )
        .filter((l) => l.domain.name === name);
      assert.deepEqual(
        lines.map((l) => `${l.event}/${l.detail}`),
        ['defined/added', 'started/booted', 'stopped/destroyed', 'undefined/removed'],
      );
      assert.equal(lines[0]!.domain.uuid, domain.uuid);
      assert.ok(!Number.isNaN(Date.parse(lines[0]!.time)) && lines[0]!.time.endsWith('Z'));
    } finally {
      run.kill();
      assert.equal(await run.exited, 0, 'Ctrl-C ends it cleanly');
      await other.close();
    }
  });
});

test('cannot connect: one line saying why, exit 1', async () => {
  const run = hvsync(['events', '--uri', 'test+unix:///default?socket=/nonexistent/libvirt-sock']);
  assert.equal(await run.exited, 1);
  assert.equal(run.stderr().trim().split('\n').length, 1);
  assert.match(
    run.stderr(),
    /^hvsync: cannot connect to libvirt at \/nonexistent\/libvirt-sock: ENOENT/,
  );
});

test('the connection drops: says so and exits 1', async () => {
  const fake = await startFakeLibvirtd();
  const run = hvsync(['events', '--uri', fake.uri]);
  try {
    await run.waitFor(/listening for events/, 'stderr');
    for (const socket of fake.connections) socket.destroy();
    assert.equal(await run.exited, 1);
    assert.match(run.stderr(), /connection to libvirt lost \((eof|error)/);
  } finally {
    await fake.close();
  }
});
