// A real API server on 127.0.0.1 over a real SQLite file, with an ActionPort that plays the
// engine's part on the store: it records the task, then finishes it a little later.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Registry } from 'prom-client';
import { ACTION_RULES, checkAction } from '../../src/model/index.ts';
import type { ActionName } from '../../src/model/index.ts';
import { ActionRejected, buildServer, listen } from '../../src/server/index.ts';
import type { ActionPort, Readiness, ServerOptions } from '../../src/server/index.ts';
import { openSqliteStore } from '../../src/store/index.ts';
import type {
  InstanceFields,
  InstanceRecord,
  NewTransition,
  SqliteStore,
  SqliteStoreOptions,
} from '../../src/store/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'hvsync-server-test-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
let files = 0;

export function uuidOf(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

import { instanceFields as fields } from '../support/records.ts';

export { fields };

export async function create(
  store: SqliteStore,
  uuid: string,
  overrides: Partial<InstanceFields> = {},
): Promise<InstanceRecord> {
  const result = await store.write({ kind: 'create', uuid, fields: fields(overrides) });
  if (!result.ok) throw new Error(`create ${uuid}: ${result.reason}`);
  return result.instance;
}

/** Reads the current version and writes the patch on top of it. */
export async function patch(
  store: SqliteStore,
  uuid: string,
  changes: Partial<InstanceFields>,
  transition?: NewTransition,
): Promise<InstanceRecord> {
  const current = await store.getInstance(uuid);
  if (current === null) throw new Error(`no instance ${uuid}`);
  const result = await store.write({
    kind: 'update',
    uuid,
    expectedVersion: current.version,
    patch: changes,
    transition,
  });
  if (!result.ok) throw new Error(`update ${uuid}: ${result.reason}`);
  return result.instance;
}

/** Where the fake leaves a successful task: the rule's intent and its first expected power state. */
function outcome(action: ActionName): Pick<InstanceFields, 'vmState' | 'powerState'> {
  const rule = ACTION_RULES[action];
  return { vmState: rule.intent, powerState: rule.expectedPower[0]! };
}

/**
 * Plays the engine behind the ActionPort: refuses like it, records the task, and finishes it
 * after `finishAfterMs` (never when null). Instances named `*fail*` finish with a taskError.
 */
export class FakeActions implements ActionPort {
  connected = true;
  finishAfterMs: number | null = 50;
  /** Thrown as is by submit, for the 500 path. */
  crash: Error | null = null;
  readonly submitted: { uuid: string; action: ActionName }[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly store: SqliteStore) {}

  async submit(uuid: string, action: ActionName): Promise<InstanceRecord> {
    this.submitted.push({ uuid, action });
    if (this.crash !== null) throw this.crash;
    if (!this.connected) throw new ActionRejected('unavailable', 'hypervisor is disconnected');
    const record = await this.store.getInstance(uuid);
    if (record === null) throw new ActionRejected('not-found', `no instance ${uuid}`);
    const refusal = checkAction(record, action);
    if (refusal !== null) throw new ActionRejected(refusal.code, refusal.message);
    const started = await patch(this.store, uuid, {
      taskState: ACTION_RULES[action].taskState,
      taskStartedAt: Date.now(),
      taskError: null,
    });
    if (this.finishAfterMs !== null) {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        void this.finish(uuid, action).catch(() => {});
      }, this.finishAfterMs);
      this.timers.add(timer);
    }
    return started;
  }

  async finish(uuid: string, action: ActionName): Promise<void> {
    const record = await this.store.getInstance(uuid);
    if (record === null) return;
    const failed = record.name.includes('fail');
    await patch(
      this.store,
      uuid,
      failed
        ? {
            taskState: null,
            taskStartedAt: null,
            taskError: `${action} failed: guest did not respond`,
          }
        : { taskState: null, taskStartedAt: null, taskError: null, ...outcome(action) },
      failed
        ? undefined
        : {
            from: record.powerState,
            to: outcome(action).powerState,
            vmStateFrom: record.vmState,
            vmStateTo: outcome(action).vmState,
            cause: 'action',
            detail: action,
            outOfBand: false,
            observedAt: Date.now(),
          },
    );
  }

  cancelPending(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }
}

