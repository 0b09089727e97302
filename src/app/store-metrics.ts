// Prometheus metrics of the embedded store's health: a database that stops taking writes must be
// visible to whoever watches the service, not only in its log.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Store } from '../store/index.ts';

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
