// The HTTP client of API v1, for the CLI and for scripts: node:http, typed answers, one error
// class, and a small Server-Sent Events reader for the watch stream.
import type { ActionName, RecordedPowerState, VmState } from '../model/index.ts';
// node:http rather than fetch: fetch's first use costs a CLI command about a quarter of a second
// of CPU (loading undici and compiling its WebAssembly parser), more than the rest together.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import type {
  ApiActionAccepted,
  ApiAgentStatus,
  ApiAgentWrites,
  ApiAgentWritesAnswer,
  ApiHost,
  ApiInstance,
  ApiInstancesPage,
  ApiTransition,
  ApiWatchError,
  ApiWatchEvent,
} from '../server/index.ts';

export const DEFAULT_SERVER = 'http://127.0.0.1:8080';

export type ClientErrorCode =
  /** The server could not be reached at all. */
  | 'unreachable'
  /** The server answered with an error status; `status` and `apiError` say which. */
  | 'http'
  /** The server answered something that is not API v1. */
  | 'protocol'
  /** The server URL given is not an http(s) URL. */
  | 'invalid-server';

export class ClientError extends Error {
  override readonly name = 'ClientError';
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    readonly details: { status?: number; apiError?: string; cause?: unknown } = {},
  ) {
    super(message, { cause: details.cause });
  }

  get status(): number | undefined {
    return this.details.status;
  }

  /** The API's error code (`not-found`, `task-in-flight`...), when the server sent one. */
  get apiError(): string | undefined {
    return this.details.apiError;
  }
}

export interface ClientOptions {
  /** Base URL, e.g. http://127.0.0.1:8080. */
  readonly server: string;
  readonly token?: string;
  /** Longest wait for a request's answer, ms (not for watch streams). Default: none. */
  readonly timeoutMs?: number;
  /** Keep connections open between requests: for a long-running caller (an agent). */
  readonly keepAlive?: boolean;
}

export interface InstanceQuery {
  readonly host?: string;
  readonly vmState?: VmState;
  readonly powerState?: RecordedPowerState;
  readonly limit?: number;
  readonly after?: string;
  /** Deleted instances are left out unless this is true. */
  readonly includeDeleted?: boolean;
}

export type WatchMessage =
  | { readonly kind: 'change'; readonly change: ApiWatchEvent }
  /** The server ended the stream; `error.lastRevision` is where to resume. */
  | { readonly kind: 'end'; readonly error: ApiWatchError };

export interface WatchSubscription extends AsyncIterable<WatchMessage> {
  /** The revision the stream starts after, as the server announced it. */
  readonly startRevision: number | null;
  close(): void;
}

export class HvsyncClient {
  readonly server: string;
  private readonly token: string | undefined;
  private readonly timeoutMs: number | undefined;
  /** undefined: Node's global agent, which keeps connections alive (idle ones unref'd). */
  private readonly agent: false | undefined;

  constructor(options: ClientOptions) {
    // `127.0.0.1:8080` either fails to parse or parses as scheme `127.0.0.1:`; `host:8080` as
    // scheme `host:`. Either way the scheme is what is missing.
    if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(options.server)) {
      throw new ClientError(
        'invalid-server',
        `invalid server URL '${options.server}': it needs a scheme, e.g. http://${options.server}`,
      );
    }
    let url: URL;
    try {
      url = new URL(options.server);
    } catch {
      throw new ClientError('invalid-server', `invalid server URL '${options.server}'`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ClientError(
        'invalid-server',
        `invalid server URL '${options.server}': expected http:// or https://`,
      );
    }
    this.server = url.href.replace(/\/+$/, '');
    this.token = options.token === '' ? undefined : options.token;
    this.timeoutMs = options.timeoutMs;
    this.agent = options.keepAlive === true ? undefined : false;
  }

  /** A host agent's writes, in one request; each gets its own result. */
  async agentWrites(host: string, body: ApiAgentWrites): Promise<ApiAgentWritesAnswer> {
    return this.json<ApiAgentWritesAnswer>(
      'POST',
      `/v1/hosts/${encodeURIComponent(host)}/writes`,
      body,
    );
  }

