// The store a host's engine sees when the records live in the control plane (the informer model):
// reads come from a local cache of this host's records, filled by listing and kept current by the
// watch; writes made in one event-loop turn travel in one request, conditional on the version
// read, and each is appended to the outage journal first (flushed to disk while it travels).
//
// While the control plane answers, the engine gets the control plane's answer for each write
// (a conflict is re-read and decided again by the engine). While it does not, writes are applied
// to the cache as the control plane would apply them, answered at once, and wait in the journal;
// they are sent in order when it answers again (each entry at most once, see journal.ts), entries
// refused because the record changed meanwhile are rebased (rebase.ts), and once the journal is
// empty the cache is re-listed and `onSynced` told (the app reconciles then).
import { setTimeout as delay } from 'node:timers/promises';
import { ClientError } from '../client/index.ts';
import type { ApiClient } from '../client/index.ts';
import type { ApiAgentStatus, ApiAgentWrite } from '../server/index.ts';
import { StoreError } from '../store/index.ts';
import type {
  EngineStore,
  HostRecord,
  HostStatus,
  InstanceFilter,
  InstanceRecord,
  InstanceWrite,
  WriteResult,
} from '../store/index.ts';
import type { SyncLogger } from '../sync/index.ts';
import { Backoff } from './backoff.ts';
import { RecordCache, recordFromApi } from './cache.ts';
import { AgentError } from './errors.ts';
import { SEQ_GAP } from './journal.ts';
import type { Journal, JournalEntry } from './journal.ts';
import { rebaseObservation } from './rebase.ts';

export interface RemoteStoreOptions {
  readonly client: ApiClient;
  readonly host: string;
  readonly journal: Journal;
  readonly logger: SyncLogger;
  readonly now?: () => number;
  /** Most journal entries per request. Default 500; at most SEQ_GAP (see journal.ts). */
  readonly maxBatch?: number;
  /** The host's status is reported at least this often (lastSeenAt). Default 10 000 ms. */
  readonly statusIntervalMs?: number;
  /** First and longest wait between attempts to reach the control plane. Default 250 / 5 000 ms. */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  /** A record of this host changed by someone else (not an echo of this agent's own writes). */
  readonly onRecordChanged?: (record: InstanceRecord) => void;
  /** The journal drained after an outage: time to reconcile. */
  readonly onSynced?: () => void;
}

export interface RemoteStoreStats {
  /** Journal entries not acknowledged by the control plane. */
  readonly backlog: number;
  readonly limit: number;
  readonly reachable: boolean;
  /** Entries the control plane applied (or had applied: duplicates included). */
  readonly acknowledged: number;
  readonly duplicates: number;
  /** Refused entries rewritten onto the current record, and those dropped as already recorded. */
  readonly rebased: number;
  readonly superseded: number;
  /** Entries dropped at the bound (a newer one of the instance kept), and writes refused there. */
  readonly compacted: number;
  readonly refusedFull: number;
  /** Entries the control plane refused outright (bad request): dropped. */
  readonly rejected: number;
  readonly outages: number;
  readonly requests: number;
}

interface Pending {
  readonly write: InstanceWrite;
  readonly resolve: (result: WriteResult) => void;
  readonly reject: (error: unknown) => void;
}

const NEAR_BOUND = 0.8;

export class RemoteStore implements EngineStore {
  readonly cache = new RecordCache();
  private readonly client: ApiClient;
  private readonly host: string;
  private readonly journal: Journal;
  private readonly log: SyncLogger;
  private readonly now: () => number;
  private readonly maxBatch: number;
  private readonly retryMinMs: number;
  private readonly retryMaxMs: number;
  private readonly statusIntervalMs: number;
  private readonly onRecordChanged: (record: InstanceRecord) => void;
  private readonly onSynced: () => void;

