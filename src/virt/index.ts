export * from './types.ts';
export * from './libvirt.ts';
export * from './sim.ts';
export * from './sim-fabric.ts';
export * from './polling.ts';