  /** A host agent's status report. */
  async reportStatus(host: string, status: ApiAgentStatus): Promise<void> {
    const response = await this.request(
      'PUT',
      `/v1/hosts/${encodeURIComponent(host)}/status`,
      status,
      this.timeoutSignal(),
    );
    await readText(response).catch((error: unknown) => {
      throw unreachable(this.server, error);
    });
  }

  private timeoutSignal(): AbortSignal | undefined {
    return this.timeoutMs === undefined ? undefined : AbortSignal.timeout(this.timeoutMs);
  }

  async listInstances(query: InstanceQuery = {}): Promise<ApiInstancesPage> {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined) params.set(key, String(value));
    }
    const search = params.size === 0 ? '' : `?${params}`;
    return this.json<ApiInstancesPage>('GET', `/v1/instances${search}`);
  }

  async getInstance(uuid: string): Promise<ApiInstance> {
    return this.json<ApiInstance>('GET', `/v1/instances/${encodeURIComponent(uuid)}`);
  }

  async history(uuid: string, limit?: number): Promise<ApiTransition[]> {
    const search = limit === undefined ? '' : `?limit=${limit}`;
    const body = await this.json<{ transitions: ApiTransition[] }>(
      'GET',
      `/v1/instances/${encodeURIComponent(uuid)}/history${search}`,
    );
    return body.transitions;
  }

  async hosts(): Promise<ApiHost[]> {
    return (await this.json<{ hosts: ApiHost[] }>('GET', '/v1/hosts')).hosts;
  }

  /** Starts an action; resolves when the server has recorded the task, not when it is done. */
  async act(uuid: string, action: ActionName): Promise<ApiActionAccepted> {
    return this.json<ApiActionAccepted>(
      'POST',
      `/v1/instances/${encodeURIComponent(uuid)}/actions`,
      { action },
    );
  }

  /**
   * Opens the watch stream; resolves once the server is subscribed, so every change committed
   * after that is in the stream. `since` omitted: changes from now on.
   */
  async watch(
    options: { since?: number; host?: string; signal?: AbortSignal } = {},
  ): Promise<WatchSubscription> {
    const controller = new AbortController();
    const abort = () => controller.abort();
    options.signal?.addEventListener('abort', abort, { once: true });
    const params = new URLSearchParams();
    if (options.since !== undefined) params.set('since', String(options.since));
    if (options.host !== undefined) params.set('host', options.host);
    const path = params.size === 0 ? '/v1/watch' : `/v1/watch?${params}`;
    let response: IncomingMessage;
    try {
      response = await this.request('GET', path, undefined, controller.signal, 'text/event-stream');
    } catch (error) {
      options.signal?.removeEventListener('abort', abort);
      throw error;
    }
    const chunks = response[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    const parser = new SseParser();
    const decoder = new TextDecoder();
    const pending: SseMessage[] = [];
    let startRevision: number | null = null;
    let done = false;

    const close = () => {
      done = true;
      options.signal?.removeEventListener('abort', abort);
      controller.abort();
      response.destroy();
    };
    const fill = async (): Promise<boolean> => {
      if (done) return false;
      let chunk: IteratorResult<Buffer>;
      try {
        chunk = await chunks.next();
      } catch (error) {
        if (controller.signal.aborted) return false;
        throw unreachable(this.server, error);
      }
      if (chunk.done) return false;
      for (const message of parser.push(decoder.decode(chunk.value, { stream: true }))) {
        if (message.comment !== undefined) {
          const announced = /^watching from revision (\d+)$/.exec(message.comment);
          if (announced !== null) startRevision = Number(announced[1]);
        } else {
          pending.push(message);
        }
      }
      return true;
    };

    // The server announces its start revision right away: once read, the stream is live.
    while (startRevision === null && pending.length === 0) {
      if (!(await fill())) break;
    }

    const messages = async function* (): AsyncGenerator<WatchMessage> {
      try {
        for (;;) {
          while (pending.length > 0) {
            const message = pending.shift()!;
            if (message.event === 'instance') {
              yield { kind: 'change', change: parseJson<ApiWatchEvent>(message.data) };
            } else if (message.event === 'error') {
              yield { kind: 'end', error: parseJson<ApiWatchError>(message.data) };
              return;
            }
          }
          if (!(await fill())) return;
        }
      } finally {
        close();
      }
    };
    return {
      get startRevision() {
        return startRevision;
      },
      close,
      [Symbol.asyncIterator]: messages,
    };
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.request(method, path, body, this.timeoutSignal());
    let text: string;
    try {
      text = await readText(response);
    } catch (error) {
      throw unreachable(this.server, error);
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ClientError('protocol', `${this.server} answered ${method} ${path} with non-JSON`);
    }
  }

  private async request(
    method: string,
    path: string,
    body?: unknown,
    signal?: AbortSignal,
    accept = 'application/json',
  ): Promise<IncomingMessage> {
    const url = new URL(`${this.server}${path}`);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { accept };
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    // TLS loads only for an https server.
    const send = url.protocol === 'https:' ? (await import('node:https')).request : httpRequest;
    let response: IncomingMessage;
    try {
      response = await new Promise<IncomingMessage>((resolve, reject) => {
        // No agent for a command: it makes a request or three, and no idle socket may keep it
        // alive.
        const outgoing = send(url, { method, headers, signal, agent: this.agent }, resolve);
        outgoing.once('error', reject);
        outgoing.end(payload);
      });
    } catch (error) {
      throw unreachable(this.server, error);
    }
    const status = response.statusCode ?? 0;
    if (status < 200 || status > 299) throw await httpError(response, status);
    return response;
  }
}

