export * from './types.ts';
export * from './libvirt.ts';
