// The fleet benchmark's moving parts: agent processes driven over IPC, replicas that can be
// stopped and started again on their own ports, and CPU readings of processes by pid.
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startServerProcess, type ServerProcess } from '../../test/support/server-process.ts';
import { processCpuSeconds, runQueueWait, sumWaits } from '../service/support.ts';
import type { RunQueueWait } from '../service/support.ts';
import type { FromParent, FromWorker, Reply, Request, WorkerReport } from './messages.ts';

const tsxLoader = import.meta.resolve('tsx');
const workerFiles = {
  agents: fileURLToPath(new URL('./agents.ts', import.meta.url)),
  writers: fileURLToPath(new URL('./writers.ts', import.meta.url)),
};

/** One process of simulated hosts (full agents, or writers only); answers in order. */
export class AgentProcess {
  readonly child: ChildProcess;
  private readonly waiting = new Map<
    number,
    { resolve(message: FromWorker): void; reject(error: Error): void }
  >();
  private nextId = 0;
  private readonly ready: Promise<void>;

  /** `nice` above 0 starts the process under nice(1), every thread of it at that niceness. */
  constructor(kind: keyof typeof workerFiles = 'agents', nice = 0) {
    const loader = ['--import', tsxLoader];
    this.child = fork(workerFiles[kind], [], {
      ...(nice > 0
        ? { execPath: 'nice', execArgv: ['-n', String(nice), process.execPath, ...loader] }
        : { execArgv: loader }),
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let readyResolve!: () => void;
    this.ready = new Promise((resolve) => (readyResolve = resolve));
    this.child.on('message', (reply: Reply) => {
      if (reply.id === 'ready') {
        readyResolve();
        return;
      }
      const waiter = this.waiting.get(reply.id);
      this.waiting.delete(reply.id);
      const { message } = reply;
      if (message.kind === 'error') waiter?.reject(new Error(`agent process: ${message.message}`));
      else waiter?.resolve(message);
    });
  }

  async ask(message: FromParent): Promise<FromWorker> {
    await this.ready;
    const id = (this.nextId += 1);
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      const request: Request = { id, message };
      this.child.send(request);
    });
  }

  async report(): Promise<WorkerReport> {
    const answer = await this.ask({ kind: 'report' });
    if (answer.kind !== 'report') throw new Error(`expected a report, got ${answer.kind}`);
    return answer;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 30_000);
    await this.ask({ kind: 'stop' }).catch(() => {});
    await exited;
    clearTimeout(timer);
  }
}

/** A `hvsync server` replica that keeps its port across a stop and start. */
export class Replica {
  private process: ServerProcess | null = null;
  url = '';

  constructor(private readonly args: readonly string[]) {}

  get pid(): number | undefined {
    return this.process?.child.pid;
  }

  async start(): Promise<string> {
    const listen = this.url === '' ? '127.0.0.1:0' : new URL(this.url).host;
    this.process = startServerProcess([...this.args, '--listen', listen]);
    this.url = await this.process.started();
    return this.url;
  }

  async stop(): Promise<void> {
    await this.process?.stop();
    this.process = null;
  }
}

/**
 * CPU time of the PostgreSQL backends serving `database` (their process title names it),
 * seconds, and their wait for a CPU; the server's shared background processes serve everyone and
 * are left out.
 */
export function postgresBackends(database: string): {
  cpuSeconds: number;
  runQueue: RunQueueWait | null;
} {
  let cpuSeconds = 0;
  const waits: (RunQueueWait | null)[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'postgres') continue;
      if (!readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(` ${database} `)) continue;
      cpuSeconds += processCpuSeconds(Number(entry));
      waits.push(runQueueWait(Number(entry)));
    } catch {
      // The process ended while we looked.
    }
  }
  return { cpuSeconds, runQueue: sumWaits(waits) };
}

/** CPU seconds every core of the machine spent busy since boot (/proc/stat), whoever used them. */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const [user, nice, system, , iowait, irq, softirq, steal] = line
    .split(/\s+/)
    .slice(1)
    .map(Number);
  void iowait;
  return (user! + nice! + system! + irq! + softirq! + steal!) / 100;
}
