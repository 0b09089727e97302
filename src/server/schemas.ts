// JSON Schemas of API v1: Fastify validates requests and serializes responses with them, and
// @fastify/swagger turns them into /openapi.json, so the document cannot drift from the code.
import {
  ACTIONS,
  POLICIES,
  RECORDED_POWER_STATES,
  TASK_STATES,
  TRANSITION_CAUSES,
  VM_STATES,
} from '../model/index.ts';

/** Canonical 8-4-4-4-12 hex; upper case is accepted and folded to the store's lower case. */
export const UUID_PATTERN =
  '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';

const MAX_PAGE = 1000;
export const DEFAULT_PAGE = 100;

const uuid = { type: 'string', pattern: UUID_PATTERN, description: 'instance UUID' } as const;
const isoTime = { type: 'string', format: 'date-time' } as const;
const nullable = <T extends { type: string }>(schema: T) =>
  ({ ...schema, type: [schema.type, 'null'] }) as const;
const nullableEnum = <T extends readonly string[]>(values: T) =>
  ({ type: ['string', 'null'], enum: [...values, null] }) as const;

/**
 * An instance's states as every schema that carries them has them: the API's instances and
 * transitions here, and the records and transitions a host's agent sends (agent-schemas.ts).
 */
export const STATE_SCHEMAS = {
  vmState: { type: 'string', enum: VM_STATES },
  taskState: nullableEnum(TASK_STATES),
  taskAction: nullableEnum(ACTIONS),
  powerState: { type: 'string', enum: RECORDED_POWER_STATES },
  policy: nullableEnum(POLICIES),
} as const;

/**
 * A transition's states and cause; its detail and times differ: the API writes times as ISO
 * strings, an agent sends epoch ms, and only what an agent sends is bounded.
 */
export const TRANSITION_SCHEMAS = {
  from: nullableEnum(RECORDED_POWER_STATES),
  to: STATE_SCHEMAS.powerState,
  vmStateFrom: nullableEnum(VM_STATES),
  vmStateTo: STATE_SCHEMAS.vmState,
  cause: { type: 'string', enum: TRANSITION_CAUSES },
} as const;

/** A transition's required fields, the times included (an agent's carries no recordedAt). */
export const TRANSITION_FIELDS = [
  'from',
  'to',
  'vmStateFrom',
  'vmStateTo',
  'cause',
  'detail',
  'outOfBand',
  'observedAt',
] as const;

const instance = {
  type: 'object',
  required: [
    'uuid',
    'name',
    'host',
    'vmState',
    'taskState',
    'taskAction',
    'taskStartedAt',
    'taskError',
    'powerState',
    'powerStateStale',
    'powerReason',
    'policy',
    'createdAt',
    'updatedAt',
    'version',
  ],
  additionalProperties: false,
  properties: {
    uuid: { type: 'string' },
    name: { type: 'string' },
    host: { type: 'string' },
    vmState: STATE_SCHEMAS.vmState,
    taskState: STATE_SCHEMAS.taskState,
    taskAction: STATE_SCHEMAS.taskAction,
    taskStartedAt: nullable(isoTime),
    taskError: nullable({ type: 'string' }),
    powerState: STATE_SCHEMAS.powerState,
    powerStateStale: {
      type: 'boolean',
      description:
        "the host's agent is unreachable or has lost its hypervisor: powerState is the last known, not believed",
    },
    powerReason: { type: 'string' },
    policy: STATE_SCHEMAS.policy,
    createdAt: isoTime,
    updatedAt: isoTime,
    version: { type: 'integer' },
  },
} as const;

export const errorSchema = {
  type: 'object',
  required: ['error', 'message'],
  properties: {
    error: { type: 'string', description: 'a stable machine-readable code' },
    message: { type: 'string' },
  },
} as const;

const error = errorSchema;

const errors = {
  400: error,
  401: error,
  404: error,
} as const;

const pageLimit = {
  type: 'integer',
  minimum: 1,
  maximum: MAX_PAGE,
  default: DEFAULT_PAGE,
} as const;

export const listInstancesSchema = {
  summary: 'List instances, filtered and paginated by UUID; deleted ones only when asked for',
  tags: ['instances'],
  querystring: {
    type: 'object',
    additionalProperties: false,
    properties: {
      host: { type: 'string', minLength: 1 },
      vmState: { type: 'string', enum: VM_STATES },
      powerState: { type: 'string', enum: RECORDED_POWER_STATES },
      includeDeleted: {
        type: 'boolean',
        default: false,
        description: 'also list deleted instances, which are left out unless vmState asks for them',
      },
      limit: pageLimit,
      after: { ...uuid, description: 'the `next` cursor of the previous page' },
    },
  },
  response: {
    200: {
      type: 'object',
      required: ['instances', 'next'],
      properties: {
        instances: { type: 'array', items: instance },
        next: nullable({ type: 'string' }),
      },
    },
    ...errors,
  },
} as const;

const uuidParams = {
  type: 'object',
  required: ['uuid'],
  properties: { uuid },
} as const;