  private reachable = false;
  private closing = false;
  private readonly stopped = new AbortController();
  private turn: Pending[] = [];
  private flushHandle: NodeJS.Immediate | null = null;
  /** Engine promises waiting for the control plane's answer, by journal position. */
  private readonly waiters = new Map<number, Pending>();
  /** Uuids with an entry in the request in flight, and watch changes that arrived meanwhile. */
  private inFlight = new Set<string>();
  private readonly deferred = new Map<string, InstanceRecord>();
  /** The control plane's records from its answers during a replay: what entries rebase onto. */
  private readonly known = new Map<string, InstanceRecord>();
  private sending: Promise<void> | null = null;
  private wakeSender: (() => void) | null = null;
  private hadOutage = false;
  private warnedNearBound = false;
  private fullSince: number | null = null;
  private failure: StoreError | null = null;
  private watching: Promise<void> | null = null;
  private statusTimer: NodeJS.Timeout | undefined;
  private hostStatus: Omit<ApiAgentStatus, 'backlog' | 'connectionError'> | null = null;
  private connectionError: string | null = null;
  private reporting: Promise<void> | null = null;
  private reportAgain = false;
  private readonly counters = {
    acknowledged: 0,
    duplicates: 0,
    rebased: 0,
    superseded: 0,
    compacted: 0,
    refusedFull: 0,
    rejected: 0,
    outages: 0,
    requests: 0,
  };

  constructor(options: RemoteStoreOptions) {
    this.client = options.client;
    this.host = options.host;
    this.journal = options.journal;
    this.log = options.logger;
    this.now = options.now ?? Date.now;
    this.maxBatch = Math.max(1, Math.min(options.maxBatch ?? 500, SEQ_GAP));
    this.retryMinMs = options.retryMinMs ?? 250;
    this.retryMaxMs = options.retryMaxMs ?? 5_000;
    this.statusIntervalMs = options.statusIntervalMs ?? 10_000;
    this.onRecordChanged = options.onRecordChanged ?? (() => {});
    this.onSynced = options.onSynced ?? (() => {});
  }

  get stats(): RemoteStoreStats {
    return {
      ...this.counters,
      backlog: this.journal.size,
      limit: this.journal.maxEntries,
      reachable: this.reachable,
    };
  }

  /** Why writes cannot be kept right now (the journal is full), or null. */
  get writeFailure(): StoreError | null {
    return this.failure;
  }

  /**
   * Lists this host's records into the cache (waiting for the control plane as long as it
   * takes: a fresh agent decides nothing on an empty cache), then watches, reports status, and
   * sends what an earlier run left in the journal.
   */
  async start(signal?: AbortSignal): Promise<void> {
    let synced!: () => void;
    const first = new Promise<void>((resolve) => (synced = resolve));
    const abort = (): void => this.stopped.abort();
    signal?.addEventListener('abort', abort, { once: true });
    this.watching = this.watchLoop(synced);
    try {
      await Promise.race([
        first,
        new Promise((_, reject) => {
          const fail = (): void => reject(this.stopped.signal.reason);
          if (this.stopped.signal.aborted) fail();
          this.stopped.signal.addEventListener('abort', fail, { once: true });
        }),
      ]);
    } finally {
      signal?.removeEventListener('abort', abort);
    }
    this.statusTimer = setInterval(() => this.reportStatus(), this.statusIntervalMs);
    this.statusTimer.unref();
    if (this.journal.size > 0) {
      this.log.info(
        { backlog: this.journal.size },
        `sending ${this.journal.size} observations journaled by an earlier run`,
      );
      this.hadOutage = true;
      this.kick();
    }
  }

  async getInstance(uuid: string): Promise<InstanceRecord | null> {
    return this.cache.get(uuid);
  }

  async listInstances(
    filter: InstanceFilter & { readonly host: string },
  ): Promise<InstanceRecord[]> {
    return this.cache.list(filter);
  }

