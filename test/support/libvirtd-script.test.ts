// scripts/libvirtd.sh stops only a daemon it started itself, known by its own pidfile (pid and
// start time). Played against a private libvirtd standing in for "someone else's daemon", with the
// script's pidfile in a temporary folder, so the machine's daemon is never at risk.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { machineLibvirtdIdentity, processStat } from '../../scripts/machine-libvirtd.mjs';
import { describePrivateLibvirtd } from './private-libvirtd.ts';

const SCRIPT = fileURLToPath(new URL('../../scripts/libvirtd.sh', import.meta.url));

interface ScriptResult {
  readonly code: number;
  readonly output: string;
}

function runScript(command: string, pidfile: string): Promise<ScriptResult> {
  return new Promise((resolve) => {
    execFile(
      'bash',
      [SCRIPT, command],
      { timeout: 60_000, env: { ...process.env, HVSYNC_LIBVIRTD_PIDFILE: pidfile } },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, output: stdout + stderr });
      },
    );
  });
}

describePrivateLibvirtd('scripts/libvirtd.sh stop', (daemon) => {
  const dir = mkdtempSync(join(tmpdir(), 'hvsync-libvirtd-script-'));
  const pidfile = join(dir, 'libvirtd.pid');
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('leaves alone every libvirtd it did not start: no pidfile, or a pidfile whose start time does not match', async () => {
    const machineBefore = machineLibvirtdIdentity();
    const pid = daemon.pid;
    assert.ok(pid);

    const withoutPidfile = await runScript('stop', pidfile);
    assert.equal(daemon.pid, pid, withoutPidfile.output);
    if (machineBefore.length > 0) {
      assert.equal(withoutPidfile.code, 1, withoutPidfile.output);
      assert.match(withoutPidfile.output, /was not started by this script/);
    }

    // The same pid recorded for a process that started at another time: a reused pid.
    writeFileSync(pidfile, `${pid} 1\n`);
    const reused = await runScript('stop', pidfile);
    assert.equal(daemon.pid, pid, reused.output);

    assert.deepEqual(machineLibvirtdIdentity(), machineBefore);
  });

  test('stops the daemon its pidfile names when pid, name and start time match', async () => {
    const pid = daemon.pid;
    assert.ok(pid);
    writeFileSync(pidfile, `${pid} ${processStat(pid)?.startTicks}\n`);
    const result = await runScript('stop', pidfile);
    assert.equal(result.code, 0, result.output);
    assert.match(result.output, /stopped/);
    await daemon.kill(); // already gone: this only waits for the exit to be seen
    assert.equal(daemon.running, false);
    assert.equal(existsSync(pidfile), false, 'the pidfile is removed');
  });
});
