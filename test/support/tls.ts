// TLS material for suites that serve HTTPS: a CA, a server certificate it signed (for 127.0.0.1
// and localhost), and an unrelated CA that must not be trusted, made by openssl when the suite is
// collected and removed after it. Without openssl: with HVSYNC_REQUIRE_LIBVIRT=1 (CI) the suite
// fails with one test saying so, otherwise it is skipped with the reason.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const OPENSSL_REQUIRED = process.env.HVSYNC_REQUIRE_LIBVIRT === '1';

const HINT = 'install openssl (Debian: apt-get install openssl) and put it on PATH';

export interface TestCertificates {
  /** The CA that signed the server's certificate: what a client gives as --ca. */
  readonly caCert: string;
  /** The server's certificate (the leaf alone, as a server usually serves it) and its key. */
  readonly serverCert: string;
  readonly serverKey: string;
  /** A CA that signed nothing the server holds. */
  readonly otherCaCert: string;
}

/** Why openssl cannot be run, or null when it can. */
function opensslMissing(): string | null {
  try {
    execFileSync('openssl', ['version'], { stdio: 'pipe' });
    return null;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === 'ENOENT'
      ? 'openssl is not on PATH'
      : `openssl does not run: ${(error as Error).message}`;
  }
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function openssl(args: readonly string[]): void {
  execFileSync('openssl', args, { stdio: 'pipe' });
}

function makeCa(dir: string, name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}-key.pem`);
  openssl([
    'req',
    '-x509',
    ...EC_KEY,
    '-days',
    '1',
    '-subj',
    `/CN=hvsync test ${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout',
    key,
    '-out',
    cert,
  ]);
  return { cert, key };
}

function makeCertificates(dir: string): TestCertificates {
  const ca = makeCa(dir, 'ca');
  const other = makeCa(dir, 'other-ca');
  const serverCert = join(dir, 'server.pem');
  const serverKey = join(dir, 'server-key.pem');
  openssl([
    'req',
    '-x509',
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    ...EC_KEY,
    '-days',
    '1',
    '-subj',
    '/CN=localhost',
    '-addext',
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-addext',
    'basicConstraints=critical,CA:FALSE',
    '-addext',
    'extendedKeyUsage=serverAuth',
    '-keyout',
    serverKey,
    '-out',
    serverCert,
  ]);
  return { caCert: ca.cert, serverCert, serverKey, otherCaCert: other.cert };
}

/** node:test's describe for suites that need certificates made by openssl. */
export function describeTls(name: string, fn: (certificates: TestCertificates) => void): void {
  const missing = opensslMissing();
  if (missing === null) {
    describe(name, () => {
      const dir = mkdtempSync(join(tmpdir(), 'hvsync-tls-'));
      after(() => rmSync(dir, { recursive: true, force: true }));
      fn(makeCertificates(dir));
    });
    return;
  }
  describe(name, () => {
    if (OPENSSL_REQUIRED) {
      test('openssl is available', () => {
        assert.fail(`${missing}; HVSYNC_REQUIRE_LIBVIRT=1 requires it: ${HINT}`);
      });
      return;
    }
    test('needs openssl', { skip: `${missing}: ${HINT}` }, () => {});
  });
}