export const getInstanceSchema = {
  summary: 'One instance',
  tags: ['instances'],
  params: uuidParams,
  response: { 200: instance, ...errors },
} as const;

export const historySchema = {
  summary: "An instance's power-state transitions, newest first",
  tags: ['instances'],
  params: uuidParams,
  querystring: {
    type: 'object',
    additionalProperties: false,
    properties: { limit: pageLimit },
  },
  response: {
    200: {
      type: 'object',
      required: ['transitions'],
      properties: {
        transitions: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: [...TRANSITION_FIELDS, 'recordedAt'],
            properties: {
              ...TRANSITION_SCHEMAS,
              detail: { type: 'string' },
              outOfBand: { type: 'boolean' },
              observedAt: isoTime,
              recordedAt: isoTime,
            },
          },
        },
      },
    },
    ...errors,
  },
} as const;

export const actionSchema = {
  summary: 'Start an action; 202 once its task is recorded, not when it is done',
  tags: ['instances'],
  params: uuidParams,
  body: {
    type: 'object',
    required: ['action'],
    additionalProperties: false,
    properties: { action: { type: 'string', enum: ACTIONS } },
  },
  response: {
    202: {
      type: 'object',
      required: ['task', 'instance'],
      properties: {
        task: {
          type: 'object',
          required: ['uuid', 'action', 'taskState', 'startedAt'],
          additionalProperties: false,
          properties: {
            uuid: { type: 'string' },
            action: { type: 'string', enum: ACTIONS },
            taskState: STATE_SCHEMAS.taskState,
            startedAt: isoTime,
          },
        },
        instance,
      },
    },
    ...errors,
    409: error,
    413: error,
    415: error,
    503: error,
  },
} as const;

export const hostsSchema = {
  summary: 'Hypervisor hosts and their connection state',
  tags: ['hosts'],
  response: {
    200: {
      type: 'object',
      required: ['hosts'],
      properties: {
        hosts: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: [
              'name',
              'driver',
              'connected',
              'lastSeenAt',
              'reachable',
              'lastReconcileAt',
              'connectionError',
              'backlog',
            ],
            properties: {
              name: { type: 'string' },
              driver: { type: 'string' },
              connected: { type: 'boolean', description: 'connected to its hypervisor' },
              lastSeenAt: { ...isoTime, description: "the agent's last report" },
              reachable: {
                type: 'boolean',
                description: 'the agent has reported within the host timeout',
              },
              lastReconcileAt: nullable(isoTime),
              connectionError: nullable({ type: 'string' }),
              backlog: {
                type: 'integer',
                description: "observations the host's agent holds that are not acknowledged yet",
              },
            },
          },
        },
      },
    },
    401: error,
  },
} as const;

export const healthSchema = {
  summary: 'Liveness: the process answers',
  tags: ['health'],
  response: {
    200: {
      type: 'object',
      required: ['status'],
      properties: { status: { type: 'string', enum: ['ok'] } },
    },
  },
} as const;

const readiness = {
  type: 'object',
  required: ['ready', 'reasons'],
  properties: {
    ready: { type: 'boolean' },
    reasons: { type: 'array', items: { type: 'string' } },
  },
} as const;

export const readySchema = {
  summary: 'Readiness: hypervisor connected, store writable, first reconcile done',
  tags: ['health'],
  response: { 200: readiness, 401: error, 503: readiness },
} as const;

export const watchSchema = {
  summary: 'Server-Sent Events, one per instance change, resumable by revision',
  description:
    'Each change is `id: <revision>`, `event: instance`, `data: {"revision","type","instance"}`. ' +
    'Without `since` (or a Last-Event-ID header, which wins over `since` because EventSource ' +
    'reconnects to the same URL) only changes from now on are sent. A revision the change log ' +
    'no longer holds gets 410 and the client must re-list. A stream that falls too far behind ' +
    'ends with `event: error` naming the last revision it delivered, to resume from.',
  tags: ['watch'],
  querystring: {
    type: 'object',
    additionalProperties: false,
    properties: {
      since: {
        type: 'integer',
        minimum: 0,
        maximum: Number.MAX_SAFE_INTEGER,
        description: 'send changes with a revision greater than this',
      },
      host: {
        type: 'string',
        minLength: 1,
        description:
          "only changes of instances recorded on this host (a host's agent); a record that moves to another host is not followed",
      },
    },
  },
  headers: {
    type: 'object',
    properties: {
      'last-event-id': { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
    },
  },
  response: {
    200: {
      description: 'text/event-stream',
      content: { 'text/event-stream': { schema: { type: 'string' } } },
    },
    ...errors,
    503: error,
    410: {
      type: 'object',
      required: ['error', 'message'],
      properties: {
        error: { type: 'string' },
        message: { type: 'string' },
        oldestRevision: { type: 'integer' },
      },
    },
  },
} as const;

export const metricsSchema = {
  summary: 'Prometheus metrics, text exposition format',
  tags: ['health'],
  response: {
    200: {
      description: 'text/plain; version=0.0.4',
      content: { 'text/plain': { schema: { type: 'string' } } },
    },
    401: error,
  },
} as const;
