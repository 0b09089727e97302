export * from './types.ts';
export { openSqliteStore, SqliteStore } from './sqlite.ts';
export type { SqliteStoreOptions, SqliteStoreStats } from './sqlite.ts';
