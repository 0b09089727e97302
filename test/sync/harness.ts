// A sync engine on the simulated hypervisor and a real SQLite file, plus the waiting helpers the
// engine tests share. Waits poll a condition with a bound; nothing sleeps for a fixed time.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Policy } from '../../src/model/index.ts';
import { openSqliteStore } from '../../src/store/index.ts';
import type { InstanceRecord, Store, TransitionRecord } from '../../src/store/index.ts';
import { SyncEngine } from '../../src/sync/index.ts';
import type { CommitInfo, SyncEngineOptions } from '../../src/sync/index.ts';
import { SimDriver, SimHypervisor } from '../../src/virt/index.ts';
import type {
  HypervisorDriver,
  SimFaults,
  SimHypervisorOptions,
  SimTiming,
} from '../../src/virt/index.ts';

export const HOST = 'host-a';

export interface HarnessOptions {
  readonly policy?: Policy;
  readonly instances?: number;
  readonly seed?: number;
  readonly faults?: Partial<SimFaults>;
  readonly timing?: Partial<SimTiming>;
  readonly engine?: Partial<SyncEngineOptions>;
  /** Wraps the sim driver (to make one call hang, say). */
  readonly wrapDriver?: (driver: SimDriver) => HypervisorDriver;
  /** Wraps the store (to inject a competing writer, say). */
  readonly wrapStore?: (store: Store) => Store;
  /** Runs against the store before the engine starts. */
  readonly before?: (store: Store, sim: SimHypervisor) => Promise<void>;
  /** Leave the engine unstarted. */
  readonly noStart?: boolean;
}

export interface Harness {
  readonly sim: SimHypervisor;
  readonly driver: HypervisorDriver;
  readonly store: Store;
  readonly engine: SyncEngine;
  readonly commits: CommitInfo[];
  readonly dir: string;
  /** Waits until the sim has nothing pending and the engine nothing in flight. */
  quiesce(): Promise<void>;
  record(uuid: string): Promise<InstanceRecord>;
  history(uuid: string): Promise<TransitionRecord[]>;
  close(): Promise<void>;
}

export async function harness(options: HarnessOptions = {}): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'hvsync-sync-'));
  // Not exclusive: the handover scenario opens a second store on the same file.
  const rawStore = await openSqliteStore(join(dir, 'hvsync.db'), { exclusive: false });
  const store = options.wrapStore ? options.wrapStore(rawStore) : rawStore;
  const simOptions: SimHypervisorOptions = {
    hostname: HOST,
    instances: options.instances ?? 0,
    seed: options.seed ?? 7,
    faults: options.faults,
    timing: options.timing,
  };
  const sim = new SimHypervisor(simOptions);
  const simDriver = new SimDriver(sim);
  const driver = options.wrapDriver ? options.wrapDriver(simDriver) : simDriver;
  await options.before?.(store, sim);
  const commits: CommitInfo[] = [];
  const engine = new SyncEngine({
    driver,
    store,
    policy: options.policy ?? 'observe',
    reconcileIntervalMs: 0,
    ...options.engine,
    onCommit: (commit) => commits.push(commit),
  });
  if (!options.noStart) await engine.start();
  const quiesce = async (): Promise<void> => {
    // The sim may schedule more after the engine acts (a force-stop's event), and the engine
    // more after the sim delivers: go round until both are still at once.
    for (let round = 0; round < 50; round++) {
      await sim.settled();
      await engine.whenIdle();
      await sim.settled();
      const before = engine.stats.passes;
      await engine.whenIdle();
      if (engine.stats.passes === before) return;
    }
    assert.fail('sim and engine never went quiet');
  };
  return {
    sim,
    driver,
    store,
    engine,
    commits,
    dir,
    quiesce,
    async record(uuid) {
      const record = await store.getInstance(uuid);
      assert.ok(record, `a record for ${uuid}`);
      return record;
    },
    async history(uuid) {
      return (await store.history(uuid, { limit: 1000 })).reverse();
    },
    async close() {
      await engine.stop();
      await driver.close();
      sim.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `check` until it returns something other than undefined/false, or fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 2; ; delay = Math.min(delay * 2, 50)) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

/** Waits until the record satisfies `predicate`, and returns it. */
export function waitForRecord(
  h: Harness,
  uuid: string,
  what: string,
  predicate: (record: InstanceRecord) => boolean,
): Promise<InstanceRecord> {
  return waitFor(what, async () => {
    const record = await h.store.getInstance(uuid);
    return record && predicate(record) ? record : undefined;
  });
}

/** Defines a running instance and waits for the engine to adopt it. */
export async function adoptRunning(h: Harness, name: string): Promise<string> {
  const uuid = h.sim.define(name, { powerState: 'running' });
  await waitForRecord(h, uuid, `${name} adopted running`, (r) => r.powerState === 'running');
  return uuid;
}

/** Every history entry continues from the one before: no write was based on a stale read. */
export function assertChained(history: readonly TransitionRecord[]): void {
  for (let i = 1; i < history.length; i++) {
    const previous = history[i - 1]!;
    const entry = history[i]!;
    assert.equal(entry.from, previous.to, `history[${i}].from follows history[${i - 1}].to`);
    assert.equal(entry.vmStateFrom, previous.vmStateTo, `history[${i}].vmStateFrom follows`);
  }
}
