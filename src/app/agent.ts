// The agent composition: one hypervisor host's driver and sync engine, with the records kept by
// the control plane (`hvsync server`) and reached over HTTP(S), never with database credentials.
// The engine sees a RemoteStore; observations the control plane cannot take yet wait in the
// outage journal, a local SQLite file.
import { createServer, type Server } from 'node:http';
import { createHash } from 'node:crypto';
import { Registry } from 'prom-client';
import type { Logger } from 'pino';
import { Journal, RemoteStore } from '../agent/index.ts';
import { ApiClient } from '../client/index.ts';
import type { Transport } from '../client/index.ts';
import { parseListen } from '../server/index.ts';
import type { InstanceRecord } from '../store/index.ts';
import type { SimHypervisor } from '../virt/index.ts';
import type { SyncEngine } from '../sync/index.ts';
import { startEngine } from './engine.ts';
import type { EngineConfig } from './engine.ts';
import { registerAgentMetrics } from './agent-metrics.ts';
import { ConnectionErrorRecorder } from './connection-error.ts';
import { registerEngineMetrics } from './engine-metrics.ts';
import { chooseHypervisor, connectWithRetry, type HypervisorChoice } from './hypervisor.ts';
import { registerProcessMetrics } from './process-metrics.ts';

export interface AgentConfig extends EngineConfig {
  readonly hypervisor: Extract<HypervisorChoice, { kind: 'libvirt' | 'sim' }>;
  /** The control plane's base URL. */
  readonly server: string;
  /** How requests reach it (the CLI gives node:http, with its TLS trust and kept-alive sockets). */
  readonly transport: Transport;
  readonly token?: string;
  /** This host's name in the records; default: what the hypervisor says. */
  readonly host?: string;
  /** The outage journal's file; default ./hvsync-agent-HOST.journal. */
  readonly journal?: string;
  /** Most observations the journal keeps. */
  readonly journalLimit: number;
  readonly pollIntervalMs?: number;
  /** Serve Prometheus metrics at http://ADDRESS/metrics. */
  readonly metricsListen?: string;
  /** How often the host's status is reported (its lastSeenAt); default 10 s. */
  readonly statusIntervalMs?: number;
  /** Longest wait between attempts to reach the control plane; default 5 s. */
  readonly retryMaxMs?: number;
  /** Longest wait for one request to the control plane; default 10 s. */
  readonly requestTimeoutMs?: number;
  readonly logger: Logger;
  readonly signal?: AbortSignal;
}

export interface RunningAgent {
  readonly host: string;
  readonly engine: SyncEngine;
  readonly store: RemoteStore;
  readonly journalPath: string;
  /** The simulated hypervisor, when it is one. */
  readonly sim: SimHypervisor | undefined;
  /** Where metrics are served, when asked for. */
  readonly metricsUrl: string | null;
  stop(): Promise<void>;
}

export function defaultJournalPath(host: string): string {
  return `./hvsync-agent-${host.replace(/[^A-Za-z0-9._-]/g, '_')}.journal`;
}

/** A simulated host's uuids follow from its name, so hosts side by side never share one. */
export function simSeed(host: string): number {
  return createHash('sha256').update(host).digest().readUInt32BE(0);
}

export async function startAgent(config: AgentConfig): Promise<RunningAgent> {
  const { logger, signal } = config;
  const metricsAddress =
    config.metricsListen === undefined ? null : parseListen(config.metricsListen);
  const client = new ApiClient({
    server: config.server,
    token: config.token,
    timeoutMs: config.requestTimeoutMs ?? 10_000,
    transport: config.transport,
  });
  const hypervisor =
    config.hypervisor.kind === 'sim' && config.host !== undefined
      ? { ...config.hypervisor, hostname: config.host, seed: simSeed(config.host) }
      : config.hypervisor;
  const connectionErrors = new ConnectionErrorRecorder(logger);
  const { driver, description, sim, ratePerSecond } = await chooseHypervisor(hypervisor, logger, {
    onConnectionError: connectionErrors.report,
    pollIntervalMs: config.pollIntervalMs,
  });
  let journal: Journal | undefined;
  let store: RemoteStore | undefined;
  let engine: SyncEngine | undefined;
  let metricsServer: Server | undefined;
  const teardown = async (): Promise<void> => {
    sim?.stopWorkload();
    await engine?.stop();
    await driver.close();
    await connectionErrors.settled();
    await store?.close();
    journal?.close();
    await new Promise<void>((resolve) =>
      metricsServer ? metricsServer.close(() => resolve()) : resolve(),
    );
    sim?.close();
  };
  try {
    await connectWithRetry(
      driver,
      description,
      logger,
      signal ?? new AbortController().signal,
      () => {},
    );
    const host = config.host ?? (await driver.hostname());
    const journalPath = config.journal ?? defaultJournalPath(host);
    journal = Journal.open(journalPath, { host, maxEntries: config.journalLimit });
    const log = logger.child({ component: 'agent', host });
    // A record changed by someone else (a user's action recorded by a control-plane replica):
    // the engine performs a task it finds recorded there. Before the engine runs, its start
    // picks up whatever tasks the listing brought.
    const recordChanged = (record: InstanceRecord): void => {
      log.debug({ uuid: record.uuid, taskState: record.taskState }, 'record changed elsewhere');
      engine?.recordChanged(record);
    };
    const remote = new RemoteStore({
      client,
      host,
      journal,
      logger: log,
      statusIntervalMs: config.statusIntervalMs,
      retryMaxMs: config.retryMaxMs,
      onRecordChanged: recordChanged,
      onSynced: () => {
        engine?.reconcile({ reread: true }).catch((error: unknown) => {
          log.warn({ err: error }, 'reconcile after the outage failed');
        });
      },
    });
    store = remote;
    logger.info({ server: client.server, host }, `listing ${host}'s records from ${client.server}`);
    await remote.start(signal);

    const registry = new Registry();
    registerProcessMetrics(registry);
    const metrics = registerEngineMetrics(
      registry,
      () => engine,
      () => driver.connected,
    );
    registerAgentMetrics(registry, () => remote.stats);

    const started = await startEngine(
      { driver, store: remote, host, logger, onCommit: metrics.onCommit },
      config,
    );
    engine = started;
    connectionErrors.attach(remote, host);
    signal?.throwIfAborted();

    let metricsUrl: string | null = null;
    if (metricsAddress !== null) {
      metricsServer = createServer((request, response) => {
        if (request.url !== '/metrics') {
          response.writeHead(404).end();
          return;
        }
        registry.metrics().then(
          (text) => response.writeHead(200, { 'content-type': registry.contentType }).end(text),
          () => response.writeHead(500).end(),
        );
      });
      const server = metricsServer;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(metricsAddress.port, metricsAddress.host, () => resolve());
      });
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      metricsUrl = `http://${metricsAddress.host.includes(':') ? `[${metricsAddress.host}]` : metricsAddress.host}:${port}/metrics`;
    }
    if (sim && ratePerSecond > 0) sim.startWorkload({ ratePerSecond });
    logger.info(
      { host, hypervisor: description, server: client.server, journal: journalPath },
      `agent for ${host} (${description}) reporting to ${client.server}`,
    );
    let stopped = false;
    return {
      host,
      engine: started,
      store: remote,
      journalPath,
      sim,
      metricsUrl,
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
