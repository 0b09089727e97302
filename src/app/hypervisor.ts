// Which hypervisor the all-in-one service syncs, and how it gets connected. A simulated host is
// only ever used when asked for by name, or as the loudly announced demo of a bare start: never
// as a quiet stand-in for a libvirt that is slow to come up, which would write fake instances into
// a real control plane's record.
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { LibvirtClient, DEFAULT_URI } from '../libvirt/index.ts';
import {
  LibvirtDriver,
  PollingDriver,
  SimDriver,
  SimHypervisor,
  type HypervisorDriver,
} from '../virt/index.ts';

export type HypervisorChoice =
  | { readonly kind: 'libvirt'; readonly uri: string }
  | {
      readonly kind: 'sim';
      readonly instances: number;
      readonly ratePerSecond: number;
      /** Its host name and uuid seed: simulated hosts side by side need their own. */
      readonly hostname?: string;
      readonly seed?: number;
    }
  /**
   * A bare start with nothing configured: the local libvirt when it answers, else a simulated
   * host recorded in `simulatedDb` (kept apart from the database a real host would use).
   */
  | {
      readonly kind: 'demo';
      readonly instances: number;
      readonly ratePerSecond: number;
      readonly simulatedDb: string;
    };

export interface ChosenHypervisor {
  readonly driver: HypervisorDriver;
  readonly description: string;
  readonly sim?: SimHypervisor;
  readonly ratePerSecond: number;
  /** The database to use when the choice decided it (the demo's simulated host). */
  readonly db?: string;
}

export interface DriverSettings {
  /** Told why the connection is down after each drop or failed reconnect, null once back. */
  readonly onConnectionError?: (reason: string | null) => void;
  /**
   * Poll the hypervisor this often and report changes as events, ignoring any events it sends:
   * for a hypervisor without lifecycle events. Absent: use its events.
   */
  readonly pollIntervalMs?: number;
}

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10_000;

/** Tells whether a libvirtd answers at `uri`: the handshake, not just the socket file. */
async function libvirtAnswers(uri: string): Promise<boolean> {
  try {
    const client = await LibvirtClient.connect({ uri, connectTimeoutMs: 2000 });
    await client.close();
    return true;
  } catch {
    return false;
  }
}

export async function chooseHypervisor(
  choice: HypervisorChoice,
  logger: Logger,
  settings: DriverSettings = {},
): Promise<ChosenHypervisor> {
  const chosen = await chooseDriver(choice, logger, settings);
  const intervalMs = settings.pollIntervalMs;
  if (intervalMs === undefined) return chosen;
  const driverLogger = logger.child({ component: 'driver' });
  return {
    ...chosen,
    driver: new PollingDriver(chosen.driver, { intervalMs, logger: driverLogger }),
    description: `${chosen.description}, polled every ${intervalMs / 1000} s`,
  };
}

async function chooseDriver(
  choice: HypervisorChoice,
  logger: Logger,
  settings: DriverSettings,
): Promise<ChosenHypervisor> {
  const libvirt = (uri: string): ChosenHypervisor => ({
    driver: new LibvirtDriver({
      uri,
      logger: logger.child({ component: 'driver' }),
      onConnectionError: settings.onConnectionError,
    }),
    description: `libvirt at ${uri}`,
    ratePerSecond: 0,
  });
  if (choice.kind === 'libvirt') return libvirt(choice.uri);
  if (choice.kind === 'demo' && (await libvirtAnswers(DEFAULT_URI))) return libvirt(DEFAULT_URI);
  const sim = new SimHypervisor({
    hostname: (choice.kind === 'sim' ? choice.hostname : undefined) ?? 'sim-host',
    instances: choice.instances,
    seed: choice.kind === 'sim' ? choice.seed : undefined,
  });
  const description = `a simulated host of ${choice.instances} instances (${choice.ratePerSecond} changes/s)`;
  if (choice.kind === 'demo') {
    logger.warn(
      `DEMO: no libvirt answers at ${DEFAULT_URI}, so this is a simulated host with ` +
        `${choice.instances} FAKE instances and a random workload, recorded in ` +
        `${choice.simulatedDb}. To sync a real host give --hypervisor URI (or HVSYNC_HYPERVISOR), ` +
        'e.g. --hypervisor qemu:///system; --sim asks for the simulator on purpose',
    );
  }
  return {
    driver: new SimDriver(sim),
    sim,
    description,
    ratePerSecond: choice.ratePerSecond,
    db: choice.kind === 'demo' ? choice.simulatedDb : undefined,
  };
}

/**
 * Connects, retrying with backoff until it works or `signal` aborts (then rejects with the
 * signal's reason). Each failure is logged with its reason: a hypervisor that is not there yet
 * (libvirtd slow at boot) is waited for, never replaced.
 */
export async function connectWithRetry(
  driver: HypervisorDriver,
  description: string,
  logger: Logger,
  signal: AbortSignal,
  onFailure: (reason: string) => void,
): Promise<void> {
  let wait = RETRY_MIN_MS;
  for (;;) {
    signal.throwIfAborted();
    try {
      await driver.connect();
      return;
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      onFailure(reason);
      logger.warn(
        { reason, retryInMs: wait },
        `${description} does not answer yet (${reason}); retrying in ${wait / 1000} s`,
      );
    }
    await delay(wait, undefined, { signal });
    wait = Math.min(wait * 2, RETRY_MAX_MS);
  }
}
