// The client commands: `hvsync instances ...`, the actions, `hvsync hosts` and `hvsync watch`,
// all talking to a running hvsync over API v1.
import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';
import type { ActionName, RecordedPowerState, VmState } from '../model/index.ts';
import type { ApiInstance, ApiWatchError } from '../server/index.ts';
import { ClientError, DEFAULT_SERVER, HvsyncClient } from './client.ts';
import type { WatchSubscription } from './client.ts';
import { historyTable, hostsTable, instanceDetails, instancesTable, watchLine } from './format.ts';
import { clientCa, type CaOptions } from './options.ts';
import { clientToken, type TokenOptions } from './token.ts';

export interface CommonOptions extends TokenOptions, CaOptions {
  readonly server?: string;
  readonly json?: boolean;
}

const ACTIONS = {
  start: 'power the instance on',
  stop: 'shut the instance down gracefully (forced off if it does not stop in time)',
  'force-stop': 'power the instance off at once',
  reboot: 'reboot the guest gracefully',
  'hard-reboot': 'power-cycle the instance',
  pause: 'pause the instance',
  resume: 'resume a paused instance',
} as const satisfies Record<ActionName, string>;

/** The engine gives up on a task after 120 s and records why; waiting a little longer shows that. */
const DEFAULT_WAIT_SECONDS = 150;
const POLL_MS = 500;

export function registerClientCommands(program: Command): void {
  const instances = program.command('instances').description('the instances hvsync keeps');

  common(instances.command('list'))
    .description('list instances (all but deleted ones, unless --all or --limit)')
    .option('--all', 'deleted instances too')
    .option('--host <name>', 'only instances on this host')
    .option('--vm-state <state>', 'only instances in this vmState (active, stopped, paused...)')
    .option('--power-state <state>', 'only this power state (running, shutoff, missing...)')
    .option('--limit <n>', 'at most n instances', positiveInteger)
    .option('--after <uuid>', 'start after this uuid (the `next` of a previous --json page)')
    .action(
      run(async (options: CommonOptions & ListOptions) => {
        const client = clientFor(options);
        const { instances, next } = await listAll(client, options);
        if (options.json) printJson({ instances, next });
        else print(instances.length === 0 ? 'no instances' : instancesTable(instances));
        if (!options.json && next !== null) {
          process.stderr.write(`more instances follow: --after ${next}\n`);
        }
      }),
    );

  common(instances.command('show'))
    .description('one instance')
    .argument('<uuid>')
    .action(
      run(async (uuid: string, options: CommonOptions) => {
        const instance = await clientFor(options).getInstance(uuid);
        if (options.json) printJson(instance);
        else print(instanceDetails(instance));
      }),
    );

  common(instances.command('history'))
    .description("an instance's power-state transitions, newest first")
    .argument('<uuid>')
    .option('--limit <n>', 'at most n transitions (default 100, up to 1000)', positiveInteger)
    .action(
      run(async (uuid: string, options: CommonOptions & { limit?: number }) => {
        const transitions = await clientFor(options).history(uuid, options.limit);
        if (options.json) printJson({ transitions });
        else print(transitions.length === 0 ? 'no transitions' : historyTable(transitions));
      }),
    );

  common(program.command('hosts'))
    .description('hypervisor hosts and their connection state')
    .action(
      run(async (options: CommonOptions) => {
        const hosts = await clientFor(options).hosts();
        if (options.json) printJson({ hosts });
        else print(hosts.length === 0 ? 'no hosts' : hostsTable(hosts));
      }),
    );

  for (const [action, description] of Object.entries(ACTIONS) as [ActionName, string][]) {
    common(program.command(action))
      .description(`${description}, and wait for the outcome`)
      .argument('<uuid>')
      .option('--no-wait', 'return once the task is accepted')
      .option(
        '--timeout <seconds>',
        `how long to wait for the outcome (default ${DEFAULT_WAIT_SECONDS})`,
        positiveNumber,
      )
      .action(
        run(async (uuid: string, options: CommonOptions & { wait: boolean; timeout?: number }) => {
          process.exitCode = await runAction(clientFor(options), action, uuid, options);
        }),
      );
  }

  common(program.command('watch'))
    .description('print every instance change as it happens, one line each (Ctrl-C to stop)')
    .option('--since <revision>', 'start after this revision (default: from now on)', revision)
    .action(
      run(async (options: CommonOptions & { since?: number }) => {
        process.exitCode = await runWatch(clientFor(options), options);
      }),
    );
}

