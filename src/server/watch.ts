// The watch stream: Server-Sent Events of instance changes, resumable by revision.
//
// No gap, no duplicate: a stream subscribes to the store before it reads the change log, keeps
// what arrives meanwhile, replays the log page by page, and goes live only once a log read found
// nothing newer and everything kept since that read is intact; revisions already sent are
// skipped. Memory is bounded everywhere: replay reads the next page only after the previous one
// has gone to the socket; changes kept during replay are dropped past the limit (the log still
// has them, so replay just carries on); a live stream whose client falls `bufferLimit` events
// behind is ended with an `event: error` naming the revision to resume from.
import { PassThrough } from 'node:stream';
import type { ChangeRecord, Store } from '../store/types.ts';
import type { ApiError, ApiWatchError } from './types.ts';
import { apiWatchEvent } from './wire.ts';

export interface WatchSettings {
  readonly heartbeatMs: number;
  /** Events a stream may hold beyond what its socket has taken. */
  readonly bufferLimit: number;
  /** Change-log rows read per replay step; capped at bufferLimit. */
  readonly pageSize: number;
}

export type WatchEndReason =
  'client-closed' | 'too-slow' | 'revision-too-old' | 'shutting-down' | 'internal';

export interface WatchHooks {
  readonly onOpen: () => void;
  readonly onEventSent: () => void;
  /** Only for streams that were opened (not for a refused resume). */
  readonly onEnd: (reason: WatchEndReason) => void;
  readonly onError: (error: unknown) => void;
}

