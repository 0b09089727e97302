// Carries a driver's connection error into its host's record, so that GET /v1/hosts says why a
// host is disconnected (wrong URI, permission denied...) and not only that it is. The driver
// tells before the host is known (the first connect) and after; writes follow in telling order.
import type { EngineStore } from '../store/index.ts';
import type { DriverLogger } from '../virt/index.ts';

export class ConnectionErrorRecorder {
  #target: { readonly store: EngineStore; readonly host: string } | null = null;
  #latest: string | null = null;
  #writes: Promise<void> = Promise.resolve();

  constructor(private readonly logger: DriverLogger) {}

  /** The driver's word: why the connection is down, or null once it is up. */
  readonly report = (reason: string | null): void => {
    this.#latest = reason;
    this.#write();
  };

  /** From now on writes go to `host`'s record, starting with what is known now. */
  attach(store: EngineStore, host: string): void {
    this.#target = { store, host };
    this.#write();
  }

  /** Resolves once every write told so far has been tried. */
  settled(): Promise<void> {
    return this.#writes;
  }

  #write(): void {
    const target = this.#target;
    if (target === null) return;
    const reason = this.#latest;
    this.#writes = this.#writes
      .then(() => target.store.recordConnectionError(target.host, reason))
      .catch((error: unknown) => {
        this.logger.error({ err: error }, 'could not record the host connection error');
      });
  }
}
