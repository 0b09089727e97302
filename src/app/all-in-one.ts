// The all-in-one composition: one host's hypervisor driver and sync engine, an embedded store,
// and the API in front of them, in one process.
import { Registry } from 'prom-client';
import type { Logger } from 'pino';
import { openStore, type Store, type StoreError } from '../store/index.ts';
import { SyncError } from '../sync/index.ts';
import type { SyncEngine } from '../sync/index.ts';
import type { SimHypervisor } from '../virt/index.ts';
import {
  ActionRejected,
  buildServer,
  tlsOptions,
  checkListen,
  listen,
  parseListen,
  ServerError,
  type ActionPort,
  type ReadinessPort,
} from '../server/index.ts';
import type { TlsFiles } from '../server/index.ts';
import { DEFAULT_HOST_TIMEOUT_MS, DEFAULT_TASK_TIMEOUT_MS } from '../model/index.ts';
import { startEngine } from './engine.ts';
import type { EngineConfig } from './engine.ts';
import { registerEngineMetrics } from './engine-metrics.ts';
import { HostMonitor } from './host-monitor.ts';
import { ConnectionErrorRecorder } from './connection-error.ts';
import { chooseHypervisor, connectWithRetry, type HypervisorChoice } from './hypervisor.ts';
import { registerCommitMetrics, registerStoreMetrics } from './store-metrics.ts';
import { registerProcessMetrics } from './process-metrics.ts';

export type { HypervisorChoice } from './hypervisor.ts';

export interface ServiceConfig extends EngineConfig {
  readonly hypervisor: HypervisorChoice;
  readonly db: string;
  readonly listen: string;
  /** Poll the hypervisor this often instead of listening to its events (none: events). */
  readonly pollIntervalMs?: number;
  readonly token?: string;
  /** Serve HTTPS with this certificate and key. */
  readonly tls?: TlsFiles;
  /** Watch streams served at once (the API's default when absent). */
  readonly maxWatchers?: number;
  readonly logger: Logger;
  /**
   * Aborting it before startService resolves (a signal while libvirt is still being waited for)
   * undoes what has started and rejects with the signal's reason.
   */
  readonly signal?: AbortSignal;
}

export interface RunningService {
  readonly url: string;
  readonly host: string;
  readonly hypervisor: string;
  readonly engine: SyncEngine;
  readonly store: Store;
  /** The simulated host when it is one: its workload and its truth, for whoever embeds this. */
  readonly sim?: SimHypervisor;
  /** Stops taking events, finishes what is in flight, closes the API and the store. */
  stop(): Promise<void>;
}

const SYNC_ERROR_TO_API: Record<string, ActionRejected['code']> = {
  'not-found': 'not-found',
  'wrong-host': 'invalid-action',
  'task-in-flight': 'task-in-flight',
  'invalid-action': 'invalid-action',
  conflict: 'task-in-flight',
  disconnected: 'unavailable',
  'not-running': 'unavailable',
};

/**
 * Starts in the order that lets every configuration error surface before anything is connected
 * or recorded: options, then the database (lock, permissions, integrity), then the listening
 * socket (a busy port), then the hypervisor, which is waited for as long as it takes while the
 * API answers /healthz and a not-ready /readyz. Resolves once the first reconcile has run. (Only
 * the demo of a bare start asks libvirt something first: whether it answers, a bare handshake.)
 */
