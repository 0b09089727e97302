// PostgreSQL restarted under load, on a cluster of the test's own: an all-in-one with a simulated
// workload writes to it and an `hvsync server` replica (its own process) serves it to watchers.
// Both stay up, say not-ready while the database is down and ready after, the watchers see every
// revision once across the outage, and once the workload stops and a reconcile runs every record
// matches the simulated host with no transition recorded twice.
import { setMaxListeners } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { startService, type RunningService } from '../../src/app/index.ts';
import { HvsyncClient, type WatchSubscription } from '../../src/cli/client.ts';
import type { ApiTransition } from '../../src/server/index.ts';
import { effectivePower } from '../../src/sync/index.ts';
import { describePrivatePostgres, PrivatePostgres } from '../support/private-postgres.ts';
import { startServerProcess, type ServerProcess } from '../support/server-process.ts';

const INSTANCES = 30;
const WATCHERS = 5;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Readiness {
  readonly status: number;
  readonly reasons: readonly string[];
}

async function readiness(url: string): Promise<Readiness> {
  try {
    const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(5_000) });
    const body = (await response.json()) as { reasons?: string[] };
    return { status: response.status, reasons: body.reasons ?? [] };
  } catch (error) {
    // No answer at all is what a crashed or hung process gives: kept to fail the test.
    return { status: 0, reasons: [String(error)] };
  }
}

async function untilReady(url: string, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const answer = await readiness(url);
    if (answer.status === 200) return;
    if (Date.now() > deadline)
      assert.fail(`${what} never got ready again: ${JSON.stringify(answer)}`);
    await sleep(100);
  }
}

/** A watcher that resumes from its last revision whenever its stream ends or breaks. */
class Follower {
  readonly revisions: number[] = [];
  resumes = 0;
  private target: number | undefined;
  private stream: WatchSubscription | undefined;
  readonly done: Promise<void>;

  constructor(
    private readonly client: HvsyncClient,
    private since: number,
    signal: AbortSignal,
  ) {
    this.done = this.run(signal);
  }

  /** Stops once it has seen revision `target`. */
  finish(target: number): void {
    this.target = target;
    if (this.since >= target) this.stream?.close();
  }

  private get finished(): boolean {
    return this.target !== undefined && this.since >= this.target;
  }

  private async run(signal: AbortSignal): Promise<void> {
    for (;;) {
      try {
        this.stream = await this.client.watch({ since: this.since, signal });
        for await (const message of this.stream) {
          if (message.kind === 'end') {
            assert.equal(message.error.lastRevision, this.since, 'resume from the last revision');
            break;
          }
          this.revisions.push(message.change.revision);
          this.since = message.change.revision;
          if (this.finished) break;
        }
      } catch (error) {
        if (signal.aborted) throw error;
      }
      this.stream?.close();
      if (this.finished) return;
      if (signal.aborted) throw new Error(`watcher gave up at revision ${this.since}`);
      this.resumes += 1;
      await sleep(200);
    }
  }
}

/** The same transition recorded twice in a row (history is newest first). */
function duplicated(transitions: readonly ApiTransition[]): ApiTransition | undefined {
  return transitions.find((transition, i) => {
    const older = transitions[i + 1];
    return older !== undefined && JSON.stringify(older) === JSON.stringify(transition);
  });
}

