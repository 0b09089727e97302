// Which methods a path has routes for, so that a known path asked with another method is told
// 405 with Allow instead of 404.
export class RouteMethods {
  private readonly routes: { readonly pattern: RegExp; readonly methods: Set<string> }[] = [];

  add(url: string, method: string | readonly string[]): void {
    const source = `^${url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:\w+/g, '[^/]+')}$`;
    let route = this.routes.find((known) => known.pattern.source === source);
    if (route === undefined) {
      route = { pattern: new RegExp(source), methods: new Set() };
      this.routes.push(route);
    }
    for (const one of typeof method === 'string' ? [method] : method) route.methods.add(one);
  }

  /** The methods routed for `path`, sorted; empty when no route has that path. */
  allowedFor(path: string): string[] {
    const allowed = new Set<string>();
    for (const route of this.routes) {
      if (route.pattern.test(path)) for (const method of route.methods) allowed.add(method);
    }
    return [...allowed].sort();
  }
}
