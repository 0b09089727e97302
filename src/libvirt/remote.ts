// The part of libvirt's REMOTE program (remote_protocol.x) that hvsync speaks: procedure
// numbers, limits and the XDR shapes of their arguments, replies and events.
import { protocolError, type RemoteErrorFields } from './errors.ts';
import { XdrReader, XdrWriter } from './xdr.ts';

export const Proc = {
  CONNECT_OPEN: 1,
  CONNECT_CLOSE: 2,
  DOMAIN_DEFINE_XML: 11,
  DOMAIN_LOOKUP_BY_NAME: 23,
  DOMAIN_LOOKUP_BY_UUID: 24,
  DOMAIN_REBOOT: 27,
  DOMAIN_RESUME: 28,
  DOMAIN_SUSPEND: 34,
  CONNECT_GET_HOSTNAME: 59,
  CONNECT_SUPPORTS_FEATURE: 60,
  AUTH_LIST: 66,
  CONNECT_GET_URI: 110,
  CONNECT_GET_LIB_VERSION: 157,
  DOMAIN_CREATE_WITH_FLAGS: 196,
  DOMAIN_GET_STATE: 212,
  DOMAIN_UNDEFINE_FLAGS: 231,
  DOMAIN_DESTROY_FLAGS: 234,
  DOMAIN_RESET: 245,
  DOMAIN_SHUTDOWN_FLAGS: 258,
  CONNECT_LIST_ALL_DOMAINS: 273,
  CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY: 316,
  CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY: 317,
  DOMAIN_EVENT_CALLBACK_LIFECYCLE: 318,
  DOMAIN_EVENT_CALLBACK_REBOOT: 319,
  CONNECT_GET_ALL_DOMAIN_STATS: 344,
  CONNECT_REGISTER_CLOSE_CALLBACK: 360,
  CONNECT_UNREGISTER_CLOSE_CALLBACK: 361,
  CONNECT_EVENT_CONNECTION_CLOSED: 362,
} as const;

/** VIR_DRV_FEATURE_* values used in the handshake. */
export const Feature = {
  PROGRAM_KEEPALIVE: 10,
  REMOTE_EVENT_CALLBACK: 14,
  REMOTE_CLOSE_CALLBACK: 15,
} as const;

export const AuthType = { NONE: 0, SASL: 1, POLKIT: 2 } as const;

export const Limit = {
  STRING: 4 * 1024 * 1024,
  DOMAIN_LIST: 16384,
  AUTH_TYPE_LIST: 20,
  DOMAIN_STATS_PARAMS: 262144,
} as const;

/** VIR_DOMAIN_STATS_STATE: the stats group carrying state.state and state.reason. */
export const STATS_STATE = 1;

const UUID_BYTES = 16;
/** Smallest XDR encodings, used to bound array counts against the bytes actually present. */
const MIN_DOMAIN_BYTES = 4 + UUID_BYTES + 4;
const MIN_TYPED_PARAM_BYTES = 4 + 4 + 4;
const MIN_STATS_RECORD_BYTES = MIN_DOMAIN_BYTES + 4;

export interface Domain {
  readonly name: string;
  /** Canonical lower-case UUID. */
  readonly uuid: string;
  /** The running domain's id, -1 when inactive. */
  readonly id: number;
}

function uuidToString(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const UUID_PATTERN = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

export function uuidToBytes(uuid: string): Buffer {
  if (!UUID_PATTERN.test(uuid)) throw new TypeError(`not a UUID: ${uuid}`);
  return Buffer.from(uuid.replaceAll('-', ''), 'hex');
}

export function readDomain(r: XdrReader): Domain {
  const name = r.string(Limit.STRING, 'domain name');
  const uuid = uuidToString(r.fixedOpaque(UUID_BYTES));
  const id = r.i32();
  return { name, uuid, id };
}

export function writeDomain(w: XdrWriter, domain: Domain): void {
  w.string(domain.name).fixedOpaque(uuidToBytes(domain.uuid)).i32(domain.id);
}

export function readRemoteError(r: XdrReader): RemoteErrorFields {
  const code = r.i32();
  const domain = r.i32();
  const message = r.optional((x) => x.string(Limit.STRING, 'error message'));
  const level = r.i32();
  r.optional(readDomain);
  const str1 = r.optional((x) => x.string(Limit.STRING));
  const str2 = r.optional((x) => x.string(Limit.STRING));
  const str3 = r.optional((x) => x.string(Limit.STRING));
  const int1 = r.i32();
  const int2 = r.i32();
  // remote_network: optional {name, uuid}; read and dropped.
  r.optional((x) => {
    x.string(Limit.STRING, 'network name');
    x.fixedOpaque(UUID_BYTES);
  });
  return { code, domain, message, level, str1, str2, str3, int1, int2 };
}

export type TypedParamValue = number | bigint | boolean | string;

/** remote_typed_param: a named value in a tagged union. */
function readTypedParam(r: XdrReader): [string, TypedParamValue] {
  const field = r.string(Limit.STRING, 'typed parameter name');
  const type = r.i32();
  switch (type) {
    case 1:
      return [field, r.i32()];
    case 2:
      return [field, r.u32()];
    case 3:
      return [field, r.i64()];
    case 4:
      return [field, r.u64()];
    case 5:
      return [field, r.f64()];
    case 6:
      return [field, r.i32() !== 0];
    case 7:
      return [field, r.string(Limit.STRING, 'typed parameter string')];
    default:
      throw protocolError(`typed parameter ${field} has unknown type ${type}`);
  }
}

export interface DomainStatsRecord {
  readonly domain: Domain;
  readonly params: ReadonlyMap<string, TypedParamValue>;
}

export function readDomainStats(r: XdrReader): DomainStatsRecord[] {
  return r.array(
    Limit.DOMAIN_LIST,
    MIN_STATS_RECORD_BYTES,
    (x) => {
      const domain = readDomain(x);
      const params = new Map(
        x.array(Limit.DOMAIN_STATS_PARAMS, MIN_TYPED_PARAM_BYTES, readTypedParam, 'typed params'),
      );
      return { domain, params };
    },
    'domain stats',
  );
}

export function readDomainList(r: XdrReader): Domain[] {
  return r.array(Limit.DOMAIN_LIST, MIN_DOMAIN_BYTES, readDomain, 'domain list');
}

interface LifecycleMessage {
  readonly callbackId: number;
  readonly domain: Domain;
  readonly event: number;
  readonly detail: number;
}

export function readLifecycleMessage(r: XdrReader): LifecycleMessage {
  const callbackId = r.i32();
  const domain = readDomain(r);
  const event = r.i32();
  const detail = r.i32();
  r.end('lifecycle event');
  return { callbackId, domain, event, detail };
}

interface RebootMessage {
  readonly callbackId: number;
  readonly domain: Domain;
}

export function readRebootMessage(r: XdrReader): RebootMessage {
  const callbackId = r.i32();
  const domain = readDomain(r);
  r.end('reboot event');
  return { callbackId, domain };
}
