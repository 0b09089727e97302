// Issuing and revoking host and reader tokens: shared by the admin API and `hvsync hosts add`
// against the database, so both give the same tokens and the same refusals.
import type { CredentialKind, CredentialRecord, CredentialStore } from '../store/index.ts';
import { newToken, tokenHash } from './auth.ts';
import type { ApiCredential } from './types.ts';

/** Host names as hypervisors report them (FQDNs too), and reader labels: one plain word. */
export const CREDENTIAL_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$';
const NAME = new RegExp(CREDENTIAL_NAME_PATTERN);

/** Why `name` cannot name a credential, or null when it can. */
export function credentialNameRefusal(kind: CredentialKind, name: string): string | null {
  if (NAME.test(name)) return null;
  return (
    `invalid ${kind} name '${name.slice(0, 80)}': letters, digits, '.', '_', ':' and '-', ` +
    'starting with a letter or digit, at most 253 characters'
  );
}

export type IssueResult =
  | { readonly ok: true; readonly token: string; readonly credential: CredentialRecord }
  | { readonly ok: false; readonly current: CredentialRecord };

/** Makes a new token for the name and records its hash; the token itself exists only here. */
export async function issueToken(
  store: Pick<CredentialStore, 'addCredential'>,
  kind: CredentialKind,
  name: string,
  replace = false,
): Promise<IssueResult> {
  const token = newToken();
  const result = await store.addCredential({ kind, name, tokenHash: tokenHash(token), replace });
  return result.ok
    ? { ok: true, token, credential: result.credential }
    : { ok: false, current: result.current };
}

/** The one-line refusal when the name has a token already. */
export function existsMessage(current: CredentialRecord): string {
  const command = current.kind === 'host' ? 'hosts' : 'readers';
  return (
    `${current.kind} '${current.name}' already has a token (issued ` +
    `${new Date(current.createdAt).toISOString()}): revoke it first (hvsync ${command} revoke ` +
    `${current.name}) or replace it (--replace)`
  );
}

export function noTokenMessage(kind: CredentialKind, name: string): string {
  return `${kind} '${name}' has no valid token to revoke`;
}

export function apiCredential(record: CredentialRecord): ApiCredential {
  return {
    kind: record.kind,
    name: record.name,
    createdAt: new Date(record.createdAt).toISOString(),
    revokedAt: record.revokedAt === null ? null : new Date(record.revokedAt).toISOString(),
  };
}
