// One instance: its record, its transitions as a timeline (cause, detail, out-of-band, how long
// the change took to be recorded), and the actions the engine's own rules allow now.
import { useEffect, useState } from 'preact/hooks';
import { ClientError } from '../../../src/client/index.ts';
import type { ApiClient } from '../../../src/client/index.ts';
import type { ActionName } from '../../../src/model/index.ts';
import type { ApiInstance, ApiTransition } from '../../../src/server/index.ts';
import { actionChoices, taskOutcome, warningOf } from '../derive.ts';
import type { Fleet } from '../fleet.ts';
import { duration, time } from '../format.ts';
import { useFleet } from '../hooks.ts';

interface Task {
  readonly action: ActionName;
  readonly state: 'submitting' | 'running' | 'done' | 'failed';
  readonly text: string;
}

export function InstancePage(props: { api: ApiClient; fleet: Fleet; uuid: string }) {
  const { api, fleet, uuid } = props;
  useFleet(fleet);
  const live = fleet.instances.get(uuid);
  const [fetched, setFetched] = useState<ApiInstance | null>(null);
  const [history, setHistory] = useState<ApiTransition[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [task, setTask] = useState<Task | null>(null);
  const instance = live !== undefined && live.version >= (fetched?.version ?? 0) ? live : fetched;

  // The record and its history, read again whenever the live copy moves to a new version.
  const version = live?.version ?? 0;
  useEffect(() => {
    let cancelled = false;
    Promise.all([api.getInstance(uuid), api.history(uuid, 100)]).then(
      ([record, transitions]) => {
        if (cancelled) return;
        setFetched(record);
        setHistory(transitions);
        setError(null);
      },
      (failure: unknown) => {
        if (cancelled) return;
        setError(
          failure instanceof ClientError && failure.status === 404
            ? `No instance ${uuid}.`
            : failure instanceof Error
              ? failure.message
              : String(failure),
        );
      },
    );
    return () => {
      cancelled = true;
    };
  }, [api, uuid, version]);

  // A running task ends when the record's taskState clears.
  useEffect(() => {
    if (task?.state !== 'running' || instance === null || instance.taskState !== null) return;
    const outcome = taskOutcome(task.action, instance);
    setTask({ action: task.action, state: outcome.ok ? 'done' : 'failed', text: outcome.text });
  }, [task, instance]);

  const act = async (action: ActionName) => {
    setTask({ action, state: 'submitting', text: 'submitting…' });
    try {
      const accepted = await api.act(uuid, action);
      setTask({ action, state: 'running', text: accepted.task.taskState ?? 'running' });
    } catch (failure) {
      setTask({
        action,
        state: 'failed',
        text: failure instanceof Error ? failure.message : String(failure),
      });
    }
  };

  if (instance === null) {
    return (
      <>
        <p>
          <a href="#/instances">← Instances</a>
        </p>
        {error === null ? (
          <p role="status">Loading…</p>
        ) : (
          <p class="banner error" role="alert">
            {error}
          </p>
        )}
      </>
    );
  }
  const warning = warningOf(instance);
  return (
    <>
      <p>
        <a href="#/instances">← Instances</a>
      </p>
      <h1>
        {instance.name}{' '}
        <span
          class={`state s-${instance.powerState}`}
          data-field="powerState"
          title={instance.powerStateStale ? 'last known: its host is not reporting' : undefined}
        >
          {instance.powerState}
          {instance.powerStateStale ? '?' : ''}
        </span>
      </h1>
      {error !== null && (
        <p class="banner error" role="alert">
          {error}
        </p>
      )}
      <div class="cards">
        <section class="card" aria-labelledby="record">
          <h2 id="record">Record</h2>
          <dl class="record">
            <dt>UUID</dt>
            <dd>
              <code>{instance.uuid}</code>
            </dd>
            <dt>Host</dt>
            <dd>{instance.host}</dd>
            <dt>vmState</dt>
            <dd>{instance.vmState}</dd>
            <dt>powerState</dt>
            <dd>
              {instance.powerState} <span class="hint">({instance.powerReason})</span>
            </dd>
            <dt>taskState</dt>
            <dd data-field="taskState">{instance.taskState ?? 'none'}</dd>
            {instance.taskError !== null && (
              <>
                <dt>Last task error</dt>
                <dd>{instance.taskError}</dd>
              </>
            )}
            <dt>Policy</dt>
            <dd>{instance.policy ?? 'the host’s'}</dd>
            <dt>Updated</dt>
            <dd>{time(instance.updatedAt)}</dd>
            <dt>Version</dt>
            <dd>{instance.version}</dd>
          </dl>
          {warning !== null && (
            <p class="banner warn">
              <strong>{warning}</strong>: the record says {instance.vmState}, the hypervisor{' '}
              {instance.powerState}.
            </p>
          )}
        </section>
        <section class="card" aria-labelledby="actions">
          <h2 id="actions">Actions</h2>
          <div class="actions">
            {actionChoices(instance).map(({ action, refusal }) => (
              <button
                key={action}
                type="button"
                disabled={refusal !== null || task?.state === 'submitting'}
                title={refusal ?? `${action} ${instance.name}`}
                onClick={() => void act(action)}
              >
                {action}
              </button>
            ))}
          </div>
          <p class="hint">Allowed by the same rules the engine checks.</p>
          {task !== null && (
            <p class={`task ${task.state}`} role="status" data-task={task.state}>
              <strong>{task.action}</strong>: {task.state === 'running' ? 'in flight, ' : ''}
              {task.text}
            </p>
          )}
        </section>
      </div>
      <section aria-labelledby="timeline">
        <h2 id="timeline">History</h2>
        {history === null ? (
          <p role="status">Loading…</p>
        ) : history.length === 0 ? (
          <p>No transition recorded yet.</p>
        ) : (
          <ol class="timeline">
            {history.map((transition, index) => (
              <TimelineEntry key={`${transition.recordedAt}-${index}`} transition={transition} />
            ))}
          </ol>
        )}
      </section>
    </>
  );
}

function TimelineEntry({ transition }: { transition: ApiTransition }) {
  const latency = Date.parse(transition.recordedAt) - Date.parse(transition.observedAt);
  const vmChanged = transition.vmStateFrom !== transition.vmStateTo;
  return (
    <li data-cause={transition.cause}>
      <time dateTime={transition.recordedAt}>{time(transition.recordedAt)}</time>
      <div>
        <span class={`cause c-${transition.cause}`}>{transition.cause}</span>{' '}
        <strong>
          {transition.from ?? '—'} → {transition.to}
        </strong>
        {vmChanged && (
          <span>
            {' '}
            (vmState {transition.vmStateFrom ?? '—'} → {transition.vmStateTo})
          </span>
        )}
        {transition.outOfBand && <span class="pill warn">out of band</span>}
      </div>
      <div class="hint">
        {transition.detail !== '' && <>detail: {transition.detail} · </>}
        observed → recorded: {Number.isFinite(latency) ? duration(latency) : '—'}
      </div>
    </li>
  );
}