interface ListOptions {
  readonly host?: string;
  readonly vmState?: string;
  readonly powerState?: string;
  readonly limit?: number;
  readonly after?: string;
  readonly all?: boolean;
}

export function common(command: Command): Command {
  return command
    .option('--server <url>', `hvsync API URL (default $HVSYNC_SERVER, else ${DEFAULT_SERVER})`)
    .option('--token <token>', 'bearer token (default $HVSYNC_TOKEN)')
    .option('--token-file <path>', 'read the bearer token from a file (default $HVSYNC_TOKEN_FILE)')
    .option('--ca <file>', 'trust this PEM CA certificate for an https server (default $HVSYNC_CA)')
    .option('--json', 'print JSON for scripts instead of tables');
}

export function clientFor(options: CommonOptions): HvsyncClient {
  return new HvsyncClient({
    server: options.server ?? (process.env.HVSYNC_SERVER || DEFAULT_SERVER),
    token: clientToken(options),
    ca: clientCa(options),
  });
}

/** Adds the hint people need to the one error they can fix with an option. */
export function run<A extends unknown[]>(
  body: (...args: A) => Promise<void>,
): (...args: A) => Promise<void> {
  return async (...args) => {
    try {
      await body(...args);
    } catch (error) {
      if (error instanceof ClientError && error.status === 401) {
        const hint = 'pass --token or --token-file, or set HVSYNC_TOKEN or HVSYNC_TOKEN_FILE';
        throw new ClientError('http', `${error.message}: ${hint}`, {
          status: 401,
          apiError: error.apiError,
        });
      }
      throw error;
    }
  };
}

async function listAll(
  client: HvsyncClient,
  options: ListOptions,
): Promise<{ instances: ApiInstance[]; next: string | null }> {
  const instances: ApiInstance[] = [];
  let after = options.after;
  for (;;) {
    const wanted = options.limit === undefined ? 1000 : options.limit - instances.length;
    const page = await client.listInstances({
      host: options.host,
      vmState: options.vmState as VmState | undefined,
      powerState: options.powerState as RecordedPowerState | undefined,
      limit: Math.min(1000, wanted),
      after,
      includeDeleted: options.all === true ? true : undefined,
    });
    instances.push(...page.instances);
    if (page.next === null) return { instances, next: null };
    if (options.limit !== undefined && instances.length >= options.limit) {
      return { instances, next: page.next };
    }
    after = page.next;
  }
}

type Outcome = 'succeeded' | 'failed' | 'timeout' | 'accepted';

