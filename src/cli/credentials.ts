// `hvsync hosts add|revoke NAME`, `hvsync readers add|revoke NAME` and `hvsync credentials`:
// host and reader tokens, through a running server's admin API (--server, with the admin token)
// or straight in its database (--db). The token is printed once, alone on stdout, so that
// `hvsync hosts add h1 > h1.token` keeps it; only its hash is stored.
import { existsSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';
import type { ApiCredential, ApiIssuedToken } from '../server/index.ts';
import type { CredentialStore, Store } from '../store/index.ts';
import { clientFor, common, run } from './commands.ts';
import type { CommonOptions } from './commands.ts';
import { table } from './format.ts';

type Kind = 'host' | 'reader';

interface CredentialOptions extends CommonOptions {
  readonly db?: string;
  readonly replace?: boolean;
}

export function registerCredentialCommands(program: Command): void {
  const hosts =
    program.commands.find((command) => command.name() === 'hosts') ?? program.command('hosts');

  const readers = program
    .command('readers')
    .description('reader tokens: read every route, change nothing (a dashboard, monitoring)');
  for (const [parent, kind] of [
    [hosts, 'host'],
    [readers, 'reader'],
  ] as const) {
    withDb(common(parent.command('add')))
      .description(
        kind === 'host'
          ? "issue the host's agent token, printed once (only its hash is stored)"
          : 'issue a reader token, printed once (only its hash is stored)',
      )
      .argument('<name>')
      .option('--replace', 'revoke the valid token, if any, and issue a new one')
      .action(
        run(async (name: string, _options: CredentialOptions, command: Command) => {
          // `hosts` lists with the same options (--server, --json...), and takes them wherever
          // they are on the line: they are read from both.
          const options = command.optsWithGlobals<CredentialOptions>();
          const issued = await issue(kind, name, options);
          if (options.json) printJson(issued);
          else process.stdout.write(`${issued.token}\n`);
          if (!options.json) process.stderr.write(usage(kind, name, options));
        }),
      );

    withDb(common(parent.command('revoke')))
      .description(`revoke the ${kind}'s token (within 5 s on every replica)`)
      .argument('<name>')
      .action(
        run(async (name: string, _options: CredentialOptions, command: Command) => {
          const options = command.optsWithGlobals<CredentialOptions>();
          const revoked = await revoke(kind, name, options);
          if (options.json) printJson(revoked);
          else process.stdout.write(`revoked the token of ${kind} '${name}'\n`);
        }),
      );
  }

  withDb(common(program.command('credentials')))
    .description('every host and reader credential, valid and revoked (never the tokens)')
    .action(
      run(async (options: CredentialOptions) => {
        const credentials = await list(options);
        if (options.json) printJson({ credentials });
        else process.stdout.write(`${credentialsTable(credentials)}\n`);
      }),
    );
}

function withDb(command: Command): Command {
  return command.option(
    '--db <url|file>',
    "the server's database itself (postgres:// URL or SQLite file) instead of its admin API",
  );
}

async function issue(
  kind: Kind,
  name: string,
  options: CredentialOptions,
): Promise<ApiIssuedToken> {
  const replace = options.replace === true;
  if (options.db === undefined) return clientFor(options).issueToken(kind, name, replace);
  const server = await import('../server/index.ts');
  const refusal = server.credentialNameRefusal(kind, name);
  if (refusal !== null) throw new InvalidArgumentError(refusal);
  return withStore(options.db, async (store) => {
    const result = await server.issueToken(store, kind, name, replace);
    if (!result.ok) throw new InvalidArgumentError(server.existsMessage(result.current));
    return { ...server.apiCredential(result.credential), token: result.token };
  });
}

async function revoke(
  kind: Kind,
  name: string,
  options: CredentialOptions,
): Promise<ApiCredential> {
  if (options.db === undefined) return clientFor(options).revokeToken(kind, name);
  const server = await import('../server/index.ts');
  return withStore(options.db, async (store) => {
    const revoked = await store.revokeCredential(kind, name);
    if (revoked === null) throw new InvalidArgumentError(server.noTokenMessage(kind, name));
    return server.apiCredential(revoked);
  });
}

async function list(options: CredentialOptions): Promise<ApiCredential[]> {
  if (options.db === undefined) return clientFor(options).credentials();
  const server = await import('../server/index.ts');
  return withStore(options.db, async (store) =>
    (await store.listCredentials()).map(server.apiCredential),
  );
}

async function withStore<T>(db: string, body: (store: CredentialStore) => Promise<T>): Promise<T> {
  const { isPostgresUrl, openStore, StoreError } = await import('../store/index.ts');
  // Opening a path that is not there would make a new, empty database and issue into it.
  if (!isPostgresUrl(db) && !existsSync(db)) {
    throw new InvalidArgumentError(`no database at ${db}: give the file hvsync all-in-one uses`);
  }
  let store: Store;
  try {
    store = await openStore(db);
  } catch (error) {
    if (error instanceof StoreError && error.code === 'locked') {
      throw new InvalidArgumentError(
        `${db} is in use by a running hvsync (an SQLite file is locked by the process that ` +
          'has it open): ask that hvsync through its admin API instead, with --server URL and ' +
          'its admin token (--token-file)',
      );
    }
    throw error;
  }
  try {
    return await body(store.credentials);
  } finally {
    await store.close();
  }
}

function usage(kind: Kind, name: string, options: CredentialOptions): string {
  // Through the API, the server the agent reports to is the one just asked.
  const server = options.db === undefined ? clientFor(options).server : 'URL';
  const ca = options.ca === undefined ? '' : ` --ca ${options.ca}`;
  return kind === 'host'
    ? `the token of host '${name}' is above, shown this once (only its hash is stored). Save it ` +
        "in a file only the agent's user can read, and start the agent with it:\n" +
        `  hvsync agent --server ${server} --token-file FILE --host ${name}${ca}\n`
    : `the token of reader '${name}' is above, shown this once (only its hash is stored). It ` +
        'reads every route and changes nothing: --token-file FILE or HVSYNC_TOKEN_FILE\n';
}

function credentialsTable(credentials: readonly ApiCredential[]): string {
  if (credentials.length === 0) return 'no host or reader tokens';
  return table(
    ['KIND', 'NAME', 'ISSUED', 'REVOKED'],
    credentials.map((c) => [c.kind, c.name, c.createdAt, c.revokedAt ?? '-']),
  );
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
