// What the dashboard says about a record beyond its fields: whether it is in step with the
// hypervisor, and which warnings the engine's policy would raise for it (src/model's rules).
import { ACTION_RULES, ACTIONS, checkAction, intentWarning } from '../../src/model/index.ts';
import type { ActionName, IntentWarning } from '../../src/model/index.ts';
import type { ApiInstance } from '../../src/server/index.ts';

export type { IntentWarning };

/** The warning the record raises now, if any; a task in flight is not drift. */
export function warningOf(instance: ApiInstance): IntentWarning | null {
  if (instance.taskState !== null) return null;
  return intentWarning(instance.vmState, instance.powerState);
}

export interface ActionChoice {
  readonly action: ActionName;
  /** Null when allowed; otherwise why not, in the engine's words. */
  readonly refusal: string | null;
}

/** Every action with whether the engine would accept it on this record as it stands. */
export function actionChoices(instance: ApiInstance): ActionChoice[] {
  return ACTIONS.map((action) => ({
    action,
    refusal: checkAction(instance, action)?.message ?? null,
  }));
}

/** A finished task's outcome: the vmState its rule intends, or the error it left. */
export function taskOutcome(
  action: ActionName,
  instance: ApiInstance,
): { ok: boolean; text: string } {
  if (instance.taskError !== null) return { ok: false, text: instance.taskError };
  const intent = ACTION_RULES[action].intent;
  return instance.vmState === intent
    ? { ok: true, text: `done: ${instance.vmState}, ${instance.powerState}` }
    : { ok: false, text: `ended ${instance.vmState}, ${instance.powerState} (wanted ${intent})` };
}
