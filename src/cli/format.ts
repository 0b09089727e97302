// What the client commands print for people: aligned tables and one-line changes. Scripts use
// --json instead, which prints the API's own objects.
import type { ApiHost, ApiInstance, ApiTransition, ApiWatchEvent } from '../server/index.ts';

/** Columns separated by two spaces, each as wide as its widest cell; no trailing blanks. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, column) => cell.padEnd(widths[column] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

const dash = (value: string | null): string => (value === null || value === '' ? '-' : value);

/** The power state, with a `?` when it is the last one known and not believed (host unreachable). */
export function powerText(instance: ApiInstance): string {
  return instance.powerStateStale === true ? `${instance.powerState}?` : instance.powerState;
}

export function instancesTable(instances: readonly ApiInstance[]): string {
  return table(
    ['UUID', 'NAME', 'HOST', 'VM STATE', 'TASK', 'POWER', 'REASON', 'UPDATED'],
    instances.map((i) => [
      i.uuid,
      i.name,
      i.host,
      i.vmState,
      i.taskError === null ? dash(i.taskState) : `${dash(i.taskState)} (last failed)`,
      powerText(i),
      dash(i.powerReason),
      i.updatedAt,
    ]),
  );
}

export function instanceDetails(instance: ApiInstance): string {
  const rows: [string, string][] = [
    ['uuid', instance.uuid],
    ['name', instance.name],
    ['host', instance.host],
    ['vm state', instance.vmState],
    [
      'task',
      instance.taskState === null
        ? '-'
        : `${instance.taskState} (${instance.taskAction ?? 'unknown action'} since ${instance.taskStartedAt ?? '?'})`,
    ],
    ['last task error', dash(instance.taskError)],
    [
      'power state',
      instance.powerStateStale === true
        ? `${powerText(instance)} (last known: the host's agent is unreachable or disconnected)`
        : instance.powerState,
    ],
    ['power reason', dash(instance.powerReason)],
    ['policy', instance.policy ?? 'deployment default'],
    ['updated', instance.updatedAt],
    ['version', String(instance.version)],
  ];
  const width = Math.max(...rows.map(([key]) => key.length)) + 1;
  return rows.map(([key, value]) => `${`${key}:`.padEnd(width)}  ${value}`).join('\n');
}

export function historyTable(transitions: readonly ApiTransition[]): string {
  return table(
    ['OBSERVED', 'POWER', 'VM STATE', 'CAUSE', 'DETAIL', 'OUT OF BAND', 'RECORDED'],
    transitions.map((t) => [
      t.observedAt,
      `${t.from ?? '-'} -> ${t.to}`,
      t.vmStateFrom === t.vmStateTo ? t.vmStateTo : `${t.vmStateFrom ?? '-'} -> ${t.vmStateTo}`,
      t.cause,
      dash(t.detail),
      t.outOfBand ? 'yes' : 'no',
      t.recordedAt,
    ]),
  );
}

export function hostsTable(hosts: readonly ApiHost[]): string {
  return table(
    [
      'NAME',
      'DRIVER',
      'REACHABLE',
      'CONNECTED',
      'LAST SEEN',
      'LAST RECONCILE',
      'BACKLOG',
      'CONNECTION ERROR',
    ],
    hosts.map((h) => [
      h.name,
      h.driver,
      h.reachable ? 'yes' : 'NO',
      h.connected ? 'yes' : 'no',
      h.lastSeenAt,
      dash(h.lastReconcileAt),
      h.backlog === null ? '-' : String(h.backlog),
      dash(h.connectionError),
    ]),
  );
}

/** One change, fixed-width where the values are, so a scrolling terminal stays readable. */
export function watchLine(event: ApiWatchEvent): string {
  const i = event.instance;
  const task = i.taskState === null ? '' : `  task=${i.taskState}`;
  const error = i.taskError === null ? '' : `  error=${JSON.stringify(i.taskError)}`;
  return (
    `${String(event.revision).padStart(6)}  ${i.updatedAt}  ${event.type.padEnd(7)}  ${i.uuid}  ` +
    `${i.name}  ${i.vmState}/${i.powerState}${i.powerReason === '' ? '' : ` (${i.powerReason})`}` +
    `${task}${error}`
  );
}
