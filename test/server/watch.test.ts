import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { get } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { create, patch, startServer, uuidOf, waitFor } from './harness.ts';
import type { Harness } from './harness.ts';
import type { ApiWatchError, ApiWatchEvent } from '../../src/server/index.ts';

interface SseMessage {
  id: string | null;
  event: string;
  data: string;
}

/** A watch client that keeps everything it receives; written from the SSE spec, not the CLI's. */
class Watch {
  readonly messages: SseMessage[] = [];
  readonly comments: string[] = [];
  status = 0;
  body = '';
  ended = false;
  private buffer = '';
  private fields: { id: string | null; event: string; data: string[] } = {
    id: null,
    event: 'message',
    data: [],
  };

  private constructor(readonly response: IncomingMessage) {
    this.status = response.statusCode ?? 0;
    response.setEncoding('utf8');
    response.on('data', (chunk: string) => {
      if (this.status !== 200) this.body += chunk;
      else this.parse(chunk);
    });
    response.on('end', () => (this.ended = true));
    response.on('close', () => (this.ended = true));
    response.on('error', () => (this.ended = true));
  }

  static open(h: Harness, query: string, headers: Record<string, string> = {}): Promise<Watch> {
    return new Promise((resolve, reject) => {
      const request = get(`${h.url}/v1/watch${query}`, { headers }, (response) =>
        resolve(new Watch(response)),
      );
      request.on('error', reject);
    });
  }

  get events(): ApiWatchEvent[] {
    return this.messages
      .filter((m) => m.event === 'instance')
      .map((m) => JSON.parse(m.data) as ApiWatchEvent);
  }

  get revisions(): number[] {
    return this.events.map((e) => e.revision);
  }

  get errors(): ApiWatchError[] {
    return this.messages
      .filter((m) => m.event === 'error')
      .map((m) => JSON.parse(m.data) as ApiWatchError);
  }

  until(what: string, condition: () => boolean, timeoutMs?: number): Promise<void> {
    return waitFor(what, condition, timeoutMs);
  }

  close(): void {
    this.response.destroy();
  }

  private parse(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).replace(/\r$/, '');
      this.buffer = this.buffer.slice(newline + 1);
      if (line === '') {
        if (this.fields.data.length > 0) {
          this.messages.push({
            id: this.fields.id,
            event: this.fields.event,
            data: this.fields.data.join('\n'),
          });
        }
        this.fields = { id: null, event: 'message', data: [] };
      } else if (line.startsWith(':')) {
        this.comments.push(line.slice(1).trim());
      } else {
        const colon = line.indexOf(':');
        const name = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (name === 'id') this.fields.id = value;
        else if (name === 'event') this.fields.event = value;
        else if (name === 'data') this.fields.data.push(value);
      }
    }
  }
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

