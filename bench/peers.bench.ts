// npm run bench:peers — hvsync's wire client side by side with libvirt's C client as Nova uses it
// (python3-libvirt, default event implementation, a native thread running the event loop), both
// listening to one storm of lifecycle events from the test driver. Each listener is a process of
// its own; this process generates the storm on a third connection and compares. Prints a table and
// writes bench/results/peers.json. Not a test: numbers, no pass/fail.
//
// Latency reference: the CLOCK_MONOTONIC time this process sent the call that caused the event
// (process.hrtime.bigint() here, the same clock as time.monotonic_ns() in Python), so it includes
// the daemon's handling of the call; both clients are measured from the same instant, and the
// per-event difference between them is reported too.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import {
  LibvirtClient,
  LibvirtClientError,
  LibvirtError,
  type Domain,
} from '../src/libvirt/index.ts';
import { ListenerProcess } from './peers/listener-process.ts';
import { chainOf, domainName, STEPS, type ListenerSummary, type StormStep } from './peers/storm.ts';
import {
  envNumber,
  machineLine,
  mib,
  pipelined,
  progress,
  round,
  summarize,
  throttledProgress,
  type Summary,
} from './service/support.ts';

const uri = process.env.BENCH_URI ?? 'test+unix:///default';
const CHAINS = envNumber('BENCH_PEERS_DOMAINS', 17_000);
const INFLIGHT = envNumber('BENCH_PEERS_INFLIGHT', 64);
const GRACE_MS = envNumber('BENCH_PEERS_GRACE_MS', 30_000);
const EVENTS = CHAINS * STEPS.length;
const PER = 100_000;

const repoRoot = fileURLToPath(new URL('../', import.meta.url));
const prefix = `hvsync-peers-${process.pid}-${Date.now().toString(36)}`;

/** A python3 that can import libvirt, or null. Debian's python3-libvirt lives in /usr/bin's. */
function findPython(): string | null {
  const candidates = [process.env.BENCH_PYTHON, 'python3', '/usr/bin/python3'];
  for (const python of candidates) {
    if (!python) continue;
    try {
      execFileSync(python, ['-c', 'import libvirt'], { stdio: 'ignore' });
      return python;
    } catch {
      // not there, or no libvirt module for this interpreter
    }
  }
  return null;
}

/**
 * hvsync's listener as plain JavaScript: run through tsx, Node would carry a second V8 isolate
 * for the loader's hooks (about 40 MiB of RSS) that a deployed hvsync does not have.
 */
function compileHvsyncListener(): string {
  const configPath = join(repoRoot, 'tsconfig.json');
  const config = ts.readConfigFile(configPath, (path) => ts.sys.readFile(path));
  const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, repoRoot);
  const outDir = join(work, 'js');
  const entry = join(repoRoot, 'bench/peers/hvsync-listener.ts');
  const program = ts.createProgram([entry], {
    ...parsed.options,
    noEmit: false,
    sourceMap: false,
    rootDir: repoRoot,
    outDir,
  });
  const result = program.emit();
  if (result.emitSkipped) throw new Error('could not compile bench/peers/hvsync-listener.ts');
  writeFileSync(join(outDir, 'package.json'), '{"type":"module"}\n');
  return join(outDir, 'bench/peers/hvsync-listener.js');
}

function testDomainXml(name: string): string {
  return (
    `<domain type='test'><name>${name}</name><uuid>${randomUUID()}</uuid>` +
    `<memory>8192</memory><os><type>hvm</type></os></domain>`
  );
}

function callStep(
  client: LibvirtClient,
  step: StormStep,
  chain: number,
  domain: Domain | undefined,
): Promise<Domain | undefined | void> {
  if (step.call === 'define') return client.defineXml(testDomainXml(domainName(prefix, chain)));
  if (!domain) throw new Error(`${step.call} before define`);
  switch (step.call) {
    case 'create':
      return client.create(domain);
    case 'suspend':
      return client.suspend(domain);
    case 'resume':
      return client.resume(domain);
    case 'destroy':
      return client.destroy(domain);
    case 'undefine':
      return client.undefine(domain);
  }
}

interface StormResult {
  /** When each change was sent; 0 where the call failed or was never made (no event expected). */
  readonly sentAt: BigInt64Array;
  readonly seconds: number;
  /** Domains whose calls someone else on the shared daemon got in the way of. */
  readonly disturbed: number;
}

/** Set on a signal: each chain stops at its next call, so that the sweep sees every domain. */
let stopping = false;

