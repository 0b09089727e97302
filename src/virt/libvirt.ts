// The libvirt driver: maps libvirt's events, states and reasons onto the engine's vocabulary,
// lists with the all-domain-stats call (one round trip, never one call per domain), and keeps a
// connection up, re-registering for events on every reconnect.
import type { PowerState } from '../model/index.ts';
import {
  DEFAULT_URI,
  DomainEventId,
  DomainState,
  LibvirtClient,
  LibvirtClientError,
  LibvirtError,
  type ConnectOptions,
  type Domain,
  type DomainStateInfo,
  type DomainStatesListing,
  type LifecycleEventMessage,
} from '../libvirt/index.ts';
import { Emitter, type ListenerErrorHook } from '../lib/index.ts';
import {
  DriverError,
  type DriverEvent,
  type DriverEventListener,
  type DriverLogger,
  type HypervisorDriver,
  type ObservedInstance,
  type RebootOptions,
  type StopOptions,
  type Transition,
} from './types.ts';

export interface LibvirtDriverOptions extends Omit<ConnectOptions, 'uri'> {
  readonly uri?: string;
  /** First and largest delay between reconnect attempts. */
  readonly reconnectMinMs?: number;
  readonly reconnectMaxMs?: number;
  /** How often a graceful stop checks whether the guest is off yet. */
  readonly stopPollMs?: number;
  /** Where lost connections, each failed reconnect's reason and listener errors are logged. */
  readonly logger?: DriverLogger;
  /**
   * Told why the connection is down each time it drops or a reconnect fails, and null once it
   * is back: what a host's record shows as its connection error.
   */
  readonly onConnectionError?: (reason: string | null) => void;
}

/** Domains asked about in one stats call; far below libvirt's 16 384-domain limit. */
const LOOKUP_BATCH = 1000;

interface LookupWaiter {
  readonly resolve: (found: ObservedInstance | null) => void;
  readonly reject: (error: unknown) => void;
}

const STATE_TO_POWER: Record<number, PowerState> = {
  [DomainState.NOSTATE]: 'nostate',
  [DomainState.RUNNING]: 'running',
  // BLOCKED means running but waiting on a resource: for a control plane it is running.
  [DomainState.BLOCKED]: 'running',
  [DomainState.PAUSED]: 'paused',
  [DomainState.SHUTDOWN]: 'shutdown',
  [DomainState.SHUTOFF]: 'shutoff',
  [DomainState.CRASHED]: 'crashed',
  [DomainState.PMSUSPENDED]: 'suspended',
};

/** What each lifecycle event implies about the power state right after it. */
const EVENT_TO_POWER: Record<Transition, PowerState | null> = {
  defined: null,
  undefined: null,
  started: 'running',
  suspended: 'paused',
  resumed: 'running',
  stopped: 'shutoff',
  shutdown: 'shutdown',
  pmsuspended: 'suspended',
  crashed: 'crashed',
  rebooted: null,
};

export function powerStateOf(state: DomainStateInfo): ObservedInstance['powerState'] {
  return STATE_TO_POWER[state.stateCode] ?? 'nostate';
}

/** Maps one libvirt lifecycle message; null for an event type newer than this code. */
function mapLifecycle(message: LifecycleEventMessage): DriverEvent | null {
  if (typeof message.event === 'number') return null;
  const transition: Transition = message.event;
  return {
    kind: 'lifecycle',
    uuid: message.domain.uuid,
    name: message.domain.name,
    transition,
    detail: String(message.detail),
    powerState: EVENT_TO_POWER[transition],
    observedAt: message.receivedAt,
  };
}

export class LibvirtDriver implements HypervisorDriver {
  readonly kind = 'libvirt';
  readonly uri: string;
  private client: LibvirtClient | null = null;
  private readonly listeners: Emitter<[DriverEvent]>;
  private readonly onListenerError: ListenerErrorHook | undefined;
  private pendingLookups = new Map<string, LookupWaiter[]>();
  private closing = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectDelayMs: number;
  private lastConnectionError: string | null = null;
  /** The last listing and what it mapped to, reused while the daemon's answer stays the same. */
  private listing: {
    readonly from: DomainStatesListing;
    readonly instances: readonly ObservedInstance[];
  } | null = null;

  constructor(private readonly options: LibvirtDriverOptions = {}) {
    this.uri = options.uri ?? DEFAULT_URI;
    this.reconnectDelayMs = options.reconnectMinMs ?? 500;
    const logger = options.logger;
    this.onListenerError =
      options.onListenerError ??
      (logger && ((err) => logger.error({ err }, 'a libvirt event listener threw')));
    this.listeners = new Emitter(this.onListenerError);
  }

