// The periodic reconcile's common case is a listing that matches every record. Deciding that from
// the listing and the records the reconcile has already read in bulk costs one pure function call
// per instance; a full pass would read the record again and go through the instance's queue, for
// an answer known in advance. At rest that difference is most of what a reconcile costs.
import type { Policy } from '../model/index.ts';
import type { ObservedInstance } from '../virt/index.ts';
import { decide, type DecideInput } from './decide.ts';

/**
 * True when a pass over `listed` would decide nothing: no write, no action, nothing to warn
 * about. Only for an instance nothing touched since the listing began (the caller checks): the
 * record it compares with must be the one a pass would read.
 */
export function listingMatchesRecord(
  record: DecideInput['record'] & { readonly policy: Policy | null },
  listed: ObservedInstance,
  thisHost: string,
  defaultPolicy: Policy,
): boolean {
  const decision = decide({
    record,
    observation: { kind: 'present', powerState: listed.powerState, reason: listed.reason },
    event: null,
    thisHost,
    policy: record.policy ?? defaultPolicy,
    cause: 'reconcile',
  });
  return decision.write === null && decision.action === null && !decision.warn;
}