/** Every domain through the six calls, `INFLIGHT` domains at a time. */
async function storm(client: LibvirtClient): Promise<StormResult> {
  const sentAt = new BigInt64Array(EVENTS);
  let disturbed = 0;
  const tick = throttledProgress(5_000);
  const started = process.hrtime.bigint();
  await pipelined(
    CHAINS,
    INFLIGHT,
    async (chain) => {
      let domain: Domain | undefined;
      for (const [index, step] of STEPS.entries()) {
        if (stopping) return;
        const slot = chain * STEPS.length + index;
        sentAt[slot] = process.hrtime.bigint();
        try {
          domain = (await callStep(client, step, chain, domain)) ?? domain;
        } catch (error) {
          // Another user of the daemon changed or removed our domain (a test that stops every
          // domain it finds, say): that call caused no event, and the rest of the chain is off.
          if (!(error instanceof LibvirtError)) throw error;
          sentAt[slot] = 0n;
          disturbed++;
          return;
        }
      }
    },
    (done) => tick(`storm: ${done * STEPS.length}/${EVENTS} changes`),
  );
  return { sentAt, seconds: Number(process.hrtime.bigint() - started) / 1e9, disturbed };
}

/** Removes any of our domains still on the daemon (an interrupted or failed storm). */
async function sweep(client: LibvirtClient): Promise<number> {
  const ours = (await client.listAllDomains()).filter((d) => chainOf(prefix, d.name) >= 0);
  for (const domain of ours) {
    for (const step of [() => client.destroy(domain), () => client.undefine(domain)]) {
      try {
        await step();
      } catch (error) {
        if (!(error instanceof LibvirtError) && !(error instanceof LibvirtClientError)) throw error;
      }
    }
  }
  return ours.length;
}

interface ClientResult {
  readonly summary: ListenerSummary;
  /** Events the storm caused that reached the callback. */
  readonly delivered: number;
  /** Events for our domains that the storm did not cause (someone else changed them). */
  readonly foreign: number;
  /** Event → callback, ms, from the generator's send time. */
  readonly latencyMs: Summary;
  readonly receivedAt: BigInt64Array;
}

function latencies(sentAt: BigInt64Array, receivedAt: BigInt64Array): number[] {
  const samples: number[] = [];
  for (let slot = 0; slot < sentAt.length; slot++) {
    const sent = sentAt[slot]!;
    const received = receivedAt[slot]!;
    if (sent !== 0n && received !== 0n) samples.push(Number(received - sent) / 1e6);
  }
  return samples;
}

function readSlots(path: string): BigInt64Array {
  // Copied: a Buffer's offset into its memory need not be a multiple of 8.
  return new BigInt64Array(new Uint8Array(readFileSync(path)).buffer);
}

const python = findPython();
if (!python) {
  console.error(
    "bench:peers needs libvirt's Python binding (the C client as Nova uses it).\n" +
      'On Debian or Ubuntu, as root: apt-get install -y python3-libvirt\n' +
      'Or set BENCH_PYTHON to a python3 that can `import libvirt`.',
  );
  process.exit(1);
}

const work = mkdtempSync(join(tmpdir(), 'hvsync-bench-peers-'));
progress('compiling the hvsync listener...');
const hvsyncListenerJs = compileHvsyncListener();
const generator = await LibvirtClient.connect({ uri });
const libvirtVersion = await generator.getLibVersion();
const listeners = [
  new ListenerProcess('hvsync', process.execPath, [hvsyncListenerJs], {
    uri,
    prefix,
    chains: CHAINS,
    timestampsPath: join(work, 'hvsync.slots'),
  }),
  new ListenerProcess(
    'c-client',
    python,
    [fileURLToPath(new URL('./peers/c-client-listener.py', import.meta.url))],
    { uri, prefix, chains: CHAINS, timestampsPath: join(work, 'c-client.slots') },
  ),
] as const;

// On a signal the storm stops at each domain's next call and the listeners are killed; the run
// then unwinds through the same clean-up as a finished one.
let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    interrupted = true;
    stopping = true;
    progress(`${signal}: stopping the storm and removing its domains...`);
    for (const listener of listeners) listener.kill();
  });
}

interface Measured {
  readonly results: ClientResult[];
  readonly stormSeconds: number;
  /** Events the storm's successful calls caused. */
  readonly expected: number;
  readonly disturbed: number;
}

/** Runs the storm under both listeners; null when a signal cut it short. Always cleans up. */
async function measure(): Promise<Measured | null> {
  try {
    progress('starting both listeners...');
    await Promise.all(listeners.map((l) => l.ready));
    progress(`storm: ${CHAINS} domains × ${STEPS.length} changes, ${INFLIGHT} calls in flight...`);
    const { sentAt, seconds, disturbed } = await storm(generator);
    if (interrupted) return null;
    progress('waiting for both listeners to receive every event...');
    // A disturbed storm leaves slots no event will fill: collect what came after a short wait.
    const graceMs = disturbed > 0 ? Math.min(GRACE_MS, 5_000) : GRACE_MS;
    const grace = setTimeout(() => listeners.forEach((l) => l.end()), graceMs);
    const summaries = await Promise.all(listeners.map((l) => l.summary));
    clearTimeout(grace);
    const results = summaries.map((summary, i): ClientResult => {
      const receivedAt = readSlots(join(work, `${listeners[i]!.label}.slots`));
      const samples = latencies(sentAt, receivedAt);
      const foreign = summary.delivered - samples.length + summary.unexpected + summary.duplicates;
      return {
        summary,
        delivered: samples.length,
        foreign,
        latencyMs: summarize(samples),
        receivedAt,
      };
    });
    const expected = sentAt.filter((sent) => sent !== 0n).length;
    return { results, stormSeconds: seconds, expected, disturbed };
  } catch (error) {
    if (interrupted) return null;
    throw error;
  } finally {
    for (const listener of listeners) listener.kill();
    const left = await sweep(generator);
    if (left > 0) progress(`removed ${left} domains the storm left behind`);
    await generator.close();
    rmSync(work, { recursive: true, force: true });
  }
}

