// The fleet at a glance: counts by state, hosts and their connection, what needs attention.
import { useMemo, useState } from 'preact/hooks';
import type { ApiClient } from '../../../src/client/index.ts';
import type { ApiHost, ApiInstance } from '../../../src/server/index.ts';
import { warningOf } from '../derive.ts';
import type { IntentWarning } from '../derive.ts';
import type { Fleet } from '../fleet.ts';
import { ago, count } from '../format.ts';
import { useInterval } from '../hooks.ts';

interface Summary {
  readonly total: number;
  readonly deleted: number;
  readonly byVmState: Map<string, number>;
  readonly byPowerState: Map<string, number>;
  readonly byHost: Map<string, { instances: number; tasks: number; drift: number }>;
  readonly tasks: ApiInstance[];
  readonly warnings: { instance: ApiInstance; warning: IntentWarning }[];
}

function summarise(instances: Iterable<ApiInstance>): Summary {
  const byVmState = new Map<string, number>();
  const byPowerState = new Map<string, number>();
  const byHost = new Map<string, { instances: number; tasks: number; drift: number }>();
  const tasks: ApiInstance[] = [];
  const warnings: Summary['warnings'] = [];
  let total = 0;
  let deleted = 0;
  for (const instance of instances) {
    const warning = warningOf(instance);
    if (warning !== null) warnings.push({ instance, warning });
    if (instance.vmState === 'deleted') {
      deleted += 1;
      continue;
    }
    total += 1;
    byVmState.set(instance.vmState, (byVmState.get(instance.vmState) ?? 0) + 1);
    byPowerState.set(instance.powerState, (byPowerState.get(instance.powerState) ?? 0) + 1);
    const host = byHost.get(instance.host) ?? { instances: 0, tasks: 0, drift: 0 };
    host.instances += 1;
    if (instance.taskState !== null) {
      host.tasks += 1;
      tasks.push(instance);
    }
    if (warning !== null) host.drift += 1;
    byHost.set(instance.host, host);
  }
  return { total, deleted, byVmState, byPowerState, byHost, tasks, warnings };
}