  get connected(): boolean {
    return this.client !== null && !this.client.closed;
  }

  /** Why the connection is down: how it dropped or the last reconnect's failure; null when up. */
  get connectionError(): string | null {
    return this.lastConnectionError;
  }

  /** Connects once; the first failure is the caller's to see. Later losses reconnect by themselves. */
  async connect(): Promise<void> {
    this.closing = false;
    if (this.connected) return;
    try {
      await this.open();
    } catch (error) {
      this.connectionDown(reasonOf(error));
      throw error;
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = null;
    await client?.close();
  }

  registerEventListener(listener: DriverEventListener): () => void {
    return this.listeners.on(listener);
  }

  async hostname(): Promise<string> {
    return this.guard((c) => c.getHostname());
  }

  /**
   * The engine lists every period; a host where nothing changed answers with the same bytes,
   * and those are not decoded and mapped again.
   */
  async listInstances(): Promise<ObservedInstance[]> {
    const from = await this.guard((c) => c.listDomainStates(this.listing?.from ?? null));
    if (this.listing?.from !== from) {
      this.listing = { from, instances: from.domains.map((s) => observed(s.domain, s)) };
    }
    return [...this.listing.instances];
  }

  /**
   * The stats call answers with name and state, or with nothing for a domain that is gone. Asks
   * made in the same event-loop turn share one call: a storm of 10 000 events is confirmed in a
   * handful of round trips, not 10 000.
   */
  getPowerState(uuid: string): Promise<ObservedInstance | null> {
    return new Promise((resolve, reject) => {
      const waiters = this.pendingLookups.get(uuid);
      if (waiters) waiters.push({ resolve, reject });
      else this.pendingLookups.set(uuid, [{ resolve, reject }]);
      // The first ask of a turn schedules the flush for everything asked in it.
      if (this.pendingLookups.size === 1 && !waiters) setImmediate(() => this.flushLookups());
    });
  }

  private flushLookups(): void {
    const batch = this.pendingLookups;
    this.pendingLookups = new Map();
    const uuids = [...batch.keys()];
    for (let start = 0; start < uuids.length; start += LOOKUP_BATCH) {
      const chunk = uuids.slice(start, start + LOOKUP_BATCH);
      this.guard((c) => c.getDomainStatesByUuid(chunk)).then(
        (states) => {
          const found = new Map(states.map((s) => [s.domain.uuid, s]));
          for (const uuid of chunk) {
            const state = found.get(uuid);
            const answer = state ? observed(state.domain, state) : null;
            for (const waiter of batch.get(uuid)!) waiter.resolve(answer);
          }
        },
        (error: unknown) => {
          for (const uuid of chunk) for (const waiter of batch.get(uuid)!) waiter.reject(error);
        },
      );
    }
  }

  start(uuid: string): Promise<void> {
    return this.onDomain(uuid, (c, d) => c.create(d));
  }

  async stop(uuid: string, options: StopOptions = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    const pollMs = this.options.stopPollMs ?? 250;
    await this.onDomain(uuid, (c, d) => c.shutdown(d));
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const state = await this.getPowerState(uuid);
      if (!state || state.powerState === 'shutoff') return;
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
    // The guest ignored the request: graceful has had its chance.
    await this.forceStop(uuid);
  }

  forceStop(uuid: string): Promise<void> {
    return this.onDomain(uuid, (c, d) => c.destroy(d));
  }

  reboot(uuid: string, options: RebootOptions = {}): Promise<void> {
    if (!options.hard) return this.onDomain(uuid, (c, d) => c.reboot(d));
    // A hard reboot is a power cycle, as Nova does it: off, then on again.
    return this.onDomain(uuid, async (c, d) => {
      await c.destroy(d);
      await c.create(d);
    });
  }

  pause(uuid: string): Promise<void> {
    return this.onDomain(uuid, (c, d) => c.suspend(d));
  }

  resume(uuid: string): Promise<void> {
    return this.onDomain(uuid, (c, d) => c.resume(d));
  }

  // ---- connection ------------------------------------------------------------------------

  private async open(): Promise<void> {
    const {
      reconnectMinMs: _min,
      reconnectMaxMs: _max,
      stopPollMs: _poll,
      logger: _logger,
      onConnectionError: _onConnectionError,
      ...connect
    } = this.options;
    const client = await LibvirtClient.connect({
      ...connect,
      uri: this.uri,
      onListenerError: this.onListenerError,
    });
    try {
      // Register before announcing the connection: the engine reconciles on `connected`, and
      // anything that changes after its listing must reach it as an event.
      client.onLifecycle((message) => {
        const event = mapLifecycle(message);
        if (event) this.emit(event);
      });
      client.onReboot(({ domain, receivedAt }) =>
        this.emit({
          kind: 'lifecycle',
          uuid: domain.uuid,
          name: domain.name,
          transition: 'rebooted',
          detail: 'reboot',
          powerState: null,
          observedAt: receivedAt,
        }),
      );
      await client.registerDomainEvent(DomainEventId.LIFECYCLE);
      await client.registerDomainEvent(DomainEventId.REBOOT);
    } catch (error) {
      await client.close();
      throw mapError(error);
    }
    if (this.closing) {
      await client.close();
      return;
    }
    this.client = client;
    this.reconnectDelayMs = this.options.reconnectMinMs ?? 500;
    if (this.lastConnectionError !== null) {
      this.options.logger?.info({ uri: this.uri }, `reconnected to libvirt at ${this.uri}`);
      this.lastConnectionError = null;
      this.tellConnectionError(null);
    }
    client.onClose((closeReason, error) => {
      if (this.client !== client) return;
      this.client = null;
      const reason = error ? `${closeReason}: ${error.message}` : closeReason;
      this.connectionDown(reason);
      this.options.logger?.warn(
        { uri: this.uri, reason, retryInMs: this.reconnectDelayMs },
        `lost the connection to libvirt at ${this.uri} (${reason}); ` +
          `reconnecting in ${this.reconnectDelayMs / 1000} s`,
      );
      this.emit({ kind: 'disconnected', reason, observedAt: Date.now() });
      this.scheduleReconnect();
    });
    this.emit({ kind: 'connected', observedAt: Date.now() });
  }

  private scheduleReconnect(): void {
    if (this.closing) return;
    const delay = this.reconnectDelayMs;
    this.reconnectDelayMs = Math.min(delay * 2, this.options.reconnectMaxMs ?? 10_000);
    this.reconnectTimer = setTimeout(() => {
      this.open().catch((error: unknown) => {
        if (this.closing) return;
        const reason = reasonOf(error);
        this.connectionDown(reason);
        this.options.logger?.warn(
          { uri: this.uri, reason, retryInMs: this.reconnectDelayMs },
          `reconnecting to libvirt at ${this.uri} failed (${reason}); ` +
            `retrying in ${this.reconnectDelayMs / 1000} s`,
        );
        this.scheduleReconnect();
      });
    }, delay);
  }

  private connectionDown(reason: string): void {
    this.lastConnectionError = reason;
    this.tellConnectionError(reason);
  }

  private tellConnectionError(reason: string | null): void {
    try {
      this.options.onConnectionError?.(reason);
    } catch (error) {
      // The hook failing must not stop the reconnect loop.
      this.options.logger?.error({ err: error }, 'onConnectionError hook threw');
    }
  }

  private emit(event: DriverEvent): void {
    this.listeners.emit(event);
  }

  private async guard<T>(work: (client: LibvirtClient) => Promise<T>): Promise<T> {
    const client = this.client;
    if (!client || client.closed) {
      throw new DriverError('disconnected', `not connected to libvirt at ${this.uri}`);
    }
    try {
      return await work(client);
    } catch (error) {
      throw mapError(error);
    }
  }

  private onDomain(
    uuid: string,
    work: (client: LibvirtClient, domain: Domain) => Promise<unknown>,
  ): Promise<void> {
    return this.guard(async (c) => {
      await work(c, await c.lookupByUuid(uuid));
    });
  }
}

function observed(domain: Domain, state: DomainStateInfo): ObservedInstance {
  return {
    uuid: domain.uuid,
    name: domain.name,
    powerState: powerStateOf(state),
    reason: String(state.reason),
  };
}

function mapError(error: unknown): DriverError {
  if (error instanceof DriverError) return error;
  if (error instanceof LibvirtError) {
    if (error.isNoDomain) return new DriverError('not-found', error.message, { cause: error });
    if (error.isOperationInvalid) {
      return new DriverError('invalid-state', error.message, { cause: error });
    }
    return new DriverError('failed', error.message, { cause: error });
  }
  if (error instanceof LibvirtClientError) {
    const code = error.code === 'timeout' ? 'timeout' : 'disconnected';
    return new DriverError(code, error.message, { cause: error });
  }
  return new DriverError('failed', error instanceof Error ? error.message : String(error), {
    cause: error,
  });
}

function reasonOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