describePrivatePostgres('PostgreSQL restarted under load', () => {
  test('both processes ride it out; watchers see no gap; records end equal to the host', async () => {
    const cluster = await PrivatePostgres.create();
    let service: RunningService | undefined;
    let replica: ServerProcess | undefined;
    const followers: Follower[] = [];
    const abandon = new AbortController();
    setMaxListeners(WATCHERS * 4, abandon.signal);
    const giveUp = setTimeout(() => abandon.abort(), 50_000);
    try {
      service = await startService({
        hypervisor: { kind: 'sim', instances: INSTANCES, ratePerSecond: 40 },
        db: cluster.url,
        listen: '127.0.0.1:0',
        policy: 'observe',
        reconcileIntervalMs: 2_000,
        logger: pino({ level: 'silent' }),
      });
      const sim = service.sim;
      assert.ok(sim !== undefined, 'the all-in-one runs a simulated host');
      replica = startServerProcess(['--db', cluster.url, '--listen', '127.0.0.1:0']);
      const replicaUrl = await replica.started();
      const client = new HvsyncClient({ server: replicaUrl });
      await untilReady(replicaUrl, 'the replica');

      const start = (await service.store.changesSince(Number.MAX_SAFE_INTEGER, 1)).latestRevision;
      for (let i = 0; i < WATCHERS; i += 1) {
        followers.push(new Follower(client, start, abandon.signal));
      }
      await sleep(1_500);

      // Readiness of both, watched through the outage.
      const seen = { replica: [] as Readiness[], allInOne: [] as Readiness[] };
      let watching = true;
      const watchReadiness = (async () => {
        while (watching) {
          const [onReplica, onAllInOne] = await Promise.all([
            readiness(replicaUrl),
            readiness(service!.url),
          ]);
          seen.replica.push(onReplica);
          seen.allInOne.push(onAllInOne);
          await sleep(100);
        }
      })();
      const beforeOutage = (await service.store.changesSince(Number.MAX_SAFE_INTEGER, 1))
        .latestRevision;
      await cluster.restart(3_000);
      await Promise.all([
        untilReady(replicaUrl, 'the replica'),
        untilReady(service.url, 'the all-in-one'),
      ]);
      watching = false;
      await watchReadiness;

      for (const [what, answers] of Object.entries(seen)) {
        assert.ok(
          answers.every((answer) => answer.status === 200 || answer.status === 503),
          `${what} answered /readyz throughout: ${JSON.stringify(answers.filter((a) => a.status === 0))}`,
        );
        const notReady = answers.filter((answer) => answer.status === 503);
        // The replica probes the database; the all-in-one learns of it only from a write that
        // fails, and a write may instead wait the short outage out on its connection.
        if (what !== 'allInOne') {
          assert.ok(
            notReady.length > 0,
            `${what} said it was not ready while the database was down`,
          );
        }
        assert.ok(
          notReady.every((answer) => answer.reasons.some((reason) => /database/.test(reason))),
          `${what} said why: ${JSON.stringify(notReady.map((answer) => answer.reasons))}`,
        );
      }

      // Load after the outage is recorded too, then the workload stops and a reconcile runs.
      await sleep(1_500);
      sim.stopWorkload();
      for (let round = 0; round < 50; round += 1) {
        await sim.settled();
        await service.engine.whenIdle();
        await sim.settled();
        const passes = service.engine.stats.passes;
        await service.engine.whenIdle();
        if (service.engine.stats.passes === passes) break;
      }
      await service.engine.reconcile();
      await service.engine.whenIdle();

      const latest = (await service.store.changesSince(Number.MAX_SAFE_INTEGER, 1)).latestRevision;
      assert.ok(latest > beforeOutage, 'changes were recorded after the restart');
      for (const follower of followers) follower.finish(latest);
      await Promise.all(followers.map((follower) => follower.done));
      const expected = Array.from({ length: latest - start }, (_, i) => start + 1 + i);
      for (const [index, follower] of followers.entries()) {
        assert.deepEqual(follower.revisions, expected, `watcher ${index}: every revision once`);
      }

      // Read as the engine reads a listing: a guest torn down by a crash is recorded as crashed.
      const truth = new Map(
        sim.list().map((instance) => [instance.uuid, effectivePower(instance, null).powerState]),
      );
      const records = (await client.listInstances({ limit: 1000 })).instances;
      assert.deepEqual(
        new Map(records.map((record) => [record.uuid, record.powerState])),
        truth,
        'every record equals the simulated host',
      );
      for (const record of records) {
        const history = await client.history(record.uuid, 1000);
        assert.equal(duplicated(history), undefined, `${record.uuid}: no transition twice`);
      }

      assert.equal(replica.child.exitCode, null, 'the replica is still running');
      assert.equal(replica.child.signalCode, null, 'the replica is still running');
    } catch (error) {
      // What the two servers said is most of what there is to go on when this fails.
      console.error(
        `PostgreSQL said:\n${cluster.output()}\nthe replica said:\n${replica?.output()}`,
      );
      throw error;
    } finally {
      clearTimeout(giveUp);
      abandon.abort();
      await Promise.allSettled(followers.map((follower) => follower.done));
      await replica?.stop();
      await service?.stop();
    }
  });
});
