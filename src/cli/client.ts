// The API v1 client as the CLI and scripts use it: the shared client (src/client) over node:http.
import { ApiClient } from '../client/index.ts';
import type { ClientOptions as SharedOptions } from '../client/index.ts';
import { nodeHttpTransport } from './http-transport.ts';
import type { NodeHttpOptions } from './http-transport.ts';

export { ClientError, DEFAULT_SERVER } from '../client/index.ts';
export type {
  ClientErrorCode,
  InstanceQuery,
  WatchMessage,
  WatchSubscription,
} from '../client/index.ts';

export interface ClientOptions extends Omit<SharedOptions, 'transport'>, NodeHttpOptions {}

export class HvsyncClient extends ApiClient {
  constructor({ ca, keepAlive, ...options }: ClientOptions) {
    super({ ...options, transport: nodeHttpTransport({ ca, keepAlive }) });
  }
}
