// Whether a host's agent is believed to be there, and what that means for the power states its
// instances show and for the tasks recorded on them. Pure functions over the host's last report
// and a clock, so the API, the control plane's task sweeper and the tests agree row by row.
import { taskTimeoutError } from './actions.ts';
import type { TaskState } from './states.ts';

/** A host turns unreachable when its agent has not reported for this long (agents report every 10 s). */
export const DEFAULT_HOST_TIMEOUT_MS = 30_000;

/** What the control plane knows of a host from its agent's last report. */
export interface HostReport {
  readonly name: string;
  /** When the control plane last heard from the host's agent, by the control plane's clock. */
  readonly lastSeenAt: number;
  /** The agent's own hypervisor connection, as last reported. */
  readonly connected: boolean;
}

export type HostReachability =
  | { readonly reachable: true }
  | {
      readonly reachable: false;
      /** Why, one sentence: never reported, or silent since when. */
      readonly reason: string;
    };

/** Reachable while the last report is at most `timeoutMs` old; a host never heard of is not. */
export function hostReachability(
  name: string,
  host: HostReport | null,
  now: number,
  timeoutMs: number,
): HostReachability {
  if (host === null) return { reachable: false, reason: `no agent has reported for host ${name}` };
  if (now - host.lastSeenAt <= timeoutMs) return { reachable: true };
  return {
    reachable: false,
    reason: `host ${name}'s agent has not reported since ${new Date(host.lastSeenAt).toISOString()}`,
  };
}

/**
 * Whether an instance's recorded power state can be believed: only while its host's agent
 * reports and is connected to its hypervisor. Otherwise it is the last one known, shown as such
 * and never turned into `shutoff`: absent is not stopped.
 */
export function powerStateBelieved(reachable: boolean, host: HostReport | null): boolean {
  return reachable && host !== null && host.connected;
}

export interface TaskInFlight {
  readonly uuid: string;
  readonly host: string;
  readonly taskState: TaskState | null;
  readonly taskStartedAt: number | null;
}

export interface TaskLimits {
  readonly hostTimeoutMs: number;
  readonly taskTimeoutMs: number;
}

/**
 * Why a task in flight must be ended now by the control plane, or null when it may run on: its
 * host's agent is gone (never reported, or silent past the host timeout), or the task outlived the
 * task timeout by a further host timeout (the agent times its own tasks out at the task timeout;
 * the margin lets that, and its better error, come first).
 */
export function overdueTask(
  task: TaskInFlight,
  host: HostReport | null,
  now: number,
  limits: TaskLimits,
): string | null {
  if (task.taskState === null) return null;
  const reachability = hostReachability(task.host, host, now, limits.hostTimeoutMs);
  if (!reachability.reachable) return reachability.reason;
  const age = now - (task.taskStartedAt ?? 0);
  if (age > limits.taskTimeoutMs + limits.hostTimeoutMs) {
    return taskTimeoutError(task.taskState, limits.taskTimeoutMs);
  }
  return null;
}
