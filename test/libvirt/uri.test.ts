import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LibvirtClientError, resolveUri } from '../../src/libvirt/index.ts';

const none = () => false;

describe('libvirt URIs', () => {
  test('qemu:///system uses the monolithic socket unless virtqemud runs', () => {
    assert.deepEqual(resolveUri('qemu:///system', { exists: none }), {
      uri: 'qemu:///system',
      name: 'qemu:///system',
      endpoint: { transport: 'unix', path: '/var/run/libvirt/libvirt-sock' },
    });
    const modular = resolveUri('qemu:///system', {
      exists: (p) => p.endsWith('virtqemud-sock'),
    });
    assert.deepEqual(modular.endpoint, {
      transport: 'unix',
      path: '/var/run/libvirt/virtqemud-sock',
    });
  });

  test('test+unix:///default drops the transport from the name sent to the daemon', () => {
    const r = resolveUri('test+unix:///default', { exists: none });
    assert.equal(r.name, 'test:///default');
    assert.deepEqual(r.endpoint, { transport: 'unix', path: '/var/run/libvirt/libvirt-sock' });
  });

  test('?socket= chooses the socket and is not sent to the daemon', () => {
    const r = resolveUri('qemu+unix:///system?socket=/run/x.sock', { exists: none });
    assert.equal(r.name, 'qemu:///system');
    assert.deepEqual(r.endpoint, { transport: 'unix', path: '/run/x.sock' });
  });

  test('qemu+tcp with host and port, default port 16509, IPv6 literal', () => {
    const r = resolveUri('qemu+tcp://example.org:16600/system');
    assert.equal(r.name, 'qemu:///system');
    assert.deepEqual(r.endpoint, { transport: 'tcp', host: 'example.org', port: 16600 });
    assert.deepEqual(resolveUri('qemu+tcp://[::1]/system').endpoint, {
      transport: 'tcp',
      host: '::1',
      port: 16509,
    });
  });

  test('session URIs look in the runtime directory', () => {
    const r = resolveUri('qemu:///session', { exists: none, runtimeDir: '/run/user/1000' });
    assert.deepEqual(r.endpoint, {
      transport: 'unix',
      path: '/run/user/1000/libvirt/libvirt-sock',
    });
  });

  test('unsupported transports and garbage are clear errors', () => {
    for (const bad of [
      'qemu+ssh://h/system',
      'qemu://remote/system',
      'not a uri',
      'qemu+tcp:///system',
      'a+b+c:///x',
    ]) {
      assert.throws(
        () => resolveUri(bad, { exists: none }),
        (e: unknown) => e instanceof LibvirtClientError && e.code === 'uri',
        bad,
      );
    }
  });
});
