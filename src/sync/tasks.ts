// Tasks: an action marked on the record with a conditional write, the hypervisor call, the wait
// until the hypervisor shows the result, and the write that clears the task. A task may also be
// marked by someone else (a control-plane replica the user reached, or this host's engine before
// a restart): it is picked up and performed the same way, once. Also the expiry of tasks nobody
// is running any more and that can no longer be run (out of time, or of unknown action).
import { performance } from 'node:perf_hooks';
import {
  actionShows,
  checkAction,
  taskEnd,
  taskMark,
  taskTimeoutError,
  vmStateAfterTask,
} from '../model/index.ts';
import type { ActionName, RecordedPowerState } from '../model/index.ts';
import type { InstanceRecord, NewTransition, EngineStore } from '../store/index.ts';
import { DriverError } from '../virt/index.ts';
import type { HypervisorDriver, LifecycleEvent } from '../virt/index.ts';
import { errorText, isTimeout, withTimeout } from './calls.ts';
import type { Confirmed } from './confirm.ts';
import { effectivePower } from './decide.ts';
import type { Decision, Observation } from './decide.ts';
import { MAX_WRITE_ATTEMPTS, SyncError } from './types.ts';
import type { Counters, SyncLogger, Task, TaskOutcome } from './types.ts';
import type { WriteRecord } from './write.ts';

export interface TaskDeps {
  readonly driver: HypervisorDriver;
  readonly store: EngineStore;
  readonly taskTimeoutMs: number;
  readonly counters: Counters;
  readonly log: SyncLogger;
  readonly now: () => number;
  readonly write: WriteRecord;
  confirm(uuid: string, probe: boolean): Promise<Confirmed | null>;
  host(): string;
  /** Why no action can be taken now (not running, disconnected), or null. */
  unavailable(): SyncError | null;
  /** The task no longer shields the instance: let the policy look at what is there now. */
  lookAgain(uuid: string): void;
  track(work: Promise<unknown>): void;
}

interface RunningTask {
  readonly startedAt: number;
  readonly done: Promise<TaskOutcome>;
}

export class TaskRunner {
  private readonly running = new Map<string, RunningTask>();
  /** Wakes a task waiting for its result to show when an event for its instance arrives. */
  private readonly wakers = new Map<string, () => void>();
  /** Uuids a reboot action asked to reboot whose reboot event has not arrived yet. */
  private readonly rebootsAsked = new Set<string>();
  private readonly leftoverTimers = new Set<NodeJS.Timeout>();
  /** Uuids whose recorded task is being looked at before it runs: a second notice waits out. */
  private readonly claiming = new Set<string>();
  /**
   * The start time of the last task this engine ran per instance: a late or repeated notice of a
   * task already performed (and perhaps already finished) must not perform it again.
   */
  private readonly ran = new Map<string, number>();

  constructor(private readonly deps: TaskDeps) {}

  /** True while this engine runs (or is about to run) a task for the instance. */
  has(uuid: string): boolean {
    return this.running.has(uuid) || this.claiming.has(uuid);
  }

  /** An event arrived for the instance: a task waiting for its result looks now. */
  wake(uuid: string): void {
    this.wakers.get(uuid)?.();
  }

  /** True (once) when a reboot action asked for the reboot this event reports. */
  takeRebootAsked(uuid: string): boolean {
    return this.rebootsAsked.delete(uuid);
  }

  /** Stops the timers of leftover tasks; tasks in flight run on (tracked). */
  stop(): void {
    for (const timer of this.leftoverTimers) clearTimeout(timer);
    this.leftoverTimers.clear();
  }