export async function startService(config: ServiceConfig): Promise<RunningService> {
  const { logger } = config;
  const address = parseListen(config.listen);
  checkListen(address, config.token !== undefined);
  if (config.token !== undefined && !/^\S+$/.test(config.token)) {
    // A bearer token travels in one header word: one with spaces in it could never match.
    throw new ServerError('invalid-option', 'the API token must be one word, without spaces');
  }
  // A certificate and key that do not go together are refused before anything opens.
  if (config.tls !== undefined) tlsOptions(config.tls);
  const connectionErrors = new ConnectionErrorRecorder(logger);
  const chosen = await chooseHypervisor(config.hypervisor, logger, {
    onConnectionError: connectionErrors.report,
    pollIntervalMs: config.pollIntervalMs,
  });
  const { driver, description, sim } = chosen;
  const db = chosen.db ?? config.db;

  const registry = new Registry();
  const onCommit = registerCommitMetrics(registry);
  const store = await openStore(db, {
    onCommit,
    onListenerError(error: unknown) {
      logger.error({ err: error }, 'a change-feed subscriber threw; the others still got it');
    },
    onWriteHealth(failure: StoreError | null) {
      if (failure !== null) {
        logger.error(
          { err: failure },
          `database writes are failing, nothing is being recorded (not ready until a write succeeds): ${failure.message}`,
        );
      } else {
        logger.info('database writes succeed again');
      }
    },
  }).catch((error: unknown) => {
    sim?.close();
    throw error;
  });
  let engine: SyncEngine | undefined;
  let connectFailure: string | undefined;
  let stopping = false;
  const teardown = async (): Promise<void> => {
    stopping = true;
    sim?.stopWorkload();
    await server.close();
    await hosts.stop();
    await engine?.stop();
    await driver.close();
    await connectionErrors.settled();
    await store.close();
    sim?.close();
  };

  registerProcessMetrics(registry);
  const metrics = registerEngineMetrics(
    registry,
    () => engine,
    () => driver.connected,
  );
  registerStoreMetrics(registry, store);

  const actions: ActionPort = {
    async submit(uuid, action) {
      if (engine === undefined) {
        throw new ActionRejected('unavailable', `not connected to ${description} yet`);
      }
      try {
        await engine.act(uuid, action);
      } catch (error) {
        if (error instanceof SyncError) {
          throw new ActionRejected(
            SYNC_ERROR_TO_API[error.code] ?? 'invalid-action',
            error.message,
          );
        }
        throw error;
      }
      const record = await store.getInstance(uuid);
      if (!record) throw new ActionRejected('not-found', `no instance ${uuid}`);
      return record;
    },
  };
  // Its own host reports while the engine runs; others a database may hold from an earlier
  // hypervisor are judged by their last report.
  const hosts = new HostMonitor({
    store,
    hostTimeoutMs: DEFAULT_HOST_TIMEOUT_MS,
    taskTimeoutMs: DEFAULT_TASK_TIMEOUT_MS,
    logger: logger.child({ component: 'hosts' }),
    inProcess: {
      name: () => engine?.host,
      connected: () => !stopping && driver.connected,
    },
    sweepTasks: false,
  });
  const readiness: ReadinessPort = {
    check() {
      const reasons: string[] = [];
      const writeFailure = store.writeFailure;
      if (writeFailure !== null) {
        reasons.push(`the database cannot be written: ${writeFailure.message}`);
      }
      if (engine === undefined) {
        reasons.push(
          connectFailure === undefined
            ? `starting: connecting to ${description}`
            : `cannot connect to ${description}: ${connectFailure}`,
        );
      } else if (!driver.connected) reasons.push('the hypervisor is not connected');
      else if (!engine.ready) reasons.push('the first reconcile has not finished');
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

  const startup = new AbortController();
  const abort = (): void => startup.abort(config.signal?.reason);
  config.signal?.addEventListener('abort', abort, { once: true });
  try {
    if (config.signal?.aborted) abort();
    const listening = await listen(server, address);
    await hosts.start();
    logger.info(
      { url: listening.url },
      `listening at ${listening.url}; connecting to ${description}`,
    );
    await connectWithRetry(driver, description, logger, startup.signal, (reason) => {
      connectFailure = reason;
    });
    startup.signal.throwIfAborted();
    const host = await driver.hostname();
    const started = await startEngine(
      { driver, store, host, logger, onCommit: metrics.onCommit },
      config,
    );
    engine = started;
    connectionErrors.attach(store, host);
    startup.signal.throwIfAborted();
    if (sim && chosen.ratePerSecond > 0) sim.startWorkload({ ratePerSecond: chosen.ratePerSecond });
    logger.info(
      { url: listening.url, host, hypervisor: description },
      `serving the API at ${listening.url} for ${description}`,
    );
    return {
      url: listening.url,
      host,
      hypervisor: description,
      engine: started,
      store,
      ...(sim === undefined ? {} : { sim }),
      async stop() {
        if (!stopping) await teardown();
      },
    };
  } catch (error) {
    await teardown();
    throw error;
  } finally {
    config.signal?.removeEventListener('abort', abort);
  }
}
