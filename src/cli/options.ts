// What the service commands (all-in-one, server, agent) share: the options more than one of them
// declares, option checks that turn a bad value into one clear line, the logger, and the run
// that a signal stops cleanly (the bearer token is token.ts's).
import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import type { Policy } from '../model/index.ts';

export const DEFAULT_SIM_INSTANCES = 20;
const DEFAULT_SIM_RATE = 1;

export interface HypervisorOptions {
  readonly hypervisor?: string;
  readonly sim?: string | boolean;
  readonly simRate: string;
}

/**
 * --hypervisor, --sim and --sim-rate: the host a command syncs. `uriDefault` says which URI
 * --hypervisor takes when it is left out, which differs between the commands.
 */
export function withHypervisorOptions(command: Command, uriDefault: string): Command {
  const env = process.env;
  return command
    .option(
      '--hypervisor <uri>',
      `libvirt URI to sync (env HVSYNC_HYPERVISOR; ${uriDefault})`,
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
      env.HVSYNC_SIM_RATE ?? String(DEFAULT_SIM_RATE),
    );
}

/**
 * How many simulated instances --sim asks for, or null without it. --sim beside --hypervisor is
 * refused; call after refusing empty values, so that an empty --hypervisor is not taken for one.
 */
export function simulatedInstances(options: HypervisorOptions): number | null {
  if (options.sim === undefined || options.sim === false) return null;
  if (options.hypervisor !== undefined) {
    throw new InvalidArgumentError('give either --hypervisor or --sim, not both');
  }
  return options.sim === true
    ? DEFAULT_SIM_INSTANCES
    : positiveInteger('--sim', String(options.sim));
}

export interface EngineOptions {
  readonly policy: string;
  readonly reconcileInterval: string;
  readonly pollInterval?: string;
}

/** --policy, --reconcile-interval and --poll-interval: how a host's sync engine runs. */
export function withEngineOptions(command: Command): Command {
  const env = process.env;
  return command
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
    );
}

/** The engine options, checked; the policy first, as it is the likeliest to be mistyped. */
export function readEngineOptions(options: EngineOptions): {
  policy: Policy;
  reconcileIntervalMs: number;
  pollIntervalMs: number | undefined;
} {
  if (options.policy !== 'observe' && options.policy !== 'enforce') {
    throw new InvalidArgumentError(
      `--policy must be observe or enforce, got ${JSON.stringify(options.policy)}`,
    );
  }
  return {
    policy: options.policy,
    reconcileIntervalMs: nonNegative('--reconcile-interval', options.reconcileInterval) * 1000,
    pollIntervalMs:
      options.pollInterval === undefined
        ? undefined
        : positiveNumber('--poll-interval (or HVSYNC_POLL_INTERVAL)', options.pollInterval) * 1000,
  };
}

/** --listen, for the commands that serve the API. */
export function withListenOption(command: Command): Command {
  return command.option(
    '--listen <host:port>',
    'API address (env HVSYNC_LISTEN)',
    process.env.HVSYNC_LISTEN ?? '127.0.0.1:8080',
  );
}

/** --max-watchers, for the commands that serve the API. */
export function withMaxWatchersOption(command: Command): Command {
  return command.option(
    '--max-watchers <n>',
    'watch streams served at once; more are told 503 (env HVSYNC_MAX_WATCHERS)',
    process.env.HVSYNC_MAX_WATCHERS ?? '1000',
  );
}

/** --log-level, which every service command takes. */
export function withLogLevelOption(command: Command): Command {
  return command.option(
    '--log-level <level>',
    'trace | debug | info | warn | error (env HVSYNC_LOG_LEVEL)',
    process.env.HVSYNC_LOG_LEVEL ?? 'info',
  );
}

/** Empty is a mistake (an unset variable in a unit file), never a request for a default. */
export function refuseEmpty(values: readonly (readonly [string | undefined, string])[]): void {
  for (const [value, name] of values) {
    if (value !== undefined && value.trim() === '') {
      throw new InvalidArgumentError(`${name} is empty: give a value or leave it out`);
    }
  }
}

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

export interface TlsOptions {
  readonly tlsCert?: string;
  readonly tlsKey?: string;
}

/** --tls-cert and --tls-key, for the commands that serve the API. */
export function withTlsOptions(command: Command): Command {
  const env = process.env;
  return command
    .option(
      '--tls-cert <file>',
      'serve HTTPS with this PEM certificate (chain) (env HVSYNC_TLS_CERT)',
      env.HVSYNC_TLS_CERT,
    )
    .option(
      '--tls-key <file>',
      "the certificate's PEM private key (env HVSYNC_TLS_KEY)",
      env.HVSYNC_TLS_KEY,
    );
}

