// Who the machine's libvirt daemons are: pid and start time of each system daemon that has its
// own pidfile under /run. Tests must leave them alone; comparing this before and after a run
// proves they did (a restart changes the start time even when a pid is reused).
import { readFileSync } from 'node:fs';

const SYSTEM_DAEMONS = ['libvirtd', 'virtqemud', 'virtproxyd'];

function read(path) {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * A process's state letter (R, S, Z...) and start time in clock ticks since boot: the start time
 * survives exec and differs when a pid is reused.
 * @param {number} pid
 * @returns {{ state: string, startTicks: string } | undefined} undefined when there is none
 */
export function processStat(pid) {
  const stat = read(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  // Fields after the parenthesised command name, which may itself hold spaces: 3 (state) first,
  // 22 (start time) twentieth.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0] ?? '', startTicks: fields[19] ?? '' };
}

/**
 * @param {string} [runDir] where system daemons keep their pidfiles
 * @returns {string[]} one "name pid N started T" line per running system daemon, sorted
 */
export function machineLibvirtdIdentity(runDir = '/run') {
  const found = [];
  for (const name of SYSTEM_DAEMONS) {
    const pid = Number(read(`${runDir}/${name}.pid`)?.trim());
    if (!Number.isInteger(pid) || pid <= 1) continue;
    if (read(`/proc/${pid}/comm`)?.trim() !== name) continue;
    const stat = processStat(pid);
    if (stat === undefined) continue;
    found.push(`${name} pid ${pid} started ${stat.startTicks}`);
  }
  return found;
}

/**
 * Daemons running before that are not running, as the same process, after. One that appeared is
 * someone starting it, not a test's doing.
 * @param {string[]} before
 * @param {string[]} after
 * @returns {string[]}
 */
export function daemonsGone(before, after) {
  return before.filter((daemon) => !after.includes(daemon));
}
