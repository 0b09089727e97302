// The fields of a plain, running, active instance record, for tests and benchmarks that write
// to a store directly; override what the case is about.
import type { InstanceFields } from '../../src/store/index.ts';

export function instanceFields(overrides: Partial<InstanceFields> = {}): InstanceFields {
  return {
    name: 'vm',
    host: 'host-a',
    vmState: 'active',
    taskState: null,
    taskAction: null,
    taskStartedAt: null,
    taskError: null,
    powerState: 'running',
    powerReason: 'booted',
    policy: null,
    ...overrides,
  };
}