const measured = await measure();
if (!measured) process.exit(130);
const { results, stormSeconds, expected, disturbed } = measured;
progress('');

// Per event, how much later hvsync's callback ran than the C client's (negative: earlier).
const [hvsync, cClient] = results as [ClientResult, ClientResult];
const paired = latencies(cClient.receivedAt, hvsync.receivedAt).sort((a, b) => a - b);
const pairedAt = (q: number): number =>
  paired[Math.min(paired.length - 1, Math.floor(q * paired.length))] ?? NaN;
const hvsyncFirstShare = paired.filter((d) => d < 0).length / Math.max(1, paired.length);

function perHundredThousand(result: ClientResult): number {
  return (result.summary.cpuSeconds / Math.max(1, result.summary.delivered)) * PER;
}

const machine = machineLine(libvirtVersion);
const json = {
  machine,
  uri,
  storm: {
    domains: CHAINS,
    changesPerDomain: STEPS.map((s) => s.call),
    events: EVENTS,
    callsInFlight: INFLIGHT,
    seconds: round(stormSeconds, 2),
    eventsPerSecond: Math.round(EVENTS / stormSeconds),
    expectedEvents: expected,
    disturbedDomains: disturbed,
  },
  latencyReference: 'the generator sending the call that caused the event (CLOCK_MONOTONIC)',
  clients: results.map((r) => ({
    client: r.summary.client,
    delivered: r.delivered,
    expected,
    foreignEvents: r.foreign,
    latencyMs: {
      p50: round(r.latencyMs.p50, 2),
      p99: round(r.latencyMs.p99, 2),
      max: round(r.latencyMs.max, 2),
    },
    cpuSeconds: round(r.summary.cpuSeconds, 3),
    cpuSecondsPer100kEvents: round(perHundredThousand(r), 3),
    cpuMicrosecondsPerEvent: round((r.summary.cpuSeconds / r.summary.delivered) * 1e6, 1),
    rssReadyMiB: mib(r.summary.rssReadyBytes),
    rssPeakMiB: mib(r.summary.rssPeakBytes),
  })),
  hvsyncMinusCClientMs: {
    events: paired.length,
    p1: round(pairedAt(0.01), 3),
    p50: round(pairedAt(0.5), 3),
    p99: round(pairedAt(0.99), 3),
    hvsyncFirstShare: round(hvsyncFirstShare, 3),
  },
};

console.log(`machine: ${machine}`);
console.log(
  `storm: ${CHAINS} test domains × ${STEPS.map((s) => s.call).join('/')} = ${EVENTS} events in ` +
    `${round(stormSeconds, 1)} s (${json.storm.eventsPerSecond} events/s, ${INFLIGHT} calls in flight)`,
);
const column = (r: ClientResult): Record<string, string> => ({
  'events delivered': `${r.delivered} / ${expected}`,
  'latency p50 (ms)': r.latencyMs.p50.toFixed(2),
  'latency p99 (ms)': r.latencyMs.p99.toFixed(2),
  'CPU s per 100k events': perHundredThousand(r).toFixed(2),
  'RSS ready → peak (MiB)': `${mib(r.summary.rssReadyBytes)} → ${mib(r.summary.rssPeakBytes)}`,
});
if (disturbed > 0) {
  console.log(
    `${disturbed} domains were changed by someone else on the shared daemon mid-storm; ` +
      `their remaining changes were not made and are not expected`,
  );
}
console.table({ hvsync: column(hvsync), 'C client (Nova)': column(cClient) });
console.log(
  `same event, hvsync's callback minus the C client's: p1 ${pairedAt(0.01).toFixed(2)} ms, ` +
    `p50 ${pairedAt(0.5).toFixed(2)} ms, p99 ${pairedAt(0.99).toFixed(2)} ms; ` +
    `hvsync first for ${(hvsyncFirstShare * 100).toFixed(0)} % of events`,
);
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(
  new URL('./results/peers.json', import.meta.url),
  `${JSON.stringify(json, null, 2)}\n`,
);
console.log('written to bench/results/peers.json');
