// What the service commands (all-in-one, server) share: option checks that turn a bad value into
// one clear line, the logger, the bearer token, and the run that a signal stops cleanly.
import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';
import type { Logger } from 'pino';

export function positiveInteger(name: string, text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    throw new InvalidArgumentError(
      `${name} must be a positive integer, got ${JSON.stringify(text)}`,
    );
  }
  return value;
}

export function positiveNumber(name: string, text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) {
    throw new InvalidArgumentError(`${name} must be a number > 0, got ${JSON.stringify(text)}`);
  }
  return value;
}

export function nonNegative(name: string, text: string): number {
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

/** A bearer token is one non-empty word; an empty one would silently mean "no auth at all". */
function checkedToken(token: string, source: string): string {
  if (token.trim() === '') {
    throw new InvalidArgumentError(
      `${source} is empty: give a token, or leave it out to serve without authentication on loopback`,
    );
  }
  if (/\s/.test(token)) {
    throw new InvalidArgumentError(`${source} contains whitespace: a bearer token is one word`);
  }
  return token;
}

export interface TokenOptions {
  readonly token?: string;
  readonly tokenFile?: string;
}

export function readToken(options: TokenOptions): string | undefined {
  if (options.token !== undefined && options.tokenFile !== undefined) {
    throw new InvalidArgumentError('give either --token or --token-file, not both');
  }
  if (options.token !== undefined) return checkedToken(options.token, '--token (or HVSYNC_TOKEN)');
  if (options.tokenFile === undefined) return undefined;
  if (options.tokenFile.trim() === '') {
    throw new InvalidArgumentError('--token-file (or HVSYNC_TOKEN_FILE) is empty: give a path');
  }
  let text: string;
  try {
    text = readFileSync(options.tokenFile, 'utf8');
  } catch (error) {
    throw new InvalidArgumentError(
      `cannot read token file ${options.tokenFile}: ${(error as Error).message}`,
    );
  }
  // A trailing newline is how files end, not part of the token.
  return checkedToken(text.trim(), `token file ${options.tokenFile}`);
}

class StartupStopped extends Error {
  override readonly name = 'StartupStopped';
  constructor(readonly signal: string) {
    super(signal);
  }
}

/**
 * Starts a service and runs it until SIGINT or SIGTERM, then stops it. Signals are taken from the
 * start: one that arrives while the start is still waiting (for libvirt, say) aborts `start`'s
 * signal instead of killing the process mid-way. A second signal means "now".
 */
export async function runUntilSignal(
  logger: Logger,
  start: (signal: AbortSignal) => Promise<{ stop(): Promise<void> }>,
): Promise<void> {
  const startup = new AbortController();
  let stopRequested: ((signal: string) => void) | null = null;
  const onSignal = (signal: string): void => {
    if (stopRequested !== null) stopRequested(signal);
    else startup.abort(new StartupStopped(signal));
  };
  const onSigint = (): void => onSignal('SIGINT');
  const onSigterm = (): void => onSignal('SIGTERM');
  process.once('SIGINT', onSigint);
  process.once('SIGTERM', onSigterm);
  let service: { stop(): Promise<void> };
  try {
    service = await start(startup.signal);
  } catch (error) {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    if (startup.signal.aborted) {
      const { signal } = startup.signal.reason as StartupStopped;
      logger.info(`${signal}: stopped before start-up finished`);
      logger.flush();
      return;
    }
    throw error;
  }
  await new Promise<void>((resolve) => {
    stopRequested = (signal: string) => {
      logger.info(`${signal}: finishing what is in flight, then closing the store`);
      process.once('SIGINT', () => process.exit(130));
      process.once('SIGTERM', () => process.exit(143));
      service.stop().then(
        () => {
          logger.info('stopped cleanly');
          resolve();
        },
        (error: unknown) => {
          logger.error({ err: error }, 'error while stopping');
          process.exitCode = 1;
          resolve();
        },
      );
    };
  });
  logger.flush();
}
