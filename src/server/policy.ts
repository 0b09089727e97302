// Which principal may call which route. The admin may call every route. Each route says who else
// may, in one line: either `config: { access: {...} }` on the route itself, or an entry in
// ROUTE_ACCESS below. A route that says nothing is the admin's alone, so a new route is safe
// before anyone has thought about it. Readers only ever read (GET), whatever a route declares.
// Host tokens reach a route only when it names the host it is about, in a path or query
// parameter, and that host is theirs (KubeVirt's NodeRestriction, for routes).
import type { FastifyRequest } from 'fastify';
import type { Principal } from './auth.ts';

export interface Access {
  /** Who may call the route besides the admin. */
  readonly principals: readonly ('reader' | 'host')[];
  /** For a host token: the path parameter naming the host, which must be its own. */
  readonly hostParam?: string;
  /** For a host token: the query parameter that must be given and name its own host. */
  readonly hostQuery?: string;
  /**
   * For a host token: the field of the route's answer that names the host of what it answers,
   * which must be its own; checked on the way out (a record is not known before it is read).
   */
  readonly hostOfAnswer?: string;
}

export const ADMIN_ONLY: Access = { principals: [] };
/** A route a host's agent calls for its own host, named by the path's `:host`. */
export const OWN_HOST_ROUTE: Access = { principals: ['host'], hostParam: 'host' };
const READERS: Access = { principals: ['reader'] };
const READERS_AND_OWN_HOST: Access = { principals: ['reader', 'host'], hostQuery: 'host' };

/** The routes app.ts builds, by `METHOD url`. */
export const ROUTE_ACCESS: Readonly<Record<string, Access>> = {
  'GET /v1/instances': READERS_AND_OWN_HOST,
  // An agent re-reads a record of its own host (a rebase after a conflict), never another's.
  'GET /v1/instances/:uuid': { principals: ['reader', 'host'], hostOfAnswer: 'host' },
  'GET /v1/instances/:uuid/history': READERS,
  'GET /v1/watch': READERS_AND_OWN_HOST,
  'GET /v1/hosts': READERS,
  'GET /readyz': READERS,
  'GET /metrics': READERS,
  'GET /openapi.json': READERS,
  'POST /v1/hosts/:host/writes': OWN_HOST_ROUTE,
  'PUT /v1/hosts/:host/status': OWN_HOST_ROUTE,
};

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who besides the admin may call this route; see src/server/policy.ts. */
    access?: Access;
  }
}

/** The route's declared access: its own config, else ROUTE_ACCESS, else the admin's alone. */
export function accessOf(request: FastifyRequest): Access {
  const declared = request.routeOptions.config.access;
  if (declared !== undefined) return declared;
  // Fastify answers HEAD with the GET route's handler; it is the same read.
  const method = request.method === 'HEAD' ? 'GET' : request.method;
  return ROUTE_ACCESS[`${method} ${request.routeOptions.url ?? ''}`] ?? ADMIN_ONLY;
}

/** Why `principal` may not make this request, or null when it may. */
export function routeRefusal(principal: Principal, request: FastifyRequest): string | null {
  if (principal.kind === 'admin') return null;
  const access = accessOf(request);
  const route = `${request.method} ${request.routeOptions.url ?? request.url}`;
  if (principal.kind === 'reader') {
    const reads = request.method === 'GET' || request.method === 'HEAD';
    if (reads && access.principals.includes('reader')) return null;
    return reads
      ? `reader '${principal.name}' may not use ${route}: it needs the admin token`
      : `reader '${principal.name}' may only read (GET): ${route} needs the admin token`;
  }
  const who = `the token of host '${principal.host}'`;
  if (!access.principals.includes('host')) {
    return (
      `${who} may not use ${route}: a host token may only read its own host's instances ` +
      'and report for its own host'
    );
  }
  if (access.hostParam !== undefined) {
    const named = (request.params as Record<string, unknown> | undefined)?.[access.hostParam];
    if (named !== principal.host) {
      return `${who} may not act for host '${String(named)}': only for its own host`;
    }
  }
  if (access.hostQuery !== undefined) {
    const named = (request.query as Record<string, unknown> | undefined)?.[access.hostQuery];
    if (named === undefined) {
      return (
        `${who} must give ${access.hostQuery}=${principal.host} on ${route}: ` +
        "it may read only its own host's instances"
      );
    }
    if (typeof named !== 'string') {
      return `${who} must give ${access.hostQuery}=${principal.host} once on ${route}`;
    }
    if (named !== principal.host) {
      return (
        `${who} may not read the instances of host '${named.slice(0, 100)}': ` +
        `only its own (${access.hostQuery}=${principal.host})`
      );
    }
  }
  return null;
}

/**
 * Why the answer about to be sent may not go to the request's host token (it is about another
 * host), or null. Only successful answers of routes that declare `hostOfAnswer` are looked at.
 */
export function answerRefusal(
  request: FastifyRequest,
  status: number,
  answer: unknown,
): string | null {
  const principal = principals.get(request);
  if (principal?.kind !== 'host' || status < 200 || status > 299) return null;
  const field = accessOf(request).hostOfAnswer;
  if (field === undefined || answer === null || typeof answer !== 'object') return null;
  const host = (answer as Record<string, unknown>)[field];
  if (host === principal.host) return null;
  const what = 'uuid' in answer ? `instance ${String((answer as { uuid: unknown }).uuid)}` : 'it';
  return (
    `${what} is recorded on host '${String(host)}': the token of host '${principal.host}' ` +
    "may read only its own host's instances"
  );
}

const principals = new WeakMap<FastifyRequest, Principal>();

export function setPrincipal(request: FastifyRequest, principal: Principal): void {
  principals.set(request, principal);
}

/**
 * Who the request speaks for; resolved (and the route's access checked) before any handler
 * runs. Throws on a public route such as /healthz, which is served without asking.
 */
export function principalOf(request: FastifyRequest): Principal {
  const principal = principals.get(request);
  if (principal === undefined) {
    throw new Error(`no principal for ${request.method} ${request.url}: a public route`);
  }
  return principal;
}
