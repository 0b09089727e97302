// The CLI's transport: node:http rather than fetch, whose first use costs a command about a
// quarter of a second of CPU (loading undici and compiling its WebAssembly parser), more than
// the rest of a command together.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import type { Transport, TransportRequest, TransportResponse } from '../client/index.ts';

export interface NodeHttpOptions {
  /** PEM certificate(s) to trust for an https server, instead of the system's CAs. */
  readonly ca?: string | Buffer;
  /** Keep connections open between requests: for a long-running caller (an agent). */
  readonly keepAlive?: boolean;
}

export function nodeHttpTransport(options: NodeHttpOptions = {}): Transport {
  const extra = {
    ...(options.ca === undefined ? {} : { ca: options.ca }),
    // undefined: Node's global agent, which keeps connections alive (idle ones unref'd). None for
    // a command: it makes a request or three, and no idle socket may keep it alive.
    agent: options.keepAlive === true ? undefined : false,
  } as const;
  return { send: (request) => send(request, extra) };
}

async function send(
  request: TransportRequest,
  extra: { ca?: string | Buffer; agent: false | undefined },
): Promise<TransportResponse> {
  const url = new URL(request.url);
  const headers: Record<string, string> = { ...request.headers };
  if (request.body !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(request.body));
  }
  // TLS loads only for an https server.
  const open = url.protocol === 'https:' ? (await import('node:https')).request : httpRequest;
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
