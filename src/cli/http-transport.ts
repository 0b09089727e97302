// The CLI's transport: node:http rather than fetch, whose first use costs a command about a
// quarter of a second of CPU (loading undici and compiling its WebAssembly parser), more than
// the rest of a command together.
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import type { Transport, TransportRequest, TransportResponse } from '../client/index.ts';

export interface NodeHttpOptions {
  /** PEM certificate(s) to trust for an https server, instead of the system's CAs. */
  readonly ca?: string | Buffer;
  /** Keep connections open between requests: for a long-running caller (an agent). */
  readonly keepAlive?: boolean;
}

/**
 * How long a long-running caller keeps an idle connection. Node's default agent closes one after
 * 5 s, so an agent reporting every 10 s opened a connection (with TLS, a handshake on both ends)
 * for nearly every request. A server announcing a shorter keep-alive (`Keep-Alive: timeout=N`)
 * is believed, less a second, so the connection is never reused just as the server closes it.
 */
export const KEEP_ALIVE_IDLE_MS = 120_000;

type Open = typeof httpRequest;

/** What a request needs of node:http, or of node:https for an https server. */
interface Protocol {
  readonly request: Open;
  readonly Agent: typeof HttpAgent;
}

export function nodeHttpTransport(options: NodeHttpOptions = {}): Transport {
  const ca = options.ca === undefined ? {} : { ca: options.ca };
  // A command has no agent: it makes a request or three, and no idle socket may keep it alive.
  // A long-running caller has one per protocol, made on its first request.
  const agents = new Map<Protocol, HttpAgent>();
  const agentFor = (protocol: Protocol): HttpAgent | false => {
    if (options.keepAlive !== true) return false;
    let agent = agents.get(protocol);
    if (agent === undefined) {
      agent = new protocol.Agent({ keepAlive: true, timeout: KEEP_ALIVE_IDLE_MS });
      agents.set(protocol, agent);
    }
    return agent;
  };
  return {
    send: async (request) => {
      const protocol = await protocolOf(request.url);
      return send(request, protocol.request, { ...ca, agent: agentFor(protocol) });
    },
  };
}

const HTTP: Protocol = { request: httpRequest, Agent: HttpAgent };

/** TLS loads only for an https server. */
async function protocolOf(url: string): Promise<Protocol> {
  return url.startsWith('https:') ? await import('node:https') : HTTP;
}

async function send(
  request: TransportRequest,
  open: Open,
  extra: { ca?: string | Buffer; agent: false | HttpAgent },
): Promise<TransportResponse> {
  const url = new URL(request.url);
  const headers: Record<string, string> = { ...request.headers };
  if (request.body !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(request.body));
  }
  const response = await new Promise<IncomingMessage>((resolve, reject) => {
    const outgoing = open(
      url,
      { method: request.method, headers, signal: request.signal, ...extra },
      resolve,
    );
    outgoing.once('error', reject);
    outgoing.end(request.body);
  });
  return {
    status: response.statusCode ?? 0,
    body: response as AsyncIterable<Uint8Array>,
    close: () => response.destroy(),
  };
}
