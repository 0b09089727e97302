// The control-plane HTTP API, v1. Reads come straight from the store; actions go through the
// ActionPort (the engine, in the process wiring); readiness through the ReadinessPort.
import swagger from '@fastify/swagger';
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import type { ActionName, RecordedPowerState, VmState } from '../model/index.ts';
import type { CredentialStore, InstanceFilter, InstanceRecord, ReadStore } from '../store/index.ts';
import { Authenticator } from './auth.ts';
import { credentialRoutes } from './credential-routes.ts';
import { isPublicRoute, registerDashboard } from './dashboard.ts';
import { discardRestOfUpload } from './drain.ts';
import {
  apiError,
  clientErrorResponse,
  describeError,
  statusOf,
  truncate,
  validationError,
} from './errors.ts';
import type { ApiErrorCode } from './errors.ts';
import { admitRequest, screenAnswer } from './guard.ts';
import { markAuthenticated, markTls } from './listen.ts';
import { serverMetrics } from './metrics.ts';
import type { ServerMetrics } from './metrics.ts';
import { parseParameters } from './params.ts';
import { RouteMethods } from './route-methods.ts';
import { tlsOptions } from './tls.ts';
import type { TlsFiles } from './tls.ts';
import {
  DEFAULT_PAGE,
  UUID_PATTERN,
  actionSchema,
  getInstanceSchema,
  healthSchema,
  historySchema,
  hostsSchema,
  listInstancesSchema,
  metricsSchema,
  readySchema,
  watchSchema,
} from './schemas.ts';
import { ActionRejected, ServerError } from './types.ts';
import type {
  ActionPort,
  AgentPort,
  ApiError,
  ApiInstance,
  HostHealthPort,
  ReadinessPort,
} from './types.ts';
import { agentRoutes } from './agent-routes.ts';
import type { AgentWriteRefusal } from './agent-routes.ts';
import { WatchHub } from './watch.ts';
import { apiHost, apiInstance, apiTask, apiTransition } from './wire.ts';

export interface ServerOptions {
  readonly store: ReadStore;
  readonly actions: ActionPort;
  readonly readiness: ReadinessPort;
  /** Whether hosts' agents report, for /v1/hosts and instances' powerStateStale; default: all do. */
  readonly hosts?: HostHealthPort;
  /** Serves the routes hosts' agents write through; absent: no agent may report here. */
  readonly agents?: AgentPort;
  /**
   * Checks each agent write before any of a request's is applied; a refusal answers the request
   * 403 `forbidden`. Absent: a host token writes only its own host's instances (mayHostWrite).
   */
  readonly agentWriteRefusal?: AgentWriteRefusal;
  /** The process's registry: served at /metrics, and the server's own metrics are added to it. */
  readonly registry: Registry;
  /** The admin token: turns on bearer authentication for every route but /healthz. */
  readonly token?: string;
  /**
   * Host and reader tokens (src/server/policy.ts says what each may do), and the admin routes
   * that issue and revoke them. Without it only the admin token exists.
   */
  readonly credentials?: CredentialStore;
  /** How long a looked-up host or reader token is believed; the bound on revocation. Default 5 000. */
  readonly credentialCacheMs?: number;
  /** Serve HTTPS with this certificate and key (PEM). */
  readonly tls?: TlsFiles;
  /** A pino logger (or any Fastify-compatible one), or true for Fastify's own; default silent. */
  readonly logger?: FastifyBaseLogger | boolean;
  /** Comment line sent on idle watch streams so proxies and clients see they are alive. Default 15 000. */
  readonly watchHeartbeatMs?: number;
  /** Events one watch stream may hold beyond what its socket has taken. Default 1 000. */
  readonly watchBufferLimit?: number;
  /** Watch streams open at once; more are answered 503 with Retry-After. Default 1 000. */
  readonly maxWatchers?: number;
  /**
   * Bytes all watch streams together may hold for clients that have not read them; a stream over
   * its share (this divided among the open streams) is ended with a resume point. Default 64 MiB.
   */
  readonly watchBufferBytes?: number;
  /** How long a stream ended for falling behind waits for its client to read the end. Default 10 000. */
  readonly watchLingerMs?: number;
  /** Largest request body, bytes. Default 64 KiB (the largest valid body is a few dozen bytes). */
  readonly bodyLimit?: number;
  /** Epoch-ms clock. Default Date.now. */
  readonly now?: () => number;
  /** Where the dashboard's built files are. Default: the build's own (dist/web). */
  readonly dashboardDir?: string;
}