  write(write: InstanceWrite): Promise<WriteResult> {
    if (this.closing && this.sending === null && !this.reachable) {
      return Promise.reject(new StoreError('closed', 'the agent is stopping'));
    }
    return new Promise((resolve, reject) => {
      this.turn.push({ write, resolve, reject });
      this.flushHandle ??= setImmediate(() => {
        this.flushHandle = null;
        this.flush();
      });
    });
  }

  async upsertHost(host: HostStatus): Promise<void> {
    this.hostStatus = {
      driver: host.driver,
      connected: host.connected,
      lastReconcileAt: host.lastReconcileAt,
    };
    this.reportStatus();
  }

  async recordConnectionError(_host: string, error: string | null): Promise<void> {
    this.connectionError = error;
    this.reportStatus();
  }

  async listHosts(): Promise<HostRecord[]> {
    return (await this.client.hosts()).map((host) => ({
      ...host,
      lastSeenAt: Date.parse(host.lastSeenAt),
      lastReconcileAt: host.lastReconcileAt === null ? null : Date.parse(host.lastReconcileAt),
    }));
  }

  /** Resolves once the journal is empty and nothing is in flight (at that moment). */
  async whenDrained(): Promise<void> {
    while (this.journal.size > 0 || this.turn.length > 0 || this.sending !== null) {
      if (this.sending !== null) await this.sending;
      else await delay(10);
    }
  }

  /**
   * Stops the watch and the status reports, sends what it can of the journal without waiting
   * for an absent control plane, and leaves the rest in the journal for the next run. The journal
   * itself is the caller's to close.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.statusTimer);
    if (this.flushHandle !== null) {
      clearImmediate(this.flushHandle);
      this.flushHandle = null;
      this.flush();
    }
    if (!this.reachable) this.stopped.abort();
    this.wakeSender?.();
    await this.sending;
    // A last report with the backlog left, unless nobody answers.
    if (this.reachable) this.reportStatus();
    await this.reporting;
    this.stopped.abort();
    await this.watching;
    // Nobody is left to answer: what waits is kept in the journal, answered from the cache.
    this.answerOptimistically();
  }

  // ---- writes -------------------------------------------------------------------------------

  private flush(): void {
    const turn = this.turn;
    this.turn = [];
    if (turn.length === 0) return;
    // Behind entries already answered from the cache, a new write must wait its turn too.
    const optimistic = !this.reachable || this.journal.size > this.waiters.size;
    if (optimistic) this.flushOptimistically(turn);
    else this.flushOnline(turn);
  }

  private flushOnline(turn: readonly Pending[]): void {
    let positions: number[];
    try {
      positions = this.append(turn.map((p) => p.write));
    } catch (error) {
      for (const pending of turn) pending.reject(error);
      return;
    }
    positions.forEach((pos, i) => this.waiters.set(pos, turn[i]!));
    this.kick();
  }

  private flushOptimistically(turn: readonly Pending[]): void {
    const before = new Map<string, InstanceRecord | null>();
    const kept: Pending[] = [];
    const results: WriteResult[] = [];
    for (const pending of turn) {
      const { uuid } = pending.write;
      if (!before.has(uuid)) before.set(uuid, this.cache.get(uuid));
      const result = this.cache.applyOptimistically(pending.write, this.now());
      if (result.ok) {
        kept.push(pending);
        results.push(result);
      } else {
        pending.resolve(result);
      }
    }
    if (kept.length === 0) return;
    try {
      this.append(kept.map((p) => p.write));
    } catch (error) {
      // Not journaled, so not applied either: the cache goes back to what it held.
      for (const [uuid, record] of before) this.cache.restore(uuid, record);
      for (const pending of kept) pending.reject(error);
      return;
    }
    // Answered as committed only once the disk has it, as the control plane would answer.
    this.journal.sync().then(
      () => kept.forEach((pending, i) => pending.resolve(results[i]!)),
      (error: unknown) => {
        // Kept in the journal all the same, and sent in turn: the engine reads it back as applied.
        const failure = new StoreError('io', messageOf(error), { cause: error });
        for (const pending of kept) pending.reject(failure);
      },
    );
    this.kick();
  }

  /** Appends to the journal, telling of compaction and of the bound; throws StoreError when full. */
  private append(writes: readonly InstanceWrite[]): number[] {
    let outcome;
    try {
      outcome = this.journal.append(writes);
    } catch (error) {
      if (error instanceof AgentError && error.code === 'journal-full') {
        this.counters.refusedFull += writes.length;
        if (this.fullSince === null) {
          this.fullSince = this.now();
          this.log.error(
            { backlog: this.journal.size, limit: this.journal.maxEntries },
            `${error.message}; new observations are refused until the control plane answers (the reconcile after it catches up on the state)`,
          );
        }
        this.failure = new StoreError('io', error.message, { cause: error });
        throw this.failure;
      }
      throw new StoreError('io', `the outage journal cannot be written: ${messageOf(error)}`, {
        cause: error,
      });
    }
    this.failure = null;
    this.fullSince = null;
    if (outcome.dropped > 0) {
      if (this.counters.compacted === 0 || this.counters.compacted % 1000 < outcome.dropped) {
        this.log.warn(
          { dropped: outcome.dropped, limit: this.journal.maxEntries },
          'the outage journal is at its bound: dropping the oldest observations of instances that have a newer one (their latest state is kept, those transitions are lost from history)',
        );
      }
      this.counters.compacted += outcome.dropped;
    }
    const size = this.journal.size;
    if (!this.warnedNearBound && size >= this.journal.maxEntries * NEAR_BOUND) {
      this.warnedNearBound = true;
      this.log.warn(
        { backlog: size, limit: this.journal.maxEntries },
        `the outage journal holds ${size} of at most ${this.journal.maxEntries} observations`,
      );
    }
    return outcome.positions;
  }

