// `hvsync agent`: one hypervisor host's driver and sync engine, reporting to the control plane
// (`hvsync server`) over HTTP(S) with a token, never with database credentials. What the control
// plane cannot take while it is down waits in a local journal and is sent when it is back.
import type { Command } from 'commander';
import { LOCAL_LIBVIRT_URI } from './all-in-one.ts';
import {
  clientCa,
  createLogger,
  nonNegative,
  positiveInteger,
  positiveNumber,
  readEngineOptions,
  refuseEmpty,
  runUntilSignal,
  simulatedInstances,
  withEngineOptions,
  withHypervisorOptions,
  withLogLevelOption,
} from './options.ts';
import { readToken, withTokenOptions } from './token.ts';
import type { TokenOptions } from './token.ts';
import type { EngineOptions, HypervisorOptions } from './options.ts';

const DEFAULT_SERVER = 'http://127.0.0.1:8080';
const DEFAULT_JOURNAL_LIMIT = 100_000;

interface AgentOptions extends HypervisorOptions, EngineOptions, TokenOptions {
  server: string;
  ca?: string;
  host?: string;
  journal?: string;
  journalLimit: string;
  metricsListen?: string;
  statusInterval: string;
  logLevel: string;
}

export function registerAgent(program: Command): void {
  const env = process.env;
  const command = program
    .command('agent')
    .description(
      'sync this hypervisor host into a control plane (hvsync server) over HTTP(S); journal what it cannot send',
    );
  withHypervisorOptions(command, `default ${LOCAL_LIBVIRT_URI}`);
  command.option(
    '--server <url>',
    `the control plane's URL (env HVSYNC_SERVER; default ${DEFAULT_SERVER})`,
    env.HVSYNC_SERVER ?? DEFAULT_SERVER,
  );
  withTokenOptions(command, 'bearer token for the control plane');
  command
    .option(
      '--ca <file>',
      'trust this PEM CA certificate for an https control plane (env HVSYNC_CA)',
    )
    .option(
      '--host <name>',
      "this host's name in the records (env HVSYNC_HOST; default: the hypervisor's)",
      env.HVSYNC_HOST,
    )
    .option(
      '--journal <path>',
      'the outage journal, an SQLite file (env HVSYNC_JOURNAL; default ./hvsync-agent-HOST.journal)',
      env.HVSYNC_JOURNAL,
    )
    .option(
      '--journal-limit <n>',
      'most observations the journal keeps (env HVSYNC_JOURNAL_LIMIT)',
      env.HVSYNC_JOURNAL_LIMIT ?? String(DEFAULT_JOURNAL_LIMIT),
    );
  withEngineOptions(command)
    .option(
      '--status-interval <seconds>',
      "report this host's status at least this often (env HVSYNC_STATUS_INTERVAL)",
      env.HVSYNC_STATUS_INTERVAL ?? '10',
    )
    .option(
      '--metrics-listen <host:port>',
      'serve Prometheus metrics at /metrics there (env HVSYNC_METRICS_LISTEN; default: none)',
      env.HVSYNC_METRICS_LISTEN,
    );
  withLogLevelOption(command).action(async (options: AgentOptions) => {
    const engine = readEngineOptions(options);
    refuseEmpty([
      [options.hypervisor, '--hypervisor (or HVSYNC_HYPERVISOR)'],
      [options.host, '--host (or HVSYNC_HOST)'],
      [options.journal, '--journal (or HVSYNC_JOURNAL)'],
      [options.server, '--server (or HVSYNC_SERVER)'],
    ]);
    const instances = simulatedInstances(options);
    const hypervisor =
      instances === null
        ? { kind: 'libvirt' as const, uri: options.hypervisor ?? LOCAL_LIBVIRT_URI }
        : {
            kind: 'sim' as const,
            instances,
            ratePerSecond: nonNegative('--sim-rate', options.simRate),
          };
    const { HvsyncClient } = await import('./client.ts');
    const { nodeHttpTransport } = await import('./http-transport.ts');
    // The URL is checked now, before anything connects: a missing scheme is one clear line.
    new HvsyncClient({ server: options.server });
    const config = {
      hypervisor,
      server: options.server,
      transport: nodeHttpTransport({ ca: clientCa(options), keepAlive: true }),
      token: readToken(options),
      host: options.host,
      journal: options.journal,
      journalLimit: positiveInteger('--journal-limit', options.journalLimit),
      ...engine,
      statusIntervalMs: positiveNumber('--status-interval', options.statusInterval) * 1000,
      metricsListen: options.metricsListen,
    };
    const logger = await createLogger(options.logLevel);
    await runUntilSignal(logger, async (signal) => {
      const { startAgent } = await import('../app/index.ts');
      return startAgent({ ...config, logger, signal });
    });
  });
}