  /**
   * Starts an action: checks it makes sense for the record, marks the task with a conditional
   * write, and returns once marked. The hypervisor call, the confirmation and the clearing of
   * the task follow in the background; `done` tells how it ended.
   */
  async act(uuid: string, action: ActionName): Promise<Task> {
    try {
      const unavailable = this.deps.unavailable();
      if (unavailable) throw unavailable;
      for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
        const record = await this.deps.store.getInstance(uuid);
        this.check(uuid, record, action);
        const task = await this.begin(record!, action, null, undefined, null);
        if (task !== 'conflict') return task;
      }
      throw new SyncError('conflict', `instance ${uuid} kept changing; try again`);
    } catch (error) {
      this.deps.counters.actions.rejected++;
      throw error;
    }
  }

  private check(uuid: string, record: InstanceRecord | null, action: ActionName): void {
    if (!record) throw new SyncError('not-found', `no instance ${uuid}`);
    const host = this.deps.host();
    if (record.host !== host) {
      throw new SyncError('wrong-host', `instance ${uuid} is on ${record.host}, not ${host}`);
    }
    const refusal = checkAction(record, action);
    if (refusal) throw new SyncError(refusal.code, refusal.message);
  }

  /** Marks the task (with a policy's write, for enforcement) and runs it in the background. */
  async begin(
    record: InstanceRecord,
    action: ActionName,
    decision: Decision | null,
    transition: NewTransition | undefined,
    event: LifecycleEvent | null,
  ): Promise<Task | 'conflict'> {
    const startedAt = this.deps.now();
    const mark = taskMark(action, startedAt);
    // Claimed before the write: a notice of this very write must not start it a second time.
    this.ran.set(record.uuid, startedAt);
    const result = await this.deps.write(
      {
        kind: 'update',
        uuid: record.uuid,
        expectedVersion: record.version,
        patch: { ...decision?.write, ...mark },
        transition,
      },
      event,
    );
    if (!result.ok) {
      if (result.reason === 'conflict') return 'conflict';
      throw new SyncError('not-found', `no instance ${record.uuid}`);
    }
    return this.launch(record.uuid, action, startedAt, this.deps.taskTimeoutMs);
  }

  /** Performs a recorded task in the background, with `timeoutMs` left of its time. */
  private launch(uuid: string, action: ActionName, startedAt: number, timeoutMs: number): Task {
    this.ran.set(uuid, startedAt);
    if (action === 'reboot') this.rebootsAsked.add(uuid);
    const done = this.run(uuid, action, startedAt, timeoutMs).catch(
      (error: unknown): TaskOutcome => {
        this.deps.log.error({ err: error, uuid, action }, 'task could not be finished');
        return { ok: false, error: errorText(error), instance: null };
      },
    );
    const running: RunningTask = { startedAt, done };
    this.running.set(uuid, running);
    this.deps.track(
      done.finally(() => {
        if (this.running.get(uuid) === running) this.running.delete(uuid);
      }),
    );
    return { uuid, action, taskState: taskMark(action, startedAt).taskState, startedAt, done };
  }

  /**
   * Performs a task someone else recorded on one of this host's instances, unless this engine
   * runs it or ran it already, it has been cleared or replaced meanwhile, or nothing can be done
   * now (disconnected: the reconcile after reconnecting picks it up). A task past its time is
   * expired instead: whoever asked has been told it timed out, or is about to be. Returns the
   * task when it started it.
   */
  async pickUp(seen: InstanceRecord): Promise<Task | null> {
    const { uuid } = seen;
    if (seen.taskState === null || seen.taskAction === null || seen.taskStartedAt === null) {
      return null;
    }
    if (this.has(uuid) || this.ran.get(uuid) === seen.taskStartedAt) return null;
    if (this.deps.unavailable() !== null) return null;
    this.claiming.add(uuid);
    try {
      // The notice may be old (a watch resumed from an earlier revision): act on the record as
      // it stands.
      const current = await this.deps.store.getInstance(uuid);
      if (
        current === null ||
        current.host !== this.deps.host() ||
        current.taskState === null ||
        current.taskAction === null ||
        current.taskStartedAt !== seen.taskStartedAt ||
        this.ran.get(uuid) === current.taskStartedAt
      ) {
        return null;
      }
      const left = current.taskStartedAt + this.deps.taskTimeoutMs - this.deps.now();
      if (left <= 0) {
        await this.expireOne(current);
        return null;
      }
      this.deps.log.debug(
        { uuid, action: current.taskAction, startedAt: current.taskStartedAt },
        'picked up a recorded task',
      );
      return this.launch(uuid, current.taskAction, current.taskStartedAt, left);
    } finally {
      this.claiming.delete(uuid);
    }
  }

  private callDriver(uuid: string, action: ActionName): Promise<void> {
    const { driver } = this.deps;
    switch (action) {
      case 'start':
        return driver.start(uuid);
      case 'stop':
        // The driver forces the guest off after this, well before the task would time out.
        return driver.stop(uuid, { timeoutMs: Math.floor(this.deps.taskTimeoutMs / 2) });
      case 'force-stop':
        return driver.forceStop(uuid);
      case 'reboot':
        return driver.reboot(uuid, { hard: false });
      case 'hard-reboot':
        return driver.reboot(uuid, { hard: true });
      case 'pause':
        return driver.pause(uuid);
      case 'resume':
        return driver.resume(uuid);
    }
  }

  private async run(
    uuid: string,
    action: ActionName,
    startedAt: number,
    timeoutMs: number,
  ): Promise<TaskOutcome> {
    const { taskTimeoutMs, counters } = this.deps;
    const deadline = performance.now() + timeoutMs;
    const remaining = (): number => deadline - performance.now();
    const look = async (): Promise<Observation | null> =>
      (await this.deps.confirm(uuid, false))?.observation ?? null;
    let error: string | null = null;
    let timedOut = false;
    let refused = false;
    let observation: Observation | null;
    const reached = (seen: Observation | null): boolean =>
      seen?.kind === 'present' && actionShows(action, effectivePower(seen, null).powerState);
    try {
      await withTimeout(
        Promise.resolve().then(() => this.callDriver(uuid, action)),
        remaining(),
        action,
      );
    } catch (failure) {
      error = errorText(failure);
      timedOut = isTimeout(failure);
      refused = failure instanceof DriverError && failure.code === 'invalid-state';
    }
    if (error === null) {
      // A call may return before its result shows (libvirt's shutdown only asks the guest): the
      // task is done when the hypervisor confirms it, or times out.
      for (let delay = 25; ; delay = Math.min(delay * 2, 500)) {
        observation = await look();
        if (observation?.kind === 'gone') {
          error = 'the instance no longer exists';
          break;
        }
        if (reached(observation)) break;
        if (remaining() <= 0) {
          error = `${action} did not take effect within ${taskTimeoutMs} ms`;
          timedOut = true;
          break;
        }
        await this.waitForInstance(uuid, Math.min(delay, remaining()));
      }
    } else {
      observation = await look();
      // Refused because it is already so (a stop racing the guest's own shutdown): done.
      if (refused && reached(observation)) error = null;
    }
    if (error === null) counters.actions.ok++;
    else if (timedOut) counters.actions.timeout++;
    else counters.actions.failed++;
    return this.finish(uuid, action, startedAt, error, observation);
  }

  /** Resolves after `ms`, or sooner when an event for the instance arrives. */
  private waitForInstance(uuid: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        if (this.wakers.get(uuid) === done) this.wakers.delete(uuid);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakers.set(uuid, done);
    });
  }

  /** Clears the task: vmState becomes the intent on success; the error is kept on failure. */
  private async finish(
    uuid: string,
    action: ActionName,
    startedAt: number,
    error: string | null,
    firstObservation: Observation | null,
  ): Promise<TaskOutcome> {
    let observation = firstObservation;
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      if (attempt > 0) observation = (await this.deps.confirm(uuid, false))?.observation ?? null;
      const record = await this.deps.store.getInstance(uuid);
      if (!record || record.taskState === null || record.taskStartedAt !== startedAt) {
        // Cleared meanwhile (by the leftover sweep of another engine, say): not ours to touch.
        return { ok: false, error: error ?? 'task was cleared elsewhere', instance: record };
      }
      let powerState: RecordedPowerState = record.powerState;
      let powerReason = record.powerReason;
      const gone = observation?.kind === 'gone';
      const vmState = vmStateAfterTask(action, error === null, record.vmState, gone);
      if (observation?.kind === 'present') {
        ({ powerState, reason: powerReason } = effectivePower(observation, null));
      } else if (gone) {
        powerState = 'nostate';
        powerReason = 'undefined';
      }
      // A reboot ends where it began: without its own entry it would leave no trace.
      const rebooted = error === null && (action === 'reboot' || action === 'hard-reboot');
      const changed = rebooted || powerState !== record.powerState || vmState !== record.vmState;
      const result = await this.deps.write(
        {
          kind: 'update',
          uuid,
          expectedVersion: record.version,
          patch: {
            ...taskEnd(error),
            vmState,
            powerState,
            powerReason,
          },
          transition: changed
            ? {
                from: record.powerState,
                to: powerState,
                vmStateFrom: record.vmState,
                vmStateTo: vmState,
                cause: 'action',
                detail: error === null ? action : `${action} failed`,
                outOfBand: false,
                observedAt: this.deps.now(),
              }
            : undefined,
        },
        null,
      );
      if (!result.ok) {
        if (result.reason === 'conflict') continue;
        return { ok: false, error: error ?? 'instance record vanished', instance: null };
      }
      if (error !== null) {
        this.rebootsAsked.delete(uuid);
        this.deps.log.warn({ uuid, action, error }, 'task failed');
        this.deps.lookAgain(uuid);
        return { ok: false, error, instance: result.instance };
      }
      return { ok: true, instance: result.instance };
    }
    this.deps.lookAgain(uuid);
    return { ok: false, error: error ?? 'could not clear the task', instance: null };
  }

  /**
   * Clears tasks this engine is not running whose time is up, and picks up the others it can run
   * (recorded while it was away or disconnected); returns how many it cleared.
   */
  async expire(records: Iterable<InstanceRecord>): Promise<number> {
    let expired = 0;
    for (const record of records) {
      if (record.taskState === null || this.has(record.uuid)) continue;
      if (this.deps.now() - (record.taskStartedAt ?? 0) < this.deps.taskTimeoutMs) {
        if (record.taskAction !== null) await this.pickUp(record);
        continue;
      }
      if (await this.expireOne(record)) expired++;
    }
    return expired;
  }

  private async expireOne(record: InstanceRecord): Promise<boolean> {
    if (record.taskState === null) return false;
    const result = await this.deps.write(
      {
        kind: 'update',
        uuid: record.uuid,
        expectedVersion: record.version,
        patch: taskEnd(taskTimeoutError(record.taskState, this.deps.taskTimeoutMs)),
      },
      null,
    );
    if (!result.ok) return false;
    this.deps.counters.tasksExpired++;
    this.deps.log.warn({ uuid: record.uuid, taskState: record.taskState }, 'task expired');
    this.deps.lookAgain(record.uuid);
    return true;
  }

  /**
   * Tasks found in the record at start: a previous process's, or recorded by the control plane
   * while this engine was away. The expired ones are cleared now, the ones this engine can run
   * are run, and the others (of no known action, or nothing can be done now) are cleared when
   * their time is up, unless something clears or runs them meanwhile.
   */
  async clearLeftovers(records: readonly InstanceRecord[]): Promise<void> {
    await this.expire(records);
    for (const record of records) {
      if (record.taskState === null || this.has(record.uuid)) continue;
      const dueIn = (record.taskStartedAt ?? 0) + this.deps.taskTimeoutMs - this.deps.now();
      if (dueIn < 0) continue;
      const timer = setTimeout(() => {
        this.leftoverTimers.delete(timer);
        this.deps.track(this.expireIfStill(record));
      }, dueIn + 1);
      this.leftoverTimers.add(timer);
    }
  }

  private async expireIfStill(leftover: InstanceRecord): Promise<void> {
    const current = await this.deps.store.getInstance(leftover.uuid);
    if (
      current &&
      current.taskState !== null &&
      current.taskStartedAt === leftover.taskStartedAt &&
      !this.has(leftover.uuid)
    ) {
      await this.expireOne(current);
    }
  }
}
