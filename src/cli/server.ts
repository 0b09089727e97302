// `hvsync server`: a control-plane replica. The API, watch and metrics over a shared PostgreSQL
// database, with no hypervisor of its own; run as many as you like on one database.
import { InvalidArgumentError, type Command } from 'commander';
import {
  createLogger,
  positiveInteger,
  positiveNumber,
  runUntilSignal,
  readTls,
  withListenOption,
  withLogLevelOption,
  withMaxWatchersOption,
  withTlsOptions,
} from './options.ts';
import type { TlsOptions } from './options.ts';
import { readToken, withTokenOptions, SERVED_TOKEN } from './token.ts';
import type { TokenOptions } from './token.ts';

interface ServerOptions extends TokenOptions, TlsOptions {
  db?: string;
  listen: string;
  maxWatchers: string;
  hostTimeout: string;
  logLevel: string;
}

export function registerServer(program: Command): void {
  const env = process.env;
  const command = withTlsOptions(program.command('server'))
    .description(
      'serve the API and watch from a shared PostgreSQL database, no hypervisor (one of several replicas)',
    )
    .option('--db <url>', 'postgres:// URL of the shared database (env HVSYNC_DB)', env.HVSYNC_DB);
  withListenOption(command);
  withTokenOptions(command, SERVED_TOKEN);
  withMaxWatchersOption(command).option(
    '--host-timeout <seconds>',
    "a host whose agent has not reported for this long is unreachable: its instances' power states are shown stale and its tasks end with an error (env HVSYNC_HOST_TIMEOUT)",
    env.HVSYNC_HOST_TIMEOUT ?? '30',
  );
  withLogLevelOption(command).action(async (options: ServerOptions) => {
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
