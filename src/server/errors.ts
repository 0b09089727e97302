// Every error the API answers with, in one shape `{error, message}`: `error` is one of the codes
// below and always travels with the status beside it, whoever raised it (a handler, the schema,
// the body parser, the router or Node's HTTP parser).
import type { FastifyError, FastifySchemaValidationError } from 'fastify';

export const API_ERRORS = {
  'bad-request': { status: 400, meaning: 'the request could not be read (JSON, URL, HTTP)' },
  'invalid-request': { status: 400, meaning: 'a parameter, header or body field is invalid' },
  unauthorized: { status: 401, meaning: 'missing or wrong bearer token' },
  forbidden: {
    status: 403,
    meaning: "the token may not do this: a reader's write, another host's instance, revoked",
  },
  'not-found': { status: 404, meaning: 'no such instance or route' },
  'method-not-allowed': { status: 405, meaning: 'the route exists for other methods (Allow)' },
  'request-timeout': { status: 408, meaning: 'the request did not arrive in time' },
  'task-in-flight': { status: 409, meaning: 'the instance has a task running' },
  'invalid-action': { status: 409, meaning: 'the action makes no sense in the current state' },
  'credential-exists': {
    status: 409,
    meaning: 'the host or reader has a token: revoke or replace',
  },
  'revision-too-old': { status: 410, meaning: 'the change log no longer holds it: re-list' },
  'revision-too-new': { status: 410, meaning: 'newer than the latest: the store was reset' },
  'payload-too-large': { status: 413, meaning: 'the body is larger than the server accepts' },
  'uri-too-long': { status: 414, meaning: 'the URL or one of its path segments is too long' },
  'unsupported-media-type': { status: 415, meaning: 'the body is not application/json' },
  'headers-too-large': { status: 431, meaning: 'the request headers are too large' },
  internal: { status: 500, meaning: 'a server fault; details are in its log' },
  unavailable: { status: 503, meaning: 'no hypervisor (or agent) to act, or server shutting down' },
  'too-many-watchers': { status: 503, meaning: 'the watch stream limit is reached (Retry-After)' },
} as const satisfies Record<string, { status: number; meaning: string }>;

export type ApiErrorCode = keyof typeof API_ERRORS;

export interface ApiError {
  readonly error: ApiErrorCode;
  readonly message: string;
  /** With revision-too-old: the oldest revision the server can still replay from. */
  readonly oldestRevision?: number;
}

export function apiError(error: ApiErrorCode, message: string): ApiError {
  return { error, message };
}

export function statusOf(code: ApiErrorCode): number {
  return API_ERRORS[code].status;
}

/** Thrown by the server's own request checks; the error handler answers it as is. */
export class RequestRefused extends Error {
  override readonly name = 'RequestRefused';
  constructor(
    readonly code: ApiErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The code a framework error's status stands for, when nothing more specific is known. */
const CODE_OF_STATUS: Record<number, ApiErrorCode> = {
  404: 'not-found',
  405: 'method-not-allowed',
  408: 'request-timeout',
  413: 'payload-too-large',
  414: 'uri-too-long',
  415: 'unsupported-media-type',
  431: 'headers-too-large',
};

/** Maps whatever a handler or Fastify threw to one status and the one error shape. */
export function describeError(error: FastifyError | RequestRefused): {
  status: number;
  body: ApiError;
} {
  const answer = (code: ApiErrorCode, message: string) => ({
    status: statusOf(code),
    body: apiError(code, message),
  });
  if (error instanceof RequestRefused) return answer(error.code, error.message);
  if (error.validation !== undefined) return answer('invalid-request', error.message);
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return answer('bad-request', 'request body is not valid JSON');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return answer('bad-request', 'request body is empty; expected JSON like {"action":"start"}');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return answer('payload-too-large', 'request body is larger than this server accepts');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return answer('unsupported-media-type', 'send the request body as application/json');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return answer('bad-request', 'request body length does not match its Content-Length');
    case 'FST_ERR_BAD_URL':
      return answer('bad-request', 'the URL path has a malformed percent-escape');
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return answer('uri-too-long', 'a path segment of the URL is too long');
  }
  const status = error.statusCode ?? 500;
  if (status >= 400 && status < 500) {
    return answer(CODE_OF_STATUS[status] ?? 'bad-request', truncate(error.message, 300));
  }
  return answer('internal', 'internal error; see the server log');
}

/** What Node's HTTP parser refused, as a complete HTTP/1.1 response in the API's error shape. */
export function clientErrorResponse(error: Error & { code?: string; rawPacket?: unknown }): string {
  let answer: { status: number; body: ApiError };
  if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    answer = { status: 408, body: apiError('request-timeout', 'the request took too long') };
  } else if (error.code === 'HPE_HEADER_OVERFLOW') {
    // Node counts the request line with the headers: when the line is what filled the limit
    // (unfinished, or over half of it), the URL is what is too long.
    const raw = Buffer.isBuffer(error.rawPacket) ? error.rawPacket : Buffer.alloc(0);
    const lineEnd = raw.indexOf('\r\n');
    answer =
      lineEnd >= 0 && lineEnd < URL_TOO_LONG_BYTES
        ? { status: 431, body: apiError('headers-too-large', 'the request headers are too large') }
        : { status: 414, body: apiError('uri-too-long', 'the request URL is too long') };
  } else {
    answer = { status: 400, body: apiError('bad-request', 'malformed HTTP request') };
  }
  const body = JSON.stringify(answer.body);
  return (
    `HTTP/1.1 ${answer.status} ${REASONS[answer.status] ?? 'Error'}\r\n` +
    'Connection: close\r\n' +
    'Content-Type: application/json; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
}

/** Half of Node's default 16 KiB limit on the request line and headers together. */
const URL_TOO_LONG_BYTES = 8 * 1024;

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  408: 'Request Timeout',
  414: 'URI Too Long',
  431: 'Request Header Fields Too Large',
};