  private kick(): void {
    if (this.sending !== null) {
      this.wakeSender?.();
      return;
    }
    let failed = false;
    this.sending = this.sendLoop()
      .catch(async (error: unknown) => {
        failed = true;
        this.log.error({ err: error }, 'sending the journal failed; trying again');
        await this.pause(this.retryMaxMs);
      })
      .finally(() => {
        this.sending = null;
        if (this.journal.size > 0 && !this.closing && !(failed && this.stopped.signal.aborted)) {
          this.kick();
        }
      });
  }

  private async sendLoop(): Promise<void> {
    const backoff = new Backoff(this.retryMinMs, this.retryMaxMs);
    while (this.journal.size > 0 && !this.stopped.signal.aborted) {
      const batch = await this.nextBatch();
      if (batch.length === 0) {
        // Every entry at the head was dropped (go on), or the record to rebase onto cannot be
        // read now (wait).
        if (!this.reachable) {
          if (this.closing) return;
          await this.pause(backoff.next());
        }
        continue;
      }
      const sent = this.journal.assignSeqs(batch);
      // The disk gets the batch (and its seqs) while it travels; its answer is taken only once
      // the disk has it, so at most this one batch is ever out without being on the disk.
      const flushed = this.journal.sync().then(
        () => null,
        (error: unknown) => error,
      );
      this.inFlight = new Set(sent.map((e) => e.uuid));
      let results: readonly WriteResult[] = [];
      let failure: unknown = null;
      try {
        this.counters.requests++;
        results = (
          await this.client.agentWrites(this.host, {
            journal: this.journal.id,
            writes: sent.map(wireWrite),
          })
        ).results;
        if (results.length !== sent.length) {
          throw new ClientError('protocol', `${results.length} results for ${sent.length} writes`);
        }
      } catch (error) {
        failure = error;
      }
      // A journal that cannot be flushed stops the sending (kick retries): the answer is left
      // untaken, and the entries are resent with their seqs.
      const flushError = await flushed;
      if (flushError !== null) {
        this.releaseInFlight();
        throw flushError;
      }
      if (failure !== null) {
        this.inFlight = new Set();
        this.deferred.clear();
        if (isOutage(failure)) {
          this.unreachable(failure);
          if (this.closing) return;
          await this.pause(backoff.next());
          continue;
        }
        if (await this.refusedOutright(sent, failure)) {
          await this.pause(this.retryMaxMs);
        }
        continue;
      }
      backoff.reset();
      this.reachableAgain();
      this.settle(sent, results);
    }
    if (this.journal.size === 0 && this.hadOutage && !this.stopped.signal.aborted) {
      this.hadOutage = false;
      this.known.clear();
      this.warnedNearBound = false;
      this.log.info({}, 'the outage journal is sent: re-listing, then reconciling');
      this.reportStatus();
      try {
        await this.relist(true);
      } catch (error) {
        this.log.warn({ err: error }, 're-listing after the outage failed; the watch carries on');
      }
      this.onSynced();
    }
  }

