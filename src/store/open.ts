// Picks the store for a --db value: PostgreSQL for a postgres:// or postgresql:// URL, otherwise
// an SQLite file at that path.
import { openPostgresStore } from './postgres.ts';
import { openSqliteStore } from './sqlite.ts';
import type { Store } from './ports.ts';
import type { StoreOptions } from './types.ts';

export function isPostgresUrl(db: string): boolean {
  return /^postgres(ql)?:\/\//i.test(db);
}

export async function openStore(db: string, options: StoreOptions = {}): Promise<Store> {
  return isPostgresUrl(db) ? openPostgresStore(db, options) : openSqliteStore(db, options);
}
