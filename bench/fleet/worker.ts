// What both kinds of fleet process (full agents, writer-only hosts) do for the benchmark's parent:
// answer its requests over IPC in order, start hosts a few at a time, report, stop.
import type { FromWorker, Reply, Request, WorkerReport } from './messages.ts';

export interface FleetWorker {
  /** Keep one commit in this many for the latency match. */
  sampleEvery(n: number): void;
  startHost(
    host: string,
    server: string,
    serverIndex: number,
    token: string,
    instances: number,
  ): Promise<void>;
  /** Operations per second on each host; 0 stops them. */
  setRate(perHost: number, tickMs: number): void;
  report(): WorkerReport;
  stop(): Promise<void>;
}

/** Hosts started at once: each lists its records and creates its instances' first. */
const START_LANES = 8;

export function serveParent(worker: FleetWorker): void {
  const reply = (answer: Reply): void => {
    process.send!(answer);
  };
  process.on('message', ({ id, message }: Request) => {
    const answer = (result: FromWorker): void => reply({ id, message: result });
    void (async () => {
      try {
        switch (message.kind) {
          case 'start': {
            worker.sampleEvery(message.sampleEvery);
            const queue = [...message.hosts];
            const lanes = Array.from({ length: START_LANES }, async () => {
              for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
                const [host, index, token] = next;
                await worker.startHost(
                  host,
                  message.servers[index]!,
                  index,
                  token,
                  message.instances,
                );
              }
            });
            await Promise.all(lanes);
            answer({ kind: 'started' });
            break;
          }
          case 'rate':
            worker.setRate(message.perHost, message.tickMs);
            answer({ kind: 'ok' });
            break;
          case 'report':
            answer(worker.report());
            break;
          case 'stop':
            await worker.stop();
            answer({ kind: 'ok' });
            process.exit(0);
        }
      } catch (error) {
        answer({
          kind: 'error',
          message: error instanceof Error ? (error.stack ?? error.message) : String(error),
        });
      }
    })();
  });
  reply({ id: 'ready' });
}
