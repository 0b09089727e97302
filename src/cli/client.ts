// The API v1 client as the CLI and scripts use it: the shared client (src/client) over node:http.
import { ApiClient } from '../client/index.ts';
import type { ClientOptions as SharedOptions } from '../client/index.ts';
import { nodeHttpTransport } from './http-transport.ts';

export { ClientError, DEFAULT_SERVER } from '../client/index.ts';
export type {
  ClientErrorCode,
  InstanceQuery,
  WatchMessage,
  WatchSubscription,
} from '../client/index.ts';

export type ClientOptions = Omit<SharedOptions, 'transport'>;

export class HvsyncClient extends ApiClient {
  constructor(options: ClientOptions) {
    super({ ...options, transport: nodeHttpTransport });
  }
}