/** One SSE message. `data` is JSON on one line, so no `data:` continuation lines are needed. */
export function sseEvent(event: string, data: unknown, id?: number): string {
  const idLine = id === undefined ? '' : `id: ${id}\n`;
  return `${idLine}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

export function sseComment(text: string): string {
  return `: ${text.replace(/[\r\n]+/g, ' ')}\n\n`;
}

export type WatchOpening =
  | { readonly ok: true; readonly stream: WatchStream }
  | { readonly ok: false; readonly status: 410; readonly body: ApiError };

/** Opens streams on one store and ends them all on shutdown. */
export class WatchHub {
  private readonly streams = new Set<WatchStream>();

  constructor(
    private readonly store: Store,
    private readonly settings: WatchSettings,
    private readonly hooks: WatchHooks,
  ) {}

  get size(): number {
    return this.streams.size;
  }

  /** `since` null: only changes committed from now on. */
  async open(since: number | null): Promise<WatchOpening> {
    // Subscribed before the bounds are read, so nothing committed after the check is missed.
    const stream = new WatchStream(this.store, this.settings, {
      ...this.hooks,
      onEnd: (reason, started) => {
        this.streams.delete(stream);
        if (started) this.hooks.onEnd(reason);
      },
    });
    this.streams.add(stream);
    let bounds: { oldestRevision: number; latestRevision: number };
    try {
      bounds = await this.store.changesSince(Number.MAX_SAFE_INTEGER, 1);
    } catch (error) {
      stream.abandon();
      throw error;
    }
    const refusal = since === null ? null : refuseResume(since, bounds);
    if (refusal !== null) {
      stream.abandon();
      return { ok: false, status: 410, body: refusal };
    }
    stream.start(since ?? bounds.latestRevision);
    this.hooks.onOpen();
    return { ok: true, stream };
  }

  closeAll(): void {
    for (const stream of [...this.streams]) stream.shutDown();
  }
}

/** Why a resume from `since` cannot be served, or null when it can. */
export function refuseResume(
  since: number,
  bounds: { readonly oldestRevision: number; readonly latestRevision: number },
): ApiError | null {
  if (since < bounds.oldestRevision - 1) {
    return {
      error: 'revision-too-old',
      message:
        `revision ${since} is older than the change log keeps (oldest ${bounds.oldestRevision}): ` +
        're-list the instances (GET /v1/instances) and watch from the revision you listed at',
      oldestRevision: bounds.oldestRevision,
    };
  }
  if (since > bounds.latestRevision) {
    // Revisions only come from this store, so a larger one means the store was replaced.
    return {
      error: 'revision-too-new',
      message:
        `revision ${since} is newer than the latest (${bounds.latestRevision}); the store was ` +
        'probably reset: re-list the instances (GET /v1/instances) and watch from now',
    };
  }
  return null;
}

interface StreamHooks {
  readonly onEventSent: () => void;
  readonly onEnd: (reason: WatchEndReason, started: boolean) => void;
  readonly onError: (error: unknown) => void;
}

interface Outgoing {
  readonly revision: number;
  readonly text: string;
}

export class WatchStream {
  /** The response body. */
  readonly output = new PassThrough();
  private readonly settings: WatchSettings;
  private readonly outbox: Outgoing[] = [];
  private blocked = false;
  private live = false;
  /** Changes that arrived during replay; null once going live. */
  private kept: ChangeRecord[] | null = [];
  /** Bumped whenever `kept` is dropped for size, so replay knows to read the log again. */
  private keptEpoch = 0;
  private lastQueued = 0;
  private lastSent = 0;
  private started = false;
  private ended = false;
  private readonly unsubscribe: () => void;
  private heartbeat: NodeJS.Timeout | null = null;
  private roomWaiters: (() => void)[] = [];

  constructor(
    private readonly store: Store,
    settings: WatchSettings,
    private readonly hooks: StreamHooks,
  ) {
    const bufferLimit = Math.max(1, Math.floor(settings.bufferLimit));
    this.settings = {
      heartbeatMs: settings.heartbeatMs,
      bufferLimit,
      pageSize: Math.max(1, Math.min(bufferLimit, Math.floor(settings.pageSize))),
    };
    this.unsubscribe = store.subscribe((changes) => this.onChanges(changes));
    this.output.on('drain', () => {
      this.blocked = false;
      this.flush();
    });
    this.output.on('error', () => this.finish('client-closed'));
    this.output.on('close', () => this.finish('client-closed'));
  }

  /** Starts sending changes after revision `since`. */
  start(since: number): void {
    this.started = true;
    this.lastQueued = since;
    this.lastSent = since;
    this.write(sseComment(`watching from revision ${since}`));
    if (this.settings.heartbeatMs > 0) {
      this.heartbeat = setInterval(() => {
        if (!this.blocked) this.write(sseComment('heartbeat'));
      }, this.settings.heartbeatMs);
      this.heartbeat.unref();
    }
    this.replay().catch((error: unknown) => {
      this.hooks.onError(error);
      this.endWithError('internal', {
        error: 'internal',
        message: `the watch stream failed; resume with since=${this.lastSent}`,
        lastRevision: this.lastSent,
      });
    });
  }

  /** The client went away. */
  clientClosed(): void {
    this.finish('client-closed');
  }

  /** Ends the stream telling the client to resume elsewhere or later. */
  shutDown(): void {
    this.endWithError('shutting-down', {
      error: 'shutting-down',
      message: `the server is shutting down; resume with since=${this.lastSent}`,
      lastRevision: this.lastSent,
    });
  }

  /** Drops a stream that was never started (the resume was refused). */
  abandon(): void {
    this.finish('client-closed');
  }

  private async replay(): Promise<void> {
    for (;;) {
      await this.roomForAPage();
      if (this.ended) return;
      const epoch = this.keptEpoch;
      const page = await this.store.changesSince(this.lastQueued, this.settings.pageSize);
      if (this.ended) return;
      if (this.lastQueued < page.oldestRevision - 1) {
        this.endWithError('revision-too-old', {
          error: 'revision-too-old',
          message:
            `the change log was pruned past revision ${this.lastQueued} while this stream was ` +
            'catching up: re-list the instances and watch from the revision you listed at',
          lastRevision: this.lastSent,
          oldestRevision: page.oldestRevision,
        });
        return;
      }
      for (const change of page.changes) this.enqueue(change);
      this.flush();
      const caughtUp = this.lastQueued >= page.latestRevision;
      const kept = this.kept ?? [];
      const fits = this.outbox.length + kept.length <= this.settings.bufferLimit;
      if (caughtUp && epoch === this.keptEpoch && fits) {
        // Synchronous from here to `live`: no commit can slip between the two.
        this.kept = null;
        this.live = true;
        for (const change of kept) this.enqueue(change);
        this.flush();
        return;
      }
    }
  }

  private onChanges(changes: readonly ChangeRecord[]): void {
    if (this.ended) return;
    if (!this.live) {
      const kept = this.kept ?? [];
      if (kept.length + changes.length > this.settings.bufferLimit) {
        this.kept = [];
        this.keptEpoch++;
      } else {
        for (const change of changes) kept.push(change);
      }
      return;
    }
    for (const change of changes) {
      if (change.revision <= this.lastQueued) continue;
      if (this.outbox.length >= this.settings.bufferLimit) {
        this.endWithError('too-slow', {
          error: 'too-slow',
          message:
            `this stream fell more than ${this.settings.bufferLimit} changes behind; ` +
            `resume with since=${this.lastSent}`,
          lastRevision: this.lastSent,
        });
        return;
      }
      this.enqueue(change);
    }
    this.flush();
  }

  private enqueue(change: ChangeRecord): void {
    if (change.revision <= this.lastQueued) return;
    this.outbox.push({
      revision: change.revision,
      text: sseEvent('instance', apiWatchEvent(change), change.revision),
    });
    this.lastQueued = change.revision;
  }

  private flush(): void {
    while (!this.blocked && !this.ended && this.outbox.length > 0) {
      const next = this.outbox.shift()!;
      this.lastSent = next.revision;
      this.hooks.onEventSent();
      this.write(next.text);
    }
    if (this.outbox.length === 0 || this.ended) this.wakeRoomWaiters();
  }

  private write(text: string): void {
    if (this.ended || this.output.destroyed || this.output.writableEnded) return;
    if (!this.output.write(text)) this.blocked = true;
  }

  /** Resolves when the previous page has gone to the socket (or the stream ended). */
  private roomForAPage(): Promise<void> {
    if (this.outbox.length === 0 || this.ended) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  private wakeRoomWaiters(): void {
    const waiters = this.roomWaiters;
    this.roomWaiters = [];
    for (const wake of waiters) wake();
  }

  private endWithError(reason: WatchEndReason, body: ApiWatchError): void {
    if (this.ended) return;
    // The events already written reach the client before this one: only the outbox is dropped.
    this.outbox.length = 0;
    this.write(sseEvent('error', body));
    this.finish(reason);
  }

  private finish(reason: WatchEndReason): void {
    if (this.ended) return;
    this.ended = true;
    this.unsubscribe();
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    this.outbox.length = 0;
    this.kept = null;
    this.wakeRoomWaiters();
    if (!this.output.destroyed && !this.output.writableEnded) this.output.end();
    this.hooks.onEnd(reason, this.started);
  }
}
