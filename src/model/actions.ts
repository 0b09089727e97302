// The actions a user (or enforcement) can take on an instance, as pure data: from which vmState
// each is allowed, the taskState it records while in flight, the vmState it leaves on success
// (its intent), and the power states in which its result shows. docs/decisions.md has the same
// table; test/model/actions.test.ts checks them row by row.
import type { PowerState, TaskState, VmState } from './states.ts';

export type ActionName =
  'start' | 'stop' | 'force-stop' | 'reboot' | 'hard-reboot' | 'pause' | 'resume';

export interface ActionRule {
  readonly allowedFrom: readonly VmState[];
  readonly taskState: TaskState;
  /** The vmState a successful task leaves. */
  readonly intent: VmState;
  /** The power states in which the action's result shows. */
  readonly expectedPower: readonly PowerState[];
}

const IN_USE: readonly VmState[] = ['active', 'paused', 'suspended', 'error'];

export const ACTION_RULES: Readonly<Record<ActionName, ActionRule>> = {
  start: {
    allowedFrom: ['stopped'],
    taskState: 'powering-on',
    intent: 'active',
    expectedPower: ['running'],
  },
  stop: {
    allowedFrom: IN_USE,
    taskState: 'powering-off',
    intent: 'stopped',
    expectedPower: ['shutoff', 'crashed'],
  },
  'force-stop': {
    allowedFrom: IN_USE,
    taskState: 'powering-off',
    intent: 'stopped',
    expectedPower: ['shutoff', 'crashed'],
  },
  reboot: {
    allowedFrom: ['active'],
    taskState: 'rebooting',
    intent: 'active',
    expectedPower: ['running'],
  },
  'hard-reboot': {
    allowedFrom: IN_USE,
    taskState: 'rebooting',
    intent: 'active',
    expectedPower: ['running'],
  },
  pause: {
    allowedFrom: ['active'],
    taskState: 'pausing',
    intent: 'paused',
    expectedPower: ['paused'],
  },
  resume: {
    allowedFrom: ['paused'],
    taskState: 'unpausing',
    intent: 'active',
    expectedPower: ['running'],
  },
};

export const ACTIONS = Object.keys(ACTION_RULES) as readonly ActionName[];

/** Why an action cannot start on a record as it stands. */
export interface ActionRefusal {
  readonly code: 'task-in-flight' | 'invalid-action';
  readonly message: string;
}

/** Null when the action may start on an instance in this state. */
export function checkAction(
  record: {
    readonly uuid: string;
    readonly vmState: VmState;
    readonly taskState: TaskState | null;
  },
  action: ActionName,
): ActionRefusal | null {
  if (record.taskState !== null) {
    return { code: 'task-in-flight', message: `instance ${record.uuid} is ${record.taskState}` };
  }
  if (!ACTION_RULES[action].allowedFrom.includes(record.vmState)) {
    return {
      code: 'invalid-action',
      message: `cannot ${action} an instance that is ${record.vmState}`,
    };
  }
  return null;
}

/** True when the observed power state shows the action's result. */
export function actionShows(action: ActionName, powerState: PowerState): boolean {
  return ACTION_RULES[action].expectedPower.includes(powerState);
}

/**
 * The vmState a finished task leaves: its intent on success, the state it began in on failure,
 * and `deleted` whatever the outcome when the hypervisor confirmed the instance gone.
 */
export function vmStateAfterTask(
  action: ActionName,
  succeeded: boolean,
  before: VmState,
  gone: boolean,
): VmState {
  if (gone) return 'deleted';
  return succeeded ? ACTION_RULES[action].intent : before;
}

/** How long a task may be in flight before whoever notices clears it with an error. */
export const DEFAULT_TASK_TIMEOUT_MS = 120_000;

/**
 * The fields that put a task in flight on a record. Whoever records it (the engine acting for its
 * own host, a control-plane replica for an agent) writes exactly these, conditional on the version
 * the action was checked against. The action itself is recorded because the task state alone
 * does not say it: `powering-off` is a stop or a force-stop, `rebooting` a reboot or a hard one.
 */
export interface TaskMark {
  readonly taskState: TaskState;
  readonly taskAction: ActionName;
  readonly taskStartedAt: number;
  readonly taskError: null;
}

export function taskMark(action: ActionName, startedAt: number): TaskMark {
  return {
    taskState: ACTION_RULES[action].taskState,
    taskAction: action,
    taskStartedAt: startedAt,
    taskError: null,
  };
}

/** The fields that end a task: no task in flight, and its error (null on success) kept. */
export interface TaskEnd {
  readonly taskState: null;
  readonly taskAction: null;
  readonly taskStartedAt: null;
  readonly taskError: string | null;
}

export function taskEnd(error: string | null): TaskEnd {
  return { taskState: null, taskAction: null, taskStartedAt: null, taskError: error };
}

/** The error of a task cleared because its time ran out. */
export function taskTimeoutError(taskState: TaskState, timeoutMs: number): string {
  return `${taskState} did not complete within ${timeoutMs} ms`;
}