/**
 * The certificate and key, read; whether they go together is checked by the service before it
 * opens anything. Both or neither: one alone would silently serve plain HTTP.
 */
export function readTls(
  options: TlsOptions,
): { cert: Buffer; key: Buffer; certName: string; keyName: string } | undefined {
  const cert = options.tlsCert || undefined;
  const key = options.tlsKey || undefined;
  if (cert === undefined && key === undefined) return undefined;
  if (cert === undefined || key === undefined) {
    throw new InvalidArgumentError(
      'give both --tls-cert and --tls-key (or HVSYNC_TLS_CERT and HVSYNC_TLS_KEY), or neither',
    );
  }
  return {
    cert: readPem(cert, 'TLS certificate'),
    key: readPem(key, 'TLS key'),
    certName: `certificate ${cert}`,
    keyName: `key ${key}`,
  };
}

export interface CaOptions {
  readonly ca?: string;
}

/**
 * The CA certificate a client trusts for an https server: --ca, else $HVSYNC_CA; none means the
 * system's CAs. Shared by the client commands and the agent.
 */
export function clientCa(
  options: CaOptions,
  env: NodeJS.ProcessEnv = process.env,
): Buffer | undefined {
  const path = options.ca ?? (env.HVSYNC_CA || undefined);
  if (path === undefined) return undefined;
  if (path.trim() === '') throw new InvalidArgumentError('--ca is empty: give a PEM file');
  return readPem(path, 'CA certificate');
}

/** A PEM file the CLI was pointed at, read whole; a clear line when it cannot be. */
export function readPem(path: string, what: string): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EACCES'
          ? 'permission denied'
          : code === 'EISDIR'
            ? 'it is a directory'
            : (error as Error).message;
    throw new InvalidArgumentError(`cannot read ${what} ${path}: ${why}`);
  }
  if (!bytes.includes('-----BEGIN ')) {
    throw new InvalidArgumentError(`${what} ${path} is not PEM (no -----BEGIN line)`);
  }
  return bytes;
}

class StartupStopped extends Error {
  override readonly name = 'StartupStopped';
  constructor(readonly signal: string) {
    super(signal);
  }
}

/** A signal this soon after the first is the same request delivered twice, not a second one. */
const REPEAT_IS_ECHO_MS = 1000;

/**
 * Starts a service and runs it until SIGINT or SIGTERM, then stops it. Signals are taken from the
 * start: one that arrives while the start is still waiting (for libvirt, say) aborts `start`'s
 * signal instead of killing the process mid-way. A second signal (not the echo of the first) means
 * "now".
 */
export async function runUntilSignal(
  logger: Logger,
  start: (signal: AbortSignal) => Promise<{ stop(): Promise<void> }>,
): Promise<void> {
  const startup = new AbortController();
  let phase: 'starting' | 'running' | 'stopping' = 'starting';
  let stopRequested: (signal: string) => void = () => {};
  let firstAt = 0;
  // Listeners stay for the process's life: removing the last one, even for an instant, gives the
  // signal back its default action, and the echo of a Ctrl-C arriving then would kill the process.
  const onSignal = (signal: string, exitCode: number): void => {
    if (phase === 'stopping') {
      // One Ctrl-C under `npm start` arrives twice: the terminal signals npm and node alike, and
      // npm passes its copy on. Only a signal after that echo window means "now".
      if (Date.now() - firstAt < REPEAT_IS_ECHO_MS) return;
      logger.warn(`${signal} again: stopping now, without waiting for work in flight`);
      logger.flush();
      process.exit(exitCode);
    }
    firstAt = Date.now();
    if (phase === 'starting') startup.abort(new StartupStopped(signal));
    else stopRequested(signal);
    phase = 'stopping';
  };
  process.on('SIGINT', () => onSignal('SIGINT', 130));
  process.on('SIGTERM', () => onSignal('SIGTERM', 143));
  let service: { stop(): Promise<void> };
  try {
    service = await start(startup.signal);
  } catch (error) {
    if (startup.signal.aborted) {
      const { signal } = startup.signal.reason as StartupStopped;
      logger.info(`${signal}: stopped before start-up finished`);
      logger.flush();
      return;
    }
    throw error;
  }
  if (startup.signal.aborted) {
    // The signal came as the start-up finished: stop what has just started.
    const { signal } = startup.signal.reason as StartupStopped;
    logger.info(`${signal}: stopping what has just started`);
    await service.stop();
    logger.info('stopped cleanly');
    logger.flush();
    return;
  }
  await new Promise<void>((resolve) => {
    stopRequested = (signal: string) => {
      logger.info(`${signal}: finishing what is in flight, then closing the store`);
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
    phase = 'running';
  });
  logger.flush();
}
