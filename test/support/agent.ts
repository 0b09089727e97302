// `hvsync agent` in this process on a simulated host, configured as the agent tests want it:
// no background workload (the test makes every change), nothing reconciled on a timer, quick
// status reports and retries so that a returning control plane is noticed at once.
import { startAgent } from '../../src/app/index.ts';
import type { AgentConfig, RunningAgent } from '../../src/app/index.ts';
import { nodeHttpTransport } from '../../src/cli/http-transport.ts';

export interface SimAgentOptions extends Partial<
  Omit<AgentConfig, 'hypervisor' | 'server' | 'host' | 'journal' | 'logger'>
> {
  readonly server: string;
  readonly host: string;
  readonly journal: string;
  /** Running instances the simulated host starts with. */
  readonly instances: number;
  readonly logger: AgentConfig['logger'];
}

export function startSimAgent({ instances, ...options }: SimAgentOptions): Promise<RunningAgent> {
  return startAgent({
    transport: nodeHttpTransport({ keepAlive: true }),
    hypervisor: { kind: 'sim', instances, ratePerSecond: 0 },
    journalLimit: 1_000,
    policy: 'observe',
    reconcileIntervalMs: 0,
    statusIntervalMs: 200,
    retryMaxMs: 300,
    requestTimeoutMs: 2_000,
    ...options,
  });
}
