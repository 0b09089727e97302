// A listener child process of `npm run bench:peers`: started with one JSON argument, it says
// "ready" on stdout, and its last stdout line is its summary (see storm.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { ListenerArgs, ListenerSummary } from './storm.ts';

export class ListenerProcess {
  readonly ready: Promise<void>;
  readonly summary: Promise<ListenerSummary>;
  private readonly child: ChildProcess;
  private stderr = '';

  constructor(
    readonly label: string,
    command: string,
    commandArgs: readonly string[],
    args: ListenerArgs,
  ) {
    this.child = spawn(command, [...commandArgs, JSON.stringify(args)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      this.stderr = (this.stderr + text).slice(-4000);
    });
    const lines = createInterface({ input: this.child.stdout! });
    const exited = new Promise<never>((_, reject) => {
      this.child.once('error', reject);
      this.child.once('exit', (code, signal) =>
        reject(
          new Error(
            `${label} listener exited (${signal ?? `code ${code}`}) without a summary:\n${this.stderr}`,
          ),
        ),
      );
    });
    let onReady = (): void => {};
    let onSummary = (_summary: ListenerSummary): void => {};
    this.ready = Promise.race([new Promise<void>((resolve) => (onReady = resolve)), exited]);
    this.summary = Promise.race([
      new Promise<ListenerSummary>((resolve) => (onSummary = resolve)),
      exited,
    ]);
    // Whoever is not waiting on one of them yet must not see an unhandled rejection.
    this.ready.catch(() => undefined);
    this.summary.catch(() => undefined);
    lines.on('line', (line) => {
      if (line === 'ready') onReady();
      else if (line.startsWith('{')) onSummary(JSON.parse(line) as ListenerSummary);
    });
  }

  /** Asks the listener to report what it has now, delivered or not. */
  end(): void {
    this.child.stdin?.end('end\n');
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
