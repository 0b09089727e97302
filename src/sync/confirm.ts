// Asks the hypervisor for one instance's state: the "confirm" of confirm-before-decide. Events
// and listings only say where to look; what this returns is what decisions are made on.
import { DriverError } from '../virt/index.ts';
import type { HypervisorDriver, ObservedInstance } from '../virt/index.ts';
import { isTimeout, sleep, withTimeout } from './calls.ts';
import type { Observation } from './decide.ts';
import type { Counters, SyncLogger } from './types.ts';

const CONFIRM_RETRIES = 2;

export interface Confirmed {
  readonly observed: ObservedInstance | null;
  readonly observation: Observation;
}

export interface ConfirmDeps {
  readonly driver: HypervisorDriver;
  readonly callTimeoutMs: number;
  readonly counters: Counters;
  readonly log: SyncLogger;
  connected(): boolean;
  /** Told of every instance the hypervisor answered about (the reconciler's freshness). */
  touched(uuid: string): void;
}

export function present(observed: ObservedInstance): Observation {
  return { kind: 'present', powerState: observed.powerState, reason: observed.reason };
}

/**
 * One instance's state from the hypervisor. Null when nothing could be learned: the pass then
 * leaves the record alone. For a probe (the listing lacked it), a failed lookup while connected
 * is `missing`: known to be unlisted, not known to be gone.
 */
export async function confirm(
  deps: ConfirmDeps,
  uuid: string,
  probe: boolean,
): Promise<Confirmed | null> {
  for (let attempt = 0; ; attempt++) {
    try {
      const found = await withTimeout(
        deps.driver.getPowerState(uuid),
        deps.callTimeoutMs,
        'getPowerState',
      );
      deps.touched(uuid);
      return found
        ? { observed: found, observation: present(found) }
        : { observed: null, observation: { kind: 'gone' } };
    } catch (error) {
      if (error instanceof DriverError && error.code === 'not-found') {
        deps.touched(uuid);
        return { observed: null, observation: { kind: 'gone' } };
      }
      // A timeout already cost a full call timeout: retrying a hung lookup only adds more.
      // Anything else may be a blip, unless the connection is known to be down.
      if (!isTimeout(error) && attempt < CONFIRM_RETRIES && deps.connected()) {
        await sleep(50 * (attempt + 1));
        continue;
      }
      deps.counters.confirmFailures++;
      deps.log.debug({ err: error, uuid }, 'could not confirm power state');
      if (probe && deps.connected()) return { observed: null, observation: { kind: 'missing' } };
      return null;
    }
  }
}
