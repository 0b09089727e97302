// The store as its two clients see it. The sync engine reads one instance at a time and writes
// conditionally; the API reads pages, history and the change feed. Each side depends only on
// its port, so a store backend is checked against exactly what each client uses.
import type {
  AddCredentialResult,
  ChangeRecord,
  CredentialKind,
  CredentialRecord,
  ChangesPage,
  HostRecord,
  HostStatus,
  InstanceFilter,
  NewCredential,
  InstanceRecord,
  InstanceWrite,
  StoreError,
  StoreStats,
  TransitionRecord,
  WriteResult,
} from './types.ts';

/** What the sync engine needs: its host's records, conditional writes, its host's status. */
export interface EngineStore {
  getInstance(uuid: string): Promise<InstanceRecord | null>;
  /** The engine lists by host only; the filter is shared with readers to keep one query. */
  listInstances(filter: InstanceFilter & { readonly host: string }): Promise<InstanceRecord[]>;
  /** Conditional write. Writes arriving together are committed in one transaction. */
  write(write: InstanceWrite): Promise<WriteResult>;
  /** Creates or updates the host's row; its connection error is left as it was. */
  upsertHost(host: HostStatus): Promise<void>;
  /** Sets (or, with null, clears) why the host's hypervisor connection is down. */
  recordConnectionError(host: string, error: string | null): Promise<void>;
  listHosts(): Promise<HostRecord[]>;
  /** Why writes cannot commit right now (disk full, database gone), or null while they do. */
  readonly writeFailure: StoreError | null;
}

/** What readers (the API, watchers) need: queries, history, the change feed, hosts. */
export interface ReadStore {
  getInstance(uuid: string): Promise<InstanceRecord | null>;
  /**
   * The records of those `uuids` that are recorded, by uuid, read in one query: a uuid matches
   * as it does in getInstance (exactly), and one not recorded is left out.
   */
  getInstances(uuids: readonly string[]): Promise<ReadonlyMap<string, InstanceRecord>>;
  listInstances(filter?: InstanceFilter): Promise<InstanceRecord[]>;
  /** Transitions of one instance, newest first. */
  history(
    uuid: string,
    options?: { limit?: number; beforeId?: number },
  ): Promise<TransitionRecord[]>;
  /** Changes with revision > `since`, oldest first. */
  changesSince(since: number, limit?: number): Promise<ChangesPage>;
  /** Called after each commit with the changes it made, in revision order. */
  subscribe(listener: (changes: readonly ChangeRecord[]) => void): () => void;
  listHosts(): Promise<HostRecord[]>;
}

/**
 * Host and reader tokens, by hash. A name has at most one valid credential at a time; revoked
 * ones are kept so that their token is told it was revoked rather than that it is unknown.
 */
export interface CredentialStore {
  addCredential(credential: NewCredential): Promise<AddCredentialResult>;
  /** Revokes the name's valid credential; null when it has none. */
  revokeCredential(kind: CredentialKind, name: string): Promise<CredentialRecord | null>;
  /** The credential with this token hash, valid or revoked; null when none has it. */
  findCredential(tokenHash: string): Promise<CredentialRecord | null>;
  /** Every credential, valid and revoked, by kind, name, then newest first. */
  listCredentials(): Promise<CredentialRecord[]>;
  /**
   * Where the store can announce revocations made by any process on its database: `listener` is
   * called with true on each (and when hearing them starts again, as news may have been missed),
   * with false while they cannot be heard. Absent where the store cannot: a looked-up credential
   * is then believed a short while only.
   */
  watchRevocations?(listener: (heard: boolean) => void): () => void;
}

/** Both ports plus what only the process that opened the store does with it. */
export interface Store extends EngineStore, ReadStore {
  listInstances(filter?: InstanceFilter): Promise<InstanceRecord[]>;
  /** The credentials kept in the same database (closed with the store). */
  readonly credentials: CredentialStore;
  readonly stats: StoreStats;
  /** Commits what is pending, then closes. */
  close(): Promise<void>;
}
