// Opening the SQLite file so that every way it can be unusable is found at open, with a message
// that names the file and says what is wrong, instead of a service that starts, says ready and
// then fails every write.
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { StoreError } from './types.ts';

/** How long a second opener waits for the holder's lock before refusing, ms. */
const LOCK_WAIT_MS = 1_000;
/** quick_check stops after this many problems; the first few say enough. */
const QUICK_CHECK_MAX_ERRORS = 5;

export interface SqliteOpenOptions {
  /** Hold an exclusive lock on the file for as long as it is open. */
  readonly exclusive: boolean;
  /** Run `PRAGMA quick_check` at open (proportional to the file's size). */
  readonly integrityCheck: boolean;
  readonly busyTimeoutMs: number;
}

/**
 * Opens `path` read-write in WAL mode. With `exclusive`, the connection keeps SQLite's own
 * exclusive file lock until it closes: a second process is refused at open, and because the lock
 * is a kernel (fcntl) lock on the file itself, a holder that dies for any reason, SIGKILL
 * included, releases it with its last breath.
 */
export function openSqliteFile(path: string, options: SqliteOpenOptions): Database.Database {
  const memory = path === ':memory:' || path === '';
  if (!memory) checkWritable(path);
  let db: Database.Database | undefined;
  try {
    db = new Database(path, { timeout: options.exclusive ? LOCK_WAIT_MS : options.busyTimeoutMs });
    // Set before anything touches the file: the mode decides how the first read locks it.
    if (options.exclusive) db.pragma('locking_mode = EXCLUSIVE');
    // The first statement reads the header: a file that is not SQLite fails here.
    db.pragma('journal_mode = WAL');
    // Takes the lock now rather than at the first write, so a second process is refused at open.
    if (options.exclusive) db.exec('BEGIN EXCLUSIVE; COMMIT');
    // With WAL, NORMAL loses at most the last commits on power loss, never consistency.
    db.pragma('synchronous = NORMAL');
    db.pragma(`busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs))}`);
    db.pragma('foreign_keys = ON');
    if (options.integrityCheck) quickCheck(db, path);
    return db;
  } catch (error) {
    db?.close();
    if (error instanceof Database.SqliteError && error.code.startsWith('SQLITE_BUSY')) {
      throw new StoreError('locked', lockedMessage(path), { cause: error });
    }
    throw error;
  }
}

/** SQLite silently opens a file it cannot write read-only; refuse that up front instead. */
function checkWritable(path: string): void {
  const directory = dirname(resolve(path));
  if (existsSync(path)) {
    if (!writable(path)) {
      throw new StoreError(
        'read-only',
        `database ${path} is read-only for this user (uid ${process.getuid?.() ?? '?'}): ` +
          'hvsync records every change, so it needs to write it',
      );
    }
  }
  // The write-ahead log is a second file beside the database, created at the first write.
  if (!writable(directory)) {
    throw new StoreError(
      'read-only',
      `directory ${directory} is read-only for this user (uid ${process.getuid?.() ?? '?'}): ` +
        `the database ${path} needs its write-ahead log (${path}-wal) beside it`,
    );
  }
}

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch (error) {
    // A missing directory is SQLite's to report (unable to open), with the same StoreError code.
    return (error as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

function quickCheck(db: Database.Database, path: string): void {
  const problems = db
    .prepare<[], string>(`PRAGMA quick_check(${QUICK_CHECK_MAX_ERRORS})`)
    .pluck()
    .all();
  if (problems.length === 1 && problems[0] === 'ok') return;
  throw new StoreError(
    'corrupt',
    `database ${path} is damaged (SQLite quick_check: ${problems.join('; ')}): ` +
      'restore it from a backup or move it aside to start with an empty one',
  );
}

function lockedMessage(path: string): string {
  const holder = lockHolder(path);
  const who =
    holder === null
      ? 'another process holds its lock (another hvsync on the same file?)'
      : `${holder.isHvsync ? 'another hvsync' : 'another process'} holds its lock ` +
        `(pid ${holder.pid}: ${holder.command})`;
  return `database ${path} is in use: ${who}. One hvsync per database file: stop the other one or give this one a different --db`;
}

interface LockHolder {
  readonly pid: number;
  readonly command: string;
  readonly isHvsync: boolean;
}

/** Linux's /proc/locks names the process holding a lock on the file; elsewhere this is null. */
function lockHolder(path: string): LockHolder | null {
  try {
    const inode = statSync(path).ino;
    for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
      // e.g. "1: POSIX  ADVISORY  WRITE 18841 fe:00:2163314 1073741824 1073742335"
      const match = /^\d+:\s+\S+\s+\S+\s+\S+\s+(\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s/.exec(line);
      if (match === null || Number(match[2]) !== inode) continue;
      const pid = Number(match[1]);
      if (pid === process.pid) continue;
      const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
        .split('\0')
        .filter(Boolean)
        .join(' ');
      return { pid, command, isHvsync: /hvsync|cli\/main\.[jt]s/.test(command) };
    }
  } catch {
    // Only a hint for the message: without /proc the message just says less.
  }
  return null;
}
