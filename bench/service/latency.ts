// Detection latency: how long after a change made behind hvsync's back (from a second
// connection) the store holds the new power state, and the engine's own event → commit time.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Policy, RecordedPowerState } from '../../src/model/index.ts';
import type { Domain, LibvirtClient } from '../../src/libvirt/index.ts';
import { openSqliteStore } from '../../src/store/index.ts';
import type { ChangeRecord } from '../../src/store/index.ts';
import { SyncEngine, type CommitInfo } from '../../src/sync/index.ts';
import { LibvirtDriver } from '../../src/virt/index.ts';
import { BenchDomains, progress, summarize, throttledProgress, type Summary } from './support.ts';

export interface DetectionOptions {
  readonly uri: string;
  /** The second connection: changes are made through it, never through the engine's. */
  readonly client: LibvirtClient;
  readonly domains: number;
  readonly changes: number;
  readonly stopSettleMs: number;
  /** observe records a stop at once; enforce holds it for stopSettleMs (the reboot race). */
  readonly policy: Policy;
  readonly inflight: number;
}

type ChangeName = 'suspend' | 'resume' | 'destroy' | 'shutdown' | 'start';

interface Change {
  readonly name: ChangeName;
  readonly expect: RecordedPowerState;
  readonly stopLike: boolean;
}

const CHANGES: Record<ChangeName, Change> = {
  suspend: { name: 'suspend', expect: 'paused', stopLike: false },
  resume: { name: 'resume', expect: 'running', stopLike: false },
  destroy: { name: 'destroy', expect: 'shutoff', stopLike: true },
  shutdown: { name: 'shutdown', expect: 'shutoff', stopLike: true },
  start: { name: 'start', expect: 'running', stopLike: false },
};

// Each pair leaves the domain running again; a quarter of all changes are stop-like, which is
// enough samples without letting the settle window dominate the run time.
const PAIRS: readonly (readonly [ChangeName, ChangeName])[] = [
  ['suspend', 'resume'],
  ['destroy', 'start'],
  ['suspend', 'resume'],
  ['shutdown', 'start'],
];

export interface DetectionGroup {
  readonly changes: string;
  /** Change call issued → row committed with the new power state, as a store watcher sees it. */
  readonly callToCommitMs: Summary;
  /** The engine's `latencyMs`: event received → committed. */
  readonly eventToCommitMs: Summary;
}

export interface DetectionResult {
  readonly domains: number;
  readonly changes: number;
  readonly stopSettleMs: number;
  readonly policy: Policy;
  /** Changes whose commit never came within the wait (should be 0). */
  readonly missed: number;
  /** Commits for which the engine reported no latency (not event-caused; should be 0). */
  readonly withoutEngineLatency: number;
  readonly stopLike: DetectionGroup;
  readonly other: DetectionGroup;
  readonly byChange: Record<ChangeName, { callToCommitMs: Summary; eventToCommitMs: Summary }>;
}

const COMMIT_WAIT_MS = 15_000;

function apply(client: LibvirtClient, domain: Domain, change: ChangeName): Promise<unknown> {
  switch (change) {
    case 'suspend':
      return client.suspend(domain);
    case 'resume':
      return client.resume(domain);
    case 'destroy':
      return client.destroy(domain);
    case 'shutdown':
      return client.shutdown(domain);
    case 'start':
      return client.create(domain);
  }
}

export async function measureDetection(options: DetectionOptions): Promise<DetectionResult> {
  const { client } = options;
  const set = await BenchDomains.create(client, 'latency', options.domains, options.inflight);
  const dir = mkdtempSync(join(tmpdir(), 'hvsync-bench-latency-'));
  const store = await openSqliteStore(join(dir, 'hvsync.db'));
  const driver = new LibvirtDriver({ uri: options.uri });
  const engineCommits = new Map<string, CommitInfo>();
  const engine = new SyncEngine({
    driver,
    store,
    policy: options.policy,
    stopSettleMs: options.stopSettleMs,
    onCommit: (commit) => engineCommits.set(commit.uuid, commit),
  });

  // The store watcher: the change waited for, and when its row was committed.
  let awaited: { uuid: string; expect: RecordedPowerState; seen: (at: number) => void } | null =
    null;
  const unsubscribe = store.subscribe((changes: readonly ChangeRecord[]) => {
    const at = performance.now();
    for (const change of changes) {
      if (
        awaited &&
        change.instance.uuid === awaited.uuid &&
        change.instance.powerState === awaited.expect
      ) {
        awaited.seen(at);
        awaited = null;
      }
    }
  });

  const samples = new Map<ChangeName, { call: number[]; event: number[] }>();
  for (const name of Object.keys(CHANGES) as ChangeName[]) {
    samples.set(name, { call: [], event: [] });
  }
  let missed = 0;
  let withoutEngineLatency = 0;
  try {
    progress('latency: starting the engine over the test domains...');
    await engine.start();
    await engine.whenIdle();
    const tick = throttledProgress();
    for (let k = 0; k < options.changes; k++) {
      const pairIndex = Math.floor(k / 2);
      const name = PAIRS[pairIndex % PAIRS.length]![k % 2]!;
      const change = CHANGES[name];
      const domain = set.domains[pairIndex % set.domains.length]!;
      engineCommits.delete(domain.uuid);
      let seen: (at: number) => void = () => {};
      const committed = new Promise<number | null>((resolve) => {
        const timer = setTimeout(() => resolve(null), COMMIT_WAIT_MS);
        seen = (at) => {
          clearTimeout(timer);
          resolve(at);
        };
      });
      awaited = { uuid: domain.uuid, expect: change.expect, seen };
      const issuedAt = performance.now();
      await apply(client, domain, name);
      const committedAt = await committed;
      awaited = null;
      // Let the engine finish with this instance so the next change starts from quiet.
      await engine.whenIdle();
      if (committedAt === null) {
        missed++;
        continue;
      }
      const bucket = samples.get(name)!;
      bucket.call.push(committedAt - issuedAt);
      const commit = engineCommits.get(domain.uuid);
      if (commit?.to === change.expect && commit.latencyMs !== null) {
        bucket.event.push(commit.latencyMs);
      } else {
        withoutEngineLatency++;
      }
      tick(`latency: ${k + 1}/${options.changes} changes (${name} ${domain.name})`);
    }
  } finally {
    unsubscribe();
    await engine.stop();
    await driver.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
    await set.remove(options.inflight);
  }

  const group = (names: ChangeName[]): DetectionGroup => ({
    changes: names.join(', '),
    callToCommitMs: summarize(names.flatMap((n) => samples.get(n)!.call)),
    eventToCommitMs: summarize(names.flatMap((n) => samples.get(n)!.event)),
  });
  const byChange = Object.fromEntries(
    [...samples].map(([name, s]) => [
      name,
      { callToCommitMs: summarize(s.call), eventToCommitMs: summarize(s.event) },
    ]),
  ) as DetectionResult['byChange'];
  return {
    domains: options.domains,
    changes: options.changes,
    stopSettleMs: options.stopSettleMs,
    policy: options.policy,
    missed,
    withoutEngineLatency,
    stopLike: group(['destroy', 'shutdown']),
    other: group(['suspend', 'resume', 'start']),
    byChange,
  };
}
