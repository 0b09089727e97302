// The routes a hypervisor host's agent reports through (it holds no database credentials): its
// conditional writes, batched, and its status. A request's writes reach the store in one event-
// loop turn, so the store commits them in one transaction; each gets its own result.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type {
  InstanceFields,
  InstanceRecord,
  InstanceWrite,
  NewTransition,
} from '../store/index.ts';
import { principalOf } from './policy.ts';
import { RequestRefused } from './errors.ts';
import { mayHostWrite } from './host-writes.ts';
import { statusSchema, writesSchema, WRITES_BODY_LIMIT } from './agent-schemas.ts';
import type { AgentPort, ApiAgentStatus, ApiAgentWrite, ApiAgentWriteResult } from './types.ts';

/**
 * Why the caller of `request` may not make `write` (for `host`) over `current`, or null when it
 * may: the per-write authorisation, where a host's token is held to its own host's instances
 * (e.g. a host principal checked with mayHostWrite(principal.host, write, current)).
 */
export type AgentWriteRefusal = (
  request: FastifyRequest,
  host: string,
  write: InstanceWrite,
  current: InstanceRecord | null,
) => string | null;

export interface AgentRoutesOptions {
  readonly store: AgentPort;
  readonly now: () => number;
  /** See ServerOptions.agentWriteRefusal. */
  readonly writeRefusal?: AgentWriteRefusal;
}

export function agentRoutes(app: FastifyInstance, options: AgentRoutesOptions): void {
  const { store, now } = options;

  app.post<{ Params: { host: string }; Body: { journal?: string; writes: ApiAgentWrite[] } }>(
    '/v1/hosts/:host/writes',
    { schema: writesSchema, bodyLimit: WRITES_BODY_LIMIT },
    async (request, reply) => {
      const { host } = request.params;
      const { journal } = request.body;
      const writes = request.body.writes.map((w, i) => storeWrite(w, i, host, journal));
      const refusal = await checkWrites(options, request, host, writes);
      if (refusal !== null) return reply.code(403).send({ error: 'forbidden', message: refusal });
      // Handed over together, in order: the store commits them in one transaction.
      const results = await Promise.all(writes.map((write) => store.write(write)));
      return { results: results.map((result): ApiAgentWriteResult => result) };
    },
  );

  app.put<{ Params: { host: string }; Body: ApiAgentStatus }>(
    '/v1/hosts/:host/status',
    { schema: statusSchema },
    async (request, reply) => {
      const { host } = request.params;
      const status = request.body;
      await store.upsertHost({
        name: host,
        driver: status.driver,
        connected: status.connected,
        // The server's clock: an agent's clock may be wrong, and this says when it was heard.
        lastSeenAt: now(),
        lastReconcileAt: status.lastReconcileAt,
        backlog: status.backlog,
      });
      if (status.connectionError !== undefined) {
        await store.recordConnectionError(host, status.connectionError);
      }
      return reply.code(204).send();
    },
  );
}

/** The per-write authorisation: every write of the request is checked before any is applied. */
async function checkWrites(
  options: AgentRoutesOptions,
  request: FastifyRequest,
  host: string,
  writes: readonly InstanceWrite[],
): Promise<string | null> {
  // Only a host's token is held to records; the admin's writes need no read of each record.
  if (options.writeRefusal === undefined && principalOf(request).kind !== 'host') return null;
  const refuse = options.writeRefusal ?? hostTokenRefusal;
  // One read for the whole request (up to 500 writes), not one round trip per write. Every write
  // is checked against the record as stored before the request, a uuid's later writes included.
  const records = await options.store.getInstances(writes.map((write) => write.uuid));
  for (const write of writes) {
    const current = records.get(write.uuid) ?? null;
    // A write the store will refuse anyway (a stale version, a uuid already recorded) changes
    // nothing: it gets its conflict or exists with the current record, which is how an agent
    // learns that an instance moved away, instead of a 403 that would stall its journal. A
    // change between this read and the write moves the version, so the store refuses it then.
    if (storeWillRefuse(write, current)) continue;
    const refusal = refuse(request, host, write, current);
    if (refusal !== null) return refusal;
  }
  return null;
}

/** The default check: a host's token writes only its own host's instances; others are trusted. */
function hostTokenRefusal(
  request: FastifyRequest,
  _host: string,
  write: InstanceWrite,
  current: InstanceRecord | null,
): string | null {
  const principal = principalOf(request);
  return principal.kind === 'host' ? mayHostWrite(principal.host, write, current) : null;
}

function storeWillRefuse(write: InstanceWrite, current: InstanceRecord | null): boolean {
  if (current === null) return false;
  return write.kind === 'create' || write.expectedVersion !== current.version;
}

function storeWrite(
  write: ApiAgentWrite,
  index: number,
  host: string,
  journal: string | undefined,
): InstanceWrite {
  const uuid = write.uuid.toLowerCase();
  const transition: NewTransition | undefined = write.transition;
  if (journal !== undefined && write.seq === undefined) {
    throw new RequestRefused(
      'invalid-request',
      `writes[${index}] has no seq, but the request names a journal`,
    );
  }
  // The journal's mark is kept under the host of the path, which a host's token can only name as
  // its own: another host that learnt this journal's id still cannot move its mark.
  const tag =
    journal === undefined || write.seq === undefined
      ? {}
      : { journal: { id: `${host}/${journal}`, seq: write.seq, host } };
  const withTransition = transition === undefined ? {} : { transition };
  if (write.kind === 'create') {
    if (write.fields === undefined) {
      throw new RequestRefused('invalid-request', `writes[${index}] is a create without fields`);
    }
    return {
      kind: 'create',
      uuid,
      fields: write.fields as InstanceFields,
      ...withTransition,
      ...tag,
    };
  }
  if (write.expectedVersion === undefined || write.patch === undefined) {
    throw new RequestRefused(
      'invalid-request',
      `writes[${index}] is an update without expectedVersion and patch`,
    );
  }
  return {
    kind: 'update',
    uuid,
    expectedVersion: write.expectedVersion,
    patch: write.patch,
    ...withTransition,
    ...tag,
  };
}
