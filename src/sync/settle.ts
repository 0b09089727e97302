// When a stop-like sign is held for the settle window before it is believed, as a pure rule of
// the policy and the sign, so every row of docs/decisions.md ("Settle window") is a unit test.
// The window exists for the reboot race (Nova 1293480): a hard reboot is STOPPED then STARTED,
// and under enforce a `stopped` intent recorded between the two turns the STARTED into drift to
// power off. Where nothing would act on the record, holding only delays the truth.
import type { Policy } from '../model/index.ts';
import type { LifecycleEvent } from '../virt/index.ts';
import type { Decision, Observation } from './decide.ts';
import { LEFT_REASON } from './migration.ts';

/** What may be held: the event that made a pass look, or what a lookup or listing then found. */
export type SettleCue =
  | {
      readonly kind: 'event';
      readonly event: Pick<LifecycleEvent, 'transition' | 'detail' | 'powerState'>;
    }
  | {
      readonly kind: 'decision';
      readonly observation: Observation;
      readonly decision: Pick<Decision, 'write' | 'action'>;
    };

export type SettleReason =
  /** Nothing here says the instance went down or away. */
  | 'not-a-stop'
  /**
   * The instance left by migration: wait for the destination's claim, so that a departure seen
   * just before the arrival is not recorded at all.
   */
  | 'migration'
  /** The decision would only record the power state: nothing for a reboot to undo. */
  | 'record-only'
  /** observe: vmState follows the hypervisor, so a hard reboot shows as shutoff → running. */
  | 'observe'
  /** A deletion is final in the record (nothing brings a deleted record back): held everywhere. */
  | 'deletion'
  /** enforce: a stop believed mid-reboot would make the next start look like drift. */
  | 'reboot-race';

export interface SettleRule {
  readonly hold: boolean;
  readonly reason: SettleReason;
}

const rule = (hold: boolean, reason: SettleReason): SettleRule => ({ hold, reason });

function isStopLike(observation: Observation): boolean {
  return (
    observation.kind === 'gone' ||
    (observation.kind === 'present' &&
      (observation.powerState === 'shutoff' || observation.powerState === 'crashed'))
  );
}

function leavesByMigration(decision: Pick<Decision, 'write'>): boolean {
  return decision.write?.powerState === 'missing' && decision.write.powerReason === LEFT_REASON;
}

export function settleWindowFor(policy: Policy, cue: SettleCue): SettleRule {
  if (cue.kind === 'event') {
    const { event } = cue;
    const deletion = event.transition === 'undefined';
    const stop = deletion || event.powerState === 'shutoff' || event.powerState === 'crashed';
    if (!stop) return rule(false, 'not-a-stop');
    if (event.detail === 'migrated') return rule(true, 'migration');
    if (policy === 'enforce') return rule(true, 'reboot-race');
    return deletion ? rule(true, 'deletion') : rule(false, 'observe');
  }
  const { observation, decision } = cue;
  if (leavesByMigration(decision)) return rule(true, 'migration');
  if (!isStopLike(observation)) return rule(false, 'not-a-stop');
  if (decision.action === null && decision.write?.vmState === undefined) {
    return rule(false, 'record-only');
  }
  if (policy === 'enforce') return rule(true, 'reboot-race');
  return observation.kind === 'gone' ? rule(true, 'deletion') : rule(false, 'observe');
}
