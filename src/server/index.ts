export { buildServer } from './app.ts';
export { Authenticator, CREDENTIAL_CACHE_MS, TOKEN_PREFIX, newToken, tokenHash } from './auth.ts';
export type { Authentication, Principal } from './auth.ts';
export {
  apiCredential,
  credentialNameRefusal,
  existsMessage,
  issueToken,
  noTokenMessage,
} from './credentials.ts';
export type { IssueResult } from './credentials.ts';
export { mayHostWrite } from './host-writes.ts';
export { ADMIN_ONLY, OWN_HOST_ROUTE, ROUTE_ACCESS, principalOf } from './policy.ts';
export type { Access } from './policy.ts';
export { tlsOptions } from './tls.ts';
export type { TlsFiles } from './tls.ts';
export type { ServerOptions } from './app.ts';
export { checkListen, isLoopback, listen, parseListen } from './listen.ts';
export type { ListenAddress, Listening } from './listen.ts';
export { serverMetrics } from './metrics.ts';
export type { ServerMetrics } from './metrics.ts';
export * from './types.ts';
export type { AgentWriteRefusal } from './agent-routes.ts';
