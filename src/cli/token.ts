// The bearer token the client commands send: --token or --token-file, else $HVSYNC_TOKEN or
// $HVSYNC_TOKEN_FILE. A file keeps the token out of `ps` and shell history, as for the server.
import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';

export interface TokenOptions {
  readonly token?: string;
  readonly tokenFile?: string;
}

/** The command line wins over the environment; two sources at the same level are an error. */
export function clientToken(
  options: TokenOptions,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  if (options.token !== undefined && options.tokenFile !== undefined) {
    throw new InvalidArgumentError('give either --token or --token-file, not both');
  }
  if (options.tokenFile !== undefined) return readTokenFile(options.tokenFile);
  if (options.token !== undefined) return options.token || undefined;
  const token = env.HVSYNC_TOKEN || undefined;
  const tokenFile = env.HVSYNC_TOKEN_FILE || undefined;
  if (token !== undefined && tokenFile !== undefined) {
    throw new InvalidArgumentError('HVSYNC_TOKEN and HVSYNC_TOKEN_FILE are both set: unset one');
  }
  return tokenFile === undefined ? token : readTokenFile(tokenFile);
}

export function readTokenFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new InvalidArgumentError(`cannot read token file ${path}: ${(error as Error).message}`);
  }
  const token = text.trim();
  if (token === '') throw new InvalidArgumentError(`token file ${path} is empty`);
  return token;
}
