// Where the server may listen. Without a token there is no authentication at all, so the only
// safe place is loopback: anything else on the machine's network could drive the hypervisor.
import { isIP } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { ServerError } from './types.ts';

export interface ListenAddress {
  /** As given, without IPv6 brackets: `127.0.0.1`, `::1`, `localhost`, `0.0.0.0`... */
  readonly host: string;
  readonly port: number;
}

/** Parses `HOST:PORT`, `[IPv6]:PORT`; port 0 asks the system for a free one. */
export function parseListen(text: string): ListenAddress {
  const trimmed = text.trim();
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(trimmed) ?? /^([^:[\]]+):(\d+)$/.exec(trimmed);
  if (match === null) {
    throw new ServerError(
      'invalid-listen',
      `invalid listen address '${text}': expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080`,
    );
  }
  const host = match[1]!;
  const port = Number(match[2]);
  if (!Number.isSafeInteger(port) || port > 65535) {
    throw new ServerError('invalid-listen', `invalid port in listen address '${text}': 0..65535`);
  }
  if (host.includes(':') && isIP(host) !== 6) {
    throw new ServerError('invalid-listen', `invalid IPv6 address in listen address '${text}'`);
  }
  return { host, port };
}

/** 127.0.0.0/8, ::1 (any spelling, also IPv4-mapped 127/8) and `localhost`. */
export function isLoopback(host: string): boolean {
  const name = host.toLowerCase();
  if (name === 'localhost') return true;
  if (isIP(name) === 4) return name.split('.')[0] === '127';
  if (isIP(name) === 6) {
    const mapped = /^(?:0{0,4}:){0,5}:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(name);
    if (mapped !== null) return isLoopback(mapped[1]!);
    return expandIpv6(name) === '0000:0000:0000:0000:0000:0000:0000:0001';
  }
  return false;
}

function expandIpv6(address: string): string {
  const [head = '', tail] = address.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...zeros, ...right].map((group) => group.padStart(4, '0')).join(':');
}

/** Throws `insecure-listen` for a non-loopback address without a token. */
export function checkListen(address: ListenAddress, tokenSet: boolean): void {
  if (tokenSet || isLoopback(address.host)) return;
  throw new ServerError(
    'insecure-listen',
    `refusing to listen on ${formatAddress(address)} without a token: anyone who can reach it ` +
      'could act on every instance. Set a token (--token or HVSYNC_TOKEN) or listen on a ' +
      'loopback address such as 127.0.0.1:8080',
  );
}

function formatAddress(address: ListenAddress): string {
  return isIP(address.host) === 6
    ? `[${address.host}]:${address.port}`
    : `${address.host}:${address.port}`;
}

const authenticated = new WeakSet<FastifyInstance>();

/** Called by buildServer: the listen rule looks at how the server was built, not at a claim. */
export function markAuthenticated(server: FastifyInstance): void {
  authenticated.add(server);
}

const secured = new WeakSet<FastifyInstance>();

/** Called by buildServer when it serves HTTPS, so that the URL it listens at says so. */
export function markTls(server: FastifyInstance): void {
  secured.add(server);
}

export interface Listening {
  readonly host: string;
  /** The bound port (the system's choice when 0 was asked for). */
  readonly port: number;
  /** Base URL for clients, e.g. http://127.0.0.1:8080 (https:// with TLS). */
  readonly url: string;
}

/** Starts listening, refusing a non-loopback address when the server has no token. */
/**
 * Connections the kernel queues before they are accepted (capped by net.core.somaxconn). Node's
 * 511 is too few for a control plane whose agents all come back at once after it restarts: the
 * rest are dropped, retried by TCP seconds later, and time out in the agents.
 */
const LISTEN_BACKLOG = 4096;

export async function listen(
  server: FastifyInstance,
  where: ListenAddress | string,
): Promise<Listening> {
  const address = typeof where === 'string' ? parseListen(where) : where;
  checkListen(address, authenticated.has(server));
  try {
    await server.listen({ host: address.host, port: address.port, backlog: LISTEN_BACKLOG });
  } catch (error) {
    throw listenError(address, error);
  }
  const bound = server.server.address();
  const port = typeof bound === 'object' && bound !== null ? bound.port : address.port;
  const scheme = secured.has(server) ? 'https' : 'http';
  const url = `${scheme}://${formatAddress({ host: address.host, port })}`;
  return { host: address.host, port, url };
}

const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: 'the address is in use (another hvsync, or another server on that port?)',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  EADDRNOTAVAIL: 'no interface of this machine has that address',
  ENOTFOUND: 'the host name does not resolve',
};

function listenError(address: ListenAddress, error: unknown): ServerError {
  const code = (error as NodeJS.ErrnoException).code ?? '';
  const why = LISTEN_ERRORS[code] ?? (error instanceof Error ? error.message : String(error));
  return new ServerError('listen-failed', `cannot listen on ${formatAddress(address)}: ${why}`, {
    cause: error,
  });
}
