// The control-plane composition: the API, watch and metrics in front of a shared PostgreSQL
// store, with no hypervisor of its own. Several replicas may serve one database at once: each
// replica's watch hub is fed by the store's change feed, which other processes' commits reach
// through LISTEN/NOTIFY and the change log.
import { Registry } from 'prom-client';
import type { Logger } from 'pino';
import { DEFAULT_HOST_TIMEOUT_MS, DEFAULT_TASK_TIMEOUT_MS } from '../model/index.ts';
import { isPostgresUrl, openStore, type StoreError } from '../store/index.ts';
import {
  buildServer,
  tlsOptions,
  checkListen,
  listen,
  parseListen,
  ServerError,
  type ReadinessPort,
} from '../server/index.ts';
import type { TlsFiles } from '../server/index.ts';
import { HostMonitor } from './host-monitor.ts';
import { registerProcessMetrics } from './process-metrics.ts';
import { recordedActions } from './recorded-actions.ts';
import { registerCommitMetrics, registerStoreMetrics } from './store-metrics.ts';

export interface ControlPlaneConfig {
  /** A postgres:// URL: replicas share it, which an SQLite file cannot do. */
  readonly db: string;
  readonly listen: string;
  readonly token?: string;
  /** Serve HTTPS with this certificate and key. */
  readonly tls?: TlsFiles;
  readonly maxWatchers?: number;
  readonly logger: Logger;
  /** How often the database is asked whether it answers, for /readyz (default 2 s). */
  readonly probeIntervalMs?: number;
  /** A host whose agent has not reported for this long is unreachable (default 30 s). */
  readonly hostTimeoutMs?: number;
  /** The agents' task timeout, after which (plus the host timeout) a task is ended here. */
  readonly taskTimeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface RunningControlPlane {
  readonly url: string;
  stop(): Promise<void>;
}

const DEFAULT_PROBE_INTERVAL_MS = 2_000;

/** Whether the database answered the last probe: the server has no writes of its own to watch. */
class DatabaseProbe {
  private failure: string | null = null;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();

  constructor(
    private readonly ask: () => Promise<unknown>,
    private readonly logger: Logger,
  ) {}

  get reason(): string | null {
    return this.failure;
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => {
      this.running = this.probe();
    }, intervalMs);
    this.timer.unref();
  }

  async probe(): Promise<void> {
    try {
      await this.ask();
      if (this.failure !== null) this.logger.info('the database answers again');
      this.failure = null;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (this.failure === null) this.logger.error({ err: error }, 'the database does not answer');
      this.failure = message;
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }
}

export async function startControlPlane(config: ControlPlaneConfig): Promise<RunningControlPlane> {
  const { logger } = config;
  if (!isPostgresUrl(config.db)) {
    throw new ServerError(
      'invalid-option',
      `--db must be a postgres:// URL for hvsync server: replicas share one database, and an SQLite file (${config.db}) cannot be shared`,
    );
  }
  const address = parseListen(config.listen);
  checkListen(address, config.token !== undefined);
  if (config.token !== undefined && !/^\S+$/.test(config.token)) {
    throw new ServerError('invalid-option', 'the API token must be one word, without spaces');
  }
  // A certificate and key that do not go together are refused before anything opens.
  if (config.tls !== undefined) tlsOptions(config.tls);
  config.signal?.throwIfAborted();

  const registry = new Registry();
  const onCommit = registerCommitMetrics(registry);
  // Opening migrates under an advisory lock, so replicas starting together are safe.
  const store = await openStore(config.db, {
    onCommit,
    onListenerError(error: unknown) {
      logger.error({ err: error }, 'a change-feed subscriber threw; the others still got it');
    },
    onWriteHealth(failure: StoreError | null) {
      if (failure !== null)
        logger.error({ err: failure }, `database writes are failing: ${failure.message}`);
      else logger.info('database writes succeed again');
    },
  });
  const probe = new DatabaseProbe(() => store.changesSince(Number.MAX_SAFE_INTEGER, 1), logger);

  registerProcessMetrics(registry);
  registerStoreMetrics(registry, store);

  const hostTimeoutMs = config.hostTimeoutMs ?? DEFAULT_HOST_TIMEOUT_MS;
  // Actions are recorded as tasks; the agent of the instance's host performs them.
  const actions = recordedActions({ store, hostTimeoutMs });
  const hosts = new HostMonitor({
    store,
    hostTimeoutMs,
    taskTimeoutMs: config.taskTimeoutMs ?? DEFAULT_TASK_TIMEOUT_MS,
    logger: logger.child({ component: 'hosts' }),
    registry,
  });
  const readiness: ReadinessPort = {
    check() {
      const reasons: string[] = [];
      const unanswered = probe.reason;
      if (unanswered !== null) reasons.push(`the database does not answer: ${unanswered}`);
      const writeFailure = store.writeFailure;
      if (writeFailure !== null) {
        reasons.push(`the database cannot be written: ${writeFailure.message}`);
      }
      return { ready: reasons.length === 0, reasons };
    },
  };

  let server: ReturnType<typeof buildServer>;
  try {
    server = buildServer({
      store,
      actions,
      readiness,
      hosts,
      agents: store,
      registry,
      token: config.token,
      credentials: store.credentials,
      tls: config.tls,
      maxWatchers: config.maxWatchers,
      logger: logger.child({ component: 'api' }),
    });
  } catch (error) {
    await store.close();
    throw error;
  }
  const teardown = async (): Promise<void> => {
    await server.close();
    await probe.stop();
    await hosts.stop();
    await store.close();
  };
  try {
    config.signal?.throwIfAborted();
    const listening = await listen(server, address);
    probe.start(config.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS);
    await hosts.start();
    logger.info({ url: listening.url }, `serving the control-plane API at ${listening.url}`);
    let stopped = false;
    return {
      url: listening.url,
      async stop() {
        if (stopped) return;
        stopped = true;
        await teardown();
      },
    };
  } catch (error) {
    await teardown();
    throw error;
  }
}
