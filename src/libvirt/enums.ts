// libvirt's domain event and state enums (libvirt-domain.h) as data. Newer daemons add values:
// a number we do not know is passed through as that number, never an error.

export const DomainEvent = {
  DEFINED: 0,
  UNDEFINED: 1,
  STARTED: 2,
  SUSPENDED: 3,
  RESUMED: 4,
  STOPPED: 5,
  SHUTDOWN: 6,
  PMSUSPENDED: 7,
  CRASHED: 8,
} as const;

export const DomainState = {
  NOSTATE: 0,
  RUNNING: 1,
  BLOCKED: 2,
  PAUSED: 3,
  SHUTDOWN: 4,
  SHUTOFF: 5,
  CRASHED: 6,
  PMSUSPENDED: 7,
} as const;

/** Event ids for callback registration. */
export const DomainEventId = { LIFECYCLE: 0, REBOOT: 1 } as const;

const EVENT_NAMES = [
  'defined',
  'undefined',
  'started',
  'suspended',
  'resumed',
  'stopped',
  'shutdown',
  'pmsuspended',
  'crashed',
] as const;

/** Detail names per event type, indexed by the detail number. */
const EVENT_DETAIL_NAMES: readonly (readonly string[])[] = [
  ['added', 'updated', 'renamed', 'from-snapshot'],
  ['removed', 'renamed'],
  ['booted', 'migrated', 'restored', 'from-snapshot', 'wakeup', 'recreated'],
  [
    'paused',
    'migrated',
    'ioerror',
    'watchdog',
    'restored',
    'from-snapshot',
    'api-error',
    'postcopy',
    'postcopy-failed',
  ],
  ['unpaused', 'migrated', 'from-snapshot', 'postcopy', 'postcopy-failed'],
  ['shutdown', 'destroyed', 'crashed', 'migrated', 'saved', 'failed', 'from-snapshot', 'recreated'],
  ['finished', 'guest', 'host'],
  ['memory', 'disk'],
  ['panicked', 'crashloaded'],
];

const STATE_NAMES = [
  'nostate',
  'running',
  'blocked',
  'paused',
  'shutdown',
  'shutoff',
  'crashed',
  'pmsuspended',
] as const;

/** Reason names per state, indexed by the reason number. */
const STATE_REASON_NAMES: readonly (readonly string[])[] = [
  ['unknown'],
  [
    'unknown',
    'booted',
    'migrated',
    'restored',
    'from-snapshot',
    'unpaused',
    'migration-canceled',
    'save-canceled',
    'wakeup',
    'crashed',
    'postcopy',
    'postcopy-failed',
  ],
  ['unknown'],
  [
    'unknown',
    'user',
    'migration',
    'save',
    'dump',
    'ioerror',
    'watchdog',
    'from-snapshot',
    'shutting-down',
    'snapshot',
    'crashed',
    'starting-up',
    'postcopy',
    'postcopy-failed',
    'api-error',
  ],
  ['unknown', 'user'],
  [
    'unknown',
    'shutdown',
    'destroyed',
    'crashed',
    'migrated',
    'saved',
    'failed',
    'from-snapshot',
    'daemon',
  ],
  ['unknown', 'panicked'],
  ['unknown'],
];

export type EventName = (typeof EVENT_NAMES)[number];
export type StateName = (typeof STATE_NAMES)[number];

export function eventName(event: number): EventName | number {
  return EVENT_NAMES[event] ?? event;
}

export function eventDetailName(event: number, detail: number): string | number {
  return EVENT_DETAIL_NAMES[event]?.[detail] ?? detail;
}

export function stateName(state: number): StateName | number {
  return STATE_NAMES[state] ?? state;
}

export function stateReasonName(state: number, reason: number): string | number {
  return STATE_REASON_NAMES[state]?.[reason] ?? reason;
}
