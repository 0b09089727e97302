// Errors of the libvirt client. Two families: what libvirt itself reported (LibvirtError, with
// libvirt's own numeric code and domain) and what went wrong on our side of the socket
// (LibvirtClientError: protocol violations, closed connections, timeouts, bad URIs).

/** libvirt's virErrorNumber values that callers commonly test for. */
export const ErrorCode = {
  INTERNAL_ERROR: 1,
  NO_SUPPORT: 3,
  INVALID_ARG: 8,
  OPERATION_FAILED: 9,
  RPC: 39,
  NO_DOMAIN: 42,
  OPERATION_INVALID: 55,
  AUTH_FAILED: 45,
  OPERATION_DENIED: 6,
  OPERATION_TIMEOUT: 68,
  OPERATION_UNSUPPORTED: 84,
  DOM_EXIST: 52,
  AUTH_UNAVAILABLE: 94,
} as const;

export interface RemoteErrorFields {
  readonly code: number;
  readonly domain: number;
  readonly message: string | null;
  readonly level: number;
  readonly str1: string | null;
  readonly str2: string | null;
  readonly str3: string | null;
  readonly int1: number;
  readonly int2: number;
}

/** An error reported by libvirtd in reply to a call. */
export class LibvirtError extends Error {
  override readonly name = 'LibvirtError';
  readonly code: number;
  readonly domain: number;
  readonly level: number;
  readonly detail: RemoteErrorFields;

  constructor(fields: RemoteErrorFields) {
    super(fields.message ?? `libvirt error code ${fields.code}`);
    this.code = fields.code;
    this.domain = fields.domain;
    this.level = fields.level;
    this.detail = fields;
  }

  get isNoDomain(): boolean {
    return this.code === ErrorCode.NO_DOMAIN;
  }

  get isOperationInvalid(): boolean {
    return this.code === ErrorCode.OPERATION_INVALID;
  }

  get isOperationFailed(): boolean {
    return this.code === ErrorCode.OPERATION_FAILED;
  }
}

export type ClientErrorCode =
  | 'protocol' // the peer sent something that is not valid libvirt RPC
  | 'closed' // the connection is closed (or closed while the call was pending)
  | 'timeout' // the call got no reply in time
  | 'connect' // the socket could not be opened
  | 'auth' // the daemon wants an authentication we do not speak
  | 'uri'; // the URI is not one we understand

export class LibvirtClientError extends Error {
  override readonly name = 'LibvirtClientError';
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A protocol violation found while decoding: the connection it came from must be dropped. */
export function protocolError(message: string): LibvirtClientError {
  return new LibvirtClientError('protocol', `libvirt protocol error: ${message}`);
}
