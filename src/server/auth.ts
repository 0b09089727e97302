// Who a request speaks for: the admin (the server's own --token), a reader, or one hypervisor
// host's agent. Resolved once per request from its bearer token.
//
// The admin token is compared in constant time: both sides are hashed first, so the comparison
// takes the same time whatever the length or content of what the client sent. Host and reader
// tokens are looked up by their sha256 in the store. That lookup is not constant-time, and needs
// not be: what an attacker could learn from its timing is something about the hash of a guess,
// which says nothing about any real token. They are 256 random bits, so a plain sha256 is enough
// to store them: a slow password hash defends guessable secrets, and there is no dictionary for
// these.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { CredentialRecord, CredentialStore } from '../store/index.ts';

export type Principal =
  | { readonly kind: 'admin' }
  | { readonly kind: 'reader'; readonly name: string }
  | { readonly kind: 'host'; readonly host: string };

export type Authentication =
  | { readonly ok: true; readonly principal: Principal }
  | {
      readonly ok: false;
      /** unauthorized: no or unknown token; forbidden: a revoked one; unavailable: no store. */
      readonly code: 'unauthorized' | 'forbidden' | 'unavailable';
      readonly message: string;
    };

/** Marks hvsync's issued tokens, so that one pasted in the wrong place is recognisable. */
export const TOKEN_PREFIX = 'hvs_';

/** A new host or reader token: 32 random bytes. */
export function newToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

/** What the store keeps of a token: its sha256, lowercase hex. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * How long a looked-up credential is believed without asking the store again, where the store
 * cannot announce revocations: a token revoked by another process stops working here within
 * this time.
 */
export const CREDENTIAL_CACHE_MS = 5_000;
/**
 * The same where revocations are announced (PostgreSQL): each one empties the cache, so this is
 * only the bound for one not heard while the announcing connection was down and coming back.
 * An agent reporting every 10 s is looked up once a minute rather than on every request.
 */
export const ANNOUNCED_CREDENTIAL_CACHE_MS = 60_000;
/** Credentials cached at most; past it the cache starts afresh (bounded memory, whatever comes). */
const MAX_CACHED = 10_000;

export interface AuthenticatorOptions {
  /** The admin token; without it a request with no token is the admin (loopback only). */
  readonly adminToken?: string;
  /** Where host and reader tokens are looked up; without it only the admin token exists. */
  readonly credentials?: Pick<CredentialStore, 'findCredential' | 'watchRevocations'>;
  /** How long a lookup is believed: CREDENTIAL_CACHE_MS, or ANNOUNCED_… while revocations are heard. */
  readonly cacheMs?: number;
  readonly announcedCacheMs?: number;
  readonly now?: () => number;
}

interface Cached {
  readonly lookup: Promise<CredentialRecord | null>;
  readonly until: number;
}

export class Authenticator {
  /** True when requests must carry a token: the server has an admin token. */
  readonly required: boolean;
  private readonly admin: Buffer | null;
  private readonly credentials: Pick<CredentialStore, 'findCredential' | 'watchRevocations'> | null;
  private readonly cacheMs: number;
  private readonly announcedCacheMs: number;
  /** True while the store announces revocations to this replica (see watchRevocations). */
  private heard = false;
  private readonly unwatch: () => void;
  private readonly now: () => number;
  private readonly cache = new Map<string, Cached>();

  constructor(options: AuthenticatorOptions) {
    this.admin = options.adminToken === undefined ? null : digest(options.adminToken);
    this.required = this.admin !== null;
    this.credentials = options.credentials ?? null;
    this.cacheMs = options.cacheMs ?? CREDENTIAL_CACHE_MS;
    this.announcedCacheMs = options.announcedCacheMs ?? ANNOUNCED_CREDENTIAL_CACHE_MS;
    this.now = options.now ?? Date.now;
    this.unwatch =
      this.credentials?.watchRevocations?.((heard) => {
        this.heard = heard;
        this.forget();
      }) ?? (() => {});
  }

  /** Stops hearing revocations. */
  close(): void {
    this.unwatch();
  }

  async authenticate(authorization: string | undefined): Promise<Authentication> {
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? '');
    const token = match?.[1];
    if (this.admin !== null) {
      // A missing header is still compared, so its timing matches a wrong token's.
      const isAdmin = timingSafeEqual(digest(token ?? ''), this.admin);
      if (isAdmin && token !== undefined) return { ok: true, principal: { kind: 'admin' } };
    }
    if (token !== undefined && this.credentials !== null) {
      let credential: CredentialRecord | null;
      try {
        credential = await this.find(tokenHash(token));
      } catch {
        return {
          ok: false,
          code: 'unavailable',
          message: 'cannot check the token: the database does not answer; try again',
        };
      }
      if (credential !== null) return fromCredential(credential);
    }
    // No admin token: the server serves loopback only, and whoever reaches it is the admin.
    if (this.admin === null) return { ok: true, principal: { kind: 'admin' } };
    return {
      ok: false,
      code: 'unauthorized',
      message:
        authorization === undefined
          ? 'missing bearer token (Authorization: Bearer ...)'
          : 'missing or wrong bearer token (Authorization: Bearer ...)',
    };
  }

  /** Forgets what was looked up, so a revocation on this replica takes effect at once. */
  forget(): void {
    this.cache.clear();
  }

  private find(hash: string): Promise<CredentialRecord | null> {
    const now = this.now();
    const cached = this.cache.get(hash);
    if (cached !== undefined && cached.until > now) return cached.lookup;
    if (this.cache.size >= MAX_CACHED) this.cache.clear();
    // Requests arriving together with one token share one lookup.
    const lookup = this.credentials!.findCredential(hash);
    const entry = { lookup, until: now + (this.heard ? this.announcedCacheMs : this.cacheMs) };
    this.cache.set(hash, entry);
    lookup.then(
      // Unknown tokens are not kept: a flood of wrong ones must not fill the cache.
      (found) => {
        if (found === null && this.cache.get(hash) === entry) this.cache.delete(hash);
      },
      () => {
        if (this.cache.get(hash) === entry) this.cache.delete(hash);
      },
    );
    return lookup;
  }
}

function fromCredential(credential: CredentialRecord): Authentication {
  const who = `${credential.kind} '${credential.name}'`;
  if (credential.revokedAt !== null) {
    const again =
      credential.kind === 'host'
        ? `hvsync hosts add ${credential.name}`
        : `hvsync readers add ${credential.name}`;
    return {
      ok: false,
      code: 'forbidden',
      message:
        `the token of ${who} was revoked at ${new Date(credential.revokedAt).toISOString()}; ` +
        `an admin can issue a new one (${again})`,
    };
  }
  return {
    ok: true,
    principal:
      credential.kind === 'host'
        ? { kind: 'host', host: credential.name }
        : { kind: 'reader', name: credential.name },
  };
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}
