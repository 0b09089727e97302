// The dashboard's static shell as the API server serves it: public files under a strict CSP and
// the right caching, while every API route still wants the token.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONTENT_SECURITY_POLICY } from '../../src/server/dashboard.ts';
import { startServer } from './harness.ts';
import type { Harness } from './harness.ts';

const dir = mkdtempSync(join(tmpdir(), 'hvsync-dashboard-'));
mkdirSync(join(dir, 'assets'));
writeFileSync(
  join(dir, 'index.html'),
  '<!doctype html><script src="/assets/main-ABC.js"></script>',
);
writeFileSync(join(dir, 'assets', 'main-ABC.js'), 'console.log(1)');
writeFileSync(join(dir, 'assets', 'main-ABC.css'), 'body{}');

describe('dashboard static files', () => {
  let harness: Harness;
  let bare: Harness;
  before(async () => {
    harness = await startServer({ token: 'sesame', dashboardDir: dir });
    bare = await startServer({ dashboardDir: join(dir, 'absent') });
  });
  after(async () => {
    await harness.close();
    await bare.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('index.html is public, no-cache, under a strict CSP', async () => {
    const response = await fetch(`${harness.url}/`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(response.headers.get('cache-control'), 'no-cache');
    const csp = response.headers.get('content-security-policy') ?? '';
    assert.equal(csp, CONTENT_SECURITY_POLICY);
    assert.match(csp, /default-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
    assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
    assert.match(await response.text(), /main-ABC\.js/);
  });

  test('a revalidation with the same ETag is a 304', async () => {
    const first = await fetch(`${harness.url}/`);
    const etag = first.headers.get('etag')!;
    await first.arrayBuffer();
    const again = await fetch(`${harness.url}/`, { headers: { 'if-none-match': etag } });
    assert.equal(again.status, 304);
  });

  test('hashed assets are immutable and typed; an unknown one is a 404', async () => {
    const script = await fetch(`${harness.url}/assets/main-ABC.js`);
    assert.equal(script.status, 200);
    assert.equal(script.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.equal(script.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    const style = await fetch(`${harness.url}/assets/main-ABC.css`);
    assert.equal(style.headers.get('content-type'), 'text/css; charset=utf-8');
    const missing = await fetch(`${harness.url}/assets/nope.js`);
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { error: string }).error, 'not-found');
    const escape = await fetch(`${harness.url}/assets/..%2Findex.html`);
    assert.equal(escape.status, 404);
  });

  test('the API still wants the token, and the shell is not in the OpenAPI document', async () => {
    assert.equal((await fetch(`${harness.url}/v1/instances`)).status, 401);
    assert.equal((await fetch(`${harness.url}/metrics`)).status, 401);
    const doc = await fetch(`${harness.url}/openapi.json`, {
      headers: { authorization: 'Bearer sesame' },
    });
    const paths = Object.keys(((await doc.json()) as { paths: object }).paths);
    assert.ok(!paths.includes('/') && !paths.some((path) => path.startsWith('/assets')));
  });

  test('without a build, / says how to build it', async () => {
    const response = await fetch(`${bare.url}/`);
    assert.equal(response.status, 503);
    assert.match(((await response.json()) as { message: string }).message, /npm run build/);
  });

  test('the real build names its hashed assets in index.html', async () => {
    const real = await startServer();
    try {
      const html = await (await fetch(`${real.url}/`)).text();
      const names = [...html.matchAll(/\/assets\/([^"]+)"/g)].map((m) => m[1]!);
      assert.ok(
        names.some((name) => /^main-[A-Z0-9]+\.js$/.test(name)),
        html,
      );
      assert.ok(
        names.some((name) => /^main-[A-Z0-9]+\.css$/.test(name)),
        html,
      );
      for (const name of names) {
        assert.equal((await fetch(`${real.url}/assets/${name}`)).status, 200, name);
      }
      assert.doesNotMatch(html, /<script>|<style|style=/, 'nothing inline');
    } finally {
      await real.close();
    }
  });
});
