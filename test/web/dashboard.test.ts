// The dashboard in a real Chromium against the all-in-one on the machine libvirtd's test driver:
// it loads clean, follows virsh changes live, shows a transition's cause, runs an action to its
// end, says when the token is wrong, and picks the watch up again after the server restarts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Page } from 'playwright-core';
import { startService, type RunningService } from '../../src/app/index.ts';
import { LibvirtClient, type Domain } from '../../src/libvirt/index.ts';
import { describeBrowser, launchBrowser, screenshot } from '../support/browser.ts';
import type { Browser, PageGlobals } from '../support/browser.ts';
import { describeLibvirt, uniqueName, virsh } from '../support/libvirt.ts';

const TOKEN = 'dashboard-test-token';
/** The promise: a hypervisor change is in the table within a second, without reload. */
const LIVE_MS = 1000;

describeLibvirt('dashboard', () => {
  describeBrowser('dashboard in Chromium on a real libvirtd', () => {
    let dir: string;
    let service: RunningService;
    let listen: string;
    let other: LibvirtClient;
    let domain: Domain;
    let name: string;
    let browser: Browser;
    let page: Page;
    let errors: string[];

    const start = async () =>
      startService({
        hypervisor: { kind: 'libvirt', uri: 'test+unix:///default' },
        db: join(dir, 'hvsync.db'),
        listen,
        policy: 'observe',
        reconcileIntervalMs: 0,
        token: TOKEN,
        logger: pino({ level: 'silent' }),
      });

    /** The table row of this test's domain (the search narrows the table to it). */
    const row = () => page.locator(`table.grid tr[data-uuid="${domain.uuid}"]`);

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'hvsync-dashboard-'));
      // Also keeps the test driver's domains alive between hvsync's connections.
      other = await LibvirtClient.connect({ uri: 'test+unix:///default' });
      name = uniqueName('hvsync-ui');
      domain = await other.create(
        await other.defineXml(
          `<domain type='test'><name>${name}</name><memory>8192</memory><os><type>hvm</type></os></domain>`,
        ),
      );
      listen = '127.0.0.1:0';
      service = await start();
      // A restart must come back on the same address for the open page to find it.
      listen = new URL(service.url).host;
      browser = await launchBrowser();
      ({ page, errors } = await browser.open({ token: TOKEN }));
    });
    after(async () => {
      await browser?.close();
      await service?.stop().catch(() => undefined);
      await other.destroy(domain).catch(() => undefined);
      await other.undefine(domain).catch(() => undefined);
      await other.close();
      rmSync(dir, { recursive: true, force: true });
    });

    test('the page loads with no console errors and goes live', async () => {
      await page.goto(`${service.url}/`);
      await page.getByRole('heading', { name: 'Fleet overview' }).waitFor();
      await page.locator('[data-status="live"]').waitFor();
      await page.getByRole('rowheader', { name: service.host }).first().waitFor();
      await screenshot(page, 'overview');
      assert.deepEqual(errors, []);
    });

    test('a virsh change appears in the table within a second, without a reload', async () => {
      await page.getByRole('link', { name: 'Instances' }).click();
      await page.getByRole('searchbox', { name: 'Search' }).fill(name);
      await row().locator('[data-field="powerState"]', { hasText: 'running' }).waitFor();
      // Gone if the page reloads.
      await page.evaluate(() => Object.assign(globalThis, { notReloaded: true }));

      await virsh(['suspend', name]);
      const changed = Date.now();
      await row()
        .locator('[data-field="powerState"]', { hasText: 'paused' })
        .waitFor({ timeout: LIVE_MS });
      console.log(`# virsh suspend → table row paused: ${Date.now() - changed} ms`);
      assert.equal(await page.evaluate(() => 'notReloaded' in globalThis), true);
      await screenshot(page, 'instances');
      assert.deepEqual(errors, []);
    });

    test('the instance page shows the new transition with its cause', async () => {
      await row().getByRole('link', { name }).click();
      await page.getByRole('heading', { name: new RegExp(name) }).waitFor();
      const entry = page.locator('ol.timeline li').first();
      await entry.getByText('running → paused').waitFor();
      assert.equal(await entry.getAttribute('data-cause'), 'event');
      await entry.getByText('out of band').waitFor();
      await entry.getByText(/detail: paused/).waitFor();
      await entry.getByText(/observed → recorded/).waitFor();
      assert.deepEqual(errors, []);
    });

    test('an allowed action button runs a task that finishes', async () => {
      // The engine's rules: a paused instance can be resumed, not paused again.
      assert.equal(
        await page.getByRole('button', { name: 'pause', exact: true }).isDisabled(),
        true,
      );
      await page.getByRole('button', { name: 'resume', exact: true }).click();
      await page.locator('[data-task="done"]').waitFor({ timeout: 20_000 });
      await page.getByRole('heading', { name: new RegExp(`${name} running`) }).waitFor();
      await page.locator('ol.timeline li[data-cause="action"]').first().waitFor();
      await screenshot(page, 'instance');
      const state = await other.getState(domain);
      assert.equal(state.state, 'running', 'libvirt says running');
      assert.deepEqual(errors, []);
    });

    test('the activity page lists the changes and charts the metrics', async () => {
      await page.getByRole('link', { name: 'Activity' }).click();
      await page.locator('ol.feed li', { hasText: name }).first().waitFor();
      await page.getByRole('img', { name: /Detection latency of \d+ changes/ }).waitFor();
      await page.getByRole('img', { name: /Events per second/ }).waitFor({ timeout: 10_000 });
      await screenshot(page, 'activity');
      assert.deepEqual(errors, []);
    });

    test('the watch reconnects after the server restarts', async () => {
      await page.getByRole('link', { name: 'Instances' }).click();
      await page.getByRole('searchbox', { name: 'Search' }).fill(name);
      await row().locator('[data-field="powerState"]', { hasText: 'running' }).waitFor();
      await service.stop();
      await page.locator('[data-status="reconnecting"]').waitFor();
      await screenshot(page, 'reconnecting');
      service = await start();
      await page.locator('[data-status="live"]').waitFor({ timeout: 20_000 });
      await virsh(['suspend', name]);
      await row().locator('[data-field="powerState"]', { hasText: 'paused' }).waitFor();
      assert.equal(await page.evaluate(() => 'notReloaded' in globalThis), true);
      // The browser logs the refused connections while the server was away; nothing else.
      const others = errors.filter((text) => !/ERR_CONNECTION_REFUSED|Failed to fetch/.test(text));
      assert.deepEqual(others, []);
    });

    test('a wrong token gets a clear message, the right one opens the dashboard', async () => {
      const fresh = await browser.open();
      await fresh.page.goto(`${service.url}/`);
      await fresh.page.getByText('requires a bearer token').waitFor();
      await fresh.page.getByLabel('API token').fill('not-the-token');
      await fresh.page.getByRole('button', { name: 'Open dashboard' }).click();
      await fresh.page.getByRole('alert').getByText('The server refused this token').waitFor();
      await screenshot(fresh.page, 'token-refused');
      await fresh.page.getByLabel('API token').fill(TOKEN);
      await fresh.page.getByRole('button', { name: 'Open dashboard' }).click();
      await fresh.page.locator('[data-status="live"]').waitFor();
      assert.equal(
        await fresh.page.evaluate(() =>
          (globalThis as unknown as PageGlobals).sessionStorage.getItem('hvsync.token'),
        ),
        TOKEN,
        'kept for the tab',
      );
    });
  });
});
