export * from './types.ts';
export type { CredentialStore, EngineStore, ReadStore, Store } from './ports.ts';
export { openSqliteStore, SqliteStore } from './sqlite.ts';
export type { SqliteStoreOptions, SqliteStoreStats } from './sqlite.ts';
export { openPostgresStore, PostgresStore, reconnectDelaySeconds } from './postgres.ts';
export type { PostgresStoreOptions } from './postgres.ts';
export { isPostgresUrl, openStore } from './open.ts';
