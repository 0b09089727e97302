// The dashboard's static shell: index.html and its hashed assets, built into dist/web by
// `npm run build`. Public (they hold no data: every number on the page comes from the API with
// the user's token), and served under a strict Content-Security-Policy: nothing inline, nothing
// from elsewhere. Kept in memory: a few files, read once at start.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { apiError } from './errors.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Answered without the bearer token: the route serves nothing but public files. */
    public?: boolean;
  }
}

/** From src/server and from dist/server alike, the build's output folder. */
export const DASHBOARD_DIR = fileURLToPath(new URL('../../dist/web/', import.meta.url));

export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.map': 'application/json; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
};

interface Asset {
  readonly body: Buffer;
  readonly type: string;
  readonly etag: string;
}

function load(path: string): Asset {
  const body = readFileSync(path);
  const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`;
  return { body, type: TYPES[extname(path)] ?? 'application/octet-stream', etag };
}

/** Whether the request needs no bearer token (the dashboard's shell and assets). */
export function isPublicRoute(request: FastifyRequest): boolean {
  return request.routeOptions.config?.public === true;
}

/** Serves `/` and `/assets/*` from `dir` (default: the build's). */
export function registerDashboard(app: FastifyInstance, dir: string = DASHBOARD_DIR): void {
  const indexPath = join(dir, 'index.html');
  const index = existsSync(indexPath) ? load(indexPath) : null;
  const assets = new Map<string, Asset>();
  const assetDir = join(dir, 'assets');
  if (existsSync(assetDir)) {
    for (const name of readdirSync(assetDir)) assets.set(name, load(join(assetDir, name)));
  }

  const secure = (reply: FastifyReply) =>
    reply
      .header('content-security-policy', CONTENT_SECURITY_POLICY)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer');

  const send = (request: FastifyRequest, reply: FastifyReply, asset: Asset, cache: string) => {
    secure(reply).header('cache-control', cache).header('etag', asset.etag);
    if (request.headers['if-none-match'] === asset.etag) return reply.code(304).send();
    return reply.type(asset.type).send(asset.body);
  };

  const config = { public: true };
  const schema = { hide: true };
  app.get('/', { config, schema }, async (request, reply) => {
    if (index === null) {
      return reply
        .code(503)
        .send(apiError('unavailable', 'the dashboard is not built: run npm run build'));
    }
    // Revalidated on every load, so a new build's asset names are picked up at once.
    return send(request, reply, index, 'no-cache');
  });
  app.get<{ Params: { '*': string } }>('/assets/*', { config, schema }, async (request, reply) => {
    const asset = assets.get(request.params['*']);
    if (asset === undefined) {
      return reply.code(404).send(apiError('not-found', `no asset ${request.params['*']}`));
    }
    // Names carry their content's hash: a changed file is a new name.
    return send(request, reply, asset, 'public, max-age=31536000, immutable');
  });
}
