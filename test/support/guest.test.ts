import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import {
  BOOT_SECTOR_SIZE,
  createIdleGuest,
  createSelfStoppingGuest,
  idleBootSector,
  selfStoppingBootSector,
} from './guest.ts';
import type { Guest } from './guest.ts';
import { QEMU_URI, describeLibvirt, uniqueName, viaDaemonSocket, virsh } from './libvirt.ts';

// TCG boot, the guest's own delay and QEMU's ~2 s between SHUTDOWN and STOPPED, with room for
// two noisy cores.
const POWEROFF_BOUND_MS = 45_000;

async function domstate(name: string): Promise<string> {
  return (await virsh(['domstate', name], QEMU_URI)).trim();
}

async function waitForState(name: string, wanted: string, boundMs: number): Promise<void> {
  const deadline = Date.now() + boundMs;
  let last = '';
  while (Date.now() < deadline) {
    last = await domstate(name);
    if (last === wanted) return;
    await delay(200);
  }
  assert.fail(`${name} still '${last}' after ${boundMs} ms, expected '${wanted}'`);
}

/** `virsh event` for one domain: the lifecycle lines it printed so far. */
function watchLifecycle(name: string): { lines(): string[]; stop(): void } {
  const args = ['event', '--domain', name, '--event', 'lifecycle', '--loop'];
  // --timeout bounds the watcher even if stop() is never reached.
  args.push('--timeout', String(POWEROFF_BOUND_MS / 1000));
  const child = spawn('virsh', ['-c', viaDaemonSocket(QEMU_URI), ...args], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  let output = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => (output += chunk));
  return {
    lines: () => output.split('\n').filter((line) => line.includes("event 'lifecycle'")),
    stop: () => child.kill(),
  };
}

describe('boot sectors', () => {
  test('are one signed sector', () => {
    for (const sector of [selfStoppingBootSector(), idleBootSector()]) {
      assert.equal(sector.length, BOOT_SECTOR_SIZE);
      assert.equal(sector[510], 0x55);
      assert.equal(sector[511], 0xaa);
    }
  });

  test('carry the delay in CX:DX as microseconds', () => {
    const sector = selfStoppingBootSector(70_000);
    const movCx = sector.indexOf(0xb9);
    const movDx = sector.indexOf(0xba, movCx);
    const cx = sector.readUInt16LE(movCx + 1);
    const dx = sector.readUInt16LE(movDx + 1);
    assert.equal(cx * 0x10000 + dx, 70_000_000);
  });

  test('write 0x2000 to port 0x604 only in the self-stopping one', () => {
    const poweroff = Buffer.from([0xba, 0x04, 0x06, 0xb8, 0x00, 0x20, 0xef]);
    assert.ok(selfStoppingBootSector(1).includes(poweroff));
    assert.ok(!idleBootSector().includes(poweroff));
  });

  test('reject delays that do not fit in 32 bits of microseconds', () => {
    assert.throws(() => selfStoppingBootSector(-1), RangeError);
    assert.throws(() => selfStoppingBootSector(5_000_000), RangeError);
  });
});

describeLibvirt('QEMU guests under libvirtd', () => {
  const guests: Guest[] = [];
  after(async () => {
    await Promise.all(guests.map((guest) => guest.cleanup()));
  });

  test('a self-stopping guest powers itself off as a guest shutdown', async () => {
    const guest = await createSelfStoppingGuest({
      name: uniqueName('hvsync-guest-selfstop'),
      delayMs: 1500,
    });
    guests.push(guest);
    await virsh(['define', guest.xmlPath], QEMU_URI);
    const events = watchLifecycle(guest.name);
    try {
      await virsh(['start', guest.name], QEMU_URI);
      await waitForState(guest.name, 'shut off', POWEROFF_BOUND_MS);
      assert.equal(
        (await virsh(['domstate', '--reason', guest.name], QEMU_URI)).trim(),
        'shut off (shutdown)',
      );

      // The watcher may have registered after the start, but both stop events come seconds later.
      const deadline = Date.now() + 10_000;
      while (
        !events.lines().some((line) => /Stopped Shutdown/.test(line)) &&
        Date.now() < deadline
      ) {
        await delay(100);
      }
      const lines = events.lines();
      const finished = lines.findIndex((line) =>
        /Shutdown Finished after guest request/.test(line),
      );
      const stopped = lines.findIndex((line) => /Stopped Shutdown/.test(line));
      assert.ok(finished >= 0, `no SHUTDOWN/FINISHED event among:\n${lines.join('\n')}`);
      assert.ok(stopped > finished, `no STOPPED/SHUTDOWN after it among:\n${lines.join('\n')}`);
    } finally {
      events.stop();
    }
    await virsh(['undefine', guest.name], QEMU_URI);
  });

  test('an idle guest keeps running until destroyed', async () => {
    const guest = await createIdleGuest({ name: uniqueName('hvsync-guest-idle') });
    guests.push(guest);
    await virsh(['define', guest.xmlPath], QEMU_URI);
    await virsh(['start', guest.name], QEMU_URI);
    assert.equal(await domstate(guest.name), 'running');
    // Longer than the self-stopping guest's delay: an idle guest must not be mistaken for one.
    await delay(2500);
    assert.equal(await domstate(guest.name), 'running');
    await virsh(['destroy', guest.name], QEMU_URI);
    assert.equal(
      (await virsh(['domstate', '--reason', guest.name], QEMU_URI)).trim(),
      'shut off (destroyed)',
    );
    await virsh(['undefine', guest.name], QEMU_URI);
  });
});
