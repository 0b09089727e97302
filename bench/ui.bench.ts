// The dashboard with 100,000 instances, in Debian's Chromium: first paint, first table rows and
// the whole fleet listed (every page of the cursor API) on a cold load; then how long a change
// written to the store takes to show in the table (an update in view, and a new instance that
// sorts to the top, which re-sorts the 100,000), and a jump to the middle of the table.
// The store is SQLite, filled directly; the API server is the real one, without an engine.
//
//   npm run bench:ui -- [instances=100000] [loads=3] [updates=20]
// Prints a table and writes bench/results/ui.json. Not a test: numbers, no pass/fail.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import type { Page } from 'playwright-core';
import { ApiClient, fetchTransport } from '../src/client/index.ts';
import { ActionRejected, buildServer, listen } from '../src/server/index.ts';
import { openSqliteStore } from '../src/store/index.ts';
import type { InstanceRecord, SqliteStore, WriteResult } from '../src/store/index.ts';
import { CHROMIUM, launchBrowser } from '../test/support/browser.ts';
import { instanceFields } from '../test/support/records.ts';

const [instances = 100_000, loads = 3, updates = 20] = process.argv
  .slice(2)
  .map((arg) => Number.parseInt(arg, 10));

function uuidOf(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

function check(results: readonly WriteResult[]): InstanceRecord[] {
  return results.map((result) => {
    if (!result.ok) throw new Error(`a write was refused: ${result.reason}`);
    return result.instance;
  });
}

async function fill(store: SqliteStore): Promise<void> {
  const wave = 5_000;
  for (let start = 0; start < instances; start += wave) {
    const writes = [];
    for (let n = start; n < Math.min(instances, start + wave); n++) {
      const power = n % 50 === 0 ? 'paused' : n % 12 === 0 ? 'shutoff' : 'running';
      writes.push(
        store.write({
          kind: 'create',
          uuid: uuidOf(n + 1),
          fields: instanceFields({
            name: `vm-${String(n + 1).padStart(6, '0')}`,
            host: `host-${String(n % 10).padStart(2, '0')}`,
            powerState: power,
            vmState: power === 'running' ? 'active' : power === 'paused' ? 'paused' : 'stopped',
          }),
        }),
      );
    }
    check(await Promise.all(writes));
  }
}

interface Load {
  firstContentfulPaint: number;
  firstRows: number;
  allListed: number;
  heapMiB: number | null;
}

// Runs in the page before its own scripts: notes when the first row and the live state appear.
const MARKS = `(() => {
  const marks = {};
  globalThis.benchMarks = marks;
  new MutationObserver(() => {
    if (marks.firstRows === undefined && document.querySelector('tr[data-uuid]')) {
      marks.firstRows = performance.now();
    }
    if (marks.live === undefined && document.querySelector('[data-status="live"]')) {
      marks.live = performance.now();
    }
  }).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
})();`;

async function coldLoad(url: string): Promise<Load> {
  const browser = await launchBrowser();
  try {
    const { page, errors } = await browser.open();
    await page.addInitScript(MARKS);
    await page.goto(`${url}/#/instances`);
    await page.locator('[data-status="live"]').waitFor({ timeout: 120_000 });
    const marks = await page.evaluate(() => {
      const g = globalThis as unknown as {
        benchMarks: { firstRows: number; live: number };
        performance: {
          getEntriesByName(name: string): { startTime: number }[];
          memory?: { usedJSHeapSize: number };
        };
      };
      return {
        fcp: g.performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? NaN,
        firstRows: g.benchMarks.firstRows,
        live: g.benchMarks.live,
        heap: g.performance.memory?.usedJSHeapSize ?? null,
      };
    });
    if (errors.length > 0) throw new Error(`the page logged errors: ${errors.join('; ')}`);
    return {
      firstContentfulPaint: marks.fcp,
      firstRows: marks.firstRows,
      allListed: marks.live,
      heapMiB: marks.heap === null ? null : marks.heap / 2 ** 20,
    };
  } finally {
    await browser.close();
  }
}

/** Resolves in the page, with the page's Date.now(), once `selector` matches (with `text`). */
async function armed(page: Page, selector: string, text: string | null): Promise<void> {
  // A string, not a function: tsx would wrap a function's inner functions in a helper the page
  // does not have.
  await page.evaluate(`(() => {
    const selector = ${JSON.stringify(selector)};
    const text = ${JSON.stringify(text)};
    globalThis.seen = new Promise((resolve) => {
      const observer = new MutationObserver(() => {
        const element = document.querySelector(selector);
        if (element === null || (text !== null && element.textContent !== text)) return;
        observer.disconnect();
        resolve(Date.now());
      });
      observer.observe(document, { subtree: true, childList: true, characterData: true });
    });
  })()`);
}

async function seenAt(page: Page): Promise<number> {
  return page.evaluate(() => (globalThis as unknown as { seen: Promise<number> }).seen);
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

function summary(values: number[]): { p50: number; p95: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return { p50: percentile(sorted, 0.5), p95: percentile(sorted, 0.95), max: sorted.at(-1)! };
}

const ms = (value: number) => `${Math.round(value)} ms`;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hvsync-bench-ui-'));
  const store = await openSqliteStore(join(dir, 'ui.db'));
  const app = buildServer({
    store,
    registry: new Registry(),
    actions: {
      submit: async () => {
        throw new ActionRejected('unavailable', 'no engine in this benchmark');
      },
    },
    readiness: { check: () => ({ ready: true, reasons: [] }) },
  });
  try {
    let started = performance.now();
    await fill(store);
    console.log(`filled ${instances} instances in ${ms(performance.now() - started)}`);
    const { url } = await listen(app, '127.0.0.1:0');

    // The same listing from Node, no browser: what the server's side of "all listed" costs.
    const api = new ApiClient({ server: url, transport: fetchTransport });
    started = performance.now();
    let after: string | undefined;
    do {
      const page = await api.listInstances({ limit: 1000, after, includeDeleted: true });
      after = page.next ?? undefined;
    } while (after !== undefined);
    const listedFromNode = performance.now() - started;

    const cold: Load[] = [];
    for (let i = 0; i < loads; i++) cold.push(await coldLoad(url));

    const browser = await launchBrowser();
    const { page } = await browser.open();
    await page.goto(`${url}/#/instances`);
    await page.locator('[data-status="live"]').waitFor({ timeout: 120_000 });
    const inView: number[] = [];
    const created: number[] = [];
    for (let i = 0; i < updates; i++) {
      // vm-000002 is the second row of the name-sorted table: in view.
      const uuid = uuidOf(2);
      const current = (await store.getInstance(uuid))!;
      const power = current.powerState === 'running' ? 'paused' : 'running';
      await armed(page, `tr[data-uuid="${uuid}"] [data-field="powerState"]`, power);
      // From the write's call: its commit resolves in this process's loop, which also feeds the
      // watch stream, so on a busy machine the page can draw the row before the await returns.
      const issued = Date.now();
      check([
        await store.write({
          kind: 'update',
          uuid,
          expectedVersion: current.version,
          patch: { powerState: power, vmState: power === 'running' ? 'active' : 'paused' },
        }),
      ]);
      inView.push((await seenAt(page)) - issued);

      // Sorts first ('!' before letters): the whole table is selected and sorted again.
      const fresh = uuidOf(instances + 1 + i);
      await armed(page, `tr[data-uuid="${fresh}"]`, null);
      const createIssued = Date.now();
      check([
        await store.write({
          kind: 'create',
          uuid: fresh,
          fields: instanceFields({ name: `!new-${i}`, host: 'host-00' }),
        }),
      ]);
      created.push((await seenAt(page)) - createIssued);
    }

    // Straight to the middle of the table.
    const middle = Math.floor(instances / 2);
    await armed(page, `tr[aria-rowindex="${middle + 2}"]`, null);
    started = Date.now();
    await page.locator('.scroller').evaluate((element, top) => {
      (element as unknown as { scrollTop: number }).scrollTop = top;
    }, middle * 32);
    const jump = (await seenAt(page)) - started;
    await browser.close();

    const average = (key: keyof Load) =>
      cold.map((load) => load[key] ?? NaN).reduce((a, b) => a + b, 0) / cold.length;
    const update = summary(inView);
    const insert = summary(created);
    const rows: [string, string][] = [
      ['first contentful paint (cold, mean of loads)', ms(average('firstContentfulPaint'))],
      ['first table rows drawn', ms(average('firstRows'))],
      [`all ${instances.toLocaleString('en-US')} listed, live`, ms(average('allListed'))],
      ['  the same listing from Node, no browser', ms(listedFromNode)],
      ['page JS heap when live', `${average('heapMiB').toFixed(0)} MiB`],
      [
        'update in view: write → row redrawn p50 / p95 / max',
        `${ms(update.p50)} / ${ms(update.p95)} / ${ms(update.max)}`,
      ],
      [
        'new instance (re-sort): write → row drawn p50 / p95 / max',
        `${ms(insert.p50)} / ${ms(insert.p95)} / ${ms(insert.max)}`,
      ],
      [`jump to row ${middle.toLocaleString('en-US')} → rows drawn`, ms(jump)],
    ];
    const width = Math.max(...rows.map(([label]) => label.length));
    console.log(
      `\ndashboard, ${instances.toLocaleString('en-US')} instances, ${loads} cold loads, ` +
        `${updates} updates (${CHROMIUM}; load average ${loadavg()[0]!.toFixed(1)})`,
    );
    for (const [label, value] of rows) console.log(`  ${label.padEnd(width)}  ${value}`);
    mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
    writeFileSync(
      new URL('./results/ui.json', import.meta.url),
      JSON.stringify(
        { instances, loads: cold, inView, created, jump, loadavg: loadavg() },
        null,
        2,
      ),
    );
    console.log('\nwritten to bench/results/ui.json');
  } finally {
    await app.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