export class FakeReadiness {
  state: Readiness = { ready: true, reasons: [] };
  throws: Error | null = null;
  check(): Readiness {
    if (this.throws !== null) throw this.throws;
    return this.state;
  }
}

export interface Harness {
  readonly store: SqliteStore;
  readonly app: FastifyInstance;
  readonly url: string;
  readonly registry: Registry;
  readonly actions: FakeActions;
  readiness: FakeReadiness;
  close(): Promise<void>;
}

export interface HarnessOptions extends Partial<
  Omit<ServerOptions, 'store' | 'actions' | 'readiness' | 'registry' | 'agents'>
> {
  readonly store?: SqliteStoreOptions;
  /** Serve the agent routes on the harness's store. */
  readonly agents?: boolean;
}

export async function startServer(options: HarnessOptions = {}): Promise<Harness> {
  files += 1;
  const { store: storeOptions, agents, ...serverOptions } = options;
  const store = await openSqliteStore(join(dir, `api-${process.pid}-${files}.db`), storeOptions);
  const registry = new Registry();
  const actions = new FakeActions(store);
  const readiness = new FakeReadiness();
  const app = buildServer({
    credentials: store.credentials,
    ...serverOptions,
    store,
    actions,
    readiness,
    registry,
    agents: agents === true ? store : undefined,
  });
  const { url } = await listen(app, '127.0.0.1:0');
  return {
    store,
    app,
    url,
    registry,
    actions,
    readiness,
    async close() {
      actions.cancelPending();
      await app.close();
      await store.close();
    },
  };
}

/** Polls `condition` every few ms until it holds; fails after `timeoutMs` with `what`. */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export interface Reply {
  status: number;
  headers: Headers;
  body: unknown;
  text: string;
}

export async function call(
  harness: Harness,
  path: string,
  init: RequestInit & { json?: unknown } = {},
): Promise<Reply> {
  const headers = new Headers(init.headers);
  let body = init.body;
  if (init.json !== undefined) {
    headers.set('content-type', 'application/json');
    body = JSON.stringify(init.json);
  }
  const response = await fetch(`${harness.url}${path}`, { ...init, headers, body });
  const text = await response.text();
  let parsed: unknown = undefined;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Not JSON (metrics): the text is what the test looks at.
  }
  return { status: response.status, headers: response.headers, body: parsed, text };
}

export function errorOf(reply: Reply): { error: string; message: string } {
  const body = reply.body as { error?: unknown; message?: unknown };
  assert.equal(typeof body.error, 'string', `error code in ${reply.text}`);
  assert.equal(typeof body.message, 'string', `message in ${reply.text}`);
  return body as { error: string; message: string };
}

/** The `error` code of a raw HTTP response's JSON body, or null when it has none. */
export function apiErrorIn(response: string): string | null {
  const body = response.slice(response.indexOf('\r\n\r\n') + 4);
  try {
    const parsed = JSON.parse(body) as { error?: unknown; message?: unknown };
    return typeof parsed.error === 'string' && typeof parsed.message === 'string'
      ? parsed.error
      : null;
  } catch {
    return null;
  }
}

/** Sends `payload` on a fresh connection and resolves with everything read until it closes. */
export function rawExchange(harness: Harness, payload: string): Promise<string> {
  const address = new URL(harness.url);
  return new Promise((resolve) => {
    const socket = connect(Number(address.port), address.hostname);
    let text = '';
    socket.on('data', (chunk) => (text += chunk.toString('latin1')));
    socket.on('close', () => resolve(text));
    socket.on('error', () => resolve(text));
    socket.end(payload);
  });
}
