// What the cost-at-rest benchmark and its child processes say to each other over the IPC channel.

export type ContenderConfig =
  | {
      /** `service`: the all-in-one (engine, store, API, metrics); `engine`: engine + store. */
      readonly kind: 'service' | 'engine';
      /** The compiled build (`npm run build`) to run, as an absolute path: what users run. */
      readonly dist: string;
      readonly uri: string;
      readonly db: string;
      readonly reconcileIntervalMs: number;
      readonly windowMs: number;
    }
  | {
      /** A Node process that does nothing: the floor every contender stands on. */
      readonly kind: 'idle';
      readonly windowMs: number;
    }
  | {
      readonly kind: 'poller';
      readonly dist: string;
      readonly uri: string;
      readonly periodMs: number;
      readonly windowMs: number;
    };

/** Parent → child. */
export type ParentMessage = { readonly type: 'measure' } | { readonly type: 'finish' };

export interface ContenderResult {
  readonly type: 'result';
  readonly windowS: number;
  readonly cpuUserS: number;
  readonly cpuSystemS: number;
  readonly rssEndBytes: number;
  /** The process's peak since it started (start-up included). */
  readonly rssPeakBytes: number;
  readonly heapUsedBytes: number;
  /** What the contender did inside the window, counted by itself. */
  readonly work: Readonly<Record<string, number>>;
}

/** Child → parent. */
export type ChildMessage =
  | { readonly type: 'ready'; readonly instances: number; readonly setupMs: number }
  | ContenderResult
  | { readonly type: 'error'; readonly message: string };

export function isChildMessage(value: unknown): value is ChildMessage {
  if (typeof value !== 'object' || value === null) return false;
  const type = (value as { type?: unknown }).type;
  return type === 'ready' || type === 'result' || type === 'error';
}

export function isParentMessage(value: unknown): value is ParentMessage {
  if (typeof value !== 'object' || value === null) return false;
  const type = (value as { type?: unknown }).type;
  return type === 'measure' || type === 'finish';
}
