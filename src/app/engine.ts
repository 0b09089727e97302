// The sync engine as the composition roots that drive a hypervisor (the all-in-one and the agent)
// start it: the same settings from the command line, its own logger, and the metrics' hook.
import type { Logger } from 'pino';
import type { Policy } from '../model/index.ts';
import { SyncEngine } from '../sync/index.ts';
import type { SyncEngineOptions } from '../sync/index.ts';

/** What the command line decides about the engine. */
export interface EngineConfig {
  readonly policy: Policy;
  readonly reconcileIntervalMs: number;
}

export interface EngineParts extends Pick<SyncEngineOptions, 'driver' | 'store' | 'onCommit'> {
  readonly host: string;
  readonly logger: Logger;
}

/** A started engine: it has listed the hypervisor and the records, and listens for events. */
export async function startEngine(parts: EngineParts, config: EngineConfig): Promise<SyncEngine> {
  const engine = new SyncEngine({
    driver: parts.driver,
    store: parts.store,
    host: parts.host,
    policy: config.policy,
    reconcileIntervalMs: config.reconcileIntervalMs,
    logger: parts.logger.child({ component: 'sync', host: parts.host }),
    onCommit: parts.onCommit,
  });
  await engine.start();
  return engine;
}
