// Host and reader credentials in PostgreSQL. Two replicas adding the same new name at once both
// pass the SELECT; the partial unique index lets one insert commit, and the other, tried again,
// finds it (and answers `exists`, or replaces it).
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

export class PostgresCredentials implements CredentialStore {
  constructor(
    private readonly sql: postgres.Sql,
    /** Runs a query on the open store, turning database errors into StoreErrors. */
    private readonly read: <T>(query: () => Promise<T>) => Promise<T>,
    private readonly now: () => number,
  ) {}

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
    const [row] = await this.read(
      () => this.sql<CredentialRow[]>`
        UPDATE credentials SET revoked_at = ${this.now()}::bigint
        WHERE kind = ${kind}::text AND name = ${name}::text AND revoked_at IS NULL
        RETURNING *`,
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
