// Two hosts, each a simulated hypervisor with its own sync engine, sharing one fabric (so an
// instance can migrate between them) and one store: the many-hosts shape in one process.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Policy } from '../../src/model/index.ts';
import { openSqliteStore } from '../../src/store/index.ts';
import type { InstanceRecord, Store, TransitionRecord } from '../../src/store/index.ts';
import { SyncEngine } from '../../src/sync/index.ts';
import { SimDriver, SimFabric, SimHypervisor } from '../../src/virt/index.ts';
import type { SimFaults } from '../../src/virt/index.ts';

export interface Host {
  readonly name: string;
  readonly sim: SimHypervisor;
  driver: SimDriver;
  engine: SyncEngine;
}

export interface TwoHostsOptions {
  readonly policy?: Policy;
  /** Instances host A starts with (B starts empty). */
  readonly instances?: number;
  readonly stopSettleMs?: number;
  readonly faults?: { readonly a?: Partial<SimFaults>; readonly b?: Partial<SimFaults> };
  /** Opens the store each engine writes to (both may return the same one); default one SQLite file. */
  readonly stores?: (dir: string) => Promise<readonly [Store, Store]>;
}

export interface TwoHosts {
  readonly a: Host;
  readonly b: Host;
  /** The store host A's engine writes to; readers use it. */
  readonly store: Store;
  /** Waits until both hypervisors and both engines are still at once. */
  quiesce(): Promise<void>;
  record(uuid: string): Promise<InstanceRecord>;
  /** Oldest first. */
  history(uuid: string): Promise<TransitionRecord[]>;
  /** Stops the host's engine and starts a new one on a new connection: a restarted agent. */
  restart(host: Host): Promise<void>;
  close(): Promise<void>;
}

export async function twoHosts(options: TwoHostsOptions = {}): Promise<TwoHosts> {
  const dir = mkdtempSync(join(tmpdir(), 'hvsync-two-hosts-'));
  const stores =
    (await options.stores?.(dir)) ??
    (await (async () => {
      const one = await openSqliteStore(join(dir, 'hvsync.db'));
      return [one, one] as const;
    })());
  const fabric = new SimFabric<SimHypervisor>();
  const engineFor = (sim: SimHypervisor, driver: SimDriver, store: Store): SyncEngine =>
    new SyncEngine({
      driver,
      store,
      policy: options.policy ?? 'observe',
      reconcileIntervalMs: 0,
      stopSettleMs: options.stopSettleMs ?? 250,
    });
  const makeHost = (name: string, seed: number, instances: number, store: Store): Host => {
    const sim = new SimHypervisor({
      hostname: name,
      instances,
      seed,
      fabric,
      faults: name === 'host-a' ? options.faults?.a : options.faults?.b,
    });
    const driver = new SimDriver(sim);
    return { name, sim, driver, engine: engineFor(sim, driver, store) };
  };
  const a = makeHost('host-a', 11, options.instances ?? 1, stores[0]);
  const b = makeHost('host-b', 22, 0, stores[1]);
  await a.engine.start();
  await b.engine.start();
  const hosts = [a, b];

  const quiesce = async (): Promise<void> => {
    for (let round = 0; round < 50; round++) {
      const before = a.engine.stats.passes + b.engine.stats.passes;
      await Promise.all(hosts.map((host) => host.sim.settled()));
      await Promise.all(hosts.map((host) => host.engine.whenIdle()));
      await Promise.all(hosts.map((host) => host.sim.settled()));
      await Promise.all(hosts.map((host) => host.engine.whenIdle()));
      if (a.engine.stats.passes + b.engine.stats.passes === before) return;
    }
    assert.fail('the two hosts never went quiet');
  };
  const store = stores[0];
  return {
    a,
    b,
    store,
    quiesce,
    async record(uuid) {
      const record = await store.getInstance(uuid);
      assert.ok(record, `a record for ${uuid}`);
      return record;
    },
    async history(uuid) {
      return (await store.history(uuid, { limit: 1000 })).reverse();
    },
    async restart(host) {
      await host.engine.stop();
      await host.driver.close();
      host.driver = new SimDriver(host.sim);
      host.engine = engineFor(host.sim, host.driver, host === a ? stores[0] : stores[1]);
      await host.engine.start();
    },
    async close() {
      for (const host of hosts) {
        await host.engine.stop();
        await host.driver.close();
        host.sim.close();
      }
      for (const each of new Set(stores)) await each.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
