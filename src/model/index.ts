// hvsync's vocabulary: the states of an instance and the rules of its actions. Pure data and
// pure functions; imports nothing else of the project, so every layer may import it.
export {
  POLICIES,
  POWER_STATES,
  RECORDED_POWER_STATES,
  TASK_STATES,
  TRANSITION_CAUSES,
  VM_STATES,
} from './states.ts';
export type {
  Policy,
  PowerState,
  RecordedPowerState,
  TaskState,
  TransitionCause,
  VmState,
} from './states.ts';
export {
  ACTION_RULES,
  ACTIONS,
  actionShows,
  checkAction,
  DEFAULT_TASK_TIMEOUT_MS,
  taskEnd,
  taskMark,
  taskTimeoutError,
  vmStateAfterTask,
} from './actions.ts';
export type { ActionName, TaskEnd, TaskMark } from './actions.ts';
export {
  DEFAULT_HOST_TIMEOUT_MS,
  hostReachability,
  overdueTask,
  powerStateBelieved,
} from './hosts.ts';
export type { HostReachability, HostReport, TaskInFlight, TaskLimits } from './hosts.ts';
export { ALIVE_POWER_STATES, intentWarning } from './intent.ts';
export type { IntentWarning } from './intent.ts';