async function metric(h: Harness, name: string, labels = ''): Promise<number> {
  const text = await h.registry.metrics();
  const escaped = `${name}${labels}`.replace(/[{}"]/g, (c) => `\\${c}`);
  const match = new RegExp(`^${escaped} (\\S+)$`, 'm').exec(text);
  return match === null ? 0 : Number(match[1]);
}

/**
 * Commits big changes to one instance, `batch` at a time, until the server has cut a watcher off
 * for falling behind; `afterRound` runs after each batch. Fails after `maxRounds`.
 */
async function writeUntilCutOff(
  h: Harness,
  uuid: string,
  {
    batch,
    maxRounds,
    afterRound,
  }: { batch: number; maxRounds: number; afterRound?: () => Promise<void> },
): Promise<void> {
  const name = 'n'.repeat(4000);
  for (
    let round = 0;
    (await metric(h, 'hvsync_watch_streams_ended_total', '{reason="too-slow"}')) === 0;
    round++
  ) {
    assert.ok(round < maxRounds, 'the server never cut the stalled stream off');
    const current = await h.store.getInstance(uuid);
    await Promise.all(
      Array.from({ length: batch }, (_, i) =>
        h.store.write({
          kind: 'update',
          uuid,
          expectedVersion: current!.version + i,
          patch: { name: `${name}${round}-${i}` },
        }),
      ),
    );
    await afterRound?.();
  }
}

describe('watch: replay and live', () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
    for (let n = 1; n <= 3; n++) await create(h.store, uuidOf(n), { name: `vm-${n}` });
    await patch(h.store, uuidOf(1), { powerState: 'shutoff', vmState: 'stopped' });
    await patch(h.store, uuidOf(2), { powerState: 'paused', vmState: 'paused' });
    // Revisions 1..5 now.
  });
  after(() => h.close());

  test('since=0 replays every change in order, then live changes follow with no gap', async () => {
    const watch = await Watch.open(h, '?since=0');
    try {
      assert.equal(watch.status, 200);
      assert.match(watch.response.headers['content-type'] ?? '', /^text\/event-stream/);
      await watch.until('replay', () => watch.events.length >= 5);
      assert.deepEqual(watch.revisions, range(1, 5));
      const first = watch.messages[0]!;
      assert.equal(first.id, '1');
      assert.equal(first.event, 'instance');
      assert.deepEqual(
        watch.events.map((e) => [e.type, e.instance.uuid]),
        [
          ['created', uuidOf(1)],
          ['created', uuidOf(2)],
          ['created', uuidOf(3)],
          ['updated', uuidOf(1)],
          ['updated', uuidOf(2)],
        ],
      );
      assert.equal(watch.events[3]!.instance.powerState, 'shutoff');
      assert.equal(watch.events[3]!.instance.version, 2);
      assert.match(watch.events[3]!.instance.updatedAt, /Z$/);

      await patch(h.store, uuidOf(3), { taskState: 'powering-off', taskStartedAt: Date.now() });
      await create(h.store, uuidOf(4));
      await watch.until('live changes', () => watch.events.length >= 7);
      assert.deepEqual(watch.revisions, range(1, 7));
      assert.equal(watch.events[5]!.instance.taskState, 'powering-off');
      assert.equal(watch.events[6]!.type, 'created');
    } finally {
      watch.close();
    }
  });

  test('resuming from a revision sends exactly what came after it', async () => {
    const latest = (await h.store.changesSince(0, 1)).latestRevision;
    const watch = await Watch.open(h, '?since=3');
    try {
      await watch.until('resume', () => watch.revisions.at(-1) === latest);
      assert.deepEqual(watch.revisions, range(4, latest));
    } finally {
      watch.close();
    }
    const caughtUp = await Watch.open(h, `?since=${latest}`);
    try {
      await patch(h.store, uuidOf(4), { powerReason: 'resumed-test' });
      await caughtUp.until('next change', () => caughtUp.events.length >= 1);
      assert.deepEqual(caughtUp.revisions, [latest + 1]);
    } finally {
      caughtUp.close();
    }
  });

  test('Last-Event-ID resumes, and wins over since (EventSource reconnects to the same URL)', async () => {
    const latest = (await h.store.changesSince(0, 1)).latestRevision;
    const watch = await Watch.open(h, '?since=0', { 'Last-Event-ID': String(latest - 2) });
    try {
      await watch.until('resume', () => watch.revisions.at(-1) === latest);
      assert.deepEqual(watch.revisions, [latest - 1, latest]);
    } finally {
      watch.close();
    }
    const bad = await Watch.open(h, '', { 'Last-Event-ID': 'yesterday' });
    await bad.until('400 body', () => bad.ended);
    assert.equal(bad.status, 400);
    assert.match(JSON.parse(bad.body).message, /last-event-id/);
  });

  test('without since only changes from now on arrive', async () => {
    const watch = await Watch.open(h, '');
    try {
      await watch.until('greeting', () => watch.comments.length > 0);
      assert.equal(watch.events.length, 0);
      const written = await patch(h.store, uuidOf(1), { powerReason: 'from-now' });
      await watch.until('the new change', () => watch.events.length >= 1);
      assert.equal(watch.events.length, 1);
      assert.equal(watch.events[0]!.instance.powerReason, 'from-now');
      assert.equal(watch.events[0]!.instance.version, written.version);
    } finally {
      watch.close();
    }
  });

  test("host=H replays and streams only the changes of H's instances, in order", async () => {
    const a = uuidOf(0xa01);
    const b = uuidOf(0xb01);
    await create(h.store, a, { host: 'filter-a' });
    await create(h.store, b, { host: 'filter-b' });
    const from = (await h.store.changesSince(0, 1)).latestRevision - 2;
    const watch = await Watch.open(h, `?since=${from}&host=filter-b`);
    try {
      await watch.until('replay of b', () => watch.events.length >= 1);
      // Live: one commit that holds changes of both hosts, then b alone.
      await Promise.all([
        patch(h.store, a, { powerReason: 'a-1' }),
        patch(h.store, b, { powerReason: 'b-1' }),
      ]);
      await patch(h.store, b, { powerReason: 'b-2' });
      await watch.until('live changes of b', () => watch.events.length >= 3);
      assert.deepEqual(
        watch.events.map((e) => [e.instance.uuid, e.instance.powerReason]),
        [
          [b, 'booted'],
          [b, 'b-1'],
          [b, 'b-2'],
        ],
      );
      const revisions = watch.revisions;
      assert.deepEqual(
        [...revisions].sort((x, y) => x - y),
        revisions,
      );
    } finally {
      watch.close();
    }
  });

  test('changes committed while a stream replays are all delivered once, in order', async () => {
    // A writer keeps committing while watchers start at different points of the log.
    let writing = true;
    const writer = (async () => {
      let n = 0;
      while (writing) {
        await patch(h.store, uuidOf(1 + (n % 4)), { powerReason: `burst-${n++}` });
      }
    })();
    const watches = await Promise.all([
      Watch.open(h, '?since=0'),
      Watch.open(h, '?since=2'),
      Watch.open(h, '?since=6'),
    ]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    writing = false;
    await writer;
    const latest = (await h.store.changesSince(0, 1)).latestRevision;
    try {
      for (const [i, from] of [0, 2, 6].entries()) {
        const watch = watches[i]!;
        await watch.until(`watch ${from} caught up`, () => watch.revisions.at(-1) === latest);
        assert.deepEqual(watch.revisions, range(from + 1, latest), `since=${from}`);
      }
    } finally {
      for (const watch of watches) watch.close();
    }
  });

  test('a stream ends when its client goes, and is counted out', async () => {
    // Earlier tests' streams are closed by now, though the server may still be noticing.
    await waitFor('no streams', async () => (await metric(h, 'hvsync_watch_streams')) === 0);
    const ended = await metric(h, 'hvsync_watch_streams_ended_total', '{reason="client-closed"}');
    const watch = await Watch.open(h, '?since=0');
    await watch.until('open', () => watch.comments.length > 0);
    assert.equal(await metric(h, 'hvsync_watch_streams'), 1);
    watch.close();
    await waitFor('stream cleaned up', async () => (await metric(h, 'hvsync_watch_streams')) === 0);
    assert.equal(
      await metric(h, 'hvsync_watch_streams_ended_total', '{reason="client-closed"}'),
      ended + 1,
    );
  });

  test('400 for a since that is not a revision', async () => {
    for (const since of ['-1', 'abc', '1.5']) {
      const watch = await Watch.open(h, `?since=${since}`);
      await watch.until('body', () => watch.ended);
      assert.equal(watch.status, 400, since);
      assert.match(JSON.parse(watch.body).message, /since/, since);
    }
  });
});

