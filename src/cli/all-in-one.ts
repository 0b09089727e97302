// `hvsync all-in-one`: what `npm start` runs. One host synced into an embedded store, served.
import type { Command } from 'commander';
// Types only: the service's stack loads inside the action, so other commands start fast.
import type { HypervisorChoice } from '../app/index.ts';
import {
  createLogger,
  DEFAULT_SIM_INSTANCES,
  nonNegative,
  positiveInteger,
  readEngineOptions,
  refuseEmpty,
  runUntilSignal,
  simulatedInstances,
  readTls,
  withEngineOptions,
  withHypervisorOptions,
  withListenOption,
  withLogLevelOption,
  withMaxWatchersOption,
  withTlsOptions,
} from './options.ts';
import { readToken, withTokenOptions, SERVED_TOKEN } from './token.ts';
import type { TokenOptions } from './token.ts';
import type { EngineOptions, HypervisorOptions, TlsOptions } from './options.ts';

/**
 * libvirt's local system URI, the libvirt client's own default (a test holds the two equal):
 * spelled here so that registering this command loads no libvirt code for the other commands.
 */
export const LOCAL_LIBVIRT_URI = 'qemu:///system';
// Fake instances never land in the file a real host uses by default.
const DEFAULT_DB = './hvsync.db';
const DEFAULT_SIM_DB = './hvsync-sim.db';

interface AllInOneOptions extends HypervisorOptions, EngineOptions, TokenOptions, TlsOptions {
  db?: string;
  listen: string;
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
  // Empty is never a request for the demo.
  refuseEmpty([
    [options.hypervisor, '--hypervisor (or HVSYNC_HYPERVISOR)'],
    [options.db, '--db (or HVSYNC_DB)'],
  ]);
  const instances = simulatedInstances(options);
  if (options.hypervisor !== undefined) return { kind: 'libvirt', uri: options.hypervisor };
  if (instances !== null) return { kind: 'sim', instances, ratePerSecond };
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
  const command = withTlsOptions(program.command('all-in-one')).description(
    'sync one hypervisor host into an embedded store and serve the API (what npm start runs)',
  );
  withHypervisorOptions(command, `${LOCAL_LIBVIRT_URI} when --db is given`).option(
    '--db <path>',
    `SQLite path or postgres:// URL (env HVSYNC_DB; default ${DEFAULT_DB}, ${DEFAULT_SIM_DB} for a simulated host)`,
    env.HVSYNC_DB,
  );
  withListenOption(command);
  withEngineOptions(command);
  withTokenOptions(command, SERVED_TOKEN);
  withMaxWatchersOption(command);
  withLogLevelOption(command).action(async (options: AllInOneOptions) => {
    const engine = readEngineOptions(options);
    const hypervisor = hypervisorChoice(options);
    const logger = await createLogger(options.logLevel);
    const config = {
      hypervisor,
      db: databasePath(options, hypervisor),
      listen: options.listen,
      ...engine,
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