async function runAction(
  client: HvsyncClient,
  action: ActionName,
  uuid: string,
  options: CommonOptions & { wait: boolean; timeout?: number },
): Promise<number> {
  const report = (outcome: Outcome, instance: ApiInstance, error: string | null): number => {
    if (options.json) {
      printJson({ action, uuid: instance.uuid, outcome, error, instance });
    } else if (outcome === 'succeeded') {
      print(`${action} ${instance.uuid}: done, ${instance.vmState}/${instance.powerState}`);
    } else if (outcome === 'accepted') {
      print(`${action} ${instance.uuid}: accepted, ${instance.taskState ?? 'already done'}`);
    } else {
      process.stderr.write(`hvsync: ${action} ${instance.uuid} ${error}\n`);
    }
    return outcome === 'succeeded' || outcome === 'accepted' ? 0 : 1;
  };

  if (!options.wait) {
    const accepted = await client.act(uuid, action);
    return report('accepted', accepted.instance, null);
  }

  const seconds = options.timeout ?? DEFAULT_WAIT_SECONDS;
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), seconds * 1000);
  let watch: WatchSubscription | null = null;
  try {
    // Watching before acting means the change that ends the task cannot slip past.
    watch = await client.watch({ signal: deadline.signal }).catch((error: unknown) => {
      if (error instanceof ClientError && error.code === 'unreachable') throw error;
      return null; // The action's own request will report anything that matters.
    });
    const accepted = await client.act(uuid, action);
    if (!options.json) {
      process.stderr.write(
        `${action} ${accepted.instance.uuid}: ${accepted.task.taskState ?? 'done'}...\n`,
      );
    }
    const final =
      accepted.instance.taskState === null
        ? accepted.instance
        : await taskEnd(client, watch, accepted.instance, deadline.signal);
    if (final === null) {
      const current = await client.getInstance(accepted.instance.uuid);
      return report(
        'timeout',
        current,
        `still ${current.taskState ?? 'in progress'} after ${seconds} s; the task goes on ` +
          `(hvsync instances show ${current.uuid} to follow it)`,
      );
    }
    if (final.taskError !== null) return report('failed', final, `failed: ${final.taskError}`);
    return report('succeeded', final, null);
  } finally {
    clearTimeout(timer);
    watch?.close();
  }
}

/** The instance once its task is over, or null at the deadline. */
async function taskEnd(
  client: HvsyncClient,
  watch: WatchSubscription | null,
  accepted: ApiInstance,
  deadline: AbortSignal,
): Promise<ApiInstance | null> {
  const ended = (instance: ApiInstance) =>
    instance.uuid === accepted.uuid &&
    instance.version > accepted.version &&
    instance.taskState === null;
  if (watch !== null) {
    try {
      for await (const message of watch) {
        if (message.kind === 'end') break;
        if (ended(message.change.instance)) return message.change.instance;
      }
    } catch (error) {
      if (!(error instanceof ClientError) || error.code === 'http') throw error;
      // The stream broke: polling below still finds the outcome.
    }
  }
  while (!deadline.aborted) {
    const current = await client.getInstance(accepted.uuid);
    if (ended(current)) return current;
    await sleep(POLL_MS, deadline);
  }
  return null;
}

async function runWatch(
  client: HvsyncClient,
  options: CommonOptions & { since?: number },
): Promise<number> {
  const stop = new AbortController();
  const interrupt = () => stop.abort();
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  // `hvsync watch | head` closes the pipe: that is the reader being done, not an error.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') stop.abort();
  });
  let since = options.since;
  let announced = false;
  try {
    for (;;) {
      let subscription: WatchSubscription;
      try {
        subscription = await client.watch({ since, signal: stop.signal });
      } catch (error) {
        if (stop.signal.aborted) return 0;
        throw error;
      }
      if (!announced && !options.json) {
        process.stderr.write(
          `watching ${client.server} from revision ${subscription.startRevision ?? since ?? 'now'} (Ctrl-C to stop)\n`,
        );
      }
      announced = true;
      since ??= subscription.startRevision ?? undefined;
      let end: ApiWatchError | null = null;
      for await (const message of subscription) {
        if (message.kind === 'end') {
          end = message.error;
          break;
        }
        since = message.change.revision;
        print(options.json ? JSON.stringify(message.change) : watchLine(message.change));
      }
      if (stop.signal.aborted) return 0;
      if (end?.error === 'too-slow') {
        // The server dropped us for falling behind; it says where to pick up.
        since = end.lastRevision;
        continue;
      }
      if (end !== null) throw new ClientError('http', `watch ended: ${end.message}`);
      throw new ClientError('unreachable', `lost the watch stream from ${client.server}`);
    }
  } finally {
    process.off('SIGINT', interrupt);
    process.off('SIGTERM', interrupt);
  }
}

function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

function positiveInteger(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < 1) {
    throw new InvalidArgumentError('expected a whole number of at least 1');
  }
  return value;
}

function revision(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value)) {
    throw new InvalidArgumentError('expected a revision number (0 or more)');
  }
  return value;
}

function positiveNumber(text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) {
    throw new InvalidArgumentError('expected a number of seconds greater than 0');
  }
  return value;
}
