// Records what a real libvirtd sends (replies, errors, lifecycle events) into a fixture that the
// fuzz test mutates and the decode benchmark replays. Run against the test driver:
//   node --import tsx scripts/record-frames.ts [output.json]
// It proxies a private unix socket to the daemon's and keeps every daemon→client frame.
import { createConnection, createServer } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DomainEventId, LibvirtClient } from '../src/libvirt/index.ts';
import { decodePacket, FrameDecoder } from '../src/libvirt/packet.ts';

const output = process.argv[2] ?? 'test/fixtures/libvirt-frames.json';
const daemonSocket = process.env.HVSYNC_TEST_SOCKET ?? '/var/run/libvirt/libvirt-sock';
const dir = mkdtempSync(join(tmpdir(), 'hvsync-record-'));
const proxySocket = join(dir, 'sock');
const frames: { procedure: number; type: number; status: number; hex: string }[] = [];

const server = createServer((client) => {
  const daemon = createConnection(daemonSocket);
  const decoder = new FrameDecoder();
  client.pipe(daemon);
  daemon.on('data', (chunk: Buffer) => {
    for (const frame of decoder.push(chunk)) {
      const { header } = decodePacket(frame);
      frames.push({
        procedure: header.procedure,
        type: header.type,
        status: header.status,
        hex: frame.toString('hex'),
      });
    }
    client.write(chunk);
  });
  client.on('close', () => daemon.destroy());
});
await new Promise<void>((resolve) => server.listen(proxySocket, resolve));

const client = await LibvirtClient.connect({ uri: `test+unix:///default?socket=${proxySocket}` });
await client.registerDomainEvent(DomainEventId.LIFECYCLE);
await client.registerDomainEvent(DomainEventId.REBOOT);
const xml = (name: string) =>
  `<domain type='test'><name>${name}</name><memory>8192</memory><os><type>hvm</type></os></domain>`;
const names = Array.from({ length: 20 }, (_, i) => `hvsync-record-${process.pid}-${i}`);
for (const name of names) await client.create(await client.defineXml(xml(name)));
const first = await client.lookupByName(names[0]!);
await client.getLibVersion();
await client.getHostname();
await client.listAllDomains();
await client.getAllDomainStates();
await client.getState(first);
await client.suspend(first);
await client.resume(first);
await client.reboot(first);
await client.shutdown(first);
await client.lookupByName('hvsync-no-such-domain').catch(() => {});
for (const name of names) {
  const domain = await client.lookupByName(name);
  await client.destroy(domain).catch(() => {});
  await client.undefine(domain);
}
await new Promise((resolve) => setTimeout(resolve, 200));
await client.close();
server.close();
rmSync(dir, { recursive: true, force: true });
writeFileSync(
  output,
  `${JSON.stringify({ source: `libvirtd ${await version()}`, frames }, null, 1)}\n`,
);
console.log(`recorded ${frames.length} frames into ${output}`);

async function version(): Promise<string> {
  const c = await LibvirtClient.connect({ uri: 'test+unix:///default' });
  const v = await c.getLibVersion();
  await c.close();
  return v;
}
