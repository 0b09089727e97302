// Host and reader credentials in PostgreSQL. Two replicas adding the same new name at once both
// pass the SELECT; the partial unique index lets one insert commit, and the other, tried again,
// finds it (and answers `exists`, or replaces it).
//
// A revocation is announced with a NOTIFY in its own transaction, so that every replica can
// forget the credentials it looked up at once instead of believing them for a while: a revoked
// host stops everywhere when the revocation commits.
import type postgres from 'postgres';
import { CREDENTIAL_ORDER, credentialFromRow } from './credentials.ts';
import type { CredentialRow } from './credentials.ts';
import type { CredentialStore } from './ports.ts';
import type {
  AddCredentialResult,
  CredentialKind,
  CredentialRecord,
  NewCredential,
} from './types.ts';

/** SQLSTATE unique_violation: another replica added the same name in the meantime. */
const UNIQUE_VIOLATION = '23505';
/** Wait before listening again for revocations after the listen itself failed. */
const LISTEN_RETRY_MS = 5_000;

export class PostgresCredentials implements CredentialStore {
  private readonly watchers = new Set<(heard: boolean) => void>();
  private listening: Promise<void> | null = null;
  private retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly sql: postgres.Sql,
    /** Runs a query on the open store, turning database errors into StoreErrors. */
    private readonly read: <T>(query: () => Promise<T>) => Promise<T>,
    private readonly now: () => number,
    /** Where revocations are announced: the schema's own channel (revocationsChannel). */
    private readonly channel: string,
  ) {}

  watchRevocations(listener: (heard: boolean) => void): () => void {
    this.watchers.add(listener);
    this.listening ??= this.listen();
    return () => {
      this.watchers.delete(listener);
      if (this.watchers.size === 0) clearTimeout(this.retry);
    };
  }

  /** Stops trying to listen again; the listening connection ends with the store's pool. */
  close(): void {
    clearTimeout(this.retry);
    this.watchers.clear();
  }

  private listen(): Promise<void> {
    // The second callback runs each time the listening connection (re)starts: a revocation
    // committed while it was down was not heard, so it counts as one.
    return this.sql
      .listen(
        this.channel,
        () => this.tell(true),
        () => this.tell(true),
      )
      .then(
        () => {},
        () => {
          this.tell(false);
          this.retry = setTimeout(() => {
            this.listening = this.watchers.size === 0 ? null : this.listen();
          }, LISTEN_RETRY_MS);
          this.retry.unref();
        },
      );
  }

  private tell(heard: boolean): void {
    for (const watcher of this.watchers) watcher(heard);
  }

  async addCredential(credential: NewCredential): Promise<AddCredentialResult> {
    const { kind, name, tokenHash } = credential;
    const now = this.now();
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.read(() =>
          this.sql.begin(async (tx): Promise<AddCredentialResult> => {
            const [current] = await tx<CredentialRow[]>`
              SELECT * FROM credentials
              WHERE kind = ${kind}::text AND name = ${name}::text AND revoked_at IS NULL
              FOR UPDATE`;
            if (current !== undefined) {
              if (credential.replace !== true) {
                return { ok: false, reason: 'exists', current: credentialFromRow(current) };
              }
              await tx`UPDATE credentials SET revoked_at = ${now}::bigint
                       WHERE kind = ${kind}::text AND name = ${name}::text AND revoked_at IS NULL`;
              await tx`SELECT pg_notify(${this.channel}::text, '')`;
            }
            const [row] = await tx<CredentialRow[]>`
              INSERT INTO credentials (kind, name, token_hash, created_at)
              VALUES (${kind}::text, ${name}::text, ${tokenHash}::text, ${now}::bigint)
              RETURNING *`;
            return { ok: true, credential: credentialFromRow(row!) };
          }),
        );
      } catch (error) {
        // Two adds of a new name raced past the SELECT: the loser reads the winner's row.
        if (attempt > 1 || !isUniqueViolation(error)) throw error;
      }
    }
  }

  async revokeCredential(kind: CredentialKind, name: string): Promise<CredentialRecord | null> {
    const row = await this.read(() =>
      this.sql.begin(async (tx) => {
        const [revoked] = await tx<CredentialRow[]>`
          UPDATE credentials SET revoked_at = ${this.now()}::bigint
          WHERE kind = ${kind}::text AND name = ${name}::text AND revoked_at IS NULL
          RETURNING *`;
        if (revoked !== undefined) await tx`SELECT pg_notify(${this.channel}::text, '')`;
        return revoked;
      }),
    );
    return row === undefined ? null : credentialFromRow(row);
  }

  async findCredential(tokenHash: string): Promise<CredentialRecord | null> {
    const [row] = await this.read(
      () => this.sql<CredentialRow[]>`
        SELECT * FROM credentials WHERE token_hash = ${tokenHash}::text`,
    );
    return row === undefined ? null : credentialFromRow(row);
  }

  async listCredentials(): Promise<CredentialRecord[]> {
    const rows = await this.read(() =>
      this.sql.unsafe<CredentialRow[]>(`SELECT * FROM credentials ${CREDENTIAL_ORDER}`),
    );
    return rows.map(credentialFromRow);
  }
}

function isUniqueViolation(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < 3 && current instanceof Error; depth++) {
    if ((current as { code?: unknown }).code === UNIQUE_VIOLATION) return true;
    current = current.cause;
  }
  return false;
}
