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

export interface DomainStateRecord {
  readonly domain: Domain;
  readonly state: number;
  readonly reason: number;
}

const STATE_PARAMS = [Buffer.from('state.state'), Buffer.from('state.reason')] as const;

/**
 * CONNECT_GET_ALL_DOMAIN_STATS with the STATE group: each domain and its state.state and
 * state.reason. Other parameters (a newer daemon may add some) are checked and stepped over
 * without decoding their names or values: the listing is read on every reconcile, one record per
 * domain on the host.
 */
export function readDomainStates(r: XdrReader): DomainStateRecord[] {
  return r.array(
    Limit.DOMAIN_LIST,
    MIN_STATS_RECORD_BYTES,
    (x) => {
      const domain = readDomain(x);
      let state: number | undefined;
      let reason: number | undefined;
      const params = x.u32();
      if (params > Limit.DOMAIN_STATS_PARAMS) {
        throw protocolError(
          `typed params of ${params} elements exceeds the maximum ${Limit.DOMAIN_STATS_PARAMS}`,
        );
      }
      if (params * MIN_TYPED_PARAM_BYTES > x.remaining) {
        throw protocolError(
          `typed params claims ${params} elements but only ${x.remaining} bytes remain`,
        );
      }
      for (let i = 0; i < params; i++) {
        const which = x.stringIndex(STATE_PARAMS, Limit.STRING, 'typed parameter name');
        const value = readIntTypedParamValue(x);
        if (which === 0) state = value;
        else if (which === 1) reason = value;
      }
      if (state === undefined || reason === undefined) {
        throw protocolError(`domain stats for ${domain.name} lack state.state/state.reason`);
      }
      return { domain, state, reason };
    },
    'domain stats',
  );
}

/** A typed parameter's value when it is an int or uint, else undefined (and stepped over). */
function readIntTypedParamValue(r: XdrReader): number | undefined {
  const type = r.i32();
  switch (type) {
    case 1:
      return r.i32();
    case 2:
      return r.u32();
    case 3:
    case 4:
    case 5:
      r.skip(8, 'typed parameter value');
      return undefined;
    case 6:
      r.skip(4, 'typed parameter value');
      return undefined;
    case 7:
      r.opaque(Limit.STRING, 'typed parameter string');
      return undefined;
    default:
      throw protocolError(`typed parameter has unknown type ${type}`);
  }
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