  /** The next entries to send: from the head, each instance once, rebased where flagged. */
  private async nextBatch(): Promise<JournalEntry[]> {
    const out: JournalEntry[] = [];
    const uuids = new Set<string>();
    for (const entry of this.journal.head(this.maxBatch)) {
      // One entry per instance per request: the next one may depend on this one's answer.
      if (uuids.has(entry.uuid)) break;
      uuids.add(entry.uuid);
      if (!entry.rebase || entry.seq !== null || this.waiters.has(entry.pos)) {
        out.push(entry);
        continue;
      }
      let current: InstanceRecord | null;
      try {
        current = await this.serverRecord(entry.uuid);
      } catch (error) {
        if (!isOutage(error)) throw error;
        this.unreachable(error);
        break;
      }
      const write = rebaseObservation(entry.write, current, this.host);
      this.journal.settle([], [{ entry, write }]);
      if (write === null) {
        this.counters.superseded++;
        continue;
      }
      out.push({ ...entry, write, seq: null, rebase: false });
    }
    return out;
  }

  private async serverRecord(uuid: string): Promise<InstanceRecord | null> {
    const known = this.known.get(uuid);
    if (known !== undefined) return known;
    try {
      const record = recordFromApi(await this.client.getInstance(uuid));
      this.known.set(uuid, record);
      return record;
    } catch (error) {
      if (error instanceof ClientError && error.status === 404) return null;
      throw error;
    }
  }

  private settle(sent: readonly JournalEntry[], results: readonly WriteResult[]): void {
    const acked: number[] = [];
    const rewritten: { entry: JournalEntry; write: InstanceWrite | null }[] = [];
    const answers: (() => void)[] = [];
    sent.forEach((entry, i) => {
      const result = results[i]!;
      const record = result.ok ? result.instance : result.current;
      if (record !== null) {
        this.known.set(record.uuid, record);
        this.cache.offer(record);
      }
      const waiter = this.waiters.get(entry.pos);
      if (waiter !== undefined) {
        this.waiters.delete(entry.pos);
        acked.push(entry.pos);
        if (result.ok) this.counters.acknowledged++;
        answers.push(() => waiter.resolve(engineResult(result)));
        return;
      }
      if (result.ok || result.reason === 'duplicate') {
        acked.push(entry.pos);
        this.counters.acknowledged++;
        if (!result.ok) this.counters.duplicates++;
        return;
      }
      // Answered from the cache during an outage, refused now: rebase onto the record as it is.
      const write = rebaseObservation(entry.write, result.current, this.host);
      if (write === null) this.counters.superseded++;
      else this.counters.rebased++;
      rewritten.push({ entry, write });
    });
    this.journal.settle(acked, rewritten);
    for (const answer of answers) answer();
    this.releaseInFlight();
  }

