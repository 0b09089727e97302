// The API v1 client shared by the CLI and the dashboard: routes and wire shapes in one place,
// the HTTP underneath behind a Transport (node:http in src/cli, fetch here for the browser).
// Platform-neutral: nothing here imports Node's modules.
export { ApiClient, DEFAULT_SERVER } from './client.ts';
export type { ClientOptions, WatchMessage, WatchSubscription } from './client.ts';
export { ClientError, httpError, unreachable } from './errors.ts';
export type { ClientErrorCode } from './errors.ts';
export { fetchTransport } from './fetch-transport.ts';
export { histogramOf, parseMetricsText, sumOf } from './metrics-text.ts';
export type { HistogramBucket, MetricSample } from './metrics-text.ts';
export { routes } from './routes.ts';
export type { ActionBody, CredentialKind, InstanceQuery, Route } from './routes.ts';
export { SseParser } from './sse.ts';
export type { SseMessage } from './sse.ts';
export { readText } from './transport.ts';
export type { Transport, TransportRequest, TransportResponse } from './transport.ts';
