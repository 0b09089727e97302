export { Emitter } from './emitter.ts';
export type { ListenerErrorHook } from './emitter.ts';
