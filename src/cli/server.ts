// `hvsync server`: a control-plane replica. The API, watch and metrics over a shared PostgreSQL
// database, with no hypervisor of its own; run as many as you like on one database.
import { InvalidArgumentError, type Command } from 'commander';
import {
  createLogger,
  positiveInteger,
  positiveNumber,
  readToken,
  runUntilSignal,
  readTls,
  withTlsOptions,
} from './options.ts';

interface ServerOptions {
  db?: string;
  listen: string;
  token?: string;
  tokenFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  maxWatchers: string;
  hostTimeout: string;
  logLevel: string;
}

export function registerServer(program: Command): void {
  const env = process.env;
  withTlsOptions(program.command('server'))
    .description(
      'serve the API and watch from a shared PostgreSQL database, no hypervisor (one of several replicas)',
    )
    .option('--db <url>', 'postgres:// URL of the shared database (env HVSYNC_DB)', env.HVSYNC_DB)
    .option(
      '--listen <host:port>',
      'API address (env HVSYNC_LISTEN)',
      env.HVSYNC_LISTEN ?? '127.0.0.1:8080',
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
      '--host-timeout <seconds>',
      "a host whose agent has not reported for this long is unreachable: its instances' power states are shown stale and its tasks end with an error (env HVSYNC_HOST_TIMEOUT)",
      env.HVSYNC_HOST_TIMEOUT ?? '30',
    )
    .option(
      '--log-level <level>',
      'trace | debug | info | warn | error (env HVSYNC_LOG_LEVEL)',
      env.HVSYNC_LOG_LEVEL ?? 'info',
    )
    .action(async (options: ServerOptions) => {
      if (options.db === undefined || options.db.trim() === '') {
        throw new InvalidArgumentError('--db (or HVSYNC_DB) is required: a postgres:// URL');
      }
      const db = options.db;
      const config = {
        db,
        listen: options.listen,
        token: readToken(options),
        tls: readTls(options),
        maxWatchers: positiveInteger('--max-watchers', options.maxWatchers),
        hostTimeoutMs: positiveNumber('--host-timeout', options.hostTimeout) * 1000,
      };
      const logger = await createLogger(options.logLevel);
      await runUntilSignal(logger, async (signal) => {
        const { startControlPlane } = await import('../app/index.ts');
        return startControlPlane({ ...config, logger, signal });
      });
    });
}
