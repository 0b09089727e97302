// libvirt connection URIs, as libvirt writes them: driver[+transport]://[host[:port]]/path[?params]
// e.g. qemu:///system, test+unix:///default, qemu+tcp://host:16509/system, ?socket=/path.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { LibvirtClientError } from './errors.ts';

export type Endpoint =
  | { readonly transport: 'unix'; readonly path: string }
  | { readonly transport: 'tcp'; readonly host: string; readonly port: number };

export interface ResolvedUri {
  /** The URI as given. */
  readonly uri: string;
  /** What CONNECT_OPEN carries: the URI without transport, host and client-side parameters. */
  readonly name: string;
  readonly endpoint: Endpoint;
}

export const DEFAULT_URI = 'qemu:///system';
const DEFAULT_TCP_PORT = 16509;
const RUN_DIR = '/var/run/libvirt';
/** Parameters the client consumes; the daemon never sees them. */
const CLIENT_PARAMS = new Set(['socket', 'mode', 'proxy', 'no_verify', 'no_tty', 'name']);

export interface ResolveOptions {
  /** Tells whether a socket file exists; replaceable for tests. */
  readonly exists?: (path: string) => boolean;
  readonly runtimeDir?: string;
}

export function resolveUri(uri: string, options: ResolveOptions = {}): ResolvedUri {
  const exists = options.exists ?? existsSync;
  let parsed: URL;
  try {
    parsed = new URL(uri);
  } catch {
    throw new LibvirtClientError('uri', `not a libvirt URI: ${JSON.stringify(uri)}`);
  }
  const scheme = parsed.protocol.slice(0, -1);
  const [driver, transport, ...extra] = scheme.split('+');
  if (!driver || extra.length > 0) {
    throw new LibvirtClientError('uri', `bad scheme in libvirt URI ${uri}`);
  }
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  const path = decodeURIComponent(parsed.pathname);

  const params = new URLSearchParams(parsed.search);
  const socketParam = params.get('socket');
  const daemonParams = [...params].filter(([key]) => !CLIENT_PARAMS.has(key));
  const query = daemonParams.length ? `?${new URLSearchParams(daemonParams).toString()}` : '';
  const name = `${driver}://${path}${query}`;

  const chosen = transport ?? (host ? 'tls' : 'unix');
  if (chosen === 'unix') {
    if (host) {
      throw new LibvirtClientError('uri', `a unix socket URI cannot name a host: ${uri}`);
    }
    const socket = socketParam ?? defaultSocket(driver, path, exists, options.runtimeDir);
    return { uri, name, endpoint: { transport: 'unix', path: socket } };
  }
  if (chosen === 'tcp') {
    if (!host) throw new LibvirtClientError('uri', `a tcp URI needs a host: ${uri}`);
    const port = parsed.port ? Number(parsed.port) : DEFAULT_TCP_PORT;
    return { uri, name, endpoint: { transport: 'tcp', host, port } };
  }
  throw new LibvirtClientError(
    'uri',
    `transport '${chosen}' is not supported (use unix or tcp): ${uri}`,
  );
}

function defaultSocket(
  driver: string,
  path: string,
  exists: (path: string) => boolean,
  runtimeDir = process.env.XDG_RUNTIME_DIR,
): string {
  // Session daemons live in the user's runtime directory; system ones under /var/run/libvirt,
  // where a modular install has one socket per driver and a monolithic one has libvirt-sock.
  const dir = path === '/session' && runtimeDir ? join(runtimeDir, 'libvirt') : RUN_DIR;
  const modular = join(dir, `virt${driver}d-sock`);
  if (driver === 'qemu' && exists(modular)) return modular;
  return join(dir, 'libvirt-sock');
}