  /** The request is over: the watch's changes held back for its instances are taken now. */
  private releaseInFlight(): void {
    const inFlight = this.inFlight;
    this.inFlight = new Set();
    for (const uuid of inFlight) {
      const change = this.deferred.get(uuid);
      if (change === undefined) continue;
      this.deferred.delete(uuid);
      this.takeChange(change);
    }
  }

  /** A 4xx: true when worth retrying later (authentication); otherwise the batch is dropped. */
  private async refusedOutright(sent: readonly JournalEntry[], error: unknown): Promise<boolean> {
    const status = error instanceof ClientError ? error.status : undefined;
    if (status === 401 || status === 403) {
      this.log.error(
        { err: error, backlog: this.journal.size },
        `the control plane refuses this agent's writes (${messageOf(error)}); retrying`,
      );
      this.unreachable(error);
      return true;
    }
    this.log.error(
      { err: error, entries: sent.length },
      `the control plane refused a batch of writes outright (${messageOf(error)}): dropped`,
    );
    this.counters.rejected += sent.length;
    this.journal.settle(
      sent.map((e) => e.pos),
      [],
    );
    const failure = new StoreError(
      'io',
      `the control plane refused the write: ${messageOf(error)}`,
    );
    for (const entry of sent) {
      const waiter = this.waiters.get(entry.pos);
      this.waiters.delete(entry.pos);
      waiter?.reject(failure);
    }
    return false;
  }

  private unreachable(error: unknown): void {
    if (this.reachable) {
      this.counters.outages++;
      this.log.warn(
        { err: error },
        `the control plane does not answer (${messageOf(error)}): journaling observations until it does`,
      );
    }
    this.reachable = false;
    this.hadOutage = true;
    this.answerOptimistically();
  }

  /**
   * The watch is back before any write went through: reachable again, and if the outage left
   * nothing in the journal the sender still re-lists and has the engine reconcile, as after any
   * outage (what changed meanwhile on this host's records is read, not assumed).
   */
  private answeringAgain(): void {
    this.reachableAgain();
    if (this.hadOutage && this.journal.size === 0 && this.sending === null) this.kick();
  }

  private reachableAgain(): void {
    if (this.reachable) return;
    this.reachable = true;
    this.log.info(
      { backlog: this.journal.size },
      `the control plane answers again: sending ${this.journal.size} journaled observations`,
    );
  }

  /** Engine writes waiting for an answer get the cache's instead; they stay in the journal. */
  private answerOptimistically(): void {
    const drop: number[] = [];
    for (const [pos, waiter] of this.waiters) {
      const result = this.cache.applyOptimistically(waiter.write, this.now());
      // Refused by the cache: the engine reads again and decides again; this one is not sent.
      if (!result.ok) drop.push(pos);
      waiter.resolve(result);
    }
    this.waiters.clear();
    if (drop.length > 0) this.journal.settle(drop, []);
  }

