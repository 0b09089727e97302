// `hvsync all-in-one`: what `npm start` runs. One host synced into an embedded store, served.
import { InvalidArgumentError, type Command } from 'commander';
// Types only: the service's stack loads inside the action, so other commands start fast.
import type { HypervisorChoice } from '../app/index.ts';
import type { Policy } from '../model/index.ts';
import {
  createLogger,
  nonNegative,
  positiveInteger,
  positiveNumber,
  readToken,
  runUntilSignal,
  readTls,
  withTlsOptions,
} from './options.ts';

/**
 * libvirt's local system URI, the libvirt client's own default (a test holds the two equal):
 * spelled here so that registering this command loads no libvirt code for the other commands.
 */
export const LOCAL_LIBVIRT_URI = 'qemu:///system';
const DEFAULT_SIM_INSTANCES = 20;
const DEFAULT_SIM_RATE = 1;
// Fake instances never land in the file a real host uses by default.
const DEFAULT_DB = './hvsync.db';
const DEFAULT_SIM_DB = './hvsync-sim.db';

interface AllInOneOptions {
  hypervisor?: string;
  sim?: string | boolean;
  simRate: string;
  db?: string;
  listen: string;
  policy: string;
  reconcileInterval: string;
  pollInterval?: string;
  token?: string;
  tokenFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  maxWatchers: string;
  logLevel: string;
}

/**
 * The simulator only when asked for by name. Anything that says "this is a deployment" (a
 * hypervisor or a database) means libvirt, waited for when it is not there yet; only a start
 * with none of them is the demo, which may fall back to a simulated host and says so.
 */
function hypervisorChoice(options: AllInOneOptions): HypervisorChoice {
  const ratePerSecond = nonNegative('--sim-rate', options.simRate);
  // Empty is a mistake (an unset variable in a unit file), never a request for the demo.
  for (const [value, name] of [
    [options.hypervisor, '--hypervisor (or HVSYNC_HYPERVISOR)'],
    [options.db, '--db (or HVSYNC_DB)'],
  ] as const) {
    if (value !== undefined && value.trim() === '') {
      throw new InvalidArgumentError(`${name} is empty: give a value or leave it out`);
    }
  }
  const sim = options.sim !== undefined && options.sim !== false;
  if (options.hypervisor && sim) {
    throw new InvalidArgumentError('give either --hypervisor or --sim, not both');
  }
  if (options.hypervisor) return { kind: 'libvirt', uri: options.hypervisor };
  if (sim) {
    const instances =
      options.sim === true ? DEFAULT_SIM_INSTANCES : positiveInteger('--sim', String(options.sim));
    return { kind: 'sim', instances, ratePerSecond };
  }
  if (options.db !== undefined) return { kind: 'libvirt', uri: LOCAL_LIBVIRT_URI };
  return {
    kind: 'demo',
    instances: DEFAULT_SIM_INSTANCES,
    ratePerSecond,
    simulatedDb: DEFAULT_SIM_DB,
  };
}

function databasePath(options: AllInOneOptions, hypervisor: HypervisorChoice): string {
  return options.db ?? (hypervisor.kind === 'sim' ? DEFAULT_SIM_DB : DEFAULT_DB);
}

export function registerAllInOne(program: Command): void {
  const env = process.env;
  withTlsOptions(program.command('all-in-one'))
    .description(
      'sync one hypervisor host into an embedded store and serve the API (what npm start runs)',
    )
    .option(
      '--hypervisor <uri>',
      `libvirt URI to sync (env HVSYNC_HYPERVISOR; ${LOCAL_LIBVIRT_URI} when --db is given)`,
      env.HVSYNC_HYPERVISOR,
    )
    .option(
      '--sim [instances]',
      `a simulated host with a live workload and fake instances (default ${DEFAULT_SIM_INSTANCES}; env HVSYNC_SIM)`,
      env.HVSYNC_SIM,
    )
    .option(
      '--sim-rate <perSecond>',
      'changes per second of the simulated workload (env HVSYNC_SIM_RATE)',
      env.HVSYNC_SIM_RATE ?? String(DEFAULT_SIM_RATE),
    )
    .option(
      '--db <path>',
      `SQLite path or postgres:// URL (env HVSYNC_DB; default ${DEFAULT_DB}, ${DEFAULT_SIM_DB} for a simulated host)`,
      env.HVSYNC_DB,
    )
    .option(
      '--listen <host:port>',
      'API address (env HVSYNC_LISTEN)',
      env.HVSYNC_LISTEN ?? '127.0.0.1:8080',
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
      'poll the hypervisor this often instead of using its events, for one without events (env HVSYNC_POLL_INTERVAL)',
      env.HVSYNC_POLL_INTERVAL,
    )
    .option(
      '--token <token>',
      'require this bearer token on the API (env HVSYNC_TOKEN)',
      env.HVSYNC_TOKEN,
    )
    .option(
      '--token-file <path>',
      'read the bearer token from a file (env HVSYNC_TOKEN_FILE)',
      env.HVSYNC_TOKEN_FILE,
    )
    .option(
      '--max-watchers <n>',
      'watch streams served at once; more are told 503 (env HVSYNC_MAX_WATCHERS)',
      env.HVSYNC_MAX_WATCHERS ?? '1000',
    )
    .option(
      '--log-level <level>',
      'trace | debug | info | warn | error (env HVSYNC_LOG_LEVEL)',
      env.HVSYNC_LOG_LEVEL ?? 'info',
    )
    .action(async (options: AllInOneOptions) => {
      if (options.policy !== 'observe' && options.policy !== 'enforce') {
        throw new InvalidArgumentError(
          `--policy must be observe or enforce, got ${JSON.stringify(options.policy)}`,
        );
      }
      const hypervisor = hypervisorChoice(options);
      const logger = await createLogger(options.logLevel);
      const config = {
        hypervisor,
        db: databasePath(options, hypervisor),
        listen: options.listen,
        policy: options.policy as Policy,
        reconcileIntervalMs: nonNegative('--reconcile-interval', options.reconcileInterval) * 1000,
        pollIntervalMs:
          options.pollInterval === undefined
            ? undefined
            : positiveNumber('--poll-interval (or HVSYNC_POLL_INTERVAL)', options.pollInterval) *
              1000,
        token: readToken(options),
        tls: readTls(options),
        maxWatchers: positiveInteger('--max-watchers', options.maxWatchers),
        logger,
      };
      await runUntilSignal(logger, async (signal) => {
        const { startService } = await import('../app/index.ts');
        return startService({ ...config, signal });
      });
    });
}
