// Which host each record is on, as this process last saw it, so that a host's writes are checked
// without reading their records back: the store's change feed keeps it current, and records read
// for a check are kept too. An entry answers only for the version it holds. Versions only grow
// and records are never deleted, so the record at that version is on that host; a write made over
// it either finds it still there or is refused by the store as a conflict. A feed that lags, or
// missed changes, costs a read, never a wrong answer.
import type { ChangeRecord, InstanceRecord } from '../store/index.ts';

/** What the per-write check needs of a record. */
export type RecordOwner = Pick<InstanceRecord, 'uuid' | 'host' | 'version'>;

/** Entries kept at most; past it the map starts afresh (bounded memory, whatever comes). */
const MAX_OWNERS = 2_000_000;

export class RecordOwners {
  private readonly owners = new Map<string, { readonly host: string; readonly version: number }>();

  constructor(private readonly limit = MAX_OWNERS) {}

  get size(): number {
    return this.owners.size;
  }

  /** Takes in every commit the process sees (the store's subscribe). */
  follow(changes: readonly ChangeRecord[]): void {
    for (const change of changes) this.learn(change.instance);
  }

  /** Keeps `record` unless a newer version of it is known. */
  learn(record: RecordOwner): void {
    const known = this.owners.get(record.uuid);
    if (known !== undefined && known.version >= record.version) return;
    if (known === undefined && this.owners.size >= this.limit) this.owners.clear();
    this.owners.set(record.uuid, { host: record.host, version: record.version });
  }

  /** The record at `version`, if that is the version known. */
  at(uuid: string, version: number): RecordOwner | undefined {
    const known = this.owners.get(uuid);
    return known?.version === version ? { uuid, ...known } : undefined;
  }
}
