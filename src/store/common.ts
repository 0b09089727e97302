// What both stores share beyond the interface: defaults, page limits, retention, write health,
// commit timing.
import { StoreError } from './types.ts';
import type { ChangeRecord, CommitTiming, InstanceWrite } from './types.ts';

export const DEFAULT_MAX_CHANGES = 100_000;
export const DEFAULT_MAX_BATCH = 2_000;

export interface PageLimits {
  readonly fallback: number;
  readonly cap: number;
}

export const INSTANCE_PAGE: PageLimits = { fallback: 100, cap: 1_000 };
export const HISTORY_PAGE: PageLimits = { fallback: 100, cap: 1_000 };
export const CHANGES_PAGE: PageLimits = { fallback: 1_000, cap: 10_000 };

export function pageSize(limit: number | undefined, { fallback, cap }: PageLimits): number {
  if (limit === undefined || Number.isNaN(limit)) return fallback;
  return Math.min(cap, Math.max(0, Math.floor(limit)));
}

export function describeWrite(write: InstanceWrite): string {
  return `${write.kind} ${write.uuid}`;
}

export function closedError(): StoreError {
  return new StoreError('closed', 'store is closed');
}

export type ChangeListener = (changes: readonly ChangeRecord[]) => void;

/**
 * Retention: the revision up to which change rows are deleted after a commit that added
 * `firstNew`..`latest`, or null when nothing is due. At most `maxChanges` rows are kept; once
 * exceeded they are pruned down to 90 % so that pruning runs now and then, not on every write.
 * `oldestKept` null means the log held nothing before this commit.
 */
export function pruneCutoff(
  oldestKept: number | null,
  firstNew: number,
  latest: number,
  maxChanges: number,
): number | null {
  const oldest = oldestKept ?? firstNew;
  if (latest - oldest + 1 <= maxChanges) return null;
  return latest - retainedChanges(maxChanges);
}

/** How many of the latest revisions pruning keeps: 90 % of the bound. */
export function retainedChanges(maxChanges: number): number {
  return maxChanges - Math.floor(maxChanges / 10);
}

/**
 * Whether writes commit: the first failure and the first success after failures are told once,
 * so a full disk is one log line and a metric, not one per write.
 */
export class WriteHealth {
  private failing: StoreError | null = null;
  failures = 0;

  constructor(private readonly onChange: (failure: StoreError | null) => void = () => {}) {}

  get failure(): StoreError | null {
    return this.failing;
  }

  failed(failure: StoreError): void {
    this.failures++;
    const first = this.failing === null;
    this.failing = failure;
    if (first) this.tell(failure);
  }

  succeeded(): void {
    if (this.failing === null) return;
    this.failing = null;
    this.tell(null);
  }

  private tell(failure: StoreError | null): void {
    try {
      this.onChange(failure);
    } catch {
      // A failing hook must not turn a commit into an error.
    }
  }
}

/** Tells `onCommit` where a committed batch's time went; a hook that throws changes nothing. */
export function reportCommit(
  onCommit: ((commit: CommitTiming) => void) | undefined,
  batch: readonly { readonly queuedAt: number }[],
  startedAt: number,
): void {
  if (onCommit === undefined) return;
  const commitMs = performance.now() - startedAt;
  try {
    onCommit({ queuedMs: batch.map((pending) => startedAt - pending.queuedAt), commitMs });
  } catch {
    // A failing hook must not turn a commit into an error.
  }
}
