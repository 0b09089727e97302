/** One "name pid N started T" line per running system libvirt daemon, sorted by name. */
export function machineLibvirtdIdentity(runDir?: string): string[];
/** Daemons running before that are not running, as the same process, after. */
export function daemonsGone(before: string[], after: string[]): string[];