const PUBLIC_ROUTES = new Set(['/healthz']);
const EVERY_HOST_REPORTS: HostHealthPort = { reachable: () => true, powerStateStale: () => false };
const CLOSE_GRACE_MS = 2000;
/** Seconds a client refused for too many watchers is told to wait before trying again. */
const WATCH_RETRY_AFTER_S = 5;

export function buildServer(options: ServerOptions): FastifyInstance {
  if (options.token !== undefined && options.token.trim() === '') {
    throw new ServerError('invalid-option', 'the API token must not be empty');
  }
  const loggerOption =
    typeof options.logger === 'object'
      ? { loggerInstance: options.logger }
      : { logger: options.logger ?? false };
  const https = options.tls === undefined ? {} : { https: tlsOptions(options.tls) };
  const app = Fastify({
    ...loggerOption,
    ...https,
    bodyLimit: options.bodyLimit ?? 64 * 1024,
    // Requests are logged at debug level by the onResponse hook below, not at info by Fastify.
    logController: new LogController({ disableRequestLogging: true }),
    // Answered by the onRequest hook below instead, in the API's error shape.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    // The router's own refusals (a malformed escape or an over-long segment in the path).
    frameworkErrors: (error, _request, reply) => {
      const { status, body } = describeError(error);
      void (reply as FastifyReply).code(status).send(body);
    },
    // What Node's HTTP parser refuses never reaches a route: answered here in the same shape.
    clientErrorHandler: (error, socket) => {
      if ((error as { code?: string }).code === 'ECONNRESET' || socket.destroyed) return;
      if (socket.writable) socket.write(clientErrorResponse(error));
      socket.destroy();
    },
    ajv: {
      customOptions: {
        // Unknown fields are refused, not silently dropped: a typo must not widen a query.
        removeAdditional: false,
        // Query and header numbers are read strictly by parseParameters; bodies are JSON typed
        // already, where coercion would turn {"action":null} into "".
        coerceTypes: false,
        useDefaults: true,
        allErrors: false,
        // Puts the offending value on each error so the message can quote it.
        verbose: true,
      },
    },
    schemaErrorFormatter: (errors, dataVar) => validationError(errors, dataVar, UUID_PATTERN),
  }) as unknown as FastifyInstance;

  // Fastify would hand text/plain bodies to the schema as strings; 415 says what is wrong.
  app.removeContentTypeParser('text/plain');

  const metrics = serverMetrics(options.registry);
  const authenticator = new Authenticator({
    adminToken: options.token,
    credentials: options.credentials,
    cacheMs: options.credentialCacheMs,
    now: options.now,
  });
  app.addHook('onClose', async () => authenticator.close());
  if (authenticator.required) markAuthenticated(app);
  if (options.tls !== undefined) markTls(app);

  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
    // Requests in flight get a short grace; then every connection goes, idle or not. A client
    // that stopped reading a watch stream can leave a connection Node never sees as idle, and
    // shutdown must not wait out its keep-alive timeout.
    setTimeout(() => app.server.closeAllConnections(), CLOSE_GRACE_MS).unref();
  });
  app.addHook('onRequest', async (request, reply) => {
    const open = PUBLIC_ROUTES.has(request.routeOptions.url ?? '') || isPublicRoute(request);
    if (closing && !open) {
      await reply
        .code(503)
        .header('connection', 'close')
        .send(apiError('unavailable', 'the server is shutting down'));
      return;
    }
    if (!open) await admitRequest(authenticator, request, reply);
  });
  app.addHook('preValidation', async (request) => parseParameters(request));
  app.addHook('preSerialization', async (request, reply, answer) =>
    screenAnswer(request, reply, answer),
  );
  app.addHook('onResponse', async (request, reply) => {
    recordRequest(metrics, request, reply);
    request.log.debug(
      {
        method: request.method,
        url: request.url,
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime),
      },
      'request',
    );
  });
  app.setErrorHandler(async (error, request, reply) => {
    const { status, body } = describeError(error as Parameters<typeof describeError>[0]);
    if (status >= 500) request.log.error({ err: error }, 'request failed');
    if (!request.raw.complete) {
      // The body parser gave up on the body half-way; the client may still be uploading and
      // would see a reset instead of this answer if the connection closed now.
      reply.removeHeader('connection');
      discardRestOfUpload(request.raw);
    }
    return reply.code(status).send(body);
  });
  const routeMethods = new RouteMethods();
  app.addHook('onRoute', (route) => routeMethods.add(route.url, route.method));
  app.setNotFoundHandler(async (request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    const allowed = routeMethods.allowedFor(path);
    if (allowed.length > 0) {
      return sendError(
        reply.header('allow', allowed.join(', ')),
        'method-not-allowed',
        `${request.method} is not allowed on ${truncate(path, 200)}; use ${allowed.join(', ')}`,
      );
    }
    return sendError(reply, 'not-found', `no route ${request.method} ${truncate(path, 200)}`);
  });

  void app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'hvsync API',
        version: '1',
        description:
          "The control plane's record of every instance, kept in step with the hypervisor.",
      },
      components: !authenticator.required
        ? {}
        : { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: !authenticator.required ? [] : [{ bearer: [] }],
    },
  });
  // Routes live in a plugin registered after swagger, whose onRoute hook must see them.
  void app.register(async (api) => routes(api, options, metrics));
  const { credentials } = options;
  if (credentials !== undefined) {
    void app.register(async (api) => credentialRoutes(api, credentials, authenticator));
  }
  return app;
}

