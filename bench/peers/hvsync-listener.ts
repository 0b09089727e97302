// One listener of `npm run bench:peers`: hvsync's wire client in a process of its own, so that its
// CPU time and RSS are its own. Prints "ready" once its callback is registered, records the
// CLOCK_MONOTONIC time its callback runs for each storm event in that event's slot, and at the end
// (every slot filled, or "end" on stdin) writes the slots to a file and a summary line to stdout.
import { readFileSync, writeFileSync } from 'node:fs';
import { DomainEventId, LibvirtClient } from '../../src/libvirt/index.ts';
import { chainOf, stepOf, STEPS, type ListenerArgs, type ListenerSummary } from './storm.ts';

function statusBytes(field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(
    readFileSync('/proc/self/status', 'utf8'),
  );
  return match ? Number(match[1]) * 1024 : NaN;
}

function cpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

const args = JSON.parse(process.argv[2] ?? '{}') as ListenerArgs;
const slots = new BigInt64Array(args.chains * STEPS.length);
let delivered = 0;
let duplicates = 0;
let unexpected = 0;
let cpuAtReady = 0;
let cpuAtLast = 0;
let rssReadyBytes = 0;

const client = await LibvirtClient.connect({ uri: args.uri });
client.onLifecycle((message) => {
  const now = process.hrtime.bigint();
  const chain = chainOf(args.prefix, message.domain.name);
  if (chain < 0) return; // someone else's domain on the shared daemon
  const step = stepOf(message.eventCode, message.detailCode);
  if (step < 0 || chain >= args.chains) {
    unexpected++;
    return;
  }
  const slot = chain * STEPS.length + step;
  if (slots[slot] !== 0n) {
    duplicates++;
    return;
  }
  slots[slot] = now;
  if (++delivered === slots.length) finish();
});
await client.registerDomainEvent(DomainEventId.LIFECYCLE);

let finished = false;
function finish(): void {
  if (finished) return;
  finished = true;
  cpuAtLast = cpuSeconds();
  writeFileSync(args.timestampsPath, slots);
  const summary: ListenerSummary = {
    client: 'hvsync',
    delivered,
    duplicates,
    unexpected,
    cpuSeconds: cpuAtLast - cpuAtReady,
    rssReadyBytes,
    rssPeakBytes: statusBytes('VmHWM'),
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  void client.close().then(() => process.exit(0));
}

process.stdin.setEncoding('utf8').on('data', (text: string) => {
  if (text.includes('end')) finish();
});
rssReadyBytes = statusBytes('VmRSS');
cpuAtReady = cpuSeconds();
process.stdout.write('ready\n');
