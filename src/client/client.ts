// The typed client of API v1, over any transport: the CLI's (node:http) and the dashboard's
// (fetch) share it, so routes, wire shapes and errors are known in one place.
import type { ActionName } from '../model/index.ts';
import type {
  ApiActionAccepted,
  ApiAgentStatus,
  ApiAgentWrites,
  ApiAgentWritesAnswer,
  ApiCredential,
  ApiHost,
  ApiInstance,
  ApiInstancesPage,
  ApiIssuedToken,
  ApiTransition,
  ApiWatchError,
  ApiWatchEvent,
} from '../server/index.ts';
import { ClientError, httpError, unreachable } from './errors.ts';
import { routes } from './routes.ts';
import type { ActionBody, CredentialKind, InstanceQuery, Route } from './routes.ts';
import { SseParser } from './sse.ts';
import type { SseMessage } from './sse.ts';
import { readText } from './transport.ts';
import type { Transport, TransportResponse } from './transport.ts';

export const DEFAULT_SERVER = 'http://127.0.0.1:8080';

export interface ClientOptions {
  /** Base URL, e.g. http://127.0.0.1:8080. */
  readonly server: string;
  readonly token?: string;
  readonly transport: Transport;
  /** Longest wait for a request's answer, ms (not for watch streams). Default: none. */
  readonly timeoutMs?: number;
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

export class ApiClient {
  readonly server: string;
  private readonly token: string | undefined;
  private readonly transport: Transport;
  private readonly timeoutMs: number | undefined;

  constructor(options: ClientOptions) {
    this.server = checkServer(options.server);
    this.token = options.token === '' ? undefined : options.token;
    this.transport = options.transport;
    this.timeoutMs = options.timeoutMs;
  }

  /** A host agent's writes, in one request; each gets its own result. */
  async agentWrites(host: string, body: ApiAgentWrites): Promise<ApiAgentWritesAnswer> {
    return this.json(routes.agentWrites(host), body);
  }

  /** A host agent's status report. */
  async reportStatus(host: string, status: ApiAgentStatus): Promise<void> {
    const response = await this.send(routes.reportStatus(host), status, this.timeoutSignal());
    await this.read(response);
  }

  async listInstances(query: InstanceQuery = {}): Promise<ApiInstancesPage> {
    return this.json(routes.listInstances(query));
  }

  async getInstance(uuid: string): Promise<ApiInstance> {
    return this.json(routes.getInstance(uuid));
  }

  async history(uuid: string, limit?: number): Promise<ApiTransition[]> {
    return (await this.json(routes.history(uuid, limit))).transitions;
  }

  async hosts(): Promise<ApiHost[]> {
    return (await this.json(routes.hosts())).hosts;
  }

  /** Issues a host or reader token (admin only); the answer is the only place it is shown. */
  async issueToken(kind: CredentialKind, name: string, replace = false): Promise<ApiIssuedToken> {
    return this.json(routes.issueToken(kind, name, replace));
  }

  /** Revokes a host's or reader's token (admin only). */
  async revokeToken(kind: CredentialKind, name: string): Promise<ApiCredential> {
    return this.json(routes.revokeToken(kind, name));
  }

  /** Every host and reader credential, valid and revoked (admin only). */
  async credentials(): Promise<ApiCredential[]> {
    return (await this.json(routes.credentials())).credentials;
  }

  /** Starts an action; resolves when the server has recorded the task, not when it is done. */
  async act(uuid: string, action: ActionName): Promise<ApiActionAccepted> {
    const body: ActionBody = { action };
    return this.json(routes.act(uuid), body);
  }

  /** The server's Prometheus text. */
  async metricsText(signal?: AbortSignal): Promise<string> {
    const response = await this.send(routes.metrics(), undefined, signal, 'text/plain');
    return this.read(response);
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
    let response: TransportResponse;
    try {
      response = await this.send(
        routes.watch(options.since, options.host),
        undefined,
        controller.signal,
        'text/event-stream',
      );
    } catch (error) {
      options.signal?.removeEventListener('abort', abort);
      throw error;
    }
    const chunks = response.body[Symbol.asyncIterator]();
    const parser = new SseParser();
    const decoder = new TextDecoder();
    const pending: SseMessage[] = [];
    let startRevision: number | null = null;
    let done = false;

    const close = () => {
      if (done) return;
      done = true;
      options.signal?.removeEventListener('abort', abort);
      controller.abort();
      response.close();
    };
    const fill = async (): Promise<boolean> => {
      if (done) return false;
      let chunk: IteratorResult<Uint8Array>;
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

  private timeoutSignal(): AbortSignal | undefined {
    return this.timeoutMs === undefined ? undefined : AbortSignal.timeout(this.timeoutMs);
  }

  private async json<T>(route: Route<T>, body?: unknown): Promise<T> {
    const what = `${route.method} ${route.path}`;
    const text = await this.read(await this.send(route, body, this.timeoutSignal()));
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ClientError('protocol', `${this.server} answered ${what} with non-JSON`);
    }
  }

  private async read(response: TransportResponse): Promise<string> {
    try {
      return await readText(response);
    } catch (error) {
      throw unreachable(this.server, error);
    }
  }

  private async send(
    route: Route<unknown>,
    body?: unknown,
    signal?: AbortSignal,
    accept = 'application/json',
  ): Promise<TransportResponse> {
    const headers: Record<string, string> = { accept };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    let response: TransportResponse;
    try {
      response = await this.transport.send({
        method: route.method,
        url: `${this.server}${route.path}`,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (error) {
      throw unreachable(this.server, error);
    }
    if (response.status < 200 || response.status > 299) {
      const text = await readText(response).catch(() => '');
      throw httpError(response.status, text);
    }
    return response;
  }
}

/** The server URL without trailing slashes; refused with a hint when it is not http(s). */
function checkServer(server: string): string {
  // `127.0.0.1:8080` either fails to parse or parses as scheme `127.0.0.1:`; `host:8080` as
  // scheme `host:`. Either way the scheme is what is missing.
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(server)) {
    throw new ClientError(
      'invalid-server',
      `invalid server URL '${server}': it needs a scheme, e.g. http://${server}`,
    );
  }
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw new ClientError('invalid-server', `invalid server URL '${server}'`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ClientError(
      'invalid-server',
      `invalid server URL '${server}': expected http:// or https://`,
    );
  }
  return url.href.replace(/\/+$/, '');
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
