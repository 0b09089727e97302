// npm run bench:libvirt — event decode throughput over lifecycle frames recorded from a real
// libvirtd, and the round trip of a get-state call to the test driver. Prints a table and writes
// bench/results/libvirt.json. Not a test: numbers, no pass/fail.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { performance } from 'node:perf_hooks';
import { DomainEventId, LibvirtClient } from '../src/libvirt/index.ts';
import { decodePacket, FrameDecoder } from '../src/libvirt/packet.ts';
import { Proc, readLifecycleMessage } from '../src/libvirt/remote.ts';
import { XdrReader } from '../src/libvirt/xdr.ts';
import { startFakeLibvirtd } from '../test/support/fake-libvirtd.ts';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 500_000);
const RTT_CALLS = Number(process.env.BENCH_RTT_CALLS ?? 5_000);
const uri = process.env.BENCH_URI ?? 'test+unix:///default';

const fixture = JSON.parse(
  readFileSync(new URL('../test/fixtures/libvirt-frames.json', import.meta.url), 'utf8'),
) as { source: string; frames: { procedure: number; hex: string }[] };
const eventFrames = fixture.frames
  .filter((f) => f.procedure === Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE)
  .map((f) => Buffer.from(f.hex, 'hex'));
const stream = Buffer.concat(
  Array.from({ length: EVENTS }, (_, i) => eventFrames[i % eventFrames.length]!),
);

/** One live line on a terminal; plain lines (and no blank ones) in a log. */
function progress(text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
  else if (text) process.stderr.write(`${text}\n`);
}

function decodeOnly(): number {
  const start = performance.now();
  const decoder = new FrameDecoder();
  let count = 0;
  for (let offset = 0; offset < stream.length; offset += 65536) {
    for (const frame of decoder.push(stream.subarray(offset, offset + 65536))) {
      readLifecycleMessage(new XdrReader(decodePacket(frame).body));
      count++;
    }
  }
  const seconds = (performance.now() - start) / 1000;
  if (count !== EVENTS) throw new Error(`decoded ${count} of ${EVENTS}`);
  return count / seconds;
}

async function throughClient(): Promise<number> {
  const fake = await startFakeLibvirtd();
  const client = await LibvirtClient.connect({ uri: fake.uri, keepaliveIntervalMs: 0 });
  await client.registerDomainEvent(DomainEventId.LIFECYCLE);
  let count = 0;
  const done = new Promise<void>((resolve) =>
    client.onLifecycle(() => {
      if (++count === EVENTS) resolve();
    }),
  );
  const start = performance.now();
  fake.connections.at(-1)!.write(stream);
  await done;
  const seconds = (performance.now() - start) / 1000;
  await client.close();
  await fake.close();
  return count / seconds;
}

async function getStateRoundTrip(): Promise<{
  p50: number;
  p99: number;
  max: number;
  mean: number;
}> {
  const client = await LibvirtClient.connect({ uri });
  const [domain] = await client.listAllDomains();
  if (!domain) throw new Error(`no domain on ${uri} to ask about`);
  for (let i = 0; i < 200; i++) await client.getState(domain); // warm up
  const samples: number[] = [];
  for (let i = 0; i < RTT_CALLS; i++) {
    const start = performance.now();
    await client.getState(domain);
    samples.push(performance.now() - start);
    if (i % 1000 === 0) progress(`get-state round trips: ${i}/${RTT_CALLS}`);
  }
  await client.close();
  samples.sort((a, b) => a - b);
  const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]!;
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  return { p50: at(0.5), p99: at(0.99), max: samples.at(-1)!, mean };
}

progress(`decoding ${EVENTS} lifecycle events...`);
const decodeRate = decodeOnly();
progress(`delivering ${EVENTS} lifecycle events through a client over a unix socket...`);
const clientRate = await throughClient();
progress(`get-state round trips against ${uri}...`);
const rtt = await getStateRoundTrip();
progress('');

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
const results = {
  machine,
  frames: `lifecycle events recorded from ${fixture.source}`,
  decodeEventsPerSecond: Math.round(decodeRate),
  clientEventsPerSecond: Math.round(clientRate),
  getStateRoundTripMs: rtt,
};
console.log(`machine: ${machine}`);
console.table({
  'event decode (decoder only)': {
    value: Math.round(decodeRate).toLocaleString('en'),
    unit: 'events/s',
  },
  'event delivery (socket → client → listener)': {
    value: Math.round(clientRate).toLocaleString('en'),
    unit: 'events/s',
  },
  'get-state round trip p50': { value: rtt.p50.toFixed(3), unit: 'ms' },
  'get-state round trip p99': { value: rtt.p99.toFixed(3), unit: 'ms' },
  'get-state round trip max': { value: rtt.max.toFixed(3), unit: 'ms' },
});
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(
  new URL('./results/libvirt.json', import.meta.url),
  `${JSON.stringify(results, null, 2)}\n`,
);
console.log('written to bench/results/libvirt.json');
