export { adopt, adoptedVmState, decide, effectivePower } from './decide.ts';
export type {
  DecideInput,
  Decision,
  DecisionReason,
  DecisionWrite,
  Observation,
} from './decide.ts';
export { SyncEngine } from './engine.ts';
export { SyncError } from './types.ts';
export type {
  CommitInfo,
  ReconcileReport,
  SyncEngineOptions,
  SyncErrorCode,
  SyncLogger,
  SyncStats,
  Task,
  TaskOutcome,
} from './types.ts';
export { rebootSeen, rebootSign, strongerSign } from './reboot.ts';
export type { RebootCause, RebootInput, RebootSign } from './reboot.ts';
export { settleWindowFor } from './settle.ts';
export type { SettleCue, SettleReason, SettleRule } from './settle.ts';
