// The shell: finds out whether the server wants a token and whether it answers, then keeps one
// live copy of the fleet for every page.
import { useEffect, useMemo, useState } from 'preact/hooks';
import { ClientError } from '../../src/client/index.ts';
import type { ApiClient } from '../../src/client/index.ts';
import { Fleet } from './fleet.ts';
import type { FleetStatus } from './fleet.ts';
import { useFleet, useRoute } from './hooks.ts';
import { ActivityPage } from './pages/activity.tsx';
import { InstancePage } from './pages/instance.tsx';
import { InstancesPage } from './pages/instances.tsx';
import { TokenForm } from './pages/token.tsx';
import { OverviewPage } from './pages/overview.tsx';
import { clientFor, storedToken, storeToken } from './session.ts';

type Access =
  | { readonly kind: 'checking' }
  | { readonly kind: 'ready' }
  | { readonly kind: 'need-token'; readonly refused: boolean }
  | { readonly kind: 'unreachable'; readonly message: string };

const RETRY_MS = 3000;

export function App() {
  const [token, setToken] = useState(storedToken);
  const [access, setAccess] = useState<Access>({ kind: 'checking' });
  const api = useMemo(() => clientFor(token), [token]);

  useEffect(() => {
    let cancelled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const check = async () => {
      try {
        await api.hosts();
        if (!cancelled) setAccess({ kind: 'ready' });
      } catch (error) {
        if (cancelled) return;
        if (error instanceof ClientError && error.status === 401) {
          setAccess({ kind: 'need-token', refused: token !== undefined });
        } else {
          setAccess({ kind: 'unreachable', message: messageOf(error) });
          timer = setTimeout(() => void check(), RETRY_MS);
        }
      }
    };
    void check();
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [api, token]);

  const chooseToken = (value: string | undefined) => {
    storeToken(value);
    setAccess({ kind: 'checking' });
    setToken(value);
  };

  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      {access.kind === 'ready' ? (
        <Dashboard
          api={api}
          hasToken={token !== undefined}
          onForget={() => chooseToken(undefined)}
          onRefused={() => setAccess({ kind: 'need-token', refused: true })}
        />
      ) : (
        <>
          <Header />
          <main id="main" class="narrow">
            {access.kind === 'checking' && <p role="status">Connecting to hvsync…</p>}
            {access.kind === 'unreachable' && (
              <div class="banner error" role="alert">
                <strong>The hvsync server is unreachable.</strong> {access.message}. Retrying every{' '}
                {RETRY_MS / 1000} s.
              </div>
            )}
            {access.kind === 'need-token' && (
              <TokenForm refused={access.refused} onSubmit={(value) => chooseToken(value)} />
            )}
          </main>
        </>
      )}
    </>
  );
}

function Header(props: { children?: preact.ComponentChildren }) {
  return (
    <header class="top">
      <a class="brand" href="#/">
        hvsync
      </a>
      {props.children}
    </header>
  );
}

function Dashboard(props: {
  api: ApiClient;
  hasToken: boolean;
  onForget: () => void;
  onRefused: () => void;
}) {
  const { api } = props;
  const fleet = useMemo(() => new Fleet(api), [api]);
  useEffect(() => {
    fleet.start();
    return () => fleet.stop();
  }, [fleet]);
  useFleet(fleet);
  const route = useRoute();
  const { onRefused } = props;
  useEffect(() => {
    if (fleet.status.kind === 'unauthorized') onRefused();
  }, [fleet.status, onRefused]);

  const link = (href: string, label: string, current: boolean) => (
    <a href={href} aria-current={current ? 'page' : undefined}>
      {label}
    </a>
  );
  return (
    <>
      <Header>
        <nav aria-label="Pages">
          {link('#/', 'Overview', route.page === 'overview')}
          {link(
            '#/instances',
            'Instances',
            route.page === 'instances' || route.page === 'instance',
          )}
          {link('#/activity', 'Activity', route.page === 'activity')}
        </nav>
        <LiveIndicator status={fleet.status} />
        {props.hasToken && (
          <button type="button" class="quiet" onClick={props.onForget}>
            Forget token
          </button>
        )}
      </Header>
      <main id="main">
        {route.page === 'overview' && <OverviewPage api={api} fleet={fleet} />}
        {route.page === 'instances' && <InstancesPage fleet={fleet} />}
        {route.page === 'instance' && <InstancePage api={api} fleet={fleet} uuid={route.uuid} />}
        {route.page === 'activity' && <ActivityPage api={api} fleet={fleet} />}
      </main>
    </>
  );
}

function LiveIndicator({ status }: { status: FleetStatus }) {
  let text: string;
  let title: string;
  switch (status.kind) {
    case 'live':
      text = 'live';
      title = 'Following the watch stream';
      break;
    case 'loading':
      text = `loading ${status.loaded.toLocaleString('en-US')}…`;
      title = 'Listing every instance';
      break;
    case 'reconnecting':
      text = 'reconnecting…';
      title = status.reason;
      break;
    default:
      text = 'token refused';
      title = status.reason;
  }
  return (
    <span class={`live ${status.kind}`} role="status" title={title} data-status={status.kind}>
      <span class="dot" aria-hidden="true" />
      {text}
      {status.kind === 'reconnecting' && <span class="reason"> ({status.reason})</span>}
    </span>
  );
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
