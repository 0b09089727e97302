export { buildServer } from './app.ts';
export type { ServerOptions } from './app.ts';
export { checkListen, isLoopback, listen, parseListen } from './listen.ts';
export type { ListenAddress, Listening } from './listen.ts';
export { serverMetrics } from './metrics.ts';
export type { ServerMetrics } from './metrics.ts';
export * from './types.ts';
export type { AgentWriteRefusal } from './agent-routes.ts';
