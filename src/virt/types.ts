// What the sync engine needs from any hypervisor. A driver knows its hypervisor and nothing of
// policy: it reports what it sees and performs what it is told.
import type { PowerState } from '../model/index.ts';

/** What happened to an instance, as a lifecycle event reports it. */
export type Transition =
  | 'defined'
  | 'undefined'
  | 'started'
  | 'suspended'
  | 'resumed'
  | 'stopped'
  | 'shutdown'
  | 'pmsuspended'
  | 'crashed'
  | 'rebooted';

export interface InstanceRef {
  /** Lower-case canonical UUID, 8-4-4-4-12. */
  readonly uuid: string;
  readonly name: string;
}

/** One instance as the hypervisor shows it right now. */
export interface ObservedInstance extends InstanceRef {
  readonly powerState: PowerState;
  /** The driver's reason for that state, a lower-case word (`shutdown`, `destroyed`, `booted`...) or a number the driver does not know. */
  readonly reason: string;
}

export interface LifecycleEvent extends InstanceRef {
  readonly kind: 'lifecycle';
  readonly transition: Transition;
  /** The driver's own detail, a lower-case word (`destroyed`, `finished`, `migrated`...) or a number it does not know. */
  readonly detail: string;
  /** The power state this event implies, or null when it implies none (defined, undefined, rebooted). */
  readonly powerState: PowerState | null;
  /** When the driver observed the event, epoch milliseconds. */
  readonly observedAt: number;
}

export interface ConnectedEvent {
  readonly kind: 'connected';
  readonly observedAt: number;
}

export interface DisconnectedEvent {
  readonly kind: 'disconnected';
  readonly reason: string;
  readonly observedAt: number;
}

export type DriverEvent = LifecycleEvent | ConnectedEvent | DisconnectedEvent;

export type DriverEventListener = (event: DriverEvent) => void;

/** What a driver logs through: the slice of a pino logger it uses. */
export interface DriverLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface StopOptions {
  /** How long a graceful stop may take before the instance is forced off. */
  readonly timeoutMs?: number;
}

export interface RebootOptions {
  /** Hard reboot: power cycle instead of asking the guest. */
  readonly hard?: boolean;
}

export interface HypervisorDriver {
  /** A short name for logs and metrics: `libvirt`, `sim`, `polling(...)`. */
  readonly kind: string;
  /** Connects (and keeps reconnecting after a loss until closed). Resolves once first connected. */
  connect(): Promise<void>;
  /** Stops reconnecting and releases everything; pending calls reject. */
  close(): Promise<void>;
  readonly connected: boolean;
  /** The host this driver runs on, as the hypervisor names it. */
  hostname(): Promise<string>;
  /** Delivers lifecycle and connection events; returns a function that unregisters. */
  registerEventListener(listener: DriverEventListener): () => void;
  /** Every instance with its power state, in one round trip to the hypervisor. */
  listInstances(): Promise<ObservedInstance[]>;
  /** One instance's current state; null only when the hypervisor confirms it does not exist. */
  getPowerState(uuid: string): Promise<ObservedInstance | null>;
  start(uuid: string): Promise<void>;
  /** Graceful stop; forced off if still running after `timeoutMs`. */
  stop(uuid: string, options?: StopOptions): Promise<void>;
  forceStop(uuid: string): Promise<void>;
  reboot(uuid: string, options?: RebootOptions): Promise<void>;
  pause(uuid: string): Promise<void>;
  resume(uuid: string): Promise<void>;
}

export type DriverErrorCode =
  | 'not-found' // the hypervisor says the instance does not exist
  | 'invalid-state' // the action makes no sense in the instance's current state
  | 'disconnected' // no connection to the hypervisor: nothing is known
  | 'timeout'
  | 'failed';

export class DriverError extends Error {
  override readonly name = 'DriverError';
  constructor(
    readonly code: DriverErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
