// The control plane's watch over hosts' agents: which hosts report (for /v1/hosts and for the
// power states the API shows as stale), and the sweep that ends tasks nobody will finish — their
// host's agent is gone, or they outlived the task timeout. Every replica runs it: each ending is
// a write conditional on the version read, so when several replicas sweep one task only one wins.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from 'pino';
import {
  hostReachability,
  overdueTask,
  powerStateBelieved,
  taskEnd,
  type HostReachability,
  type HostReport,
  type TaskLimits,
} from '../model/index.ts';
import type { HostRecord, InstanceRecord, Store } from '../store/index.ts';
import type { HostHealthPort } from '../server/index.ts';

/** This process's own engine, whose host reports for as long as the engine runs. */
export interface InProcessHost {
  /** The engine's host, once known. */
  name(): string | undefined;
  /** Whether the engine runs and is connected to its hypervisor. */
  connected(): boolean;
}

export interface HostMonitorOptions extends TaskLimits {
  readonly store: Pick<Store, 'listHosts' | 'listInstances' | 'write'>;
  readonly logger: Logger;
  readonly registry?: Registry;
  /** How often hosts are re-read and tasks swept (default: a quarter of the host timeout, ≤ 2 s). */
  readonly intervalMs?: number;
  readonly inProcess?: InProcessHost;
  /**
   * End overdue tasks (default true). The all-in-one does not: its engine is the only writer of
   * its file and picks up its own leftover tasks when it starts.
   */
  readonly sweepTasks?: boolean;
  readonly now?: () => number;
}

const PAGE = 1_000;

export class HostMonitor implements HostHealthPort {
  private readonly now: () => number;
  private readonly limits: TaskLimits;
  private hosts = new Map<string, HostRecord>();
  /** Hosts last seen unreachable, so that a change is logged once. */
  private readonly unreachable = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private readonly swept: Counter | undefined;

  constructor(private readonly options: HostMonitorOptions) {
    this.now = options.now ?? Date.now;
    this.limits = { hostTimeoutMs: options.hostTimeoutMs, taskTimeoutMs: options.taskTimeoutMs };
    const { registry } = options;
    if (registry !== undefined) {
      this.swept = new Counter({
        name: 'hvsync_tasks_swept_total',
        help: "Tasks the control plane ended because their host's agent was gone or they outlived the task timeout",
        registers: [registry],
      });
      const unreachable = this.unreachable;
      new Gauge({
        name: 'hvsync_hosts_unreachable',
        help: 'Hosts whose agent has not reported within the host timeout',
        registers: [registry],
        collect() {
          this.set(unreachable.size);
        },
      });
    }
  }

  /** Reads the hosts and sweeps once now, then every interval. */
  async start(): Promise<void> {
    await this.tick();
    const interval =
      this.options.intervalMs ?? Math.min(2_000, Math.max(100, this.limits.hostTimeoutMs / 4));
    this.timer = setInterval(() => {
      this.running = this.tick();
    }, interval);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  reachable(host: HostRecord): boolean {
    return this.reachabilityOf(host.name, host).reachable;
  }

  powerStateStale(host: string): boolean {
    const record = this.hosts.get(host) ?? null;
    const reachable = this.reachabilityOf(host, record).reachable;
    return !powerStateBelieved(reachable, this.reportOf(host, record));
  }

  /** One round: re-read the hosts, log the ones that changed, end the tasks nobody will finish. */
  async tick(): Promise<void> {
    try {
      const hosts = await this.options.store.listHosts();
      this.hosts = new Map(hosts.map((host) => [host.name, host]));
      this.noteChanges(hosts);
      if (this.options.sweepTasks !== false) await this.sweep();
    } catch (error) {
      this.options.logger.warn({ err: error }, 'host check failed; trying again');
    }
  }

  private noteChanges(hosts: readonly HostRecord[]): void {
    const { logger } = this.options;
    for (const host of hosts) {
      const reachability = this.reachabilityOf(host.name, host);
      if (!reachability.reachable && !this.unreachable.has(host.name)) {
        this.unreachable.add(host.name);
        logger.warn(
          { host: host.name, lastSeenAt: host.lastSeenAt },
          `${reachability.reason}: unreachable, its instances' power states are shown stale`,
        );
      } else if (reachability.reachable && this.unreachable.delete(host.name)) {
        logger.info({ host: host.name }, `host ${host.name}'s agent reports again`);
      }
    }
  }

  /** Ends every task in flight that `overdueTask` says nobody will finish. */
  private async sweep(): Promise<void> {
    let after: string | undefined;
    for (;;) {
      const page = await this.options.store.listInstances({
        taskInFlight: true,
        limit: PAGE,
        after,
      });
      for (const record of page) await this.endIfOverdue(record);
      if (page.length < PAGE) return;
      after = page[page.length - 1]!.uuid;
    }
  }

  private async endIfOverdue(record: InstanceRecord): Promise<void> {
    const report = this.reportOf(record.host, this.hosts.get(record.host) ?? null);
    const reason = overdueTask(record, report, this.now(), this.limits);
    if (reason === null) return;
    const result = await this.options.store.write({
      kind: 'update',
      uuid: record.uuid,
      expectedVersion: record.version,
      patch: taskEnd(reason),
    });
    // A conflict: the agent finished it, or another replica ended it first.
    if (!result.ok) return;
    this.swept?.inc();
    this.options.logger.warn(
      { uuid: record.uuid, host: record.host, taskState: record.taskState, error: reason },
      `task ${record.taskState} on ${record.uuid} ended: ${reason}`,
    );
  }

  /** The in-process engine's host reports for as long as the engine runs. */
  private reportOf(name: string, host: HostRecord | null): HostReport | null {
    const own = this.options.inProcess;
    if (own !== undefined && own.name() === name) {
      return { name, lastSeenAt: this.now(), connected: own.connected() };
    }
    return host;
  }

  private reachabilityOf(name: string, host: HostRecord | null): HostReachability {
    return hostReachability(name, this.reportOf(name, host), this.now(), this.limits.hostTimeoutMs);
  }
}
