import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  LibvirtSupportError,
  describeLibvirt,
  holdDriverConnection,
  libvirtAvailable,
  uniqueName,
  viaDaemonSocket,
  virsh,
} from './libvirt.ts';

describe('test support for libvirt suites', () => {
  test('uniqueName never repeats and keeps names libvirt accepts', () => {
    const names = new Set(Array.from({ length: 1000 }, () => uniqueName('a b/c')));
    assert.equal(names.size, 1000);
    for (const name of names) assert.match(name, /^a-b-c-\d+-[a-z0-9]+-\d+$/);
  });

  test('virsh is routed to the daemon, not to an in-process test driver', () => {
    assert.equal(viaDaemonSocket('test:///default'), 'test+unix:///default');
    assert.equal(viaDaemonSocket('qemu:///system'), 'qemu+unix:///system');
    assert.equal(viaDaemonSocket('test+tcp:///default'), 'test+unix:///default');
    assert.equal(
      viaDaemonSocket('test:///default?socket=%2Ftmp%2Fd%2Fsock'),
      'test+unix:///default?socket=%2Ftmp%2Fd%2Fsock',
      'a URI naming its socket keeps it',
    );
  });

  test('an unreachable socket is reported as unavailable', async () => {
    assert.equal(await libvirtAvailable('/nonexistent/libvirt-sock', 1000), false);
  });
});

describeLibvirt('libvirtd control', () => {
  test('a held connection keeps test-driver domains between virsh calls', async () => {
    const held = await holdDriverConnection();
    const name = uniqueName('hvsync-support');
    const xml =
      `<domain type='test'><name>${name}</name><memory>1024</memory>` +
      `<os><type>hvm</type></os></domain>`;
    const dir = await mkdtemp(join(tmpdir(), 'hvsync-support-'));
    try {
      await writeFile(join(dir, 'domain.xml'), xml);
      await virsh(['define', join(dir, 'domain.xml')]);
      assert.match(await virsh(['list', '--all', '--name']), new RegExp(`^${name}$`, 'm'));
      await virsh(['undefine', name]);
    } finally {
      held.release();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('virsh failures carry stderr and a code', async () => {
    await assert.rejects(virsh(['domstate', uniqueName('hvsync-absent')]), (error) => {
      assert.ok(error instanceof LibvirtSupportError);
      assert.equal(error.code, 'VIRSH_FAILED');
      assert.match(error.stderr, /failed to get domain/);
      return true;
    });
  });
});
