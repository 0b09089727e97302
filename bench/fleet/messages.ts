// What the fleet benchmark's parent and its agent processes say to each other over IPC.
import type { RunQueueWait } from '../service/support.ts';

/**
 * uuid, record version the control plane gave the commit, the event's observedAt, the power state
 * it recorded, which replica the agent wrote to, when the agent had the control plane's answer,
 * and 1 if the event came while an earlier write of the same instance was still unanswered (the
 * engine writes each instance's changes one at a time, so such an event waits for that answer).
 */
export type CommitSample = [string, number, number, string, number, number, 0 | 1];

export type FromParent =
  | {
      readonly kind: 'start';
      /**
       * Host names, each with the index in `servers` of the replica its agent talks to and the
       * host's own token (a host token, as deployed: the control plane checks every write's record).
       */
      readonly hosts: readonly (readonly [string, number, string])[];
      readonly servers: readonly string[];
      readonly instances: number;
      /** Keep one commit in this many for the latency match. */
      readonly sampleEvery: number;
    }
  /** Out-of-band changes per second on each host; 0 stops the workload. */
  | { readonly kind: 'rate'; readonly perHost: number; readonly tickMs: number }
  | { readonly kind: 'report' }
  | { readonly kind: 'stop' };

export type WorkerReport = {
  readonly kind: 'report';
  readonly agents: number;
  /** process.cpuUsage() user + system since the process started. */
  readonly cpuMs: number;
  readonly rss: number;
  readonly backlog: number;
  readonly hostsWithBacklog: number;
  readonly reachable: number;
  /** Lifecycle events the simulated hypervisors emitted, since they started. */
  readonly events: number;
  /** The event loop thread's wait for a CPU since the process started (see runQueueWait). */
  readonly runQueue: RunQueueWait | null;
  /** Event loop utilisation since the previous report, 0..1. */
  readonly loopBusy: number;
  /** Samples since the last report. */
  readonly samples: CommitSample[];
};

export type FromWorker =
  | { readonly kind: 'started' }
  | { readonly kind: 'ok' }
  | WorkerReport
  | { readonly kind: 'error'; readonly message: string };

/** A request and its answer carry the same id: a report may overtake a long start. */
export interface Request {
  readonly id: number;
  readonly message: FromParent;
}

export type Reply =
  { readonly id: number; readonly message: FromWorker } | { readonly id: 'ready' };
