// The change feed of a PostgreSQL store: every change committed on the database, by this process
// or another, handed to listeners once each and in revision order.
//
// Changes come from two sources that race each other: this process's own commits, as they
// commit, and NOTIFYs (other processes' commits, and this one's own coming back). Revisions are
// dense (each transaction takes them under the counter's lock), so a change that comes ahead of
// an earlier one is held until that one comes. Nearly always the earlier one is on its way by the
// other source, a few milliseconds behind: two replicas committing back to back each get their
// own commit's answer and the other's NOTIFY at about the same moment. Only a gap still open after
// `gapGraceMs`, a NOTIFY too large to carry its changes, or a listening connection that started
// again costs a read of the change log. (Reading the log at once on every gap cost a read
// transaction for about one commit in ten with two replicas busy, and held every later change,
// of every watcher, behind it.)
import { Emitter } from '../lib/index.ts';
import type { ChangeListener } from './common.ts';
import type { ChangeRecord } from './types.ts';

export interface ChangeFeedOptions {
  /** The latest revision when the feed starts: listeners get what comes after it. */
  readonly latestRevision: number;
  /** One page of the change log after `since`, oldest first, at most `pageSize` changes. */
  readonly readLog: (since: number) => Promise<readonly ChangeRecord[]>;
  readonly pageSize: number;
  readonly onListenerError?: (error: unknown) => void;
  /** A read of the log failed: the changes it would have given are skipped. */
  readonly onFeedError: (error: unknown) => void;
  /** How long a gap may stay open before the log is read. Default GAP_GRACE_MS. */
  readonly gapGraceMs?: number;
}

/** Time for the earlier change's other source to come (see the top of this file). */
export const GAP_GRACE_MS = 100;

export class ChangeFeed {
  private readonly listeners: Emitter<[readonly ChangeRecord[]]>;
  private readonly readLog: (since: number) => Promise<readonly ChangeRecord[]>;
  private readonly pageSize: number;
  private readonly onFeedError: (error: unknown) => void;
  private readonly gapGraceMs: number;
  /** Changes known, not yet handed on: each waits for every earlier revision. */
  private readonly held = new Map<number, ChangeRecord>();
  /** This process's commits waiting for their changes to be handed on. */
  private waiting: { readonly upTo: number; readonly resolve: () => void }[] = [];
  private deliveredUpTo: number;
  private gapTimer: NodeJS.Timeout | null = null;
  private reading: Promise<void> | null = null;
  private readAgain = false;
  private closed = false;
  private reads = 0;

  constructor(options: ChangeFeedOptions) {
    this.listeners = new Emitter(options.onListenerError);
    this.readLog = options.readLog;
    this.pageSize = options.pageSize;
    this.onFeedError = options.onFeedError;
    this.gapGraceMs = options.gapGraceMs ?? GAP_GRACE_MS;
    this.deliveredUpTo = options.latestRevision;
  }

  /** The highest revision handed on (or passed over while nobody listened). */
  get latest(): number {
    return this.deliveredUpTo;
  }

  get listenerErrors(): number {
    return this.listeners.listenerErrors;
  }

  /** Reads of the change log, over the feed's life. */
  get logReads(): number {
    return this.reads;
  }

  on(listener: ChangeListener): () => void {
    return this.listeners.on(listener);
  }

  /**
   * Changes this process committed, in revision order. Resolves once listeners have had them
   * (and every earlier change), so a writer's answer never overtakes its own change.
   */
  committed(changes: readonly ChangeRecord[]): Promise<void> {
    const upTo = changes[changes.length - 1]!.revision;
    this.take(changes);
    if (upTo <= this.deliveredUpTo || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push({ upTo, resolve }));
  }

  /** A NOTIFY's changes; null for one that carried only a revision (they are in the log). */
  notified(changes: readonly ChangeRecord[] | null): void {
    if (this.closed) return;
    if (changes === null) this.catchUp();
    else this.take(changes);
  }

  /** Reads the log now for whatever listeners have not had (the listening connection started). */
  catchUp(): void {
    if (this.closed) return;
    if (this.reading !== null) {
      this.readAgain = true;
      return;
    }
    this.clearGapTimer();
    this.reading = this.read().finally(() => {
      this.reading = null;
      if (this.readAgain && !this.closed) {
        this.readAgain = false;
        this.catchUp();
      } else this.release();
    });
  }

  /** Stops reading the log; whoever waits for a commit to be handed on is let go. */
  async close(): Promise<void> {
    this.closed = true;
    this.clearGapTimer();
    await this.reading;
    for (const waiter of this.waiting) waiter.resolve();
    this.waiting = [];
    this.held.clear();
    this.listeners.clear();
  }

  private take(changes: readonly ChangeRecord[]): void {
    for (const change of changes) {
      if (change.revision > this.deliveredUpTo) this.held.set(change.revision, change);
    }
    this.release();
  }

  /** Hands on the held changes that follow what listeners have had; a gap waits its grace. */
  private release(): void {
    if (this.listeners.size === 0) {
      // Nobody to hand them to, in order or not: a later listener starts after them.
      for (const revision of this.held.keys()) {
        this.deliveredUpTo = Math.max(this.deliveredUpTo, revision);
      }
      this.held.clear();
    }
    const run: ChangeRecord[] = [];
    for (let next = this.deliveredUpTo + 1; this.held.has(next); next += 1) {
      run.push(this.held.get(next)!);
      this.held.delete(next);
    }
    if (run.length > 0) this.deliver(run);
    if (this.held.size === 0) this.clearGapTimer();
    else if (this.gapTimer === null && this.reading === null && !this.closed) {
      this.gapTimer = setTimeout(() => {
        this.gapTimer = null;
        this.catchUp();
      }, this.gapGraceMs);
    }
    this.letGo();
  }

  private async read(): Promise<void> {
    try {
      for (;;) {
        this.reads += 1;
        const page = await this.readLog(this.deliveredUpTo);
        // Some may have come by the other source while the page was read.
        const fresh = page.filter((c) => c.revision > this.deliveredUpTo);
        if (fresh.length > 0) this.deliver(fresh);
        for (const revision of this.held.keys()) {
          if (revision <= this.deliveredUpTo) this.held.delete(revision);
        }
        if (page.length < this.pageSize || this.closed) return;
      }
    } catch (error) {
      this.onFeedError(error);
      // What the log would have filled in is lost to listeners; what is held goes on in order,
      // so no commit waits for ever on a read that cannot be made.
      const rest = [...this.held.values()].sort((a, b) => a.revision - b.revision);
      this.held.clear();
      if (rest.length > 0) this.deliver(rest);
    }
  }

  private deliver(changes: readonly ChangeRecord[]): void {
    this.deliveredUpTo = changes[changes.length - 1]!.revision;
    this.listeners.emit(changes);
  }

  private letGo(): void {
    if (this.waiting.length === 0) return;
    const still: typeof this.waiting = [];
    for (const waiter of this.waiting) {
      if (waiter.upTo <= this.deliveredUpTo) waiter.resolve();
      else still.push(waiter);
    }
    this.waiting = still;
  }

  private clearGapTimer(): void {
    if (this.gapTimer !== null) clearTimeout(this.gapTimer);
    this.gapTimer = null;
  }
}
