// The tab's copy of the fleet, kept live the way an informer keeps a cache: subscribe to the
// watch stream first, list every instance page by page (the cursor API), fold the changes that
// arrived meanwhile in by version, then follow the stream. After a network blip it resumes from
// the last revision it had; a 410 (the change log no longer holds it) means list again.
import { ClientError } from '../../src/client/index.ts';
import type { ApiClient, WatchSubscription } from '../../src/client/index.ts';
import type { ApiInstance, ApiWatchEvent } from '../../src/server/index.ts';

export type FleetStatus =
  | { readonly kind: 'loading'; readonly loaded: number }
  | { readonly kind: 'live' }
  | { readonly kind: 'reconnecting'; readonly reason: string; readonly attempt: number }
  | { readonly kind: 'unauthorized'; readonly reason: string };

/** One change seen on the stream, against the record as it was before it. */
export interface FleetChange {
  readonly revision: number;
  readonly at: number;
  readonly before: ApiInstance | null;
  readonly after: ApiInstance;
}

const PAGE = 1000;
const FEED_LENGTH = 200;
const MAX_BACKOFF_MS = 5000;

export class Fleet {
  readonly instances = new Map<string, ApiInstance>();
  /** Newest first. */
  feed: FleetChange[] = [];
  status: FleetStatus = { kind: 'loading', loaded: 0 };
  /** Bumped when the set of instances or a field the table sorts or filters by may have changed. */
  shapeVersion = 0;
  /** Bumped on every change. */
  version = 0;
  lastRevision: number | null = null;

  private readonly listeners = new Set<() => void>();
  private notifyQueued = false;
  private stopped = false;
  private watch: WatchSubscription | null = null;

  constructor(private readonly api: ApiClient) {}

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  start(): void {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.watch?.close();
  }

  private async run(): Promise<void> {
    let attempt = 0;
    let needList = true;
    while (!this.stopped) {
      try {
        if (needList) {
          await this.listAndWatch();
          needList = false;
        } else {
          this.watch = await this.api.watch({ since: this.lastRevision ?? undefined });
        }
        attempt = 0;
        this.setStatus({ kind: 'live' });
        const end = await this.follow(this.watch!);
        if (this.stopped) return;
        // The server ended the stream: resume, or list again when it no longer has our revision.
        needList = end === 'relist';
        attempt += 1;
        this.setStatus({
          kind: 'reconnecting',
          reason: end === 'relist' ? 'the change log moved on' : 'the server ended the stream',
          attempt,
        });
      } catch (error) {
        if (this.stopped) return;
        if (error instanceof ClientError && error.status === 401) {
          this.setStatus({ kind: 'unauthorized', reason: error.message });
          return;
        }
        if (error instanceof ClientError && error.status === 410) needList = true;
        attempt += 1;
        this.setStatus({ kind: 'reconnecting', reason: messageOf(error), attempt });
      }
      await sleep(Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(attempt, 5)));
    }
  }

  private async listAndWatch(): Promise<void> {
    this.watch?.close();
    // Subscribed before listing, so nothing committed during the listing is missed.
    const watch = await this.api.watch();
    this.watch = watch;
    this.lastRevision = watch.startRevision;
    const seen = new Set<string>();
    let after: string | undefined;
    this.setStatus({ kind: 'loading', loaded: 0 });
    do {
      const page = await this.api.listInstances({ limit: PAGE, after, includeDeleted: true });
      for (const instance of page.instances) {
        seen.add(instance.uuid);
        this.put(instance);
      }
      after = page.next ?? undefined;
      this.shapeVersion += 1;
      this.setStatus({ kind: 'loading', loaded: seen.size });
    } while (after !== undefined && !this.stopped);
    // A re-list drops what is no longer there (kept only if a change arrived for it meanwhile).
    for (const uuid of this.instances.keys()) if (!seen.has(uuid)) this.instances.delete(uuid);
  }

  /** Applies the stream until it ends: 'resume' from lastRevision, or 'relist'. */
  private async follow(watch: WatchSubscription): Promise<'resume' | 'relist'> {
    for await (const message of watch) {
      if (message.kind === 'end') {
        if (message.error.error === 'revision-too-old') return 'relist';
        this.lastRevision = Math.max(this.lastRevision ?? 0, message.error.lastRevision);
        return 'resume';
      }
      this.apply(message.change);
    }
    if (this.stopped) return 'resume';
    throw new ClientError('unreachable', 'the watch stream was cut');
  }

  private apply(change: ApiWatchEvent): void {
    const before = this.instances.get(change.instance.uuid) ?? null;
    this.lastRevision = Math.max(this.lastRevision ?? 0, change.revision);
    if (!this.put(change.instance)) return;
    const after = change.instance;
    if (
      before === null ||
      before.powerState !== after.powerState ||
      before.vmState !== after.vmState ||
      before.taskState !== after.taskState ||
      before.host !== after.host ||
      before.name !== after.name
    ) {
      this.shapeVersion += 1;
    }
    this.feed = [{ revision: change.revision, at: Date.now(), before, after }, ...this.feed];
    if (this.feed.length > FEED_LENGTH) this.feed.length = FEED_LENGTH;
    this.changed();
  }

  /** Keeps the newer of two versions of a record; true when it took this one. */
  private put(instance: ApiInstance): boolean {
    const held = this.instances.get(instance.uuid);
    if (held !== undefined && held.version > instance.version) return false;
    this.instances.set(instance.uuid, instance);
    return true;
  }

  private setStatus(status: FleetStatus): void {
    this.status = status;
    this.changed();
  }

  /** Listeners run once per animation frame however many changes arrived in it. */
  private changed(): void {
    this.version += 1;
    if (this.notifyQueued) return;
    this.notifyQueued = true;
    requestAnimationFrame(() => {
      this.notifyQueued = false;
      for (const listener of this.listeners) listener();
    });
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
