// Whether a record's intent (vmState) and what the hypervisor says (powerState) agree: what the
// engine warns about and the dashboard shows as drift.
import type { RecordedPowerState, VmState } from './states.ts';

/** A guest that still exists and runs, or is on its way down. */
export const ALIVE_POWER_STATES: ReadonlySet<RecordedPowerState> = new Set([
  'running',
  'paused',
  'suspended',
  'shutdown',
]);

/** The power states in which each live vmState is in step; other vmStates only record power. */
const IN_STEP: Partial<Record<VmState, readonly RecordedPowerState[]>> = {
  active: ['running'],
  stopped: ['shutoff', 'crashed'],
  paused: ['paused'],
  suspended: ['suspended'],
};

export type IntentWarning = 'deleted-but-alive' | 'intent-differs';

/**
 * `deleted-but-alive`: the record says deleted and the guest runs; `intent-differs`: a live
 * vmState the hypervisor does not show (a guest shutting down is on its way, not drift).
 */
export function intentWarning(vmState: VmState, power: RecordedPowerState): IntentWarning | null {
  if (vmState === 'deleted' || vmState === 'soft-deleted') {
    return ALIVE_POWER_STATES.has(power) ? 'deleted-but-alive' : null;
  }
  const inStep = IN_STEP[vmState];
  if (inStep === undefined || inStep.includes(power) || power === 'shutdown') return null;
  return 'intent-differs';
}
