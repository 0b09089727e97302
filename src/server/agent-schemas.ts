// JSON Schemas of the routes a host's agent uses: batched conditional writes and its status
// report. Records travel whole, with epoch-millisecond times, because the agent's engine works on
// store records, not on the API's display shape.
import type { InstanceFields } from '../store/index.ts';
import {
  errorSchema as error,
  STATE_SCHEMAS,
  TRANSITION_FIELDS,
  TRANSITION_SCHEMAS,
  UUID_PATTERN,
} from './schemas.ts';

/** Most writes one request may carry; an agent sends one event-loop turn's writes, or a replay batch. */
export const MAX_WRITES_PER_REQUEST = 1_000;
/** Largest body of a writes request, bytes: a full batch with long names and details fits. */
export const WRITES_BODY_LIMIT = 8 * 1024 * 1024;

const epochMs = { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER } as const;

/**
 * One schema per writable field: adding a field to the store without one here fails to compile.
 * The states are the API's; the rest is bounded here, as an agent's writes are input.
 */
const FIELD_SCHEMAS = {
  name: { type: 'string', maxLength: 1024 },
  host: { type: 'string', minLength: 1, maxLength: 253 },
  vmState: STATE_SCHEMAS.vmState,
  taskState: STATE_SCHEMAS.taskState,
  taskAction: STATE_SCHEMAS.taskAction,
  taskStartedAt: { ...epochMs, type: ['integer', 'null'] },
  taskError: { type: ['string', 'null'], maxLength: 4096 },
  powerState: STATE_SCHEMAS.powerState,
  powerReason: { type: 'string', maxLength: 1024 },
  policy: STATE_SCHEMAS.policy,
} as const satisfies Record<keyof InstanceFields, unknown>;

const FIELD_NAMES = Object.keys(FIELD_SCHEMAS);

const record = {
  type: 'object',
  required: [...FIELD_NAMES, 'uuid', 'version', 'createdAt', 'updatedAt'],
  // Fields the store gains later travel too: the agent keeps whatever the record holds.
  additionalProperties: true,
  properties: {
    uuid: { type: 'string' },
    ...FIELD_SCHEMAS,
    version: { type: 'integer' },
    createdAt: epochMs,
    updatedAt: epochMs,
  },
} as const;

const transition = {
  type: 'object',
  additionalProperties: false,
  required: TRANSITION_FIELDS,
  properties: {
    ...TRANSITION_SCHEMAS,
    detail: { type: 'string', maxLength: 1024 },
    outOfBand: { type: 'boolean' },
    observedAt: epochMs,
  },
} as const;

const write = {
  type: 'object',
  additionalProperties: false,
  required: ['kind', 'uuid'],
  properties: {
    kind: { type: 'string', enum: ['create', 'update'] },
    uuid: { type: 'string', pattern: UUID_PATTERN },
    expectedVersion: { type: 'integer', minimum: 0, maximum: 2 ** 31 - 1 },
    fields: {
      type: 'object',
      additionalProperties: false,
      required: FIELD_NAMES,
      properties: FIELD_SCHEMAS,
    },
    patch: { type: 'object', additionalProperties: false, properties: FIELD_SCHEMAS },
    transition,
    seq: {
      type: 'integer',
      minimum: 1,
      maximum: Number.MAX_SAFE_INTEGER,
      description: "the entry's place in the journal; with `journal`, an entry is applied once",
    },
  },
} as const;

const hostParams = {
  type: 'object',
  required: ['host'],
  properties: { host: { type: 'string', minLength: 1, maxLength: 253 } },
} as const;

export const writesSchema = {
  summary: "A host agent's conditional writes, applied in one transaction, each with its result",
  description:
    'Each write is conditional on the version its agent read (`update`) or on the uuid being ' +
    'new (`create`). With `journal` and a `seq` per write, an entry already processed is answered ' +
    '`duplicate` and not applied again: an agent may resend after a lost answer.',
  tags: ['agents'],
  params: hostParams,
  body: {
    type: 'object',
    additionalProperties: false,
    required: ['writes'],
    properties: {
      journal: { type: 'string', minLength: 1, maxLength: 200 },
      writes: { type: 'array', maxItems: MAX_WRITES_PER_REQUEST, items: write },
    },
  },
  response: {
    200: {
      type: 'object',
      required: ['results'],
      properties: {
        results: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['ok'],
            properties: {
              ok: { type: 'boolean' },
              instance: record,
              revision: { type: 'integer' },
              reason: { type: 'string', enum: ['conflict', 'exists', 'not-found', 'duplicate'] },
              current: { ...record, type: ['object', 'null'] },
            },
          },
        },
      },
    },
    400: error,
    401: error,
    403: error,
    413: error,
    415: error,
    503: error,
  },
} as const;

export const statusSchema = {
  summary: "A host agent's status: hypervisor connection, last reconcile, journal backlog",
  description: "lastSeenAt is the server's clock at the report.",
  tags: ['agents'],
  params: hostParams,
  body: {
    type: 'object',
    additionalProperties: false,
    required: ['driver', 'connected', 'lastReconcileAt', 'backlog'],
    properties: {
      driver: { type: 'string', minLength: 1, maxLength: 64 },
      connected: { type: 'boolean' },
      lastReconcileAt: { ...epochMs, type: ['integer', 'null'] },
      backlog: { type: 'integer', minimum: 0, maximum: 2 ** 31 - 1 },
      connectionError: {
        type: ['string', 'null'],
        maxLength: 4096,
        description: 'why the hypervisor connection is down; null clears it; absent leaves it',
      },
    },
  },
  response: { 204: { type: 'null' }, 400: error, 401: error, 403: error, 503: error },
} as const;
