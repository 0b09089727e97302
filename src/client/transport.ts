// How a client's requests travel. The client knows routes and wire shapes; a transport knows
// only HTTP: node:http for the CLI (start-up speed), fetch for the browser.

export interface TransportRequest {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Absolute URL. */
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  /** A JSON text, sent as application/json. */
  readonly body?: string;
  readonly signal?: AbortSignal;
}

export interface TransportResponse {
  readonly status: number;
  /** The body as it arrives, chunk by chunk (a watch stream never ends by itself). */
  readonly body: AsyncIterable<Uint8Array>;
  /** Stops reading and lets the connection go. */
  close(): void;
}

export interface Transport {
  /**
   * Resolves once the status and headers are in. A request that gets no answer rejects with
   * ClientError `unreachable` (or with whatever the transport throws, which the client maps).
   */
  send(request: TransportRequest): Promise<TransportResponse>;
}

/** The whole body as text (UTF-8). */
export async function readText(response: TransportResponse): Promise<string> {
  const decoder = new TextDecoder();
  let text = '';
  for await (const chunk of response.body) text += decoder.decode(chunk, { stream: true });
  return text + decoder.decode();
}
