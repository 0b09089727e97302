// The routes a hypervisor host's agent reports through (it holds no database credentials): its
// conditional writes, batched, and its status. A request's writes reach the store in one event-
// loop turn, so the store commits them in one transaction; each gets its own result.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { InstanceFields, InstanceWrite, NewTransition } from '../store/index.ts';
import { principalOf } from './policy.ts';
import { RequestRefused } from './errors.ts';
import { mayHostWrite } from './host-writes.ts';
import { RecordOwners, type RecordOwner } from './record-owners.ts';
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
  current: RecordOwner | null,
) => string | null;

export interface AgentRoutesOptions {
  readonly store: AgentPort;
  readonly now: () => number;
  /** See ServerOptions.agentWriteRefusal. */
  readonly writeRefusal?: AgentWriteRefusal;
}

export function agentRoutes(app: FastifyInstance, options: AgentRoutesOptions): void {
  const { store, now } = options;
  // Who owns each record, for the per-write check: kept current by every commit this process sees.
  const owners = new RecordOwners();
  const unsubscribe = store.subscribe((changes) => owners.follow(changes));
  app.addHook('onClose', async () => unsubscribe());

  app.post<{ Params: { host: string }; Body: { journal?: string; writes: ApiAgentWrite[] } }>(
    '/v1/hosts/:host/writes',
    { schema: writesSchema, bodyLimit: WRITES_BODY_LIMIT },
    async (request, reply) => {
      const { host } = request.params;
      const { journal } = request.body;
      const writes = request.body.writes.map((w, i) => storeWrite(w, i, host, journal));
      const checked = await checkWrites(options, owners, request, host, writes);
      if ('refusal' in checked) {
        return reply.code(403).send({ error: 'forbidden', message: checked.refusal });
      }
      // Handed over together, in order: the store commits them in one transaction.
      const results = await Promise.all(checked.writes.map((write) => store.write(write)));
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
        connectionError: status.connectionError,
      });
      return reply.code(204).send();
    },
  );
}

/** A request's writes as checked: refused (403), or to be handed to the store as they are now. */
type Checked = { readonly refusal: string } | { readonly writes: readonly InstanceWrite[] };

/**
 * The per-write authorisation: every write of the request is checked before any is applied. A
 * host's update reaches the store bound to the host it was checked over (`expectedHost`), so that
 * what committed between the check and the write cannot turn a refusal into an update.
 */
async function checkWrites(
  options: AgentRoutesOptions,
  owners: RecordOwners,
  request: FastifyRequest,
  host: string,
  writes: readonly InstanceWrite[],
): Promise<Checked> {
  const principal = principalOf(request);
  // Only a host's token is held to records; the admin's writes need no read of each record.
  if (options.writeRefusal === undefined && principal.kind !== 'host') return { writes };
  const refuse = options.writeRefusal ?? hostTokenRefusal;
  const own = principal.kind === 'host' ? principal.host : null;
  const records = await recordsBefore(options.store, owners, writes);
  const checked: InstanceWrite[] = [];
  for (const write of writes) {
    const current = records.get(write.uuid) ?? null;
    // A write the store will refuse (a stale version, a uuid already recorded, an unknown uuid)
    // gets its conflict, exists or not-found with the current record, which is how an agent
    // learns that an instance moved away, instead of a 403 that would stall its journal. Should
    // the record reach the version it expects meanwhile, it applies only on the host's own, and
    // only if allowed there.
    const applies = !storeWillRefuse(write, current);
    const basis = applies ? current : ownRecordAt(write, own);
    if (basis !== undefined) {
      const refusal = refuse(request, host, write, basis);
      if (refusal !== null) return { refusal };
    }
    checked.push(
      own !== null && write.kind === 'update' && basis
        ? { ...write, expectedHost: basis.host }
        : write,
    );
    // A later write of the uuid in this request is checked against the record as this one
    // leaves it: a write may not do second what it could not do first (move the record away).
    const next = applies ? afterWrite(write, current) : null;
    if (next !== null) records.set(write.uuid, next);
  }
  return { writes: checked };
}

/**
 * What a host's update the store is expected to refuse is checked over: the host's own record at
 * the version it expects. Undefined: nothing to check (the store answers it).
 */
function ownRecordAt(write: InstanceWrite, own: string | null): RecordOwner | undefined {
  if (write.kind !== 'update' || own === null) return undefined;
  return { uuid: write.uuid, host: own, version: write.expectedVersion };
}

/**
 * The record each uuid of the request is checked against, as stored before the request: the one
 * this process knows at the version the uuid's first write expects, else read, in one read for
 * the whole request (up to 500 writes), not one round trip per write. A create that is its uuid's
 * only write is checked as a new record: if the uuid is recorded, the store refuses it (exists),
 * and nothing else in the request depends on it.
 */
async function recordsBefore(
  store: AgentPort,
  owners: RecordOwners,
  writes: readonly InstanceWrite[],
): Promise<Map<string, RecordOwner>> {
  const writesOf = new Map<string, number>();
  for (const write of writes) writesOf.set(write.uuid, (writesOf.get(write.uuid) ?? 0) + 1);
  const records = new Map<string, RecordOwner>();
  const unknown = new Set<string>();
  for (const write of writes) {
    if (records.has(write.uuid) || unknown.has(write.uuid)) continue;
    if (write.kind === 'create') {
      if (writesOf.get(write.uuid)! > 1) unknown.add(write.uuid);
      continue;
    }
    const known = owners.at(write.uuid, write.expectedVersion);
    if (known !== undefined) records.set(write.uuid, known);
    else unknown.add(write.uuid);
  }
  if (unknown.size === 0) return records;
  for (const record of (await store.getInstances([...unknown])).values()) {
    owners.learn(record);
    records.set(record.uuid, record);
  }
  return records;
}

/** The record as `write` leaves it when the store applies it; null: the store will not find it. */
function afterWrite(write: InstanceWrite, current: RecordOwner | null): RecordOwner | null {
  if (write.kind === 'create') return { uuid: write.uuid, host: write.fields.host, version: 1 };
  if (current === null) return null;
  return { uuid: write.uuid, host: write.patch.host ?? current.host, version: current.version + 1 };
}

/** The default check: a host's token writes only its own host's instances; others are trusted. */
function hostTokenRefusal(
  request: FastifyRequest,
  _host: string,
  write: InstanceWrite,
  current: RecordOwner | null,
): string | null {
  const principal = principalOf(request);
  return principal.kind === 'host' ? mayHostWrite(principal.host, write, current) : null;
}

function storeWillRefuse(write: InstanceWrite, current: RecordOwner | null): boolean {
  if (current === null) return write.kind === 'update';
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