describe('watch: retention, slow consumers, heartbeats, shutdown', () => {
  test('410 Gone telling the client to re-list when the revision is no longer kept', async () => {
    const h = await startServer({ store: { maxChanges: 10 } });
    try {
      await create(h.store, uuidOf(1));
      for (let i = 0; i < 40; i++) await patch(h.store, uuidOf(1), { powerReason: `r${i}` });
      const bounds = await h.store.changesSince(0, 1);
      assert.ok(bounds.oldestRevision > 2, 'retention pruned the log');

      const old = await Watch.open(h, '?since=0');
      await old.until('body', () => old.ended);
      assert.equal(old.status, 410);
      const body = JSON.parse(old.body) as {
        error: string;
        message: string;
        oldestRevision: number;
      };
      assert.equal(body.error, 'revision-too-old');
      assert.equal(body.oldestRevision, bounds.oldestRevision);
      assert.match(body.message, /re-list/);

      // The oldest kept revision minus one is still complete.
      const edge = await Watch.open(h, `?since=${bounds.oldestRevision - 1}`);
      try {
        assert.equal(edge.status, 200);
        await edge.until('replay', () => edge.revisions.at(-1) === bounds.latestRevision);
        assert.deepEqual(edge.revisions, range(bounds.oldestRevision, bounds.latestRevision));
      } finally {
        edge.close();
      }

      const future = await Watch.open(h, `?since=${bounds.latestRevision + 100}`);
      await future.until('body', () => future.ended);
      assert.equal(future.status, 410);
      assert.equal(JSON.parse(future.body).error, 'revision-too-new');
      assert.equal(await metric(h, 'hvsync_watch_streams'), 0);
    } finally {
      await h.close();
    }
  });

  test('past --max-watchers a watch is refused with 503 and Retry-After, and a closed stream frees its place', async () => {
    const h = await startServer({ maxWatchers: 2 });
    try {
      const first = await Watch.open(h, '');
      const second = await Watch.open(h, '');
      assert.deepEqual([first.status, second.status], [200, 200]);
      const refused = await Watch.open(h, '');
      await refused.until('the refusal', () => refused.ended);
      assert.equal(refused.status, 503);
      assert.equal(refused.response.headers['retry-after'], '5');
      const body = JSON.parse(refused.body) as { error: string; message: string };
      assert.equal(body.error, 'too-many-watchers');
      assert.match(body.message, /2 watch streams are open/);
      first.close();
      await waitFor('the place freed', async () => (await metric(h, 'hvsync_watch_streams')) === 1);
      const third = await Watch.open(h, '');
      assert.equal(third.status, 200);
      second.close();
      third.close();
    } finally {
      await h.close();
    }
  });

  test('a consumer that stops reading is cut off with a resume point, never buffered without bound', async () => {
    const h = await startServer({ watchBufferLimit: 20 });
    try {
      await create(h.store, uuidOf(1));
      const slow = await Watch.open(h, '?since=0');
      await slow.until('first event', () => slow.events.length === 1);
      slow.response.pause();

      // Big records fill the socket buffers quickly; keep writing until the server gives up.
      await writeUntilCutOff(h, uuidOf(1), { batch: 200, maxRounds: 200 });

      slow.response.resume();
      await slow.until('end of stream', () => slow.ended, 20_000);
      const [error] = slow.errors;
      assert.ok(error, 'the stream ended with an error event');
      assert.equal(error.error, 'too-slow');
      assert.match(error.message, /resume with since=\d+/);
      // Everything before the error arrived, contiguously, up to the resume point it names.
      assert.deepEqual(slow.revisions, range(1, error.lastRevision));
      assert.equal(slow.messages.at(-1)!.event, 'error');

      const latest = (await h.store.changesSince(0, 1)).latestRevision;
      assert.ok(latest > error.lastRevision + 20, 'the server dropped what it could not send');
      const resumed = await Watch.open(h, `?since=${error.lastRevision}`);
      try {
        await resumed.until(
          'resumed to the end',
          () => resumed.revisions.at(-1) === latest,
          20_000,
        );
        assert.deepEqual(resumed.revisions, range(error.lastRevision + 1, latest));
      } finally {
        resumed.close();
      }
    } finally {
      await h.close();
    }
  });

  test('watchers share one byte budget: a stalled one is cut off, the others keep everything, a resume has no gap', async () => {
    const budget = 256 * 1024;
    // The event count limit is out of reach here: only the byte budget can cut a stream off.
    const h = await startServer({ watchBufferBytes: budget, watchBufferLimit: 100_000 });
    try {
      await create(h.store, uuidOf(1));
      const [stalled, ...readers] = await Promise.all([
        Watch.open(h, '?since=0'),
        Watch.open(h, '?since=0'),
        Watch.open(h, '?since=0'),
      ]);
      await stalled!.until('first event', () => stalled!.events.length === 1);
      stalled!.response.pause();

      let highest = 0;
      // Batches well under the budget: healthy readers take each one whole.
      await writeUntilCutOff(h, uuidOf(1), {
        batch: 20,
        maxRounds: 2000,
        afterRound: async () => {
          highest = Math.max(highest, await metric(h, 'hvsync_watch_buffered_bytes'));
        },
      });
      assert.ok(highest <= budget, `watchers held ${highest} bytes, over the ${budget} budget`);

      const latest = (await h.store.changesSince(0, 1)).latestRevision;
      for (const reader of readers) {
        await reader.until('reader caught up', () => reader.revisions.at(-1) === latest, 20_000);
        assert.deepEqual(reader.revisions, range(1, latest));
        assert.deepEqual(reader.errors, []);
        assert.equal(reader.ended, false);
      }

      stalled!.response.resume();
      await stalled!.until('end of the stalled stream', () => stalled!.ended, 20_000);
      const [error] = stalled!.errors;
      assert.ok(error, 'the stalled stream ended with an error event');
      assert.equal(error.error, 'too-slow');
      assert.match(error.message, /held the oldest of the 262144 bytes buffered/);
      assert.deepEqual(stalled!.revisions, range(1, error.lastRevision));
      const resumed = await Watch.open(h, `?since=${error.lastRevision}`);
      try {
        await resumed.until(
          'resumed to the end',
          () => resumed.revisions.at(-1) === latest,
          20_000,
        );
        assert.deepEqual(resumed.revisions, range(error.lastRevision + 1, latest));
      } finally {
        resumed.close();
        for (const reader of readers) reader.close();
      }
    } finally {
      await h.close();
    }
  });

  test('a cut-off client that never reads its closing event loses its connection', async () => {
    // Cut off by the byte budget, which is reached only once the socket takes nothing more.
    const h = await startServer({ watchBufferBytes: 256 * 1024, watchLingerMs: 100 });
    try {
      await create(h.store, uuidOf(1));
      const stalled = await Watch.open(h, '?since=0');
      await stalled.until('first event', () => stalled.events.length === 1);
      stalled.response.pause();
      await writeUntilCutOff(h, uuidOf(1), { batch: 20, maxRounds: 2000 });
      // The client is still paused, so only the server can be closing the connection.
      const connections = () =>
        new Promise<number>((resolve, reject) =>
          h.app.server.getConnections((error, count) => (error ? reject(error) : resolve(count))),
        );
      assert.equal(await connections(), 1);
      await waitFor('the connection dropped', async () => (await connections()) === 0);
      stalled.close();
    } finally {
      await h.close();
    }
  });

  test('a reader that stalls during replay catches up from the log, not from memory', async () => {
    const h = await startServer({ watchBufferLimit: 20 });
    try {
      await create(h.store, uuidOf(1));
      const name = 'n'.repeat(2000);
      const writeBurst = async (count: number) => {
        const current = await h.store.getInstance(uuidOf(1));
        await Promise.all(
          Array.from({ length: count }, (_, i) =>
            h.store.write({
              kind: 'update',
              uuid: uuidOf(1),
              expectedVersion: current!.version + i,
              patch: { name: `${name}${current!.version + i}` },
            }),
          ),
        );
      };
      await writeBurst(3000);
      const watch = await Watch.open(h, '?since=0');
      await watch.until('replay started', () => watch.events.length > 0);
      watch.response.pause();
      // Far more than the stream may keep arrives while it is stuck replaying.
      await writeBurst(500);
      watch.response.resume();
      const latest = (await h.store.changesSince(0, 1)).latestRevision;
      await watch.until('caught up', () => watch.revisions.at(-1) === latest, 20_000);
      assert.deepEqual(watch.revisions, range(1, latest));
      assert.deepEqual(watch.errors, []);
      // And it is live now.
      await writeBurst(3);
      await watch.until('live', () => watch.revisions.at(-1) === latest + 3);
      watch.close();
    } finally {
      await h.close();
    }
  });

  test('heartbeat comments keep an idle stream visibly alive', async () => {
    const h = await startServer({ watchHeartbeatMs: 20 });
    const watch = await Watch.open(h, '');
    try {
      await watch.until(
        'two heartbeats',
        () => watch.comments.filter((c) => c === 'heartbeat').length >= 2,
      );
      assert.equal(watch.messages.length, 0);
    } finally {
      watch.close();
      await h.close();
    }
  });

  test('closing the server ends open streams with a resume point', async () => {
    const h = await startServer();
    await create(h.store, uuidOf(1));
    const watch = await Watch.open(h, '?since=0');
    await watch.until('replay', () => watch.events.length === 1);
    await h.close();
    await watch.until('end', () => watch.ended);
    assert.deepEqual(watch.errors, [
      {
        error: 'shutting-down',
        message: 'the server is shutting down; resume with since=1',
        lastRevision: 1,
      },
    ]);
  });

  test('watch needs the token when the server has one', async () => {
    const h = await startServer({ token: 'tok' });
    try {
      const denied = await Watch.open(h, '?since=0');
      await denied.until('body', () => denied.ended);
      assert.equal(denied.status, 401);
      const allowed = await Watch.open(h, '?since=0', { authorization: 'Bearer tok' });
      assert.equal(allowed.status, 200);
      allowed.close();
    } finally {
      await h.close();
    }
  });
});
