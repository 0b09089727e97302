// Records what a driver delivers, and waits for conditions with bounded polling rather than
// fixed sleeps (the suite runs on two noisy cores).
import type { DriverEvent, HypervisorDriver, LifecycleEvent } from '../../src/virt/index.ts';

export class WaitTimeoutError extends Error {
  readonly code = 'WAIT_TIMEOUT';
  constructor(what: string) {
    super(`timed out waiting for ${what}`);
    this.name = 'WaitTimeoutError';
  }
}

export async function waitFor(
  condition: () => boolean,
  what: string,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new WaitTimeoutError(what);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** Lets every callback already queued run, and a few more turns of the event loop. */
export async function turns(count = 5): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise((resolve) => setImmediate(resolve));
}

export class Recorder {
  readonly events: DriverEvent[] = [];
  readonly unregister: () => void;

  constructor(driver: HypervisorDriver) {
    this.unregister = driver.registerEventListener((event) => this.events.push(event));
  }

  get lifecycle(): LifecycleEvent[] {
    return this.events.filter((event): event is LifecycleEvent => event.kind === 'lifecycle');
  }

  /** `transition/detail/powerState` of every lifecycle event for one uuid, in arrival order. */
  trail(uuid: string): string[] {
    return this.lifecycle
      .filter((event) => event.uuid === uuid)
      .map((event) => `${event.transition}/${event.detail}/${event.powerState ?? '-'}`);
  }

  async waitForTrail(uuid: string, length: number): Promise<string[]> {
    await waitFor(() => this.trail(uuid).length >= length, `${length} events for ${uuid}`);
    return this.trail(uuid);
  }

  count(kind: DriverEvent['kind']): number {
    return this.events.filter((event) => event.kind === kind).length;
  }

  clear(): void {
    this.events.length = 0;
  }
}
