// `hvsync agent`: one hypervisor host's driver and sync engine, reporting to the control plane
// (`hvsync server`) over HTTP(S) with a token, never with database credentials. What the control
// plane cannot take while it is down waits in a local journal and is sent when it is back.
import { InvalidArgumentError, type Command } from 'commander';
import type { Policy } from '../model/index.ts';
import { LOCAL_LIBVIRT_URI } from './all-in-one.ts';
import {
  clientCa,
  createLogger,
  nonNegative,
  positiveInteger,
  positiveNumber,
  readToken,
  runUntilSignal,
} from './options.ts';

const DEFAULT_SERVER = 'http://127.0.0.1:8080';
const DEFAULT_JOURNAL_LIMIT = 100_000;
const DEFAULT_SIM_INSTANCES = 20;

interface AgentOptions {
  hypervisor?: string;
  sim?: string | boolean;
  simRate: string;
  server: string;
  token?: string;
  tokenFile?: string;
  ca?: string;
  host?: string;
  journal?: string;
  journalLimit: string;
  policy: string;
  reconcileInterval: string;
  pollInterval?: string;
  metricsListen?: string;
  statusInterval: string;
  logLevel: string;
}

export function registerAgent(program: Command): void {
  const env = process.env;
  program
    .command('agent')
    .description(
      'sync this hypervisor host into a control plane (hvsync server) over HTTP(S); journal what it cannot send',
    )
    .option(
      '--hypervisor <uri>',
      `libvirt URI to sync (env HVSYNC_HYPERVISOR; default ${LOCAL_LIBVIRT_URI})`,
      env.HVSYNC_HYPERVISOR,
    )
    .option(
      '--sim [instances]',
      `a simulated host with fake instances and a live workload (default ${DEFAULT_SIM_INSTANCES}; env HVSYNC_SIM)`,
      env.HVSYNC_SIM,
    )
    .option(
      '--sim-rate <perSecond>',
      'changes per second of the simulated workload (env HVSYNC_SIM_RATE)',
      env.HVSYNC_SIM_RATE ?? '1',
    )
    .option(
      '--server <url>',
      `the control plane's URL (env HVSYNC_SERVER; default ${DEFAULT_SERVER})`,
      env.HVSYNC_SERVER ?? DEFAULT_SERVER,
    )
    .option(
      '--token <token>',
      'bearer token for the control plane (env HVSYNC_TOKEN)',
      env.HVSYNC_TOKEN,
    )
    .option(
      '--token-file <path>',
      'read the bearer token from a file (env HVSYNC_TOKEN_FILE)',
      env.HVSYNC_TOKEN_FILE,
    )
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
    )
    .option(
      '--policy <policy>',
      'observe | enforce (env HVSYNC_POLICY)',
      env.HVSYNC_POLICY ?? 'observe',
    )
    .option(
      '--reconcile-interval <seconds>',
      'full reconcile period, 0 disables (env HVSYNC_RECONCILE_INTERVAL)',
      env.HVSYNC_RECONCILE_INTERVAL ?? '60',
    )
    .option(
      '--poll-interval <seconds>',
      'poll the hypervisor this often instead of using its events (env HVSYNC_POLL_INTERVAL)',
      env.HVSYNC_POLL_INTERVAL,
    )
    .option(
      '--status-interval <seconds>',
      "report this host's status at least this often (env HVSYNC_STATUS_INTERVAL)",
      env.HVSYNC_STATUS_INTERVAL ?? '10',
    )
    .option(
      '--metrics-listen <host:port>',
      'serve Prometheus metrics at /metrics there (env HVSYNC_METRICS_LISTEN; default: none)',
      env.HVSYNC_METRICS_LISTEN,
    )
    .option(
      '--log-level <level>',
      'trace | debug | info | warn | error (env HVSYNC_LOG_LEVEL)',
      env.HVSYNC_LOG_LEVEL ?? 'info',
    )
    .action(async (options: AgentOptions) => {
      if (options.policy !== 'observe' && options.policy !== 'enforce') {
        throw new InvalidArgumentError(
          `--policy must be observe or enforce, got ${JSON.stringify(options.policy)}`,
        );
      }
      for (const [value, name] of [
        [options.hypervisor, '--hypervisor (or HVSYNC_HYPERVISOR)'],
        [options.host, '--host (or HVSYNC_HOST)'],
        [options.journal, '--journal (or HVSYNC_JOURNAL)'],
        [options.server, '--server (or HVSYNC_SERVER)'],
      ] as const) {
        if (value !== undefined && value.trim() === '') {
          throw new InvalidArgumentError(`${name} is empty: give a value or leave it out`);
        }
      }
      const sim = options.sim !== undefined && options.sim !== false;
      if (options.hypervisor !== undefined && sim) {
        throw new InvalidArgumentError('give either --hypervisor or --sim, not both');
      }
      const hypervisor = sim
        ? {
            kind: 'sim' as const,
            instances:
              options.sim === true
                ? DEFAULT_SIM_INSTANCES
                : positiveInteger('--sim', String(options.sim)),
            ratePerSecond: nonNegative('--sim-rate', options.simRate),
          }
        : { kind: 'libvirt' as const, uri: options.hypervisor ?? LOCAL_LIBVIRT_URI };
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
        policy: options.policy as Policy,
        reconcileIntervalMs: nonNegative('--reconcile-interval', options.reconcileInterval) * 1000,
        pollIntervalMs:
          options.pollInterval === undefined
            ? undefined
            : positiveNumber('--poll-interval', options.pollInterval) * 1000,
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
