#!/usr/bin/env node
// Runs every test file under test/ with Node's own test runner (TypeScript through tsx).
// Libvirt suites need a reachable libvirtd: without one they are skipped (and said so at the
// end), unless HVSYNC_REQUIRE_LIBVIRT=1, which CI sets, turns their absence into failures. The
// PostgreSQL suites do the same with HVSYNC_TEST_PG (HVSYNC_REQUIRE_POSTGRES=1 or the libvirt one),
// and the browser suites with Chromium (HVSYNC_REQUIRE_BROWSER=1 or the libvirt one).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join, relative } from 'node:path';
import { fileURLToPath, URL } from 'node:url';
import { setTimeout, clearTimeout } from 'node:timers';
import { daemonsGone, machineLibvirtdIdentity } from './machine-libvirtd.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));

function findTests(dir) {
  const found = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...findTests(path));
    else if (entry.name.endsWith('.test.ts')) found.push(path);
  }
  return found.sort();
}

const filters = process.argv.slice(2);
const files = findTests(join(root, 'test'))
  .map((path) => relative(root, path))
  .filter((path) => filters.length === 0 || filters.some((f) => path.includes(f)));
if (files.length === 0) {
  console.error(`no test files match ${filters.join(' ')}`);
  process.exit(1);
}

const socket = process.env.HVSYNC_TEST_SOCKET ?? '/var/run/libvirt/libvirt-sock';
const required = process.env.HVSYNC_REQUIRE_LIBVIRT === '1';

/** Whether anything accepts a connection at `options` (a unix path or a TCP port and host). */
function accepts(options) {
  return new Promise((resolve) => {
    const probe = connect(options);
    const timer = setTimeout(() => done(false), 2000);
    function done(accepted) {
      clearTimeout(timer);
      probe.destroy();
      resolve(accepted);
    }
    probe.on('connect', () => done(true));
    probe.on('error', () => done(false));
  });
}
// A socket file outlives a killed libvirtd, so ask whether anything accepts on it.
// test/support/libvirt.ts makes the per-suite decision (it also waits for an RPC answer); this is
// only for the closing note.
const reachable = await accepts({ path: socket });
// Tests may stop and restart only daemons of their own; the machine's may serve someone's guests.
const machineDaemonsBefore = machineLibvirtdIdentity();

// Only for the closing note too: test/support/postgres.ts decides per test file.
const pgServer = new URL(
  process.env.HVSYNC_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/postgres',
);
const pgRequired = required || process.env.HVSYNC_REQUIRE_POSTGRES === '1';
const pgReachable = await accepts({
  host: pgServer.hostname || '127.0.0.1',
  port: Number(pgServer.port || 5432),
});

// Only for the closing note too: test/support/browser.ts decides per suite.
const chromium = process.env.HVSYNC_TEST_CHROMIUM ?? '/usr/bin/chromium';
const browserRequired = required || process.env.HVSYNC_REQUIRE_BROWSER === '1';
const browserPresent = existsSync(chromium);

const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-reporter=spec', ...files],
  { cwd: root, stdio: 'inherit', env: process.env },
);

if (!reachable && !required) {
  console.log(
    `\nnote: libvirt suites were skipped: libvirtd does not answer on ${socket}.\n` +
      '      Run scripts/provision-libvirt.sh as root (Debian 12) to install and start libvirtd\n' +
      '      (scripts/libvirtd.sh start if it is installed), then npm test again;\n' +
      '      HVSYNC_REQUIRE_LIBVIRT=1 makes their absence a failure.',
  );
}
if (!pgReachable && !pgRequired) {
  console.log(
    `\nnote: PostgreSQL suites were skipped: nothing answers on ${pgServer.host}.\n` +
      '      Start PostgreSQL 15 there (trust auth for user postgres) or name another server in\n' +
      '      HVSYNC_TEST_PG; HVSYNC_REQUIRE_POSTGRES=1 makes its absence a failure.',
  );
}
if (!browserPresent && !browserRequired) {
  console.log(
    `\nnote: browser suites were skipped: no Chromium at ${chromium}.\n` +
      '      Run scripts/provision-browser.sh as root (Debian: apt-get install -y chromium) or name\n' +
      '      another binary in HVSYNC_TEST_CHROMIUM; HVSYNC_REQUIRE_BROWSER=1 makes its absence a failure.',
  );
}
const machineDaemonsAfter = machineLibvirtdIdentity();
if (daemonsGone(machineDaemonsBefore, machineDaemonsAfter).length > 0) {
  console.error(
    "\nFAIL: the machine's libvirt daemon was stopped or restarted during the tests.\n" +
      `      before: ${machineDaemonsBefore.join('; ') || 'none running'}\n` +
      `      after:  ${machineDaemonsAfter.join('; ') || 'none running'}\n` +
      '      Suites that take libvirtd away must use test/support/private-libvirtd.ts.',
  );
  process.exit(1);
}
process.exit(result.status ?? 1);
