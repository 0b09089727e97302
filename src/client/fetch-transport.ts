// A transport on fetch(): the browser's (the dashboard) or Node's. Unlike EventSource, fetch
// sends an Authorization header, and its streamed body reads the watch stream.
import type { Transport, TransportRequest, TransportResponse } from './transport.ts';

export const fetchTransport: Transport = {
  async send(request: TransportRequest): Promise<TransportResponse> {
    const controller = new AbortController();
    const abort = () => controller.abort();
    if (request.signal?.aborted) controller.abort();
    request.signal?.addEventListener('abort', abort, { once: true });
    const headers: Record<string, string> = { ...request.headers };
    if (request.body !== undefined) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await fetch(request.url, {
        method: request.method,
        headers,
        body: request.body,
        signal: controller.signal,
        credentials: 'omit',
      });
    } catch (error) {
      request.signal?.removeEventListener('abort', abort);
      throw error;
    }
    const close = () => {
      request.signal?.removeEventListener('abort', abort);
      controller.abort();
    };
    const stream = response.body;
    return {
      status: response.status,
      body: {
        async *[Symbol.asyncIterator]() {
          if (stream === null) return;
          const reader = stream.getReader();
          try {
            for (;;) {
              const { done, value } = await reader.read();
              if (done) return;
              yield value;
            }
          } finally {
            reader.releaseLock();
            close();
          }
        },
      },
      close,
    };
  },
};
