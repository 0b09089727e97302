// The full reconcile: list every instance on the hypervisor and every record of this host,
// queue a pass for each (on the listing's entry when nothing touched the instance since the
// listing began), probe records the listing lacks, expire tasks nobody runs, and record the
// host. Runs at start, after a reconnect that may have lost events, and periodically.
//
// At rest a periodic reconcile finds every listed instance as its record says, and what it costs
// then is what the service costs at rest. So the records come from memory (host-records.ts), an
// entry like one already found matching the very record object it is compared with is not decided
// again, and nothing is allocated per instance unless it needs a pass.
import { performance } from 'node:perf_hooks';
import type { Policy } from '../model/index.ts';
import type { InstanceRecord, EngineStore } from '../store/index.ts';
import type { HypervisorDriver, ObservedInstance } from '../virt/index.ts';
import { withTimeout } from './calls.ts';
import type { HostRecords } from './host-records.ts';
import type { PassOutcome, Work } from './pass.ts';
import { SyncError } from './types.ts';
import { listingMatchesRecord } from './unchanged.ts';
import type { Counters, ReconcileReport, SyncLogger } from './types.ts';

export interface ReconcileDeps {
  readonly driver: HypervisorDriver;
  readonly store: EngineStore;
  /** This host's records, kept by the engine's writes. */
  readonly records: HostRecords;
  readonly callTimeoutMs: number;
  /** The deployment's policy; a record's own overrides it. */
  readonly policy: Policy;
  readonly counters: Counters;
  readonly log: SyncLogger;
  readonly now: () => number;
  /** Queues a pass; resolves with its outcome. */
  pass(uuid: string, work: Work): Promise<PassOutcome>;
  /** True while a pass for the instance is queued or running. */
  passPending(uuid: string): boolean;
  /** True while this engine runs a task for the instance. */
  taskRunning(uuid: string): boolean;
  /** Clears tasks nobody runs whose time is up; resolves with how many. */
  expireTasks(records: Iterable<InstanceRecord>): Promise<number>;
  /** This host's name, or undefined before the engine knows it. */
  hostName(): string | undefined;
  connected(): boolean;
  /** Bumped on every disconnect, so a reconcile that spanned one does not count as fresh. */
  connectionEpoch(): number;
  /** Why a reconcile cannot run now (the engine is not running), or null. */
  notRunning(): SyncError | null;
}

export class Reconciler {
  /** Set when events may have been lost (a disconnect, a failed reconcile): reconcile on connect. */
  needed = false;
  private reconciledEpoch = -1;
  private lastReconcileAt: number | null = null;
  /** Uuids something happened to since the current reconcile's listing began. */
  private readonly touched = new Set<string>();
  private current: Promise<ReconcileReport> | null = null;
  private next: Promise<ReconcileReport> | null = null;
  private timer: NodeJS.Timeout | undefined;
  /** Records found matching a listing entry, with that entry: an entry like it matches again. */
  private readonly matched = new WeakMap<InstanceRecord, ObservedInstance>();

  constructor(private readonly deps: ReconcileDeps) {}

  /** The reconcile under way, if any. */
  get running(): Promise<ReconcileReport> | null {
    return this.current;
  }

  /** True when a full reconcile completed within this connection. */
  freshFor(epoch: number): boolean {
    return this.reconciledEpoch === epoch;
  }

  /** Notes that an instance may be newer than the listing of the reconcile under way, if any. */
  touch(uuid: string): void {
    // Only a running reconcile reads the set: outside one it would only grow.
    if (this.current) this.touched.add(uuid);
  }

  /** Reconciles every `intervalMs` while connected and not already reconciling. */
  startTimer(intervalMs: number): void {
    if (intervalMs <= 0) return;
    this.timer = setInterval(() => {
      if (this.current || !this.deps.connected()) return;
      this.reconcile().catch((error: unknown) => {
        this.deps.log.warn({ err: error }, 'periodic reconcile failed');
      });
    }, intervalMs);
  }

  /** Stops the timer and waits for the reconcile under way (and one queued after it). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.allSettled([this.current, this.next]);
  }

  /** A full pass over the listing and this host's records. Passes never overlap: a call during one gets the next. */
  reconcile(): Promise<ReconcileReport> {
    const notRunning = this.deps.notRunning();
    if (notRunning) return Promise.reject(notRunning);
    if (this.current) {
      this.next ??= this.current
        .catch(() => undefined)
        .then(() => {
          this.next = null;
          return this.reconcile();
        });
      return this.next;
    }
    const run = this.run().finally(() => {
      this.current = null;
      this.touched.clear();
    });
    this.current = run;
    return run;
  }

