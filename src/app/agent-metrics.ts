// Prometheus metrics of a host's agent: the outage journal (its size against its bound, what was
// compacted or refused at the bound) and whether the control plane answers.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { RemoteStoreStats } from '../agent/index.ts';

export function registerAgentMetrics(registry: Registry, stats: () => RemoteStoreStats): void {
  const gauge = (name: string, help: string, read: (s: RemoteStoreStats) => number): void => {
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read(stats()));
      },
    });
  };
  gauge(
    'hvsync_agent_journal_entries',
    'Observations in the outage journal that the control plane has not acknowledged (the backlog).',
    (s) => s.backlog,
  );
  gauge(
    'hvsync_agent_journal_limit',
    'Most observations the outage journal keeps; past it the oldest superseded ones are dropped.',
    (s) => s.limit,
  );
  gauge(
    'hvsync_agent_control_plane_reachable',
    '1 while the control plane answers this agent, 0 while observations are journaled.',
    (s) => (s.reachable ? 1 : 0),
  );
  const counter = (name: string, help: string, read: (s: RemoteStoreStats) => number): void => {
    let seen = 0;
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        const total = read(stats());
        if (total > seen) this.inc(total - seen);
        seen = total;
      },
    });
  };
  counter(
    'hvsync_agent_journal_compacted_total',
    'Observations dropped at the bound because a newer one of the same instance was kept.',
    (s) => s.compacted,
  );
  counter(
    'hvsync_agent_journal_refused_total',
    'Observations refused at the bound (every entry was the only one of its instance).',
    (s) => s.refusedFull,
  );
  counter(
    'hvsync_agent_replay_duplicates_total',
    'Journal entries the control plane had already applied (answered duplicate).',
    (s) => s.duplicates,
  );
  counter(
    'hvsync_agent_replay_rebased_total',
    'Journal entries refused because the record changed meanwhile, rewritten onto the current record.',
    (s) => s.rebased,
  );
  counter(
    'hvsync_agent_replay_superseded_total',
    'Journal entries refused because the record changed meanwhile and already recorded them (dropped).',
    (s) => s.superseded,
  );
  counter(
    'hvsync_agent_outages_total',
    'Times the control plane stopped answering this agent.',
    (s) => s.outages,
  );
}
