// The agent's copy of its host's records (the informer's cache): filled by listing, kept current
// by the watch and by the answers to its own writes, and, while the control plane cannot be
// reached, by its own writes applied optimistically. A record only ever moves forward: an older
// version than the one held is ignored.
import type { ApiInstance } from '../server/index.ts';
import type { InstanceFilter, InstanceRecord, InstanceWrite, WriteResult } from '../store/index.ts';

export class RecordCache {
  private readonly records = new Map<string, InstanceRecord>();

  get(uuid: string): InstanceRecord | null {
    return this.records.get(uuid) ?? null;
  }

  get size(): number {
    return this.records.size;
  }

  /** Keeps `record` unless a newer version is held; true when it was taken. */
  offer(record: InstanceRecord): boolean {
    const held = this.records.get(record.uuid);
    if (held !== undefined && held.version >= record.version) return false;
    this.records.set(record.uuid, record);
    return true;
  }

  /** Puts back what was held before (null: nothing), undoing an optimistic write. */
  restore(uuid: string, record: InstanceRecord | null): void {
    if (record === null) this.records.delete(uuid);
    else this.records.set(uuid, record);
  }

  /**
   * After a full listing of `host`: its records as listed, except those held at a newer
   * version (written here meanwhile), and records of the host the listing lacks are forgotten
   * unless `keep` says they have writes still to send.
   */
  replaceHost(
    host: string,
    listed: readonly InstanceRecord[],
    keep: (uuid: string) => boolean,
  ): void {
    const seen = new Set<string>();
    for (const record of listed) {
      seen.add(record.uuid);
      this.offer(record);
    }
    for (const [uuid, record] of this.records) {
      if (record.host === host && !seen.has(uuid) && !keep(uuid)) this.records.delete(uuid);
    }
  }

  /** The engine's listing: one host, filtered, ordered by uuid, paged by keyset. */
  list(filter: InstanceFilter & { readonly host: string }): InstanceRecord[] {
    const out: InstanceRecord[] = [];
    for (const record of this.records.values()) {
      if (record.host !== filter.host) continue;
      if (filter.vmState !== undefined && record.vmState !== filter.vmState) continue;
      if (filter.powerState !== undefined && record.powerState !== filter.powerState) continue;
      if (filter.hideDeleted === true && record.vmState === 'deleted') continue;
      if (filter.after !== undefined && record.uuid <= filter.after) continue;
      out.push(record);
    }
    out.sort((a, b) => (a.uuid < b.uuid ? -1 : a.uuid > b.uuid ? 1 : 0));
    return out.slice(0, Math.max(0, Math.min(filter.limit ?? 100, 1_000)));
  }

  /**
   * A write applied here as the control plane would apply it, for while it cannot be asked:
   * conditional on the version held, the version then one higher.
   */
  applyOptimistically(write: InstanceWrite, now: number): WriteResult {
    const held = this.records.get(write.uuid) ?? null;
    let record: InstanceRecord;
    if (write.kind === 'create') {
      if (held !== null) return { ok: false, reason: 'exists', current: held };
      record = { ...write.fields, uuid: write.uuid, version: 1, createdAt: now, updatedAt: now };
    } else {
      if (held === null) return { ok: false, reason: 'not-found', current: null };
      if (held.version !== write.expectedVersion) {
        return { ok: false, reason: 'conflict', current: held };
      }
      const patch = Object.fromEntries(
        Object.entries(write.patch).filter(([, value]) => value !== undefined),
      );
      record = { ...held, ...patch, version: held.version + 1, updatedAt: now };
    }
    this.records.set(record.uuid, record);
    // Revision 0: no revision is known until the control plane has it.
    return { ok: true, instance: record, revision: 0 };
  }
}

/** A record as the API shows it, back as the store's: ISO times to epoch ms. */
export function recordFromApi(instance: ApiInstance): InstanceRecord {
  // The staleness is the control plane's view of this host, not part of the record.
  const { powerStateStale, ...fields } = instance;
  void powerStateStale;
  return {
    ...fields,
    taskStartedAt: instance.taskStartedAt === null ? null : Date.parse(instance.taskStartedAt),
    createdAt: Date.parse(instance.createdAt),
    updatedAt: Date.parse(instance.updatedAt),
  };
}
