// `hvsync server` (or `hvsync agent`) run as a user runs it, as its own process, for tests and
// benchmarks of several replicas on one database and of agents killed mid-way.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const main = join(root, 'src', 'cli', 'main.ts');
const tsxLoader = import.meta.resolve('tsx');
const WAIT_MS = 20_000;

export interface ServerProcess {
  readonly child: ChildProcess;
  output(): string;
  /** Resolves with the URL it serves once it says so; fails with its output if it exits first. */
  started(): Promise<string>;
  /** Resolves with the exit code; kills it and fails after 20 s. */
  exit(): Promise<number | null>;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<number | null>;
}

/** Starts `hvsync server ARGS` with none of the caller's HVSYNC_* settings. */
export function startServerProcess(args: readonly string[]): ServerProcess {
  return startHvsyncProcess('server', args, /serving the control-plane API at (https?:\/\/\S+?)"/);
}

/**
 * Starts `hvsync COMMAND ARGS` with none of the caller's HVSYNC_* settings; `started()` resolves
 * with the first group of `ready` once its output matches.
 */
export function startHvsyncProcess(
  command: string,
  args: readonly string[],
  ready: RegExp,
  waitMs = WAIT_MS,
): ServerProcess {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('HVSYNC_') && value !== undefined) env[key] = value;
  }
  const child = spawn(process.execPath, ['--import', tsxLoader, main, command, ...args], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const exit = async (): Promise<number | null> => {
    const timer = setTimeout(() => child.kill('SIGKILL'), WAIT_MS);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  return {
    child,
    output: () => output,
    async started() {
      const deadline = Date.now() + waitMs;
      for (;;) {
        const match = ready.exec(output);
        if (match !== null) return match[1] ?? match[0];
        if (child.exitCode !== null || Date.now() > deadline) {
          child.kill('SIGKILL');
          throw new Error(`hvsync ${command} did not start; output:\n${output}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    exit,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exit();
    },
  };
}
