// The watch stream: Server-Sent Events of instance changes, resumable by revision.
//
// No gap, no duplicate: a stream subscribes to the store before it reads the change log, keeps
// what arrives meanwhile, replays the log page by page, and goes live only once a log read found
// nothing newer and everything kept since that read is intact; revisions already sent are
// skipped. Memory is bounded everywhere: replay reads the next page only after the previous one
// has gone to the socket; changes kept during replay are dropped past the limit (the log still
// has them, so replay just carries on); a live stream whose client falls `bufferLimit` events
// behind is ended with an `event: error` naming the revision to resume from, and its connection
// is dropped if the client does not read even that.
//
// The hub holds the one store subscription and serialises each live change once: every stream
// queues and writes the same bytes, so a thousand watchers cost a thousand references, not a
// thousand copies. The hub keeps the serialised changes some stream has not yet taken, oldest
// first, within `bufferBytes` in all: when a new change would exceed it, the streams still
// holding the oldest change are the ones furthest behind, and they are ended (or, replaying,
// drop what they kept and read the log instead) until it fits. A burst that healthy clients
// take at once costs nothing beyond its own bytes.
import { PassThrough } from 'node:stream';
import type { ReadStore } from '../store/index.ts';
import type { ChangeRecord } from '../store/index.ts';
import type { ApiError, ApiWatchError } from './types.ts';
import { apiWatchEvent } from './wire.ts';

export interface WatchSettings {
  readonly heartbeatMs: number;
  /** Events a stream may hold beyond what its socket has taken. */
  readonly bufferLimit: number;
  /** Change-log rows read per replay step; capped at bufferLimit. */
  readonly pageSize: number;
  /** Bytes of serialised changes all streams together may hold for clients that lag. */
  readonly bufferBytes: number;
  /** How long an ended stream's client has to read the closing event before it is dropped. */
  readonly lingerMs?: number;
}

const DEFAULT_LINGER_MS = 10_000;

/** Serialised changes with consecutive revisions `first`..`revision`, sent as one write. */
interface Outgoing {
  readonly first: number;
  readonly revision: number;
  readonly count: number;
  readonly bytes: Buffer;
  /** The instance's host for one change; null for several. */
  readonly host: string | null;
}

function outgoing(change: ChangeRecord): Outgoing {
  const bytes = Buffer.from(sseEvent('instance', apiWatchEvent(change), change.revision));
  const { revision } = change;
  return { first: revision, revision, count: 1, bytes, host: change.instance.host };
}

/**
 * One commit's changes serialised once into one buffer: streams that are caught up write it
 * whole (one write per commit, not per change), the others take the changes they lack, each a
 * view into the same bytes.
 */
interface Batch {
  readonly whole: Outgoing;
  readonly each: readonly Outgoing[];
}

function batchOf(changes: readonly ChangeRecord[]): Batch {
  const texts = changes.map((change) =>
    sseEvent('instance', apiWatchEvent(change), change.revision),
  );
  const bytes = Buffer.from(texts.join(''));
  let offset = 0;
  const each = changes.map((change, i) => {
    const length = Buffer.byteLength(texts[i]!);
    const view = bytes.subarray(offset, offset + length);
    offset += length;
    const { revision } = change;
    return { first: revision, revision, count: 1, bytes: view, host: change.instance.host };
  });
  const whole = {
    first: changes[0]!.revision,
    revision: changes.at(-1)!.revision,
    count: changes.length,
    bytes,
    host: null,
  };
  return { whole, each };
}

const HEARTBEAT = Buffer.from(sseComment('heartbeat'));

export type WatchEndReason =
  'client-closed' | 'too-slow' | 'revision-too-old' | 'shutting-down' | 'internal';

export interface WatchHooks {
  readonly onOpen: () => void;
  readonly onEventSent: (count: number) => void;
  /** Only for streams that were opened (not for a refused resume). */
  readonly onEnd: (reason: WatchEndReason) => void;
  readonly onError: (error: unknown) => void;
}

