// HTTPS for the API: a certificate and its key, PEM. Checked before anything opens, so that a
// wrong pair is one clear line at start, not a handshake failure on every client later.
import { createSecureContext } from 'node:tls';
import { ServerError } from './types.ts';

export interface TlsFiles {
  /** PEM certificate (chain); `certName` and `keyName` say where each came from, for errors. */
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
  readonly certName?: string;
  readonly keyName?: string;
}

/** The `https` options for Fastify; throws `invalid-tls` for a pair Node cannot serve. */
export function tlsOptions(files: TlsFiles): { cert: string | Buffer; key: string | Buffer } {
  const certName = files.certName ?? 'the TLS certificate';
  const keyName = files.keyName ?? 'the TLS key';
  if (!String(files.cert).includes('-----BEGIN CERTIFICATE-----')) {
    throw new ServerError('invalid-tls', `${certName} is not a PEM certificate`);
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(String(files.key))) {
    throw new ServerError('invalid-tls', `${keyName} is not a PEM private key`);
  }
  try {
    createSecureContext({ cert: files.cert, key: files.key });
  } catch (error) {
    const reason =
      (error as NodeJS.ErrnoException).code === 'ERR_OSSL_X509_KEY_VALUES_MISMATCH'
        ? 'the key does not belong to the certificate'
        : (error as Error).message;
    throw new ServerError('invalid-tls', `cannot use ${certName} with ${keyName}: ${reason}`, {
      cause: error,
    });
  }
  return { cert: files.cert, key: files.key };
}
