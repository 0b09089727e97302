// The credentials table's rows as records, shared by both stores (their columns are the same).
import type { CredentialKind, CredentialRecord } from './types.ts';

export interface CredentialRow {
  kind: string;
  name: string;
  token_hash: string;
  created_at: number;
  revoked_at: number | null;
}

export function credentialFromRow(row: CredentialRow): CredentialRecord {
  return {
    kind: row.kind as CredentialKind,
    name: row.name,
    tokenHash: row.token_hash,
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
  };
}

export const CREDENTIAL_ORDER = 'ORDER BY kind, name, created_at DESC, id DESC';
