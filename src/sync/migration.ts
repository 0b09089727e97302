// Cross-host live migration as a pure rule: what an engine does with an instance that is recorded
// on another host, or that a migration step touches on this one. Every row of the migration table
// in docs/decisions.md is a case of `migrationDecision()`; `decide()` asks it first.
//
// libvirt's own sequence (qemu_migration.c), which the rows follow:
//   destination  STARTED/migrated (paused, reason migration) ... RESUMED/migrated (running)
//   source       SUSPENDED/migrated (paused for the switch-over) ... STOPPED/migrated
//   failed       destination STOPPED/failed; the source, if it had paused, RESUMED/migrated
// Only the destination can say where the instance is now, so only the destination moves the
// record (a claim); the source never concludes anything from the instance leaving it.
import type { DecideInput, Decision, DecisionWrite } from './decide.ts';

const ARRIVAL_DETAILS: ReadonlySet<string> = new Set(['migrated', 'postcopy']);
/** Running reasons that say the domain got here by migration (libvirt keeps them until its next change). */
const ARRIVED_REASONS: ReadonlySet<string> = new Set(['migrated', 'postcopy']);
/** Paused reasons of a migration in progress: the source's switch-over or the destination's incoming. */
const MIGRATING_PAUSE_REASONS: ReadonlySet<string> = new Set(['migration', 'postcopy']);
const MIGRATION_WORDS: ReadonlySet<string> = new Set(['migrated', 'migration', 'postcopy']);

/** Paused by a migration in progress (libvirt's PAUSED reasons `migration`, `postcopy`). */
export function isMigratingPause(reason: string): boolean {
  return MIGRATING_PAUSE_REASONS.has(reason);
}

/** The reason an instance is recorded `missing` after it left its host by migration. */
export const LEFT_REASON = 'migrated';

function decision(
  reason: Decision['reason'],
  fields: Partial<Omit<Decision, 'reason'>> = {},
): Decision {
  return { write: null, action: null, outOfBand: false, warn: false, ...fields, reason };
}

/** The other host's record may move here: something says the instance arrived, not that it is a copy. */
function arrived(input: DecideInput): boolean {
  const { event, observation, record } = input;
  if (
    event &&
    (event.transition === 'started' || event.transition === 'resumed') &&
    ARRIVAL_DETAILS.has(event.detail)
  ) {
    return true;
  }
  if (observation.kind === 'present' && ARRIVED_REASONS.has(observation.reason)) return true;
  // Its own host no longer has it (or concluded it was deleted): this host's running copy is it.
  return record.powerState === 'missing' || record.vmState === 'deleted';
}

/** An instance recorded on another host. */
function elsewhere(input: DecideInput): Decision {
  const { record, observation, thisHost } = input;
  if (observation.kind !== 'present' || observation.powerState !== 'running') {
    // An incoming migration still paused, a failed one's STOPPED/failed, the source's leftover
    // definition after the record moved, or absence: none of it is this host's to record.
    return decision('other-host');
  }
  if (!arrived(input)) {
    // Running here and, as far as the store knows, running there too: never fight over it.
    return decision('running-elsewhere', { warn: true });
  }
  const write: DecisionWrite = {
    host: thisHost,
    powerState: 'running',
    powerReason: observation.reason,
    // A deletion concluded from absence on the old host was a migration whose events were lost.
    ...(record.vmState === 'deleted' ? { vmState: 'active' as const } : {}),
  };
  return decision('claimed', {
    write,
    outOfBand: true,
    migration: { from: record.host, to: thisHost },
  });
}

/** The event or the confirmed state names a migration step. */
function migrationStep(input: DecideInput): boolean {
  const { event, observation, record } = input;
  if (event && MIGRATION_WORDS.has(event.detail)) return true;
  if (observation.kind === 'present') {
    return observation.powerState !== 'running' && MIGRATION_WORDS.has(observation.reason);
  }
  // Unlisted or gone after a migration step was recorded: still the same departure.
  return record.powerState !== 'running' && MIGRATION_WORDS.has(record.powerReason);
}

/** In a migration step, the instance left this host: SHUTOFF/migrated left behind, or nothing. */
function leftHere(input: DecideInput): boolean {
  const { observation } = input;
  if (observation.kind === 'present') {
    return observation.powerState === 'shutoff' && MIGRATION_WORDS.has(observation.reason);
  }
  // Unlisted or gone during a migration step (the source removes its domain once it is done).
  return true;
}

/** Only the power state, never vmState: a migration step is not what anyone wants of the guest. */
function powerOnly(input: DecideInput, reason: Decision['reason']): Decision {
  const { record, observation } = input;
  if (observation.kind !== 'present' || observation.powerState === record.powerState) {
    return decision(reason);
  }
  return decision(reason, {
    write: { powerState: observation.powerState, powerReason: observation.reason },
  });
}

/**
 * The decision for a cross-host or migration case, or null when neither applies and the usual
 * guards and policy table decide.
 */
export function migrationDecision(input: DecideInput): Decision | null {
  const { record, observation } = input;
  if (record.host !== input.thisHost) return elsewhere(input);
  if (!migrationStep(input)) return null;

  if (leftHere(input)) {
    // Not stopped and not deleted: running on a host that has not claimed it yet. `missing` says
    // this host does not have it; the destination's claim moves the record on.
    if (record.powerState === 'missing' && record.powerReason === LEFT_REASON) {
      return decision('migrated-away');
    }
    return decision('migrated-away', {
      write: { powerState: 'missing', powerReason: LEFT_REASON },
    });
  }
  if (
    observation.kind === 'present' &&
    observation.powerState === 'paused' &&
    isMigratingPause(observation.reason) &&
    input.cause === 'event'
  ) {
    // The switch-over pause lasts the last round of copying; recorded, it would show paused and
    // then running (on one host or the other) for a pause nobody made. A reconcile that still
    // finds it paused records it: that is a migration that has stalled.
    return decision('switching-over');
  }
  return powerOnly(input, 'migration');
}