  private async pause(ms: number): Promise<void> {
    if (this.stopped.signal.aborted) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      const stop = this.stopped.signal;
      function done(): void {
        clearTimeout(timer);
        stop.removeEventListener('abort', done);
        resolve();
      }
      this.wakeSender = done;
      stop.addEventListener('abort', done, { once: true });
    });
    this.wakeSender = null;
  }

  // ---- the watch ----------------------------------------------------------------------------

  private async watchLoop(synced: () => void): Promise<void> {
    let since: number | undefined;
    const backoff = new Backoff(this.retryMinMs, this.retryMaxMs);
    let listed = false;
    let complained = false;
    const signal = this.stopped.signal;
    while (!signal.aborted) {
      try {
        const stream = await this.client.watch({ host: this.host, since, signal });
        if (since === undefined) {
          // Listed after the watch is open: nothing committed in between is missed.
          await this.relist(listed);
          since = stream.startRevision ?? 0;
          if (!listed) {
            listed = true;
            this.reachableAgain();
            synced();
          }
        }
        if (complained) this.log.info({}, 'watching the control plane again');
        complained = false;
        backoff.reset();
        if (!this.reachable) this.answeringAgain();
        for await (const message of stream) {
          if (message.kind === 'change') {
            since = message.change.revision;
            this.takeChange(recordFromApi(message.change.instance));
          } else if (message.error.error === 'revision-too-old') {
            since = undefined;
          } else {
            since = message.error.lastRevision;
          }
        }
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ClientError && error.status === 410) since = undefined;
        // A broken watch says the control plane is gone as surely as a failed write does, and
        // sooner when this host has nothing to write.
        if (listed && isOutage(error)) this.unreachable(error);
        if (!complained) {
          complained = true;
          this.log.warn(
            { err: error },
            listed
              ? `the watch of the control plane broke (${messageOf(error)}); resuming`
              : `cannot list this host's records yet (${messageOf(error)}); retrying`,
          );
        }
      }
      await delay(backoff.next(), undefined, { signal }).catch(() => {});
    }
  }

  /** Reads every record of this host into the cache; `notify`: tell of records others changed. */
  private async relist(notify: boolean): Promise<void> {
    const listed: InstanceRecord[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.client.listInstances({
        host: this.host,
        includeDeleted: true,
        limit: 1_000,
        after,
      });
      listed.push(...page.instances.map(recordFromApi));
      if (page.next === null) break;
      after = page.next;
    }
    const fresh = notify
      ? listed.filter((r) => (this.cache.get(r.uuid)?.version ?? 0) < r.version)
      : [];
    const pending = new Set(this.journal.head(Number.MAX_SAFE_INTEGER).map((e) => e.uuid));
    this.cache.replaceHost(this.host, listed, (uuid) => pending.has(uuid));
    for (const record of fresh) this.tell(record);
  }

  private takeChange(record: InstanceRecord): void {
    if (this.inFlight.has(record.uuid)) {
      // Maybe the echo of the write in flight: decided when its answer is in.
      this.deferred.set(record.uuid, record);
      return;
    }
    if (this.cache.offer(record)) this.tell(record);
  }

  private tell(record: InstanceRecord): void {
    try {
      this.onRecordChanged(record);
    } catch (error) {
      this.log.error({ err: error, uuid: record.uuid }, 'a record-change listener threw');
    }
  }

  // ---- status -------------------------------------------------------------------------------

  private reportStatus(): void {
    const status = this.hostStatus;
    if (status === null) return;
    if (this.reporting !== null) {
      this.reportAgain = true;
      return;
    }
    this.reporting = this.client
      .reportStatus(this.host, {
        ...status,
        backlog: this.journal.size,
        connectionError: this.connectionError,
      })
      .catch((error: unknown) => {
        this.log.debug({ err: error }, 'status report failed');
      })
      .finally(() => {
        this.reporting = null;
        if (this.reportAgain) {
          this.reportAgain = false;
          this.reportStatus();
        }
      });
  }
}

/** Failures that mean "not now" rather than "no": the control plane is down, slow or leaving. */
function isOutage(error: unknown): boolean {
  if (!(error instanceof ClientError)) return false;
  if (error.code !== 'http') return true;
  const status = error.status ?? 0;
  return status >= 500 || status === 408 || status === 429;
}

/** A duplicate an engine waits on was its own write, applied earlier: it succeeded. */
function engineResult(result: WriteResult): WriteResult {
  if (!result.ok && result.reason === 'duplicate' && result.current !== null) {
    return { ok: true, instance: result.current, revision: 0 };
  }
  return result;
}

function wireWrite(entry: JournalEntry): ApiAgentWrite {
  const { write } = entry;
  const seq = entry.seq ?? undefined;
  if (write.kind === 'create') {
    return {
      kind: 'create',
      uuid: write.uuid,
      fields: write.fields,
      transition: write.transition,
      seq,
    };
  }
  return {
    kind: 'update',
    uuid: write.uuid,
    expectedVersion: write.expectedVersion,
    patch: write.patch,
    transition: write.transition,
    seq,
  };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
