/** One "name pid N started T" line per running system libvirt daemon, sorted by name. */
export function machineLibvirtdIdentity(runDir?: string): string[];
/** Daemons running before that are not running, as the same process, after. */
export function daemonsGone(before: string[], after: string[]): string[];
/** A process's state letter and start time in clock ticks; undefined when there is none. */
export function processStat(pid: number): { state: string; startTicks: string } | undefined;
