// Small hooks the pages share.
import { useEffect, useState } from 'preact/hooks';
import type { Fleet } from './fleet.ts';

/** Re-renders on every batch of fleet changes (at most once per animation frame). */
export function useFleet(fleet: Fleet): number {
  const [version, setVersion] = useState(fleet.version);
  useEffect(() => fleet.subscribe(() => setVersion(fleet.version)), [fleet]);
  return version;
}

export type Route =
  | { readonly page: 'overview' }
  | { readonly page: 'instances' }
  | { readonly page: 'instance'; readonly uuid: string }
  | { readonly page: 'activity' };

export function parseRoute(hash: string): Route {
  const path = hash.replace(/^#/, '') || '/';
  const instance = /^\/instances\/([0-9a-fA-F-]{36})$/.exec(path);
  if (instance !== null) return { page: 'instance', uuid: instance[1]!.toLowerCase() };
  if (path === '/instances') return { page: 'instances' };
  if (path === '/activity') return { page: 'activity' };
  return { page: 'overview' };
}

/** The page named by the URL's fragment (#/instances...), following back and forward. */
export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', onChange);
    return () => removeEventListener('hashchange', onChange);
  }, []);
  return route;
}

/** Calls `tick` now and every `ms` while mounted. */
export function useInterval(tick: () => void, ms: number, deps: unknown[]): void {
  useEffect(() => {
    tick();
    const timer = setInterval(tick, ms);
    return () => clearInterval(timer);
  }, deps);
}
