// Where each API v1 call goes and what it answers: the one place clients learn the routes.
import type { ActionName, RecordedPowerState, VmState } from '../model/index.ts';
import type {
  ApiActionAccepted,
  ApiAgentWritesAnswer,
  ApiCredential,
  ApiHost,
  ApiInstance,
  ApiInstancesPage,
  ApiIssuedToken,
  ApiTransition,
} from '../server/index.ts';

export interface InstanceQuery {
  readonly host?: string;
  readonly vmState?: VmState;
  readonly powerState?: RecordedPowerState;
  /** 1–1000; the server's default when left out. */
  readonly limit?: number;
  /** The `next` of the previous page. */
  readonly after?: string;
  /** Deleted instances are left out unless this is true. */
  readonly includeDeleted?: boolean;
}

export interface ActionBody {
  readonly action: ActionName;
}

/** A route: its method, its path (with query) and the type of its JSON answer. */
export interface Route<T> {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  readonly path: string;
  /** Phantom: the answer's type, for the compiler only. */
  readonly answer?: T;
}

export type CredentialKind = 'host' | 'reader';

const tokenPath = (kind: CredentialKind, name: string) =>
  `/v1/${kind === 'host' ? 'hosts' : 'readers'}/${encodeURIComponent(name)}/token`;

const uuidPath = (uuid: string) => `/v1/instances/${encodeURIComponent(uuid)}`;

function withQuery(path: string, query: object): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined) params.set(key, String(value));
  }
  const search = params.toString();
  return search === '' ? path : `${path}?${search}`;
}

export const routes = {
  listInstances: (query: InstanceQuery = {}): Route<ApiInstancesPage> => ({
    method: 'GET',
    path: withQuery('/v1/instances', query),
  }),
  getInstance: (uuid: string): Route<ApiInstance> => ({ method: 'GET', path: uuidPath(uuid) }),
  history: (uuid: string, limit?: number): Route<{ transitions: ApiTransition[] }> => ({
    method: 'GET',
    path: withQuery(`${uuidPath(uuid)}/history`, { limit }),
  }),
  /** Body: {@link ActionBody}. */
  act: (uuid: string): Route<ApiActionAccepted> => ({
    method: 'POST',
    path: `${uuidPath(uuid)}/actions`,
  }),
  hosts: (): Route<{ hosts: ApiHost[] }> => ({ method: 'GET', path: '/v1/hosts' }),
  /** Admin only; the answer is the only place the token is ever shown. */
  issueToken: (kind: CredentialKind, name: string, replace = false): Route<ApiIssuedToken> => ({
    method: 'POST',
    path: withQuery(tokenPath(kind, name), { replace: replace ? 'true' : undefined }),
  }),
  /** Admin only. */
  revokeToken: (kind: CredentialKind, name: string): Route<ApiCredential> => ({
    method: 'DELETE',
    path: tokenPath(kind, name),
  }),
  /** Admin only: every host and reader credential, valid and revoked. */
  credentials: (): Route<{ credentials: ApiCredential[] }> => ({
    method: 'GET',
    path: '/v1/credentials',
  }),
  /** Server-Sent Events; not JSON. `host`: only that host's instances. */
  watch: (since?: number, host?: string): Route<never> => ({
    method: 'GET',
    path: withQuery('/v1/watch', { since, host }),
  }),
  /** A host agent's writes, one transaction; body: ApiAgentWrites. */
  agentWrites: (host: string): Route<ApiAgentWritesAnswer> => ({
    method: 'POST',
    path: `/v1/hosts/${encodeURIComponent(host)}/writes`,
  }),
  /** A host agent's status report (204); body: ApiAgentStatus. */
  reportStatus: (host: string): Route<never> => ({
    method: 'PUT',
    path: `/v1/hosts/${encodeURIComponent(host)}/status`,
  }),
  /** Prometheus text; not JSON. */
  metrics: (): Route<never> => ({ method: 'GET', path: '/metrics' }),
} as const;
