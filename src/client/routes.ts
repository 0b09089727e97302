// Where each API v1 call goes and what it answers: the one place clients learn the routes.
import type { ActionName, RecordedPowerState, VmState } from '../model/index.ts';
import type {
  ApiActionAccepted,
  ApiHost,
  ApiInstance,
  ApiInstancesPage,
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
  readonly method: 'GET' | 'POST';
  readonly path: string;
  /** Phantom: the answer's type, for the compiler only. */
  readonly answer?: T;
}

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
  /** Server-Sent Events; not JSON. */
  watch: (since?: number): Route<never> => ({
    method: 'GET',
    path: withQuery('/v1/watch', { since }),
  }),
  /** Prometheus text; not JSON. */
  metrics: (): Route<never> => ({ method: 'GET', path: '/metrics' }),
} as const;