  private async run(): Promise<ReconcileReport> {
    const { deps } = this;
    const { counters } = deps;
    const began = performance.now();
    const startedAt = deps.now();
    const epoch = deps.connectionEpoch();
    // Whatever lost events may also have lost track of writes: read the records afresh.
    if (this.needed) deps.records.forget();
    this.needed = false;
    counters.reconcileRuns++;
    try {
      if (!deps.connected()) throw new SyncError('disconnected', 'not connected to the hypervisor');
      // Whatever is touched from here on may be newer than the listing.
      this.touched.clear();
      const listing = await withTimeout(
        deps.driver.listInstances(),
        deps.callTimeoutMs,
        'listInstances',
      );
      const records = await deps.records.read();
      const tasksExpired = await deps.expireTasks(records.values());

      let reconfirmed = 0;
      let listedRecords = 0;
      const host = this.deps.hostName();
      const passes: Promise<PassOutcome>[] = [];
      for (const instance of listing) {
        const record = records.get(instance.uuid);
        if (record !== undefined) listedRecords++;
        const fresh =
          !this.touched.has(instance.uuid) &&
          !deps.passPending(instance.uuid) &&
          !deps.taskRunning(instance.uuid);
        if (!fresh) reconfirmed++;
        else if (record && host !== undefined && this.matches(record, instance, host)) continue;
        passes.push(
          deps.pass(instance.uuid, {
            cause: 'reconcile',
            event: null,
            listed: fresh ? instance : null,
            probe: false,
            realStop: false,
          }),
        );
      }
      const listedPasses = passes.length;
      // Every record was listed (uuids are unique in a listing): nothing to probe.
      const unlisted =
        listedRecords === records.size ? [] : this.unlisted(records.values(), listing);
      for (const record of unlisted) {
        passes.push(
          deps.pass(record.uuid, {
            cause: 'reconcile',
            event: null,
            listed: null,
            probe: true,
            realStop: false,
          }),
        );
      }
      const outcomes = await Promise.all(passes);

      const count = (test: (outcome: PassOutcome) => boolean): number =>
        outcomes.filter(test).length;
      const probes = outcomes.slice(listedPasses);
      const durationMs = performance.now() - began;
      const report: ReconcileReport = {
        startedAt,
        durationMs,
        listed: listing.length,
        drift: count((o) => o.wrote && o.cause === 'reconcile'),
        adopted: count((o) => o.wrote && o.cause === 'adopt'),
        missing: probes.filter((o) => o.observed === 'missing').length,
        gone: probes.filter((o) => o.observed === 'gone').length,
        reconfirmed,
        unconfirmed: count((o) => o.observed === 'unknown'),
        tasksExpired,
      };
      counters.driftFound += report.drift;
      counters.reconcileLastDurationMs = durationMs;
      counters.reconcileTotalDurationMs += durationMs;
      if (deps.connectionEpoch() === epoch && deps.connected()) this.reconciledEpoch = epoch;
      else this.needed = true;
      this.lastReconcileAt = deps.now();
      await this.markHost();
      // The first reconcile is the start-up's one summary line; each adoption is logged at debug.
      const message =
        counters.reconcileRuns === 1
          ? `adopted ${report.adopted} instances, ${report.drift} changed since last run`
          : 'reconciled';
      deps.log.info({ ...report }, message);
      return report;
    } catch (error) {
      counters.reconcileFailures++;
      this.needed = true;
      throw error;
    }
  }

  /** Whether a pass over the listing's entry would decide nothing for this record. */
  private matches(record: InstanceRecord, instance: ObservedInstance, host: string): boolean {
    // The comparison reads the entry's power state and reason only (unchanged.ts).
    const before = this.matched.get(record);
    if (before?.powerState === instance.powerState && before.reason === instance.reason) {
      return true;
    }
    if (!listingMatchesRecord(record, instance, host, this.deps.policy)) return false;
    this.matched.set(record, instance);
    return true;
  }

  /** Records the listing lacks; deleted is final, and probing it every period would only cost a lookup. */
  private unlisted(
    records: Iterable<InstanceRecord>,
    listing: readonly ObservedInstance[],
  ): InstanceRecord[] {
    const listed = new Set(listing.map((instance) => instance.uuid));
    return [...records].filter(
      (record) => !listed.has(record.uuid) && record.vmState !== 'deleted',
    );
  }

  /** Records this host's connection and last reconcile; a failure is logged, never thrown. */
  async markHost(): Promise<void> {
    const name = this.deps.hostName();
    if (name === undefined) return;
    try {
      await this.deps.store.upsertHost({
        name,
        driver: this.deps.driver.kind,
        connected: this.deps.connected(),
        lastSeenAt: this.deps.now(),
        lastReconcileAt: this.lastReconcileAt,
      });
    } catch (error) {
      this.deps.log.error({ err: error }, 'could not record host state');
    }
  }
}