const WHERE: Record<string, string> = {
  querystring: 'query parameter',
  params: 'path parameter',
  body: 'body field',
  headers: 'header',
};

export function describePart(dataVar: string): string {
  return WHERE[dataVar] ?? dataVar;
}

/**
 * One message naming the field and the problem, e.g. "query parameter 'vmState' must be one of
 * ...". Never walks the offending value: a body can nest thousands of levels deep.
 */
export function validationError(
  errors: FastifySchemaValidationError[],
  dataVar: string,
  uuidPattern: string,
): Error {
  const first = errors[0];
  if (first === undefined) return new Error(`invalid ${dataVar}`);
  const kind = describePart(dataVar);
  const field = first.instancePath.split('/').slice(1).join('.');
  const named = field === '' ? (dataVar === 'body' ? 'body' : dataVar) : `${kind} '${field}'`;
  const got = 'data' in first ? `; got ${quote((first as { data: unknown }).data)}` : '';
  const params = first.params as Record<string, unknown>;
  // A value of the wrong type for a field with fixed values is told the values, not the type.
  const allowed = (first as { parentSchema?: { enum?: unknown[] } }).parentSchema?.enum;
  const keyword = first.keyword === 'type' && allowed !== undefined ? 'enum' : first.keyword;
  let message: string;
  switch (keyword) {
    case 'enum':
      message = `${named} must be one of ${(allowed ?? (params.allowedValues as unknown[])).join(', ')}${got}`;
      break;
    case 'required':
      message = `${kind} '${String(params.missingProperty)}' is required`;
      break;
    case 'additionalProperties':
      message = `unknown ${kind} '${String(params.additionalProperty)}'`;
      break;
    case 'type':
      message = `${named} must be ${article(String(params.type))}${got}`;
      break;
    case 'minimum':
    case 'maximum':
      message = `${named} must be ${String(params.comparison)} ${String(params.limit)}${got}`;
      break;
    case 'minLength':
      message = `${named} must not be empty`;
      break;
    case 'pattern':
      message =
        params.pattern === uuidPattern
          ? `${named} must be a UUID (8-4-4-4-12 hexadecimal digits)${got}`
          : `${named} has the wrong format${got}`;
      break;
    default:
      message = `${named} ${first.message ?? 'is invalid'}${got}`;
  }
  return new Error(message);
}

function article(type: string): string {
  if (type === 'object') return 'a JSON object';
  if (type === 'integer') return 'an integer';
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

/** A short rendering of a value a client sent: scalars as JSON, containers by kind only. */
export function quote(value: unknown): string {
  if (typeof value === 'string') return truncate(`'${value}'`, 80);
  if (Array.isArray(value)) return 'an array';
  if (value !== null && typeof value === 'object') return 'an object';
  return truncate(String(value), 80);
}

export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
