// The all-in-one service: one host's hypervisor driver and sync engine, an embedded SQLite
// store, and the API in front of them, in one process.
import { Registry } from 'prom-client';
import type { Logger } from 'pino';
import { LibvirtClient, DEFAULT_URI } from '../libvirt/index.ts';
import { openSqliteStore, type Store } from '../store/index.ts';
import type { Policy } from '../store/index.ts';
import { SyncEngine, SyncError } from '../sync/index.ts';
import { LibvirtDriver, SimDriver, SimHypervisor, type HypervisorDriver } from '../virt/index.ts';
import { buildServer } from './app.ts';
import { registerEngineMetrics } from './engine-metrics.ts';
import { checkListen, listen, parseListen, type Listening } from './listen.ts';
import { registerProcessMetrics } from './process-metrics.ts';
import { ActionRejected, type ActionPort, type ReadinessPort } from './types.ts';

export type HypervisorChoice =
  | { readonly kind: 'libvirt'; readonly uri: string }
  | { readonly kind: 'sim'; readonly instances: number; readonly ratePerSecond: number }
  /** The local libvirt when its socket answers, else a simulated host. */
  | { readonly kind: 'auto'; readonly instances: number; readonly ratePerSecond: number };

export interface ServiceConfig {
  readonly hypervisor: HypervisorChoice;
  readonly db: string;
  readonly listen: string;
  readonly policy: Policy;
  readonly reconcileIntervalMs: number;
  readonly token?: string;
  readonly logger: Logger;
}

export interface RunningService {
  readonly url: string;
  readonly host: string;
  readonly hypervisor: string;
  readonly engine: SyncEngine;
  readonly store: Store;
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

/** Tells whether a libvirtd answers at `uri`: the handshake, not just the socket file. */
async function libvirtAnswers(uri: string): Promise<boolean> {
  try {
    const client = await LibvirtClient.connect({ uri, connectTimeoutMs: 2000 });
    await client.close();
    return true;
  } catch {
    return false;
  }
}

async function chooseDriver(
  choice: HypervisorChoice,
  logger: Logger,
): Promise<{ driver: HypervisorDriver; description: string; sim?: SimHypervisor }> {
  if (choice.kind === 'libvirt') {
    return {
      driver: new LibvirtDriver({ uri: choice.uri }),
      description: `libvirt at ${choice.uri}`,
    };
  }
  if (choice.kind === 'auto' && (await libvirtAnswers(DEFAULT_URI))) {
    return {
      driver: new LibvirtDriver({ uri: DEFAULT_URI }),
      description: `libvirt at ${DEFAULT_URI}`,
    };
  }
  if (choice.kind === 'auto') {
    logger.info(`no libvirt answers at ${DEFAULT_URI}: using a simulated host`);
  }
  const sim = new SimHypervisor({ hostname: 'sim-host', instances: choice.instances });
  return {
    driver: new SimDriver(sim),
    sim,
    description: `a simulated host of ${choice.instances} instances (${choice.ratePerSecond} changes/s)`,
  };
}

export async function startService(config: ServiceConfig): Promise<RunningService> {
  const { logger } = config;
  const address = parseListen(config.listen);
  // Refused before anything is connected or opened: a bad address must cost nothing.
  checkListen(address, config.token !== undefined);
  const { driver, description, sim } = await chooseDriver(config.hypervisor, logger);
  logger.info({ hypervisor: description }, `hypervisor: ${description}`);
  const store = await openSqliteStore(config.db);
  const registry = new Registry();
  registerProcessMetrics(registry);

  let engine: SyncEngine | undefined;
  const metrics = registerEngineMetrics(
    registry,
    () => engine,
    () => driver.connected,
  );
  try {
    await driver.connect();
    const host = await driver.hostname();
    engine = new SyncEngine({
      driver,
      store,
      host,
      policy: config.policy,
      reconcileIntervalMs: config.reconcileIntervalMs,
      logger: logger.child({ component: 'sync', host }),
      onCommit: metrics.onCommit,
    });
    await engine.start();
  } catch (error) {
    await driver.close().catch(() => undefined);
    await store.close();
    throw error;
  }
  const running = engine;

  const actions: ActionPort = {
    async submit(uuid, action) {
      try {
        await running.act(uuid, action);
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
  const readiness: ReadinessPort = {
    check() {
      const reasons: string[] = [];
      if (!driver.connected) reasons.push('the hypervisor is not connected');
      else if (!running.ready) reasons.push('the first reconcile has not finished');
      return { ready: reasons.length === 0, reasons };
    },
  };
  const server = buildServer({
    store,
    actions,
    readiness,
    registry,
    token: config.token,
    logger: logger.child({ component: 'api' }),
  });
  let listening: Listening;
  try {
    listening = await listen(server, address);
  } catch (error) {
    await running.stop();
    await driver.close();
    await store.close();
    throw error;
  }
  if (sim && config.hypervisor.kind !== 'libvirt' && config.hypervisor.ratePerSecond > 0) {
    sim.startWorkload({ ratePerSecond: config.hypervisor.ratePerSecond });
  }
  logger.info({ url: listening.url, host: running.host }, `serving the API at ${listening.url}`);

  return {
    url: listening.url,
    host: running.host,
    hypervisor: description,
    engine: running,
    store,
    async stop() {
      sim?.stopWorkload();
      await server.close();
      await running.stop();
      await driver.close();
      await store.close();
      sim?.close();
    },
  };
}
