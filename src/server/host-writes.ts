// What a host's agent may write (KubeVirt's NodeRestriction, for records): its own host's
// instances only. A record moves to another host only by a confirmed migration: the destination
// reports it running there, with cause `migration`. Pure: the route finds the current record (in
// its change feed, or by a read) and asks; whatever is refused is answered 403 `forbidden` with
// the reason.
import type { InstanceWrite } from '../store/index.ts';
import type { RecordOwner } from './record-owners.ts';

/** Why host `host` may not make `write` over `current` (null: no such record), or null if it may. */
export function mayHostWrite(
  host: string,
  write: InstanceWrite,
  current: RecordOwner | null,
): string | null {
  const who = `host '${host}'`;
  if (write.kind === 'create') {
    if (write.fields.host !== host) {
      return (
        `${who} may not create instance ${write.uuid} on host '${write.fields.host}': ` +
        'a host records only instances on itself'
      );
    }
    if (current !== null && current.host !== host) return recordedElsewhere(who, current);
    return null;
  }
  // An unknown uuid is the store's to answer (not-found); nothing of another host is touched.
  if (current === null) return null;
  const movesTo = write.patch.host;
  if (current.host === host) {
    if (movesTo !== undefined && movesTo !== host) {
      return (
        `${who} may not move instance ${write.uuid} to host '${movesTo}': ` +
        'the destination claims it when it runs there'
      );
    }
    return null;
  }
  const claim =
    movesTo === host &&
    write.patch.powerState === 'running' &&
    write.transition?.cause === 'migration';
  return claim ? null : recordedElsewhere(who, current);
}

function recordedElsewhere(who: string, current: RecordOwner): string {
  return (
    `instance ${current.uuid} is recorded on host '${current.host}': ${who} may write it only ` +
    'by reporting it running there after a migration (host, powerState running, cause migration)'
  );
}
