// A hypervisor host's agent: the store its engine sees when the records live in the control
// plane (a cache of this host's records, writes through the API), and the outage journal.
export { Backoff } from './backoff.ts';
export { AgentError } from './errors.ts';
export type { AgentErrorCode } from './errors.ts';
export { Journal, SEQ_GAP } from './journal.ts';
export type { JournalEntry, JournalOptions } from './journal.ts';
export { rebaseObservation } from './rebase.ts';
export { RecordCache, recordFromApi } from './cache.ts';
export { RemoteStore } from './remote-store.ts';
export type { RemoteStoreOptions, RemoteStoreStats } from './remote-store.ts';
