// Bearer tokens on the command line, for every command: --token or --token-file (a file keeps the
// token out of `ps` and shell history). The commands that serve or report (server, all-in-one,
// agent) take $HVSYNC_TOKEN and $HVSYNC_TOKEN_FILE as the options' defaults; the client commands
// fall back on them when neither option is given.
import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';

export interface TokenOptions {
  readonly token?: string;
  readonly tokenFile?: string;
}

/** --token and --token-file; `tokenDescription` says what --token is for in this command. */
export function withTokenOptions(command: Command, tokenDescription: string): Command {
  const env = process.env;
  return command
    .option('--token <token>', `${tokenDescription} (env HVSYNC_TOKEN)`, env.HVSYNC_TOKEN)
    .option(
      '--token-file <path>',
      'read the bearer token from a file (env HVSYNC_TOKEN_FILE)',
      env.HVSYNC_TOKEN_FILE,
    );
}

/** What --token means on a command that serves the API. */
export const SERVED_TOKEN = 'require this bearer token on the API';

/**
 * The token of a serving or reporting command: one of its options, or none. An empty token is
 * refused rather than taken as "no token", which on a server would mean no authentication.
 */
export function readToken(options: TokenOptions): string | undefined {
  const { token, tokenFile } = exclusive(options);
  if (token !== undefined) return checkedToken(token, '--token (or HVSYNC_TOKEN)');
  if (tokenFile === undefined) return undefined;
  if (tokenFile.trim() === '') {
    throw new InvalidArgumentError('--token-file (or HVSYNC_TOKEN_FILE) is empty: give a path');
  }
  return readTokenFile(tokenFile);
}

/** The token of a client command: the command line wins over the environment. */
export function clientToken(
  options: TokenOptions,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  const { token, tokenFile } = exclusive(options);
  if (tokenFile !== undefined) return readTokenFile(tokenFile);
  if (token !== undefined) return token || undefined;
  const fromEnv = env.HVSYNC_TOKEN || undefined;
  const fileFromEnv = env.HVSYNC_TOKEN_FILE || undefined;
  if (fromEnv !== undefined && fileFromEnv !== undefined) {
    throw new InvalidArgumentError('HVSYNC_TOKEN and HVSYNC_TOKEN_FILE are both set: unset one');
  }
  return fileFromEnv === undefined ? fromEnv : readTokenFile(fileFromEnv);
}

/** A token file's one word; a trailing newline is how files end, not part of the token. */
function readTokenFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new InvalidArgumentError(`cannot read token file ${path}: ${(error as Error).message}`);
  }
  return checkedToken(text.trim(), `token file ${path}`);
}

function exclusive(options: TokenOptions): TokenOptions {
  if (options.token !== undefined && options.tokenFile !== undefined) {
    throw new InvalidArgumentError('give either --token or --token-file, not both');
  }
  return options;
}

/** A bearer token is one non-empty word. */
function checkedToken(token: string, source: string): string {
  if (token.trim() === '') throw new InvalidArgumentError(`${source} is empty`);
  if (/\s/.test(token)) {
    throw new InvalidArgumentError(`${source} contains whitespace: a bearer token is one word`);
  }
  return token;
}
