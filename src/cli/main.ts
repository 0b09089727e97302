// The hvsync command line.
import { Command } from 'commander';
import { registerAllInOne } from './all-in-one.ts';
import { registerClientCommands } from './commands.ts';
import { runEvents } from './events.ts';

const program = new Command('hvsync')
  .description('Keeps a VM control plane in step with the hypervisor, driven by its events.')
  .showHelpAfterError();

program
  .command('events')
  .description('print every lifecycle and reboot event as it arrives')
  .option('--uri <uri>', 'libvirt URI (default qemu:///system)', process.env.HVSYNC_HYPERVISOR)
  .option('--json', 'JSON lines instead of text')
  .action(async (options: { uri?: string; json?: boolean }) => {
    process.exitCode = await runEvents(options);
  });

registerAllInOne(program);

registerClientCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  process.stderr.write(`hvsync: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
