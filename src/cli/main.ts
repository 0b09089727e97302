// The hvsync command line. A command loads only what it uses: the client commands answer in a
// few tens of milliseconds because the service's stack (fastify, SQLite, metrics, the libvirt
// client) is imported inside the actions that need it.
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { registerAgent } from './agent.ts';
import { registerAllInOne } from './all-in-one.ts';
import { registerClientCommands } from './commands.ts';
import { registerCredentialCommands } from './credentials.ts';
import { registerServer } from './server.ts';
import { stopWithNpm } from './parent.ts';

/** Resolves the same from src/cli (run through tsx) and from dist/cli (the build). */
const packageJson = new URL('../../package.json', import.meta.url);
const { version } = JSON.parse(readFileSync(packageJson, 'utf8')) as { version: string };

const program = new Command('hvsync')
  .description('Keeps a VM control plane in step with the hypervisor, driven by its events.')
  .version(version, '-V, --version', 'print the version')
  .showHelpAfterError();

program
  .command('events')
  .description('print every lifecycle and reboot event as it arrives')
  .option('--uri <uri>', 'libvirt URI (default qemu:///system)', process.env.HVSYNC_HYPERVISOR)
  .option('--json', 'JSON lines instead of text')
  .action(async (options: { uri?: string; json?: boolean }) => {
    const { runEvents } = await import('./events.ts');
    process.exitCode = await runEvents(options);
  });

registerAllInOne(program);
registerServer(program);
registerAgent(program);

registerClientCommands(program);
registerCredentialCommands(program);

stopWithNpm();

try {
  await program.parseAsync(process.argv);
} catch (error) {
  process.stderr.write(`hvsync: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