async function routes(
  app: FastifyInstance,
  options: ServerOptions,
  metrics: ServerMetrics,
): Promise<void> {
  const { store, actions, readiness, registry } = options;
  const hosts = options.hosts ?? EVERY_HOST_REPORTS;
  const view = (record: InstanceRecord): ApiInstance =>
    apiInstance(record, hosts.powerStateStale(record.host));
  const now = options.now ?? Date.now;
  const maxWatchers = options.maxWatchers ?? 1_000;
  const watches = new WatchHub(
    store,
    {
      heartbeatMs: options.watchHeartbeatMs ?? 15_000,
      bufferLimit: options.watchBufferLimit ?? 1_000,
      pageSize: 500,
      bufferBytes: options.watchBufferBytes ?? 64 * 1024 * 1024,
      lingerMs: options.watchLingerMs,
    },
    {
      onOpen: () => metrics.watchStreams.inc(),
      onEventSent: (count) => metrics.watchEvents.inc(count),
      onEnd: (reason) => {
        metrics.watchStreams.dec();
        metrics.watchEnded.inc({ reason });
        app.log.debug({ reason }, 'watch stream ended');
      },
      onError: (error) => app.log.error({ err: error }, 'watch stream failed'),
    },
  );
  metrics.watchBuffered.read = () => watches.bufferedBytes;
  app.addHook('preClose', async () => watches.closeAll());

  app.get<{
    Querystring: {
      host?: string;
      vmState?: VmState;
      powerState?: RecordedPowerState;
      includeDeleted?: boolean;
      limit?: number;
      after?: string;
    };
  }>('/v1/instances', { schema: listInstancesSchema }, async (request) => {
    const { host, vmState, powerState, after, includeDeleted } = request.query;
    const limit = request.query.limit ?? DEFAULT_PAGE;
    const filter: InstanceFilter = {
      host,
      vmState,
      powerState,
      // Deleted instances are history: shown when asked for by state or with includeDeleted.
      hideDeleted: vmState === undefined && includeDeleted !== true,
      after: after?.toLowerCase(),
    };
    // One extra row says whether there is a next page without a second query, unless the
    // store's own cap cut it off.
    const rows = await store.listInstances({ ...filter, limit: limit + 1 });
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    let more = rows.length > limit;
    if (!more && last !== undefined && rows.length === limit) {
      more = (await store.listInstances({ ...filter, after: last.uuid, limit: 1 })).length > 0;
    }
    return { instances: page.map(view), next: more && last ? last.uuid : null };
  });

  app.get<{ Params: { uuid: string } }>(
    '/v1/instances/:uuid',
    { schema: getInstanceSchema },
    async (request, reply) => {
      const uuid = request.params.uuid.toLowerCase();
      const record = await store.getInstance(uuid);
      if (record === null) return reply.code(404).send(unknownInstance(uuid));
      return view(record);
    },
  );

  app.get<{ Params: { uuid: string }; Querystring: { limit?: number } }>(
    '/v1/instances/:uuid/history',
    { schema: historySchema },
    async (request, reply) => {
      const uuid = request.params.uuid.toLowerCase();
      if ((await store.getInstance(uuid)) === null) {
        return reply.code(404).send(unknownInstance(uuid));
      }
      const transitions = await store.history(uuid, { limit: request.query.limit ?? DEFAULT_PAGE });
      return { transitions: transitions.map(apiTransition) };
    },
  );

  app.post<{ Params: { uuid: string }; Body: { action: ActionName } }>(
    '/v1/instances/:uuid/actions',
    { schema: actionSchema },
    async (request, reply) => {
      const uuid = request.params.uuid.toLowerCase();
      const { action } = request.body;
      try {
        const record = await actions.submit(uuid, action);
        return reply
          .code(202)
          .send({ task: apiTask(record, action, now()), instance: view(record) });
      } catch (error) {
        if (!(error instanceof ActionRejected)) throw error;
        return sendError(reply, error.code, error.message);
      }
    },
  );

  app.get('/v1/hosts', { schema: hostsSchema }, async () => {
    return { hosts: (await store.listHosts()).map((host) => apiHost(host, hosts.reachable(host))) };
  });

  app.get(
    '/healthz',
    { schema: { ...healthSchema, security: [] } },
    async () => ({ status: 'ok' }) as const,
  );

  app.get('/readyz', { schema: readySchema }, async (request, reply) => {
    let state: { ready: boolean; reasons: string[] };
    try {
      const answer = readiness.check();
      state = { ready: answer.ready, reasons: [...answer.reasons] };
    } catch (error) {
      request.log.error({ err: error }, 'readiness check failed');
      state = { ready: false, reasons: [`readiness check failed: ${messageOf(error)}`] };
    }
    return reply.code(state.ready ? 200 : 503).send(state);
  });

  app.get<{ Querystring: { since?: number; host?: string } }>(
    '/v1/watch',
    { schema: watchSchema },
    async (request, reply) => {
      // EventSource reconnects to the same URL, so its Last-Event-ID is newer than `since`.
      const since = lastEventId(request) ?? request.query.since ?? null;
      if (watches.size >= maxWatchers) {
        return sendError(
          reply.header('retry-after', String(WATCH_RETRY_AFTER_S)),
          'too-many-watchers',
          `${maxWatchers} watch streams are open, the most this server allows; ` +
            `retry in ${WATCH_RETRY_AFTER_S} s`,
        );
      }
      const opening = await watches.open(since, request.query.host ?? null);
      if (!opening.ok) return reply.code(opening.status).send(opening.body);
      const { stream } = opening;
      stream.dropConnection = () => request.raw.socket.destroy();
      reply.raw.on('close', () => stream.clientClosed());
      // The client may have gone while the stream was being opened: 'close' has fired already.
      if (request.raw.socket.destroyed) stream.clientClosed();
      return reply
        .header('content-type', 'text/event-stream; charset=utf-8')
        .header('cache-control', 'no-cache, no-transform')
        .header('x-accel-buffering', 'no')
        .send(stream.output);
    },
  );

  app.get('/metrics', { schema: metricsSchema }, async (_request, reply) => {
    const text = await registry.metrics();
    return reply.header('content-type', registry.contentType).send(text);
  });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  registerDashboard(app, options.dashboardDir);

  if (options.agents !== undefined) {
    agentRoutes(app, { store: options.agents, now, writeRefusal: options.agentWriteRefusal });
  }
}

function lastEventId(request: FastifyRequest): number | null {
  const value: unknown = request.headers['last-event-id'];
  // parseParameters has read it as an integer, or removed it when empty.
  return typeof value === 'number' ? value : null;
}

function recordRequest(metrics: ServerMetrics, request: FastifyRequest, reply: FastifyReply): void {
  const route = request.routeOptions.url ?? 'unmatched';
  const method = request.method;
  metrics.requests.inc({ method, route, status: String(reply.statusCode) });
  // A watch stream's lifetime is not a latency.
  if (route !== '/v1/watch') metrics.duration.observe({ method, route }, reply.elapsedTime / 1000);
}

function sendError(reply: FastifyReply, code: ApiErrorCode, message: string): FastifyReply {
  return reply.code(statusOf(code)).send(apiError(code, message));
}

function unknownInstance(uuid: string): ApiError {
  return apiError('not-found', `no instance ${uuid}`);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
