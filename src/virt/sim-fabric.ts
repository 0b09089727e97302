// Simulated hosts that can reach one another: a live migration needs a destination, and the
// workload needs to know which hosts there are. Only names and membership live here; the
// migration itself (both hosts' state and events) is SimHypervisor.migrate.
import { DriverError } from './types.ts';

/** What the fabric needs of a member. */
export interface FabricHost {
  readonly hostname: string;
}

export class SimFabric<Host extends FabricHost = FabricHost> {
  readonly #hosts = new Map<string, Host>();

  /** Every member, in the order they joined. */
  get hosts(): readonly Host[] {
    return [...this.#hosts.values()];
  }

  host(name: string): Host | undefined {
    return this.#hosts.get(name);
  }

  /** Adds a host; a second host with the same name is refused (migrations address hosts by name). */
  join(host: Host): void {
    const known = this.#hosts.get(host.hostname);
    if (known === host) return;
    if (known) {
      throw new DriverError('invalid-state', `the fabric already has a host ${host.hostname}`);
    }
    this.#hosts.set(host.hostname, host);
  }

  leave(host: Host): void {
    if (this.#hosts.get(host.hostname) === host) this.#hosts.delete(host.hostname);
  }
}
