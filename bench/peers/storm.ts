// The storm both listeners watch: every domain goes through the same six calls, each causing one
// lifecycle event. An event's slot (chain × six + step) is where the generator keeps the time it
// sent the call and each listener the time its callback ran, so the three line up without any
// per-event messages between processes. c-client-listener.py holds the same table.
import { DomainEvent } from '../../src/libvirt/index.ts';

export interface StormStep {
  readonly call: 'define' | 'create' | 'suspend' | 'resume' | 'destroy' | 'undefine';
  readonly event: number;
  readonly detail: number;
}

export const STEPS: readonly StormStep[] = [
  { call: 'define', event: DomainEvent.DEFINED, detail: 0 }, // added
  { call: 'create', event: DomainEvent.STARTED, detail: 0 }, // booted
  { call: 'suspend', event: DomainEvent.SUSPENDED, detail: 0 }, // paused
  { call: 'resume', event: DomainEvent.RESUMED, detail: 0 }, // unpaused
  { call: 'destroy', event: DomainEvent.STOPPED, detail: 1 }, // destroyed
  { call: 'undefine', event: DomainEvent.UNDEFINED, detail: 0 }, // removed
];

/** The step an event answers, or -1 for an event this storm does not cause. */
export function stepOf(event: number, detail: number): number {
  return STEPS.findIndex((s) => s.event === event && s.detail === detail);
}

export function domainName(prefix: string, chain: number): string {
  return `${prefix}-${chain}`;
}

/** The chain number in one of our names, or -1 for a name that is not one of ours. */
export function chainOf(prefix: string, name: string): number {
  if (!name.startsWith(`${prefix}-`)) return -1;
  const chain = Number(name.slice(prefix.length + 1));
  return Number.isInteger(chain) ? chain : -1;
}

/** What a listener is told on its command line (as one JSON argument). */
export interface ListenerArgs {
  readonly uri: string;
  readonly prefix: string;
  readonly chains: number;
  /** Where to write one signed 64-bit little-endian CLOCK_MONOTONIC ns per slot (0: none). */
  readonly timestampsPath: string;
}

/** What a listener prints as its last stdout line. */
export interface ListenerSummary {
  readonly client: string;
  /** Slots whose event arrived (each counted once). */
  readonly delivered: number;
  /** Events for one of our slots that arrived again. */
  readonly duplicates: number;
  /** Events for one of our domains that the storm did not cause. */
  readonly unexpected: number;
  /** User + system CPU seconds between ready and the last expected event (all threads). */
  readonly cpuSeconds: number;
  /** VmRSS when ready, bytes. */
  readonly rssReadyBytes: number;
  /** VmHWM (peak RSS) at the end, bytes. */
  readonly rssPeakBytes: number;
}
