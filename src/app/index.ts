// The composition roots: where drivers, store, engine and API are chosen and wired together.
// Only the command line imports this; nothing below it knows it exists.
export { startService } from './all-in-one.ts';
export type { RunningService, ServiceConfig } from './all-in-one.ts';
export type { HypervisorChoice } from './hypervisor.ts';
export { registerProcessMetrics } from './process-metrics.ts';
export { startControlPlane } from './server.ts';
export type { ControlPlaneConfig, RunningControlPlane } from './server.ts';
export { defaultJournalPath, startAgent } from './agent.ts';
export type { AgentConfig, RunningAgent } from './agent.ts';
