// A real Chromium for dashboard tests (Debian's package, driven by playwright-core: no browser
// download). Absent, browser suites are skipped with how to install it, unless
// HVSYNC_REQUIRE_BROWSER=1 (or HVSYNC_REQUIRE_LIBVIRT=1, which CI sets) makes that a failure.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import type { BrowserContext, Page } from 'playwright-core';

export const CHROMIUM = process.env.HVSYNC_TEST_CHROMIUM ?? '/usr/bin/chromium';
export const BROWSER_REQUIRED =
  process.env.HVSYNC_REQUIRE_BROWSER === '1' || process.env.HVSYNC_REQUIRE_LIBVIRT === '1';
const INSTALL_HINT =
  'install it with `apt-get install -y chromium` (scripts/provision-browser.sh), or name another ' +
  'binary in HVSYNC_TEST_CHROMIUM';

/** Where screenshots go: a test artifact, not part of the sources (gitignored). */
export const SCREENSHOTS = fileURLToPath(
  new URL('../../test-results/screenshots/', import.meta.url),
);

/** node:test's describe for suites that need Chromium; see the file's header for absence. */
export function describeBrowser(name: string, fn: () => void | Promise<void>): void {
  if (existsSync(CHROMIUM)) {
    describe(name, fn);
    return;
  }
  describe(name, () => {
    const why = `no Chromium at ${CHROMIUM}`;
    if (BROWSER_REQUIRED) {
      test('Chromium is installed', () => assert.fail(`${why}; CI requires it: ${INSTALL_HINT}`));
    } else {
      test('needs Chromium', { skip: `${why}: ${INSTALL_HINT}` }, () => {});
    }
  });
}

export interface Browser {
  /** A new tab in a fresh profile, recording console errors and uncaught exceptions. */
  open(options?: { token?: string }): Promise<{ page: Page; errors: string[] }>;
  close(): Promise<void>;
}

/** Launches headless Chromium with a profile of its own, nothing fetched from the network. */
export async function launchBrowser(): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), 'hvsync-chromium-'));
  const contexts: BrowserContext[] = [];
  let count = 0;
  const launch = async () => {
    count += 1;
    const dir = join(profile, String(count));
    mkdirSync(dir);
    const context = await chromium.launchPersistentContext(dir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1366, height: 820 },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    contexts.push(context);
    return context;
  };
  return {
    async open(options = {}) {
      const context = await launch();
      if (options.token !== undefined) {
        // As if the user had typed it in this tab: sessionStorage, this origin only.
        await context.addInitScript((token: string) => {
          (globalThis as unknown as PageGlobals).sessionStorage.setItem('hvsync.token', token);
        }, options.token);
      }
      const page = context.pages()[0] ?? (await context.newPage());
      const errors: string[] = [];
      page.on('console', (message) => {
        if (message.type() === 'error') errors.push(message.text());
      });
      page.on('pageerror', (error) => errors.push(error.message));
      return { page, errors };
    },
    async close() {
      for (const context of contexts) await context.close().catch(() => undefined);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Saves a screenshot of the page under SCREENSHOTS. */
export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/**
 * The page's globals that tests touch inside page.evaluate (they compile without the DOM
 * library): cast globalThis to it there; the function runs in the page, so it can call nothing
 * of this file.
 */
export interface PageGlobals {
  readonly sessionStorage: {
    getItem(key: string): string | null;
    setItem(key: string, value: string): void;
  };
}
