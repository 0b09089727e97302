// The one error class of API v1 clients, whatever the transport.

export type ClientErrorCode =
  /** The server could not be reached at all. */
  | 'unreachable'
  /** The server answered with an error status; `status` and `apiError` say which. */
  | 'http'
  /** The server answered something that is not API v1. */
  | 'protocol'
  /** The server URL given is not an http(s) URL. */
  | 'invalid-server';

export class ClientError extends Error {
  override readonly name = 'ClientError';
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    readonly details: { status?: number; apiError?: string; cause?: unknown } = {},
  ) {
    super(message, { cause: details.cause });
  }

  get status(): number | undefined {
    return this.details.status;
  }

  /** The API's error code (`not-found`, `task-in-flight`...), when the server sent one. */
  get apiError(): string | undefined {
    return this.details.apiError;
  }
}

const UNTRUSTED =
  "its TLS certificate is not trusted: give the CA's certificate with --ca FILE or HVSYNC_CA";

const NETWORK_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'unknown host',
  EAI_AGAIN: 'host name lookup failed',
  ECONNRESET: 'connection reset',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'timed out',
  UND_ERR_CONNECT_TIMEOUT: 'timed out',
  UND_ERR_SOCKET: 'connection lost',
  EPROTO: 'TLS handshake failed: is it https?',
  DEPTH_ZERO_SELF_SIGNED_CERT: UNTRUSTED,
  SELF_SIGNED_CERT_IN_CHAIN: UNTRUSTED,
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: UNTRUSTED,
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: UNTRUSTED,
  CERT_HAS_EXPIRED: 'its TLS certificate has expired',
  ERR_TLS_CERT_ALTNAME_INVALID: 'its TLS certificate is not for this host name',
};

/** The error for a request that never got an answer, with the network's reason when known. */
export function unreachable(server: string, error: unknown): ClientError {
  if (error instanceof ClientError) return error;
  const code = networkCode(error);
  const reason = code === undefined ? '' : ` (${NETWORK_REASONS[code] ?? code})`;
  return new ClientError('unreachable', `cannot reach hvsync at ${server}${reason}`, {
    cause: error,
  });
}

/** The socket error, or the first of an AggregateError of them (one per address tried). */
function networkCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    if (current instanceof AggregateError && current.errors[0] !== undefined) {
      current = current.errors[0];
    } else {
      current = current.cause;
    }
  }
  return undefined;
}

/** The error for an answer with a status outside 2xx, from its body when it is the API's shape. */
export function httpError(status: number, text: string): ClientError {
  let apiError: string | undefined;
  let message = `HTTP ${status}`;
  try {
    const body = JSON.parse(text) as { error?: unknown; message?: unknown };
    if (typeof body.error === 'string') apiError = body.error;
    if (typeof body.message === 'string') message = body.message;
  } catch {
    if (text.trim() !== '') message = `HTTP ${status}: ${text.trim().slice(0, 200)}`;
  }
  return new ClientError('http', message, { status, apiError });
}
