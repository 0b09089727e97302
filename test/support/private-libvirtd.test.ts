// The private libvirtd that suites take away and bring back: it serves both drivers on its own
// socket, stops, dies and restarts on request, runs real QEMU guests, cleans up after itself, and
// the machine's daemon never notices any of it.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  daemonsGone,
  machineLibvirtdIdentity,
  processStat,
} from '../../scripts/machine-libvirtd.mjs';
import { createIdleGuest } from './guest.ts';
import { libvirtAvailable, uniqueName, virsh } from './libvirt.ts';
import {
  PrivateLibvirtd,
  describePrivateLibvirtd,
  privateLibvirtdMissing,
} from './private-libvirtd.ts';

describePrivateLibvirtd('a private libvirtd', (daemon) => {
  test('serves the test and QEMU drivers on its own socket, as its own user', async (t) => {
    t.diagnostic(`started in ${daemon.lastStartMs.toFixed(0)} ms`);
    assert.match(daemon.uri('test'), /^test\+unix:\/\/\/default\?socket=/);
    assert.equal((await virsh(['uri'], daemon.uri('test'))).trim(), daemon.uri('test'));
    assert.match(
      await virsh(['version'], daemon.uri('qemu')),
      /Running hypervisor: QEMU/,
      'qemu:///session answers',
    );
    assert.equal(statSync(daemon.socketPath).uid, daemon.user.uid);
    assert.notEqual(daemon.socketPath, '/var/run/libvirt/libvirt-sock');
  });

  test('stop, kill and restart take it away and bring it back; the machine daemon is untouched', async (t) => {
    const machineBefore = machineLibvirtdIdentity();
    const firstPid = daemon.pid;

    await daemon.stop();
    assert.equal(daemon.running, false);
    assert.equal(await libvirtAvailable(daemon.socketPath, 1000), false);
    await daemon.start();
    assert.equal(await libvirtAvailable(daemon.socketPath, 1000), true);
    t.diagnostic(`restarted after SIGTERM in ${daemon.lastStartMs.toFixed(0)} ms`);

    daemon.signal('SIGSTOP');
    await daemon.kill();
    assert.equal(daemon.running, false);
    assert.equal(await libvirtAvailable(daemon.socketPath, 1000), false);
    await daemon.restart();
    t.diagnostic(`restarted after SIGKILL in ${daemon.lastStartMs.toFixed(0)} ms`);
    assert.equal(await libvirtAvailable(daemon.socketPath, 1000), true);
    assert.notEqual(daemon.pid, firstPid);

    assert.deepEqual(machineLibvirtdIdentity(), machineBefore);
  });

  // The check npm test makes after a run, played on this daemon standing in for the machine's.
  test("the runner's check tells a restarted daemon from the same one", async () => {
    const runDir = mkdtempSync(join(tmpdir(), 'hvsync-run-'));
    try {
      const record = (): void => writeFileSync(join(runDir, 'libvirtd.pid'), `${daemon.pid}\n`);
      record();
      const before = machineLibvirtdIdentity(runDir);
      assert.equal(before.length, 1);
      assert.deepEqual(daemonsGone(before, machineLibvirtdIdentity(runDir)), []);
      await daemon.restart();
      record();
      assert.deepEqual(daemonsGone(before, machineLibvirtdIdentity(runDir)), before);
      await daemon.stop();
      assert.deepEqual(machineLibvirtdIdentity(runDir), []);
      await daemon.start();
    } finally {
      rmSync(runDir, { recursive: true, force: true });
    }
  });

  test('a QEMU guest, with its files given to the daemon user, outlives a daemon restart', async () => {
    const uri = daemon.uri('qemu');
    const guest = await createIdleGuest({
      name: uniqueName('hvsync-private'),
      uri,
      owner: daemon.user,
    });
    try {
      await virsh(['define', guest.xmlPath], uri);
      await virsh(['start', guest.name], uri);
      await daemon.kill();
      await daemon.start();
      assert.equal((await virsh(['domstate', guest.name], uri)).trim(), 'running');
    } finally {
      await guest.cleanup();
    }
  });
});

const PRIVATE_LIBVIRTD_MODULE = fileURLToPath(new URL('./private-libvirtd.ts', import.meta.url));

/** Alive and not a zombie: an orphan nobody reaps still has a /proc entry. */
function processRuns(pid: number): boolean {
  const state = processStat(pid)?.state;
  return state !== undefined && state !== 'Z';
}

describe('a private libvirtd disposed of', { skip: privateLibvirtdMissing() }, () => {
  test('dies with a test process killed before its after() hooks run', async () => {
    // A child process that starts a daemon, prints its pid and folder, then idles.
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        `import { PrivateLibvirtd } from ${JSON.stringify(PRIVATE_LIBVIRTD_MODULE)};
         const daemon = new PrivateLibvirtd();
         await daemon.start();
         console.log(JSON.stringify({ pid: daemon.pid, dir: daemon.dir }));
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const [line] = (await once(createInterface({ input: child.stdout }), 'line')) as [string];
    const started = JSON.parse(line) as { pid: number; dir: string };
    try {
      assert.ok(processRuns(started.pid));
      child.kill('SIGKILL');
      const deadline = Date.now() + 10_000;
      while (processRuns(started.pid) && Date.now() < deadline) await delay(50);
      assert.equal(processRuns(started.pid), false, 'the daemon went with its test process');
    } finally {
      child.kill('SIGKILL');
      rmSync(started.dir, { recursive: true, force: true });
    }
  });

  test('leaves no process and no folder behind, even with a guest still running', async () => {
    const daemon = new PrivateLibvirtd();
    const guest = await createIdleGuest({
      name: uniqueName('hvsync-private-left'),
      uri: daemon.uri('qemu'),
      owner: daemon.user,
    });
    const pids: number[] = [];
    try {
      await daemon.start();
      await virsh(['define', guest.xmlPath], daemon.uri('qemu'));
      await virsh(['start', guest.name], daemon.uri('qemu'));
      const qemuPid = Number(
        readFileSync(join(daemon.dir, `run/libvirt/qemu/run/${guest.name}.pid`), 'utf8'),
      );
      pids.push(daemon.pid ?? 0, qemuPid);
      assert.ok(pids.every((pid) => pid > 1 && processRuns(pid)));
    } finally {
      await daemon.dispose();
      // Not guest.cleanup(): the daemon it would ask is gone, with the domain.
      await rm(dirname(guest.diskPath), { recursive: true, force: true });
    }
    assert.deepEqual(pids.filter(processRuns), [], 'daemon and guest are gone');
    assert.equal(existsSync(daemon.dir), false);
  });
});
