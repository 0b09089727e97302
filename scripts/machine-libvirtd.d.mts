/** One "name pid N started T" line per running system libvirt daemon, sorted by name. */
export function machineLibvirtdIdentity(): string[];
