// The agent's outage journal: every write its engine makes is appended here, made durable at the
// latest by the time its answer is taken, and removed when the control plane has answered it.
// While the control plane cannot be reached the entries wait here, in order, across restarts of
// the agent.
//
// Durability is a group commit: each change is an SQLite transaction that reaches the OS at once
// (it survives the agent being killed) but is not flushed; `sync()` flushes every transaction made
// so far with one fdatasync on the write-ahead log, off the event loop. A caller that must not go
// on before the disk has it (taking the control plane's answer to a batch, or answering the
// engine during an outage) awaits `sync()`; everything appended while a flush is running shares
// the next one. An fsync per commit on the event loop, as `synchronous=FULL` does it, cost
// hundreds of flushes per second per host and blocked the agent while each ran.
//
// An entry gets its seq when it is first sent, from a counter kept in the same file, and keeps
// it: a resend after a lost answer (or a crash) carries the same seq, which the control plane
// answers `duplicate` if it processed it already. Entries are sent strictly in seq order, one
// request at a time. An entry refused because someone else wrote the record meanwhile is
// rewritten in place against the current record and loses its seq, so it is sent again as a new
// entry, still ahead of everything behind it.
//
// A batch is flushed while it travels, not before, so the disk's latency is not added to every
// event's. At most one batch of seqs is ever out without being on the disk; a power loss can
// take those seqs back, so each opening moves the counter past SEQ_GAP more (and flushes that
// before anything is sent): a seq the control plane has seen is never handed out again. An entry
// whose seq was lost is sent with a new one; its write is conditional on the version it read, so
// if the control plane had applied it, it is refused and rebased, not applied twice.
import { randomUUID } from 'node:crypto';
import { closeSync, fdatasyncSync, openSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import Database from 'better-sqlite3';
import type { InstanceWrite } from '../store/index.ts';
import { AgentError } from './errors.ts';

export interface JournalEntry {
  readonly pos: number;
  readonly uuid: string;
  readonly write: InstanceWrite;
  /** Set once the entry has been sent; kept for every resend. */
  readonly seq: number | null;
  /** An earlier entry of this instance was refused or dropped: rebase before sending. */
  readonly rebase: boolean;
}

interface EntryRow {
  pos: number;
  uuid: string;
  write: string;
  seq: number | null;
  rebase: number;
}

export interface JournalOptions {
  /** The host whose engine writes here; a journal of another host is refused. */
  readonly host: string;
  /** Most entries kept; see `append`. */
  readonly maxEntries: number;
}

export interface AppendOutcome {
  readonly positions: number[];
  /** Older entries dropped to make room: instances with a newer entry kept. */
  readonly dropped: number;
}

/** Seqs skipped at each opening: more than a batch may hold (see the top of this file). */
export const SEQ_GAP = 10_000;

export class Journal {
  readonly id: string;
  readonly maxEntries: number;
  private entries: number;
  private readonly db: Database.Database;
  private readonly insert: Database.Statement<[string, string]>;
  private readonly selectHead: Database.Statement<[number], EntryRow>;
  private readonly remove: Database.Statement<[number]>;
  private readonly setSeq: Database.Statement<[number, number]>;
  private readonly rewrite: Database.Statement<[string, number]>;
  private readonly flagLater: Database.Statement<[string, number]>;
  private readonly selectSuperseded: Database.Statement<[], { pos: number; uuid: string }>;
  private readonly readNextSeq: Database.Statement<[], string>;
  private readonly writeNextSeq: Database.Statement<[string]>;
  private readonly walPath: string;
  private wal: FileHandle | null = null;
  /** Transactions committed, and how many of them are known to be on the disk. */
  private committed = 0;
  private durable = 0;
  private flushing: Promise<void> | null = null;
  private flushCount = 0;
  private closed = false;

  static open(path: string, options: JournalOptions): Journal {
    let db: Database.Database;
    try {
      db = new Database(path);
    } catch (error) {
      throw new AgentError('journal', `cannot open the journal ${path}: ${messageOf(error)}`, {
        cause: error,
      });
    }
    try {
      return new Journal(db, path, options);
    } catch (error) {
      db.close();
      if (error instanceof AgentError) throw error;
      throw new AgentError('journal', `cannot use the journal ${path}: ${messageOf(error)}`, {
        cause: error,
      });
    }
  }

  private constructor(db: Database.Database, path: string, options: JournalOptions) {
    this.db = db;
    this.maxEntries = options.maxEntries;
    this.walPath = `${path}-wal`;
    // A second agent on one journal would send the same seqs twice over: refused at open.
    db.pragma('locking_mode = EXCLUSIVE');
    db.pragma('journal_mode = WAL');
    // Commits are flushed by `sync()`, many at once; SQLite still flushes around its checkpoints,
    // so the file is never torn.
    db.pragma('synchronous = NORMAL');
    db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS entries (
        pos    INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid   TEXT    NOT NULL,
        write  TEXT    NOT NULL,
        seq    INTEGER,
        rebase INTEGER NOT NULL DEFAULT 0
      );
      CREATE INDEX IF NOT EXISTS entries_uuid ON entries (uuid, pos);
    `);
    const meta = db.prepare<[string], string>('SELECT value FROM meta WHERE key = ?').pluck();
    const setMeta = db.prepare<[string, string]>(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    );
    const host = meta.get('host');
    if (host !== undefined && host !== options.host) {
      throw new AgentError(
        'journal',
        `the journal ${path} belongs to host ${host}, not ${options.host}: give each host its own`,
      );
    }
    let id = meta.get('id');
    if (id === undefined) {
      id = randomUUID();
      db.transaction(() => {
        setMeta.run('id', id!);
        setMeta.run('host', options.host);
        setMeta.run('next_seq', '1');
      })();
      this.committed++;
    } else {
      setMeta.run('next_seq', String(Number(meta.get('next_seq') ?? 1) + SEQ_GAP));
      // On the disk before any seq past it is sent, or a second power loss could reuse them.
      const wal = openSync(`${path}-wal`, 'r+');
      try {
        fdatasyncSync(wal);
      } finally {
        closeSync(wal);
      }
    }
    this.id = id;
    this.insert = db.prepare('INSERT INTO entries (uuid, write) VALUES (?, ?)');
    this.selectHead = db.prepare('SELECT * FROM entries ORDER BY pos LIMIT ?');
    this.remove = db.prepare('DELETE FROM entries WHERE pos = ?');
    this.setSeq = db.prepare('UPDATE entries SET seq = ? WHERE pos = ?');
    this.rewrite = db.prepare('UPDATE entries SET write = ?, seq = NULL, rebase = 0 WHERE pos = ?');
    this.flagLater = db.prepare('UPDATE entries SET rebase = 1 WHERE uuid = ? AND pos > ?');
    // The oldest never-sent entry whose instance has a newer one: the cheapest loss.
    this.selectSuperseded = db.prepare(
      `SELECT pos, uuid FROM entries e WHERE seq IS NULL
         AND EXISTS (SELECT 1 FROM entries n WHERE n.uuid = e.uuid AND n.pos > e.pos)
       ORDER BY pos LIMIT 1`,
    );
    this.readNextSeq = db
      .prepare<[], string>("SELECT value FROM meta WHERE key = 'next_seq'")
      .pluck();
    this.writeNextSeq = db.prepare("UPDATE meta SET value = ? WHERE key = 'next_seq'");
    this.entries = db.prepare<[], number>('SELECT count(*) FROM entries').pluck().get() ?? 0;
  }

  /** Entries not acknowledged yet. */
  get size(): number {
    return this.entries;
  }

  /**
   * Appends writes in one fsync'd transaction. Past the bound, the oldest never-sent entries of
   * instances that have a newer entry are dropped first (the latest observation of each
   * instance is kept; a transition in its history is lost); when none is left to drop the whole
   * append is refused with AgentError `journal-full`.
   */
  append(writes: readonly InstanceWrite[]): AppendOutcome {
    return this.db.transaction(() => {
      let dropped = 0;
      while (this.entries + writes.length > this.maxEntries) {
        const victim = this.selectSuperseded.get();
        if (victim === undefined) {
          throw new AgentError(
            'journal-full',
            `the outage journal holds ${this.entries} entries, its bound, each the only one of ` +
              `its instance: ${writes.length} new observation(s) refused`,
          );
        }
        this.remove.run(victim.pos);
        this.flagLater.run(victim.uuid, victim.pos);
        this.entries--;
        dropped++;
      }
      const positions = writes.map((write) =>
        Number(this.insert.run(write.uuid, JSON.stringify(write)).lastInsertRowid),
      );
      this.entries += writes.length;
      this.committed++;
      return { positions, dropped };
    })();
  }

  /** The oldest `limit` entries. */
  head(limit: number): JournalEntry[] {
    return this.selectHead.all(limit).map((row) => ({
      pos: row.pos,
      uuid: row.uuid,
      write: JSON.parse(row.write) as InstanceWrite,
      seq: row.seq,
      rebase: row.rebase !== 0,
    }));
  }

  /** Gives the entries without a seq the next seqs, in order, durably, before they are sent. */
  assignSeqs(entries: readonly JournalEntry[]): JournalEntry[] {
    return this.db.transaction(() => {
      let next = Number(this.readNextSeq.get() ?? 1);
      const out = entries.map((entry) => {
        if (entry.seq !== null) return entry;
        const seq = next++;
        this.setSeq.run(seq, entry.pos);
        return { ...entry, seq };
      });
      this.writeNextSeq.run(String(next));
      this.committed++;
      return out;
    })();
  }

  /**
   * Applies the control plane's answers in one transaction: acknowledged entries go, refused
   * ones are rewritten (null: dropped) and their instance's later entries flagged for rebase.
   */
  settle(
    acked: readonly number[],
    rewritten: readonly { entry: JournalEntry; write: InstanceWrite | null }[],
  ): void {
    this.db.transaction(() => {
      for (const pos of acked) this.entries -= this.remove.run(pos).changes;
      for (const { entry, write } of rewritten) {
        if (write === null) this.entries -= this.remove.run(entry.pos).changes;
        else this.rewrite.run(JSON.stringify(write), entry.pos);
        this.flagLater.run(entry.uuid, entry.pos);
      }
      this.committed++;
    })();
  }

  /** Flushes to the disk so far. */
  get flushes(): number {
    return this.flushCount;
  }

  /** Whether every change made so far is known to be on the disk. */
  get synced(): boolean {
    return this.durable >= this.committed;
  }

  /**
   * Resolves once every change made before the call is on the disk. Calls made while a flush is
   * running wait for it and share the next one.
   */
  async sync(): Promise<void> {
    const target = this.committed;
    while (this.durable < target) {
      if (this.flushing === null) {
        this.flushing = this.flush().finally(() => (this.flushing = null));
      }
      await this.flushing;
    }
  }

  /** Flushes (fdatasync) everything committed when it starts. */
  private async flush(): Promise<void> {
    const upTo = this.committed;
    if (this.closed) throw new AgentError('journal', 'the journal is closed');
    try {
      // The log exists from the first commit on (and with the exclusive lock it is kept until the
      // journal is closed), so it is opened once, when there is something to flush.
      if (this.wal === null) {
        const wal = await open(this.walPath, 'r+');
        if (this.closed) {
          await wal.close();
          throw new Error('closed meanwhile');
        }
        this.wal = wal;
      }
      this.flushCount++;
      await this.wal.datasync();
    } catch (error) {
      throw new AgentError(
        'journal',
        `cannot flush the journal ${this.walPath}: ${messageOf(error)}`,
        { cause: error },
      );
    }
    this.durable = Math.max(this.durable, upTo);
  }

  /** Closes the file; SQLite checkpoints it with a flush of its own. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const wal = this.wal;
    this.wal = null;
    this.db.close();
    void wal?.close().catch(() => {});
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
