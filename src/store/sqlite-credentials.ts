// Host and reader credentials in the SQLite file: one statement each, one transaction to replace.
import type Database from 'better-sqlite3';
import { CREDENTIAL_ORDER, credentialFromRow } from './credentials.ts';
import type { CredentialRow } from './credentials.ts';
import type { CredentialStore } from './ports.ts';
import type {
  AddCredentialResult,
  CredentialKind,
  CredentialRecord,
  NewCredential,
} from './types.ts';

type Statement<P extends unknown[], R = unknown> = Database.Statement<P, R>;

export class SqliteCredentials implements CredentialStore {
  private readonly selectValid: Statement<[string, string], CredentialRow>;
  private readonly insert: Statement<[string, string, string, number], CredentialRow>;
  private readonly revoke: Statement<[number, string, string], CredentialRow>;
  private readonly selectByHash: Statement<[string], CredentialRow>;
  private readonly selectAll: Statement<[], CredentialRow>;
  private readonly addTransaction: Database.Transaction<
    (credential: NewCredential, now: number) => AddCredentialResult
  >;

  constructor(
    db: Database.Database,
    /** Runs a body on the open store, turning database errors into StoreErrors. */
    private readonly guard: <T>(body: () => T) => T,
    private readonly now: () => number,
  ) {
    this.selectValid = db.prepare(
      'SELECT * FROM credentials WHERE kind = ? AND name = ? AND revoked_at IS NULL',
    );
    this.insert = db.prepare(
      `INSERT INTO credentials (kind, name, token_hash, created_at) VALUES (?, ?, ?, ?)
       RETURNING *`,
    );
    this.revoke = db.prepare(
      `UPDATE credentials SET revoked_at = ? WHERE kind = ? AND name = ? AND revoked_at IS NULL
       RETURNING *`,
    );
    this.selectByHash = db.prepare('SELECT * FROM credentials WHERE token_hash = ?');
    this.selectAll = db.prepare(`SELECT * FROM credentials ${CREDENTIAL_ORDER}`);
    this.addTransaction = db.transaction((credential, now) => {
      const { kind, name, tokenHash } = credential;
      const current = this.selectValid.get(kind, name);
      if (current !== undefined) {
        if (credential.replace !== true) {
          return { ok: false, reason: 'exists', current: credentialFromRow(current) };
        }
        this.revoke.get(now, kind, name);
      }
      return {
        ok: true,
        credential: credentialFromRow(this.insert.get(kind, name, tokenHash, now)!),
      };
    });
  }

  async addCredential(credential: NewCredential): Promise<AddCredentialResult> {
    return this.guard(() => this.addTransaction.immediate(credential, this.now()));
  }

  async revokeCredential(kind: CredentialKind, name: string): Promise<CredentialRecord | null> {
    return this.guard(() => {
      const row = this.revoke.get(this.now(), kind, name);
      return row === undefined ? null : credentialFromRow(row);
    });
  }

  async findCredential(tokenHash: string): Promise<CredentialRecord | null> {
    return this.guard(() => {
      const row = this.selectByHash.get(tokenHash);
      return row === undefined ? null : credentialFromRow(row);
    });
  }

  async listCredentials(): Promise<CredentialRecord[]> {
    return this.guard(() => this.selectAll.all().map(credentialFromRow));
  }
}
