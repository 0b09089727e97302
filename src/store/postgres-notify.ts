// How a writing transaction tells the other processes on the database what it committed: a
// NOTIFY on its schema's channel whose payload is the changes themselves when they fit, so that
// a replica hands them to its watchers without reading them back from the log (else every commit
// costs every other replica a read), or only the last revision when they do not, and then the
// replica reads the log.
import { createHash } from 'node:crypto';
import type { ChangeRecord, InstanceRecord } from './types.ts';
import { snapshotRecord } from './sqlite-rows.ts';

/**
 * The channel a store's writing transactions notify on commit. Channels belong to the database,
 * not to a schema, so each schema has its own: a store must never take another schema's changes
 * for its own. A schema's name can be as long as a channel's, hence its hash.
 */
export function changesChannel(schema: string | undefined): string {
  return schemaChannel('hvsync_changes', schema);
}

/** The channel a revocation of a host or reader token is announced on (see postgres-credentials.ts). */
export function revocationsChannel(schema: string | undefined): string {
  return schemaChannel('hvsync_revocations', schema);
}

function schemaChannel(base: string, schema: string | undefined): string {
  if (schema === undefined) return base;
  return `${base}_${createHash('sha256').update(schema).digest('hex').slice(0, 32)}`;
}

/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (and the transaction with it). */
export const NOTIFY_PAYLOAD_MAX = 7999;

/**
 * More changes than this never fit (a record is 300 bytes or more), so their payload is not even
 * built: a large batch would build it while it holds the revision counter, only to drop it.
 */
export const NOTIFY_CHANGES_MAX = 24;

/**
 * The payload for a transaction's changes (in revision order): their JSON when it fits, else the
 * last revision. The SQL in postgres-batch.ts builds the same for the batches it numbers.
 */
export function changesPayload(changes: readonly ChangeRecord[]): string {
  const last = String(changes[changes.length - 1]!.revision);
  if (changes.length > NOTIFY_CHANGES_MAX) return last;
  const carried = JSON.stringify(changes);
  return Buffer.byteLength(carried, 'utf8') <= NOTIFY_PAYLOAD_MAX ? carried : last;
}

/**
 * The changes a payload carries, in revision order, or null when it carries none that can be
 * trusted (a bare revision, or anything unreadable): then the log is read.
 */
export function changesOfPayload(payload: string): ChangeRecord[] | null {
  if (!payload.startsWith('[')) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload);
  } catch {
    return null;
  }
  if (!Array.isArray(parsed) || parsed.length === 0) return null;
  const changes: ChangeRecord[] = [];
  for (const item of parsed as unknown[]) {
    const change = changeOf(item);
    if (change === null) return null;
    const previous = changes[changes.length - 1];
    if (previous !== undefined && change.revision !== previous.revision + 1) return null;
    changes.push(change);
  }
  return changes;
}

function changeOf(item: unknown): ChangeRecord | null {
  if (typeof item !== 'object' || item === null) return null;
  const { revision, type, instance, at } = item as Record<string, unknown>;
  if (!Number.isSafeInteger(revision) || typeof at !== 'number') return null;
  if (type !== 'created' && type !== 'updated') return null;
  if (typeof instance !== 'object' || instance === null) return null;
  if (typeof (instance as { uuid?: unknown }).uuid !== 'string') return null;
  return {
    revision: revision as number,
    type,
    instance: snapshotRecord(instance as InstanceRecord),
    at,
  };
}
