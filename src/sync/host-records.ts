// This host's records, held in memory for the reconcile. Re-reading a thousand records from the
// store every period only to find them as the engine left them is most of what a reconcile costs
// at rest; so the engine's own writes, which all pass through one door (write.ts), keep this copy
// current, a write that loses to another writer brings back the store's record, and the store is
// read in full at the first reconcile, after anything that may have lost track (a disconnect, a
// failed reconcile), and every `fullReadEvery`-th time in between, for writers that are not this
// engine (a control plane recording a task, say).
//
// Only the reconcile reads it, and only to tell which listed instances need a pass: a pass always
// reads its record from the store, so a stale copy here can delay a correction by at most
// `fullReadEvery` periods, never make one wrong.
import type { EngineStore, InstanceRecord, InstanceWrite, WriteResult } from '../store/index.ts';
import { SyncError } from './types.ts';

const PAGE = 1_000;

export interface HostRecordsDeps {
  readonly store: EngineStore;
  /** This host's name, or undefined before the engine knows it. */
  hostName(): string | undefined;
  /** Read the store in full every this many reads (1: always). */
  readonly fullReadEvery: number;
}

export class HostRecords {
  private readonly byUuid = new Map<string, InstanceRecord>();
  /** Reads since the last full read; at `fullReadEvery` the next read is a full one. */
  private readsSinceFull = Number.POSITIVE_INFINITY;
  /** Set while a full read is under way: writes that land meanwhile, newest version each. */
  private landedDuringRead: Map<string, InstanceRecord | null> | null = null;

  constructor(private readonly deps: HostRecordsDeps) {}

  /**
   * Every record of this host, keyed by uuid: from memory, or read from the store in full when
   * it is time to. The map stays live (later writes update it): read it before the next await.
   */
  async read(): Promise<ReadonlyMap<string, InstanceRecord>> {
    if (this.readsSinceFull + 1 >= this.deps.fullReadEvery) await this.readAll();
    else this.readsSinceFull++;
    return this.byUuid;
  }

  /** Every record of this host, read from the store now, page by page. */
  async readAll(): Promise<ReadonlyMap<string, InstanceRecord>> {
    const host = this.deps.hostName();
    if (host === undefined) throw new SyncError('not-running', 'engine not started');
    const landed = new Map<string, InstanceRecord | null>();
    this.landedDuringRead = landed;
    const read: InstanceRecord[] = [];
    try {
      let after: string | undefined;
      for (;;) {
        const page = await this.deps.store.listInstances({ host, limit: PAGE, after });
        read.push(...page);
        if (page.length < PAGE) break;
        after = page[page.length - 1]!.uuid;
      }
    } catch (error) {
      this.forget();
      throw error;
    } finally {
      if (this.landedDuringRead === landed) this.landedDuringRead = null;
    }
    this.byUuid.clear();
    for (const record of read) this.byUuid.set(record.uuid, record);
    // A page read before a write landed holds the older record: the write's is the newer one.
    for (const [uuid, record] of landed) this.put(uuid, record);
    this.readsSinceFull = 0;
    return this.byUuid;
  }

  /** The next read goes to the store. */
  forget(): void {
    this.readsSinceFull = Number.POSITIVE_INFINITY;
  }

  /** What a conditional write left in the store: its record, or the one it lost to. */
  written(write: InstanceWrite, result: WriteResult): void {
    this.landed(write.uuid, result.ok ? result.instance : result.current);
  }

  /**
   * A record another writer changed (an agent's watch, or its replay of an outage journal brings
   * it): taken when newer than the copy, so the next reconcile compares the listing with it.
   */
  changedElsewhere(record: InstanceRecord): void {
    this.landed(record.uuid, record);
  }

  /** A write whose outcome is unknown (it threw): the store's record is read when next needed. */
  unsure(uuid: string): void {
    this.landedDuringRead?.set(uuid, null);
    this.byUuid.delete(uuid);
  }

  /** What the store holds for `uuid` now; a full read under way keeps it over what it read. */
  private landed(uuid: string, record: InstanceRecord | null): void {
    this.landedDuringRead?.set(uuid, newer(this.landedDuringRead.get(uuid), record));
    this.put(uuid, record);
  }

  private put(uuid: string, record: InstanceRecord | null): void {
    const cached = this.byUuid.get(uuid);
    // Results can arrive out of order: the higher version is the store's later state.
    if (record !== null && cached !== undefined && cached.version > record.version) return;
    // Gone, or moved to another host: not this host's to reconcile any more.
    if (record === null || record.host !== this.deps.hostName()) this.byUuid.delete(uuid);
    else this.byUuid.set(uuid, record);
  }
}

function newer(
  a: InstanceRecord | null | undefined,
  b: InstanceRecord | null,
): InstanceRecord | null {
  if (a === undefined || a === null || b === null) return b;
  return a.version > b.version ? a : b;
}
