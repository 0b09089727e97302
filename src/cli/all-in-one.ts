// `hvsync all-in-one`: what `npm start` runs. One host synced into an embedded store, served.
import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import type { Logger } from 'pino';
// Types only: the service's stack loads inside the action, so other commands start fast.
import type { HypervisorChoice } from '../server/service.ts';
import type { Policy } from '../store/index.ts';

const DEFAULT_SIM_INSTANCES = 20;
const DEFAULT_SIM_RATE = 1;

interface AllInOneOptions {
  hypervisor?: string;
  sim?: string | boolean;
  simRate: string;
  db: string;
  listen: string;
  policy: string;
  reconcileInterval: string;
  token?: string;
  tokenFile?: string;
  logLevel: string;
}

function positiveInteger(name: string, text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    throw new InvalidArgumentError(
      `${name} must be a positive integer, got ${JSON.stringify(text)}`,
    );
  }
  return value;
}

function nonNegative(name: string, text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value < 0) {
    throw new InvalidArgumentError(`${name} must be a number ≥ 0, got ${JSON.stringify(text)}`);
  }
  return value;
}

export async function createLogger(level: string): Promise<Logger> {
  const { pino } = await import('pino');
  // People at a terminal get readable lines; everything else gets JSON, one object a line.
  return process.stdout.isTTY
    ? pino({
        level,
        transport: {
          target: 'pino-pretty',
          options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' },
        },
      })
    : pino({ level });
}

function hypervisorChoice(options: AllInOneOptions): HypervisorChoice {
  const ratePerSecond = nonNegative('--sim-rate', options.simRate);
  if (options.hypervisor && options.sim) {
    throw new InvalidArgumentError('give either --hypervisor or --sim, not both');
  }
  if (options.hypervisor) return { kind: 'libvirt', uri: options.hypervisor };
  if (options.sim !== undefined && options.sim !== false) {
    const instances =
      options.sim === true ? DEFAULT_SIM_INSTANCES : positiveInteger('--sim', options.sim);
    return { kind: 'sim', instances, ratePerSecond };
  }
  return { kind: 'auto', instances: DEFAULT_SIM_INSTANCES, ratePerSecond };
}

function readToken(options: AllInOneOptions): string | undefined {
  if (options.token && options.tokenFile) {
    throw new InvalidArgumentError('give either --token or --token-file, not both');
  }
  if (!options.tokenFile) return options.token || undefined;
  try {
    const token = readFileSync(options.tokenFile, 'utf8').trim();
    if (!token) throw new InvalidArgumentError(`token file ${options.tokenFile} is empty`);
    return token;
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw error;
    throw new InvalidArgumentError(
      `cannot read token file ${options.tokenFile}: ${(error as Error).message}`,
    );
  }
}

export function registerAllInOne(program: Command): void {
  const env = process.env;
  program
    .command('all-in-one')
    .description(
      'sync one hypervisor host into an embedded store and serve the API (what npm start runs)',
    )
    .option(
      '--hypervisor <uri>',
      'libvirt URI to sync (env HVSYNC_HYPERVISOR)',
      env.HVSYNC_HYPERVISOR,
    )
    .option(
      '--sim [instances]',
      `a simulated host with a live workload (default ${DEFAULT_SIM_INSTANCES} instances; env HVSYNC_SIM)`,
      env.HVSYNC_SIM,
    )
    .option(
      '--sim-rate <perSecond>',
      'changes per second of the simulated workload (env HVSYNC_SIM_RATE)',
      env.HVSYNC_SIM_RATE ?? String(DEFAULT_SIM_RATE),
    )
    .option('--db <path>', 'SQLite database file (env HVSYNC_DB)', env.HVSYNC_DB ?? './hvsync.db')
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
      const config = {
        hypervisor: hypervisorChoice(options),
        db: options.db,
        listen: options.listen,
        policy: options.policy as Policy,
        reconcileIntervalMs: nonNegative('--reconcile-interval', options.reconcileInterval) * 1000,
        token: readToken(options),
        logger: await createLogger(options.logLevel),
      };
      const { startService } = await import('../server/service.ts');
      const service = await startService(config);
      await new Promise<void>((resolve) => {
        const shutdown = (signal: string) => {
          config.logger.info(`${signal}: finishing what is in flight, then closing the store`);
          // A second signal means "now": do not wait for in-flight work any longer.
          process.once('SIGINT', () => process.exit(130));
          process.once('SIGTERM', () => process.exit(143));
          service.stop().then(
            () => {
              config.logger.info('stopped cleanly');
              resolve();
            },
            (error: unknown) => {
              config.logger.error({ err: error }, 'error while stopping');
              process.exitCode = 1;
              resolve();
            },
          );
        };
        process.once('SIGINT', () => shutdown('SIGINT'));
        process.once('SIGTERM', () => shutdown('SIGTERM'));
      });
      config.logger.flush();
    });
}