/** One SSE message. `data` is JSON on one line, so no `data:` continuation lines are needed. */
function sseEvent(event: string, data: unknown, id?: number): string {
  const idLine = id === undefined ? '' : `id: ${id}\n`;
  return `${idLine}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

function sseComment(text: string): string {
  return `: ${text.replace(/[\r\n]+/g, ' ')}\n\n`;
}

export type WatchOpening =
  | { readonly ok: true; readonly stream: WatchStream }
  | { readonly ok: false; readonly status: 410; readonly body: ApiError };

/** Opens streams on one store, fans its changes out to them, and ends them all on shutdown. */
export class WatchHub {
  private readonly streams = new Set<WatchStream>();
  /**
   * Live streams of one host (agents' informers), by host: a change is handed only to its host's
   * streams, not offered to every agent's stream to filter (a thousand per change). The others —
   * unfiltered streams, and filtered ones still replaying, which must see every commit to know
   * where their replay may stop — get every change.
   */
  private readonly liveByHost = new Map<string, Set<WatchStream>>();
  private readonly offeredAll = new Set<WatchStream>();
  private unsubscribe: (() => void) | null = null;
  /** Serialised live changes, oldest first, from the oldest one a stream still holds. */
  private window: Outgoing[] = [];
  private windowStart = 0;
  private windowBytes = 0;

  constructor(
    private readonly store: ReadStore,
    private readonly settings: WatchSettings,
    private readonly hooks: WatchHooks,
  ) {}

  get size(): number {
    return this.streams.size;
  }

  /** Bytes of serialised changes held for streams that have not taken them yet. */
  get bufferedBytes(): number {
    return this.windowBytes;
  }

  private add(stream: WatchStream): void {
    this.streams.add(stream);
    this.offeredAll.add(stream);
    // Subscribed only while someone watches; a stream added before it reads the log's bounds
    // sees every commit after them.
    this.unsubscribe ??= this.store.subscribe((changes) => this.fanOut(changes));
  }

  /** A filtered stream went live: from now on it is handed its host's changes only. */
  private wentLive(stream: WatchStream, host: string | null): void {
    if (host === null || !this.streams.has(stream)) return;
    this.offeredAll.delete(stream);
    let streams = this.liveByHost.get(host);
    if (streams === undefined) this.liveByHost.set(host, (streams = new Set()));
    streams.add(stream);
  }

  private remove(stream: WatchStream, host: string | null): void {
    this.streams.delete(stream);
    this.offeredAll.delete(stream);
    const ofHost = host === null ? undefined : this.liveByHost.get(host);
    if (ofHost?.delete(stream) === true && ofHost.size === 0) this.liveByHost.delete(host!);
    if (this.streams.size === 0 && this.unsubscribe !== null) {
      this.unsubscribe();
      this.unsubscribe = null;
      this.window = [];
      this.windowStart = 0;
      this.windowBytes = 0;
    }
  }

  private fanOut(changes: readonly ChangeRecord[]): void {
    if (this.streams.size === 0 || changes.length === 0) return;
    const batch = batchOf(changes);
    this.window.push(batch.whole);
    this.windowBytes += batch.whole.bytes.length;
    for (const stream of [...this.offeredAll]) stream.receive(batch);
    if (this.liveByHost.size > 0) {
      for (const event of batch.each) {
        const streams = event.host === null ? undefined : this.liveByHost.get(event.host);
        if (streams === undefined) continue;
        const single = { whole: event, each: [event] };
        for (const stream of [...streams]) stream.receive(single);
      }
    }
    this.trim();
  }

  /** Releases what every stream has taken, then ends the laggards until the window fits. */
  private trim(): void {
    let oldestHeld = Number.POSITIVE_INFINITY;
    for (const stream of this.streams) oldestHeld = Math.min(oldestHeld, stream.oldestHeld());
    while (this.windowStart < this.window.length) {
      const oldest = this.window[this.windowStart]!;
      if (oldest.revision >= oldestHeld && this.windowBytes <= this.settings.bufferBytes) break;
      if (oldest.revision >= oldestHeld) {
        for (const stream of [...this.streams]) {
          if (stream.oldestHeld() <= oldest.revision) stream.overBudget(this.settings.bufferBytes);
        }
      }
      this.windowStart++;
      this.windowBytes -= oldest.bytes.length;
    }
    if (this.windowStart > 1024 && this.windowStart * 2 > this.window.length) {
      this.window = this.window.slice(this.windowStart);
      this.windowStart = 0;
    }
  }

  /**
   * `since` null: only changes committed from now on. `host`: only changes of instances recorded
   * on that host (an agent's informer); a record that moves away is not followed.
   */
  async open(since: number | null, host: string | null = null): Promise<WatchOpening> {
    // Subscribed before the bounds are read, so nothing committed after the check is missed.
    const stream = new WatchStream(this.store, this.settings, host, {
      ...this.hooks,
      onLive: () => this.wentLive(stream, host),
      onEnd: (reason, started) => {
        this.remove(stream, host);
        if (started) this.hooks.onEnd(reason);
      },
    });
    this.add(stream);
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
function refuseResume(
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
  readonly onEventSent: (count: number) => void;
  /** Caught up: from now on only live changes, called in the same turn as the last replay. */
  readonly onLive: () => void;
  readonly onEnd: (reason: WatchEndReason, started: boolean) => void;
  readonly onError: (error: unknown) => void;
}

class WatchStream {
  /** The response body. */
  readonly output = new PassThrough();
  /** Closes the client's connection; set by whoever serves the stream. */
  dropConnection: (() => void) | null = null;
  private readonly settings: Required<WatchSettings>;
  private readonly outbox: Outgoing[] = [];
  private outboxEvents = 0;
  private blocked = false;
  private live = false;
  /** Changes that arrived during replay; null once going live. */
  private kept: Outgoing[] | null = [];
  /** Bumped whenever `kept` is dropped for size, so replay knows to read the log again. */
  private keptEpoch = 0;
  private lastQueued = 0;
  private lastSent = 0;
  private started = false;
  private ended = false;
  private heartbeat: NodeJS.Timeout | null = null;
  private linger: NodeJS.Timeout | null = null;
  private roomWaiters: (() => void)[] = [];

  /** The highest revision replay has read from the log, matching the filter or not. */
  private lastRead = 0;
  /**
   * The first revision delivered live since `kept` was last emptied, matching the filter or not:
   * every later one is in `kept` (those that match), so replay need read the log only up to it.
   * Without this a replay chases the log's head for as long as commits keep coming, reading
   * every host's changes (a thousand agents resuming after a restart, while their journals drain,
   * each read the whole drain).
   */
  private firstLive: number | null = null;

  constructor(
    private readonly store: ReadStore,
    settings: WatchSettings,
    private readonly host: string | null,
    private readonly hooks: StreamHooks,
  ) {
    const bufferLimit = Math.max(1, Math.floor(settings.bufferLimit));
    this.settings = {
      heartbeatMs: settings.heartbeatMs,
      bufferLimit,
      pageSize: Math.max(1, Math.min(bufferLimit, Math.floor(settings.pageSize))),
      bufferBytes: settings.bufferBytes,
      lingerMs: settings.lingerMs ?? DEFAULT_LINGER_MS,
    };
    this.output.on('drain', () => {
      this.blocked = false;
      this.flush();
    });
    this.output.on('error', () => this.finish('client-closed'));
    this.output.on('close', () => this.finish('client-closed'));
  }

  /** The oldest revision this stream holds and has not written yet; Infinity when none. */
  oldestHeld(): number {
    if (this.ended) return Number.POSITIVE_INFINITY;
    const held = this.live ? this.outbox[0] : this.kept?.[0];
    return held?.first ?? Number.POSITIVE_INFINITY;
  }

  /** The hub's buffer is full and this stream holds its oldest change. */
  overBudget(budget: number): void {
    if (!this.live) {
      // Replay reads the log again; nothing is lost by letting go of what was kept.
      this.dropKept();
      return;
    }
    this.tooSlow(`so far behind that it held the oldest of the ${budget} bytes buffered`);
  }

  private dropKept(): void {
    this.kept = [];
    this.keptEpoch++;
    this.firstLive = null;
  }

  /** Starts sending changes after revision `since`. */
  start(since: number): void {
    this.started = true;
    this.lastQueued = since;
    this.lastRead = since;
    this.lastSent = since;
    this.write(sseComment(`watching from revision ${since}`));
    if (this.settings.heartbeatMs > 0) {
      this.heartbeat = setInterval(() => {
        if (!this.blocked) this.write(HEARTBEAT);
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
    if (this.linger !== null) clearTimeout(this.linger);
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
      const page = await this.store.changesSince(this.lastRead, this.settings.pageSize);
      if (this.ended) return;
      if (this.lastRead < page.oldestRevision - 1) {
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
      for (const change of page.changes) {
        if (this.matches(change.instance.host)) this.enqueue(outgoing(change));
      }
      this.lastRead = Math.max(this.lastRead, page.changes.at(-1)?.revision ?? 0);
      this.flush();
      const caughtUp =
        this.lastRead >= page.latestRevision ||
        (this.firstLive !== null && this.lastRead >= this.firstLive - 1);
      const kept = this.kept ?? [];
      const fits = this.outboxEvents + kept.length <= this.settings.bufferLimit;
      if (caughtUp && epoch === this.keptEpoch && fits) {
        // Synchronous from here to `live`: no commit can slip between the two.
        this.kept = null;
        this.live = true;
        for (const event of kept) this.enqueue(event);
        this.flush();
        this.hooks.onLive();
        return;
      }
    }
  }

  private matches(host: string | null): boolean {
    return this.host === null || host === this.host;
  }

  /** Live changes from the hub, already serialised. */
  receive(batch: Batch): void {
    if (this.ended) return;
    if (!this.live) this.firstLive ??= batch.whole.first;
    if (this.host === null) {
      this.take(batch);
      return;
    }
    // A filtered stream takes the matching changes one by one: the whole carries the others.
    for (const event of batch.each) {
      if (this.matches(event.host)) this.take({ whole: event, each: [event] });
    }
  }

  private take(batch: Batch): void {
    if (this.ended) return;
    if (!this.live) {
      const kept = this.kept ?? [];
      if (kept.length + batch.each.length > this.settings.bufferLimit) this.dropKept();
      else for (const event of batch.each) kept.push(event);
      return;
    }
    // A client that has not taken the last bufferLimit changes is not coming back for them;
    // a commit larger than that still goes whole to one that has.
    if (this.outboxEvents >= this.settings.bufferLimit) {
      this.tooSlow(`more than ${this.settings.bufferLimit} changes behind`);
      return;
    }
    if (batch.whole.first > this.lastQueued) this.enqueue(batch.whole);
    else for (const event of batch.each) this.enqueue(event);
    this.flush();
  }

  private tooSlow(behind: string): void {
    this.endWithError('too-slow', {
      error: 'too-slow',
      message: `this stream fell ${behind}; resume with since=${this.lastSent}`,
      lastRevision: this.lastSent,
    });
  }

  private enqueue(event: Outgoing): void {
    if (event.revision <= this.lastQueued) return;
    this.outbox.push(event);
    this.outboxEvents += event.count;
    this.lastQueued = event.revision;
  }

  private flush(): void {
    while (!this.blocked && !this.ended && this.outbox.length > 0) {
      const next = this.outbox.shift()!;
      this.outboxEvents -= next.count;
      this.lastSent = next.revision;
      this.hooks.onEventSent(next.count);
      this.write(next.bytes);
    }
    if (this.outbox.length === 0 || this.ended) this.wakeRoomWaiters();
  }

  private write(chunk: string | Buffer): void {
    if (this.ended || this.output.destroyed || this.output.writableEnded) return;
    if (!this.output.write(chunk)) this.blocked = true;
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
    this.outboxEvents = 0;
    this.write(sseEvent('error', body));
    this.finish(reason);
    // A client that does not read even the closing event must not hold its buffers for ever.
    if (!this.output.readableEnded && this.dropConnection !== null) {
      const drop = this.dropConnection;
      this.linger = setTimeout(drop, this.settings.lingerMs);
      this.linger.unref();
      this.output.once('end', () => {
        if (this.linger !== null) clearTimeout(this.linger);
      });
    }
  }

  private finish(reason: WatchEndReason): void {
    if (this.ended) return;
    this.ended = true;
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    this.outbox.length = 0;
    this.outboxEvents = 0;
    this.kept = null;
    this.wakeRoomWaiters();
    if (!this.output.destroyed && !this.output.writableEnded) this.output.end();
    this.hooks.onEnd(reason, this.started);
  }
}