async function readText(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function httpError(response: IncomingMessage, status: number): Promise<ClientError> {
  const text = await readText(response).catch(() => '');
  let apiError: string | undefined;
  let message = `HTTP ${status}`;
  try {
    const body = JSON.parse(text) as { error?: unknown; message?: unknown };
    if (typeof body.error === 'string') apiError = body.error;
    if (typeof body.message === 'string') message = body.message;
  } catch {
    if (text.trim() !== '') message = `HTTP ${status}: ${text.trim().slice(0, 200)}`;
  }
  return new ClientError('http', message, { status, apiError });
}

const NETWORK_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'unknown host',
  EAI_AGAIN: 'host name lookup failed',
  ECONNRESET: 'connection reset',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'timed out',
  UND_ERR_CONNECT_TIMEOUT: 'timed out',
  UND_ERR_SOCKET: 'connection lost',
};

function unreachable(server: string, error: unknown): ClientError {
  const code = networkCode(error);
  const reason = code === undefined ? '' : ` (${NETWORK_REASONS[code] ?? code})`;
  return new ClientError('unreachable', `cannot reach hvsync at ${server}${reason}`, {
    cause: error,
  });
}

/** The socket error, or the first of an AggregateError of them (one per address tried). */
function networkCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    if (current instanceof AggregateError && current.errors[0] !== undefined) {
      current = current.errors[0];
    } else {
      current = current.cause;
    }
  }
  return undefined;
}

function parseJson<T>(text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ClientError(
      'protocol',
      `watch stream sent data that is not JSON: ${text.slice(0, 80)}`,
    );
  }
}

export interface SseMessage {
  readonly event: string;
  readonly data: string;
  readonly id: string | null;
  /** Set for a comment line (`: text`), which carries no event. */
  readonly comment?: string;
}

/** Incremental Server-Sent Events parser (the subset of the spec that matters here). */
class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];
  private id: string | null = null;

  push(text: string): SseMessage[] {
    this.buffer += text;
    const out: SseMessage[] = [];
    let newline: number;
    while ((newline = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      // A CR at the end may be the first half of a CRLF split across chunks.
      if (newline === this.buffer.length - 1 && this.buffer.endsWith('\r')) break;
      const line = this.buffer.slice(0, newline);
      const width = this.buffer.startsWith('\r\n', newline) ? 2 : 1;
      this.buffer = this.buffer.slice(newline + width);
      if (line === '') {
        if (this.data.length > 0) {
          out.push({ event: this.event || 'message', data: this.data.join('\n'), id: this.id });
        }
        this.event = '';
        this.data = [];
        continue;
      }
      if (line.startsWith(':')) {
        out.push({ event: '', data: '', id: null, comment: line.slice(1).trim() });
        continue;
      }
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') this.event = value;
      else if (field === 'data') this.data.push(value);
      else if (field === 'id') this.id = value;
    }
    return out;
  }
}