export function OverviewPage(props: { api: ApiClient; fleet: Fleet }) {
  const { fleet, api } = props;
  const summary = useMemo(() => summarise(fleet.instances.values()), [fleet.version]);
  const [hosts, setHosts] = useState<ApiHost[] | null>(null);
  const [hostError, setHostError] = useState<string | null>(null);
  useInterval(
    () => {
      api.hosts().then(
        (answer) => {
          setHosts(answer);
          setHostError(null);
        },
        (error: unknown) => setHostError(error instanceof Error ? error.message : String(error)),
      );
    },
    5000,
    [api],
  );

  return (
    <>
      <h1>Fleet overview</h1>
      <div class="cards">
        <section class="card" aria-labelledby="vm-states">
          <h2 id="vm-states">Instances by vmState</h2>
          <Counts total={summary.total} counts={summary.byVmState} />
          {summary.deleted > 0 && <p class="hint">{count(summary.deleted)} deleted not counted</p>}
        </section>
        <section class="card" aria-labelledby="power-states">
          <h2 id="power-states">Instances by powerState</h2>
          <Counts total={summary.total} counts={summary.byPowerState} />
        </section>
        <section class="card" aria-labelledby="attention">
          <h2 id="attention">Needs attention</h2>
          <dl class="stats">
            <dt>In drift (intent differs)</dt>
            <dd>{count(summary.warnings.filter((w) => w.warning === 'intent-differs').length)}</dd>
            <dt>Deleted but alive</dt>
            <dd>
              {count(summary.warnings.filter((w) => w.warning === 'deleted-but-alive').length)}
            </dd>
            <dt>Task in flight</dt>
            <dd>{count(summary.tasks.length)}</dd>
          </dl>
        </section>
      </div>

      <section aria-labelledby="hosts">
        <h2 id="hosts">Hosts</h2>
        {hostError !== null && (
          <p class="banner error" role="alert">
            Hosts could not be read: {hostError}
          </p>
        )}
        <table class="plain">
          <thead>
            <tr>
              <th scope="col">Host</th>
              <th scope="col">Driver</th>
              <th scope="col">Agent</th>
              <th scope="col">Connection</th>
              <th scope="col" class="num">
                Backlog
              </th>
              <th scope="col">Last seen</th>
              <th scope="col">Last reconcile</th>
              <th scope="col" class="num">
                Instances
              </th>
              <th scope="col" class="num">
                Tasks in flight
              </th>
              <th scope="col" class="num">
                In drift
              </th>
            </tr>
          </thead>
          <tbody>
            {(hosts ?? []).map((host) => {
              const tally = summary.byHost.get(host.name);
              return (
                <tr key={host.name}>
                  <th scope="row">{host.name}</th>
                  <td>{host.driver}</td>
                  <td>
                    {/* An unreachable host's power states are its last known, not believed. */}
                    <span class={`pill ${host.reachable ? 'ok' : 'bad'}`}>
                      {host.reachable ? 'reporting' : 'unreachable'}
                    </span>
                  </td>
                  <td>
                    <span class={`pill ${host.connected ? 'ok' : 'bad'}`}>
                      {host.connected ? 'connected' : 'disconnected'}
                    </span>
                    {host.connectionError !== null && (
                      <div class="hint">{host.connectionError}</div>
                    )}
                  </td>
                  <td class="num">{count(host.backlog)}</td>
                  <td>{ago(host.lastSeenAt)}</td>
                  <td>{host.lastReconcileAt === null ? 'never' : ago(host.lastReconcileAt)}</td>
                  <td class="num">{count(tally?.instances ?? 0)}</td>
                  <td class="num">{count(tally?.tasks ?? 0)}</td>
                  <td class="num">{count(tally?.drift ?? 0)}</td>
                </tr>
              );
            })}
            {hosts !== null && hosts.length === 0 && (
              <tr>
                <td colSpan={10}>No host has reported yet.</td>
              </tr>
            )}
          </tbody>
        </table>
      </section>

      <section aria-labelledby="warnings">
        <h2 id="warnings">Warnings and tasks</h2>
        {summary.warnings.length === 0 && summary.tasks.length === 0 ? (
          <p>Every record agrees with its hypervisor and no task is running.</p>
        ) : (
          <ul class="list">
            {summary.tasks.slice(0, 50).map((instance) => (
              <li key={`t-${instance.uuid}`}>
                <span class="pill busy">{instance.taskState}</span>{' '}
                <a href={`#/instances/${instance.uuid}`}>{instance.name}</a> on {instance.host}
              </li>
            ))}
            {summary.warnings.slice(0, 50).map(({ instance, warning }) => (
              <li key={`w-${instance.uuid}`}>
                <span class="pill bad">{warning}</span>{' '}
                <a href={`#/instances/${instance.uuid}`}>{instance.name}</a>: the record says{' '}
                {instance.vmState}, the hypervisor {instance.powerState} ({instance.host})
              </li>
            ))}
          </ul>
        )}
      </section>
    </>
  );
}

function Counts(props: { total: number; counts: Map<string, number> }) {
  const rows = [...props.counts].sort(([, a], [, b]) => b - a);
  return (
    <table class="counts">
      <caption class="sr-only">Counts</caption>
      <tbody>
        {rows.map(([state, n]) => (
          <tr key={state}>
            <th scope="row">
              <span class={`state s-${state}`}>{state}</span>
            </th>
            <td class="num">{count(n)}</td>
            <td class="bar" aria-hidden="true">
              <Bar fraction={props.total === 0 ? 0 : n / props.total} />
            </td>
          </tr>
        ))}
        {rows.length === 0 && (
          <tr>
            <td>none</td>
          </tr>
        )}
      </tbody>
      <tfoot>
        <tr>
          <th scope="row">total</th>
          <td class="num">{count(props.total)}</td>
          <td />
        </tr>
      </tfoot>
    </table>
  );
}

/** A proportion bar drawn in SVG (no inline styles under the page's CSP). */
function Bar({ fraction }: { fraction: number }) {
  return (
    <svg class="bar" viewBox="0 0 100 8" preserveAspectRatio="none" role="presentation">
      <rect class="track" x="0" y="0" width="100" height="8" />
      <rect class="fill" x="0" y="0" width={Math.max(0.5, fraction * 100)} height="8" />
    </svg>
  );
}
