// Prometheus metrics of the store: its health (a database that stops taking writes must be
// visible to whoever watches the service, not only in its log) and where its writes' time goes.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { CommitTiming, Store } from '../store/index.ts';

const SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/**
 * Histograms of the write transactions; the answer is the store's `onCommit`, so they are made
 * before the store opens.
 */
export function registerCommitMetrics(registry: Registry): (commit: CommitTiming) => void {
  const queued = new Histogram({
    name: 'hvsync_store_write_queue_seconds',
    help: 'Each write, from the call to its transaction starting: the rest of its event-loop turn and, on PostgreSQL, the transaction in flight ahead of it.',
    buckets: SECONDS,
    registers: [registry],
  });
  const committed = new Histogram({
    name: 'hvsync_store_commit_seconds',
    help: 'Write transactions, from their start to their commit (PostgreSQL: one round trip).',
    buckets: SECONDS,
    registers: [registry],
  });
  const writes = new Histogram({
    name: 'hvsync_store_commit_writes',
    help: 'Writes per committed transaction.',
    buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000],
    registers: [registry],
  });
  return (commit) => {
    committed.observe(commit.commitMs / 1000);
    writes.observe(commit.queuedMs.length);
    for (const ms of commit.queuedMs) queued.observe(ms / 1000);
  };
}

export function registerStoreMetrics(registry: Registry, store: Store): void {
  new Gauge({
    name: 'hvsync_store_writable',
    help: '1 while database writes commit, 0 since the last one failed.',
    registers: [registry],
    collect() {
      this.set(store.writeFailure === null ? 1 : 0);
    },
  });
  let seen = 0;
  new Counter({
    name: 'hvsync_store_write_failures_total',
    help: 'Write transactions (and host updates) that could not commit: disk full, I/O error...',
    registers: [registry],
    collect() {
      const total = store.stats.commitFailures;
      if (total > seen) this.inc(total - seen);
      seen = total;
    },
  });
}
