// A libvirt RPC client in Node's event loop: one socket carries calls, replies, events and
// keepalives, so there is no event thread, no self-pipe and no second connection for events.
import { createConnection, type Socket } from 'node:net';
import { Emitter, type ListenerErrorHook } from '../lib/index.ts';
import {
  eventDetailName,
  eventName,
  stateName,
  stateReasonName,
  type EventName,
  type StateName,
} from './enums.ts';
import { LibvirtClientError, LibvirtError, protocolError } from './errors.ts';
import {
  decodePacket,
  encodePacket,
  FrameDecoder,
  KeepaliveProc,
  MessageStatus,
  MessageType,
  Program,
  PROTOCOL_VERSION,
  type Packet,
} from './packet.ts';
import {
  AuthType,
  Feature,
  Limit,
  Proc,
  readDomain,
  readDomainList,
  readDomainStates,
  readLifecycleMessage,
  readRebootMessage,
  readRemoteError,
  STATS_STATE,
  uuidToBytes,
  writeDomain,
  type Domain,
} from './remote.ts';
import { DEFAULT_URI, resolveUri, type Endpoint } from './uri.ts';
import { XdrReader, XdrWriter } from './xdr.ts';

export type CloseReason = 'eof' | 'error' | 'keepalive' | 'client';

export interface ConnectOptions {
  /** libvirt URI; default qemu:///system. */
  readonly uri?: string;
  /** Per-call reply timeout; 0 waits forever. Default 30 s. */
  readonly callTimeoutMs?: number;
  /** How long opening the socket and the handshake may take. Default 10 s. */
  readonly connectTimeoutMs?: number;
  /**
   * Keepalive interval as libvirt means it; 0 disables. Default 5 s. The connection closes with
   * reason `keepalive` after interval × (count + 1) without a message from the daemon.
   */
  readonly keepaliveIntervalMs?: number;
  /**
   * Intervals of silence before we PING the daemon ourselves. Default 5. A daemon with keepalive
   * on pings us sooner than that, and its pings alone keep the connection alive.
   */
  readonly keepaliveCount?: number;
  /** Told when an event or close listener throws (default: a process warning). */
  readonly onListenerError?: ListenerErrorHook;
}

export interface LifecycleEventMessage {
  readonly domain: Domain;
  readonly event: EventName | number;
  readonly detail: string | number;
  /** libvirt's raw numbers, for callers that map them themselves. */
  readonly eventCode: number;
  readonly detailCode: number;
  /** When the client received it, epoch ms. */
  readonly receivedAt: number;
}

export interface RebootEventMessage {
  readonly domain: Domain;
  readonly receivedAt: number;
}

export interface DomainStateInfo {
  readonly state: StateName | number;
  readonly reason: string | number;
  readonly stateCode: number;
  readonly reasonCode: number;
}

export interface DomainWithState extends DomainStateInfo {
  readonly domain: Domain;
}

/**
 * Every domain's state, with the reply it was decoded from: handed back to `listDomainStates`,
 * it lets an unchanged listing be recognised by its bytes instead of decoded again.
 */
export interface DomainStatesListing {
  readonly domains: readonly DomainWithState[];
  /** The reply's payload, as the daemon sent it. */
  readonly reply: Buffer;
}

interface PendingCall {
  readonly procedure: number;
  readonly resolve: (body: Buffer) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout | undefined;
}

type Listener<T> = (value: T) => void;

/** virConnectListAllDomains flags worth naming. */
export const ListDomainsFlags = {
  ACTIVE: 1,
  INACTIVE: 2,
  PERSISTENT: 4,
  TRANSIENT: 8,
  RUNNING: 16,
  PAUSED: 32,
  SHUTOFF: 64,
} as const;

/** virConnectCloseReason, as the daemon's connection-closed message carries it. */
const DAEMON_CLOSE_REASONS = ['error', 'eof', 'keepalive', 'client'] as const;

export class LibvirtClient {
  readonly uri: string;
  private readonly socket: Socket;
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, PendingCall>();
  // One listener's bug must not cost the others their events or kill the connection.
  private readonly lifecycleListeners: Emitter<[LifecycleEventMessage]>;
  private readonly rebootListeners: Emitter<[RebootEventMessage]>;
  private readonly closeListeners: Emitter<[reason: CloseReason, error?: Error]>;
  private readonly daemonCloseListeners: Emitter<[string | number]>;
  private readonly callTimeoutMs: number;
  private nextSerial = 1;
  private closedWith: { reason: CloseReason; error?: Error } | null = null;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private lastHeardAt = Date.now();

  private constructor(
    socket: Socket,
    uri: string,
    callTimeoutMs: number,
    onListenerError: ListenerErrorHook | undefined,
  ) {
    this.socket = socket;
    this.uri = uri;
    this.callTimeoutMs = callTimeoutMs;
    this.lifecycleListeners = new Emitter(onListenerError);
    this.rebootListeners = new Emitter(onListenerError);
    this.closeListeners = new Emitter(onListenerError);
    this.daemonCloseListeners = new Emitter(onListenerError);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error) => this.terminate('error', error));
    socket.on('close', () => this.terminate('eof'));
  }

  /** Opens the socket, runs the handshake libvirt's own client runs, and returns a ready client. */
  static async connect(options: ConnectOptions = {}): Promise<LibvirtClient> {
    const uri = options.uri ?? DEFAULT_URI;
    const resolved = resolveUri(uri);
    const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    const socket = await openSocket(resolved.endpoint, connectTimeoutMs);
    const client = new LibvirtClient(
      socket,
      uri,
      options.callTimeoutMs ?? 30_000,
      options.onListenerError,
    );
    try {
      await client.handshake(resolved.name, connectTimeoutMs);
    } catch (error) {
      client.terminate('error', error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
    client.startKeepalive(options.keepaliveIntervalMs ?? 5_000, options.keepaliveCount ?? 5);
    return client;
  }

  get closed(): boolean {
    return this.closedWith !== null;
  }

  // ---- notifications ---------------------------------------------------------------------

  onLifecycle(listener: Listener<LifecycleEventMessage>): () => void {
    return this.lifecycleListeners.on(listener);
  }

  onReboot(listener: Listener<RebootEventMessage>): () => void {
    return this.rebootListeners.on(listener);
  }

  /** Called once when the connection ends, whoever ended it. */
  onClose(listener: (reason: CloseReason, error?: Error) => void): () => void {
    if (this.closedWith) {
      const { reason, error } = this.closedWith;
      queueMicrotask(() => listener(reason, error));
      return () => {};
    }
    return this.closeListeners.on(listener);
  }

  /** The daemon's own word that it is closing this connection (before the socket drops). */
  onDaemonClose(listener: Listener<string | number>): () => void {
    return this.daemonCloseListeners.on(listener);
  }

  // ---- typed calls -----------------------------------------------------------------------

  async getLibVersion(): Promise<string> {
    const version = Number(
      await this.request(Proc.CONNECT_GET_LIB_VERSION, undefined, (r) => r.u64()),
    );
    return `${Math.floor(version / 1_000_000)}.${Math.floor(version / 1000) % 1000}.${version % 1000}`;
  }

  getHostname(): Promise<string> {
    return this.request(Proc.CONNECT_GET_HOSTNAME, undefined, (r) => r.string(Limit.STRING));
  }

  getUri(): Promise<string> {
    return this.request(Proc.CONNECT_GET_URI, undefined, (r) => r.string(Limit.STRING));
  }

  listAllDomains(flags = 0): Promise<Domain[]> {
    return this.request(Proc.CONNECT_LIST_ALL_DOMAINS, new XdrWriter().i32(1).u32(flags), (r) => {
      const domains = readDomainList(r);
      r.u32();
      return domains;
    });
  }

  lookupByUuid(uuid: string): Promise<Domain> {
    const args = new XdrWriter().fixedOpaque(uuidToBytes(uuid));
    return this.request(Proc.DOMAIN_LOOKUP_BY_UUID, args, readDomain);
  }

  lookupByName(name: string): Promise<Domain> {
    return this.request(Proc.DOMAIN_LOOKUP_BY_NAME, new XdrWriter().string(name), readDomain);
  }

  getState(domain: Domain): Promise<DomainStateInfo> {
    return this.request(Proc.DOMAIN_GET_STATE, domainArgs(domain).u32(0), (r) =>
      describeState(r.i32(), r.i32()),
    );
  }

  /** Every domain's state and reason in one round trip (virConnectGetAllDomainStats, STATE group). */
  getAllDomainStates(flags = 0): Promise<DomainWithState[]> {
    return this.domainStates([], flags);
  }

  /**
   * Every domain's state, like getAllDomainStates. When the reply is byte for byte the one
   * `previous` was decoded from, resolves with `previous` itself: a periodic listing of a host
   * where nothing changed then costs a comparison of bytes, not a thousand decoded records.
   */
  listDomainStates(previous: DomainStatesListing | null = null): Promise<DomainStatesListing> {
    const args = new XdrWriter().array([], writeDomain).u32(STATS_STATE).u32(0);
    return this.request(Proc.CONNECT_GET_ALL_DOMAIN_STATS, args, (r) => {
      const reply = r.unread();
      if (previous !== null && reply.equals(previous.reply)) {
        r.skip(reply.length, 'domain stats');
        return previous;
      }
      return { domains: decodeDomainStates(r), reply };
    });
  }

  /**
   * The named domains' states, with their names, in one round trip (virDomainListGetStats).
   * Domains the daemon does not know are left out of the answer: an empty answer for one uuid
   * means it does not exist, which saves a lookup before every state query.
   */
  getDomainStatesByUuid(uuids: readonly string[]): Promise<DomainWithState[]> {
    if (uuids.length === 0) return Promise.resolve([]);
    return this.domainStates(uuids.map((uuid) => ({ name: '', uuid, id: -1 })));
  }

  private domainStates(domains: readonly Domain[], flags = 0): Promise<DomainWithState[]> {
    const args = new XdrWriter().array(domains, writeDomain).u32(STATS_STATE).u32(flags);
    return this.request(Proc.CONNECT_GET_ALL_DOMAIN_STATS, args, decodeDomainStates);
  }

  defineXml(xml: string): Promise<Domain> {
    return this.request(Proc.DOMAIN_DEFINE_XML, new XdrWriter().string(xml), readDomain);
  }

  undefine(domain: Domain, flags = 0): Promise<void> {
    return this.request(Proc.DOMAIN_UNDEFINE_FLAGS, domainArgs(domain).u32(flags), noReply);
  }

  /** Starts a defined domain; returns it with its new id. */
  create(domain: Domain, flags = 0): Promise<Domain> {
    return this.request(Proc.DOMAIN_CREATE_WITH_FLAGS, domainArgs(domain).u32(flags), readDomain);
  }

  shutdown(domain: Domain, flags = 0): Promise<void> {
    return this.request(Proc.DOMAIN_SHUTDOWN_FLAGS, domainArgs(domain).u32(flags), noReply);
  }

  destroy(domain: Domain, flags = 0): Promise<void> {
    return this.request(Proc.DOMAIN_DESTROY_FLAGS, domainArgs(domain).u32(flags), noReply);
  }

  reboot(domain: Domain, flags = 0): Promise<void> {
    return this.request(Proc.DOMAIN_REBOOT, domainArgs(domain).u32(flags), noReply);
  }

  reset(domain: Domain): Promise<void> {
    return this.request(Proc.DOMAIN_RESET, domainArgs(domain).u32(0), noReply);
  }

  suspend(domain: Domain): Promise<void> {
    return this.request(Proc.DOMAIN_SUSPEND, domainArgs(domain), noReply);
  }

  resume(domain: Domain): Promise<void> {
    return this.request(Proc.DOMAIN_RESUME, domainArgs(domain), noReply);
  }

  /** Registers for an event id (DomainEventId) on every domain; returns the callback id. */
  registerDomainEvent(eventId: number): Promise<number> {
    const args = new XdrWriter().i32(eventId).bool(false);
    return this.request(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY, args, (r) => r.i32());
  }

  deregisterDomainEvent(callbackId: number): Promise<void> {
    const args = new XdrWriter().i32(callbackId);
    return this.request(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY, args, noReply);
  }

  /** Sends CONNECT_CLOSE (briefly), then drops the socket. Pending calls reject. */
  async close(): Promise<void> {
    if (this.closedWith) return;
    try {
      await this.call(Proc.CONNECT_CLOSE, undefined, { timeoutMs: 1000 });
    } catch {
      // The daemon may already be gone; closing must succeed regardless.
    }
    this.terminate('client');
  }

  // ---- the RPC core ----------------------------------------------------------------------

  /** One call on the REMOTE program; resolves with the reply payload. */
  call(procedure: number, args?: XdrWriter, options: { timeoutMs?: number } = {}): Promise<Buffer> {
    if (this.closedWith) {
      return Promise.reject(new LibvirtClientError('closed', 'the libvirt connection is closed'));
    }
    const serial = this.nextSerial;
    this.nextSerial = (this.nextSerial + 1) >>> 0 || 1;
    const timeoutMs = options.timeoutMs ?? this.callTimeoutMs;
    return new Promise<Buffer>((resolve, reject) => {
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              this.pending.delete(serial);
              reject(
                new LibvirtClientError(
                  'timeout',
                  `libvirt procedure ${procedure} got no reply within ${timeoutMs} ms`,
                ),
              );
            }, timeoutMs)
          : undefined;
      this.pending.set(serial, { procedure, resolve, reject, timer });
      this.send(Program.REMOTE, procedure, MessageType.CALL, serial, args?.bytes());
    });
  }

  /**
   * A call whose reply is decoded by `decode`. A reply that does not decode means the daemon and
   * we disagree about the protocol: the connection is dropped, not just the call failed.
   */
  private async request<T>(
    procedure: number,
    args: XdrWriter | undefined,
    decode: (reader: XdrReader) => T,
    options: { timeoutMs?: number } = {},
  ): Promise<T> {
    const reader = new XdrReader(await this.call(procedure, args, options));
    try {
      const value = decode(reader);
      reader.end(`reply to procedure ${procedure}`);
      return value;
    } catch (error) {
      if (error instanceof LibvirtClientError) this.terminate('error', error);
      throw error;
    }
  }

  private send(
    program: number,
    procedure: number,
    type: number,
    serial: number,
    body?: Uint8Array,
  ): void {
    const frame = encodePacket(
      { program, version: PROTOCOL_VERSION, procedure, type, serial, status: MessageStatus.OK },
      body,
    );
    this.socket.write(frame);
  }

  private onData(chunk: Buffer): void {
    if (this.closedWith) return;
    this.lastHeardAt = Date.now();
    try {
      for (const frame of this.decoder.push(chunk)) {
        this.route(decodePacket(frame));
        if (this.closedWith) return;
      }
    } catch (error) {
      this.terminate('error', error instanceof Error ? error : new Error(String(error)));
    }
  }

  /** Routes by message type first: replies by serial, messages by program and procedure. */
  private route(packet: Packet): void {
    const { header } = packet;
    switch (header.type) {
      case MessageType.REPLY:
        return this.onReply(packet);
      case MessageType.MESSAGE:
        if (header.program === Program.KEEPALIVE) return this.onKeepalive(header.procedure);
        if (header.program === Program.REMOTE) return this.onEvent(packet);
        return; // other programs' messages (QEMU monitor events) are not ours to handle
      default:
        throw protocolError(`unexpected message type ${header.type} from the daemon`);
    }
  }

  private onReply({ header, body }: Packet): void {
    if (header.program !== Program.REMOTE) {
      throw protocolError(`reply for program 0x${header.program.toString(16)} we never called`);
    }
    const call = this.pending.get(header.serial);
    // A late reply to a call that already timed out: nothing is waiting for it.
    if (!call) return;
    if (call.procedure !== header.procedure) {
      throw protocolError(
        `reply serial ${header.serial} is for procedure ${header.procedure}, not ${call.procedure}`,
      );
    }
    // Decoded while the call is still pending: if the reply is bad, the connection's end rejects
    // this call along with the others instead of leaving it waiting forever.
    let error: LibvirtError | null = null;
    if (header.status === MessageStatus.ERROR) {
      error = new LibvirtError(readRemoteError(new XdrReader(body)));
    } else if (header.status !== MessageStatus.OK) {
      throw protocolError(`unexpected status ${header.status} on a reply`);
    }
    this.pending.delete(header.serial);
    clearTimeout(call.timer);
    if (error) call.reject(error);
    else call.resolve(body);
  }

  private onKeepalive(procedure: number): void {
    if (procedure === KeepaliveProc.PING) {
      this.send(Program.KEEPALIVE, KeepaliveProc.PONG, MessageType.MESSAGE, 0);
    }
    // A PONG needs no handling: hearing anything at all is proof of life.
  }

  private onEvent({ header, body }: Packet): void {
    const receivedAt = Date.now();
    switch (header.procedure) {
      case Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE: {
        const m = readLifecycleMessage(new XdrReader(body));
        const message: LifecycleEventMessage = {
          domain: m.domain,
          event: eventName(m.event),
          detail: eventDetailName(m.event, m.detail),
          eventCode: m.event,
          detailCode: m.detail,
          receivedAt,
        };
        this.lifecycleListeners.emit(message);
        return;
      }
      case Proc.DOMAIN_EVENT_CALLBACK_REBOOT: {
        const m = readRebootMessage(new XdrReader(body));
        this.rebootListeners.emit({ domain: m.domain, receivedAt });
        return;
      }
      case Proc.CONNECT_EVENT_CONNECTION_CLOSED: {
        const reader = new XdrReader(body);
        const reason = reader.i32();
        reader.end('connection closed event');
        this.daemonCloseListeners.emit(DAEMON_CLOSE_REASONS[reason] ?? reason);
        return;
      }
      default:
        return; // an event we did not register for, or one newer than us
    }
  }

  /**
   * libvirtd pings a client it has not heard from for its keepalive_interval (5 s by default) and
   * drops one that does not answer; it answers our PINGs too. When both sides ping, an idle
   * connection wakes each end twice per interval. So we only listen: any message is proof of
   * life, and we PING only after interval × count of silence (a daemon with keepalive off), then
   * give up at interval × (count + 1). One timer, re-armed from the last message when it fires,
   * so a daemon that pings costs a wakeup of ours only once per interval × count.
   */
  private startKeepalive(intervalMs: number, count: number): void {
    if (intervalMs <= 0) return;
    const askAfterMs = intervalMs * count;
    const deadAfterMs = intervalMs * (count + 1);
    const check = (): void => {
      const silentMs = Date.now() - this.lastHeardAt;
      if (silentMs >= deadAfterMs) {
        this.terminate(
          'keepalive',
          new LibvirtClientError(
            'closed',
            `libvirtd sent nothing for ${deadAfterMs} ms, nor answered a keepalive ping`,
          ),
        );
        return;
      }
      let nextCheckMs = askAfterMs - silentMs;
      if (nextCheckMs <= 0) {
        this.send(Program.KEEPALIVE, KeepaliveProc.PING, MessageType.MESSAGE, 0);
        nextCheckMs = deadAfterMs - silentMs;
      }
      this.keepaliveTimer = setTimeout(check, nextCheckMs).unref();
    };
    this.keepaliveTimer = setTimeout(check, Math.max(askAfterMs, 1)).unref();
  }

  private async handshake(name: string, timeoutMs: number): Promise<void> {
    const options = { timeoutMs };
    const types = await this.request(
      Proc.AUTH_LIST,
      undefined,
      (r) => r.array(Limit.AUTH_TYPE_LIST, 4, (x) => x.i32(), 'auth types'),
      options,
    );
    if (types.length > 0 && !types.includes(AuthType.NONE)) {
      if (!types.includes(AuthType.POLKIT)) {
        throw new LibvirtClientError(
          'auth',
          `libvirtd requires authentication this client does not support (auth types ${types.join(', ')}); ` +
            'use a socket that allows auth none, or polkit as root',
        );
      }
      // Polkit lets root through; anyone else gets libvirt's own refusal as a LibvirtError.
      await this.call(70, undefined, options);
    }
    await this.supportsFeature(Feature.PROGRAM_KEEPALIVE, options);
    await this.call(
      Proc.CONNECT_OPEN,
      new XdrWriter().optional(name, (w, v) => w.string(v)).u32(0),
      options,
    );
    if (!(await this.supportsFeature(Feature.REMOTE_EVENT_CALLBACK, options))) {
      throw new LibvirtClientError(
        'connect',
        'libvirtd does not support event callbacks (libvirt 1.2.1 or newer is needed)',
      );
    }
    if (await this.supportsFeature(Feature.REMOTE_CLOSE_CALLBACK, options)) {
      await this.call(Proc.CONNECT_REGISTER_CLOSE_CALLBACK, undefined, options);
    }
  }

  private async supportsFeature(feature: number, options: { timeoutMs: number }): Promise<boolean> {
    const args = new XdrWriter().i32(feature);
    return this.request(Proc.CONNECT_SUPPORTS_FEATURE, args, (r) => r.i32() !== 0, options);
  }

  /** Ends the connection once: rejects every pending call and tells the close listeners. */
  private terminate(reason: CloseReason, error?: Error): void {
    if (this.closedWith) return;
    this.closedWith = { reason, error };
    clearTimeout(this.keepaliveTimer);
    this.socket.destroy();
    const failure = new LibvirtClientError(
      'closed',
      `libvirt connection closed (${reason})${error ? `: ${error.message}` : ''}`,
      { cause: error },
    );
    for (const call of this.pending.values()) {
      clearTimeout(call.timer);
      call.reject(failure);
    }
    this.pending.clear();
    this.closeListeners.emit(reason, error);
    this.closeListeners.clear();
  }
}

function noReply(): void {}

function domainArgs(domain: Domain): XdrWriter {
  const writer = new XdrWriter();
  writeDomain(writer, domain);
  return writer;
}

function decodeDomainStates(r: XdrReader): DomainWithState[] {
  return readDomainStates(r).map(({ domain, state, reason }) => ({
    domain,
    ...describeState(state, reason),
  }));
}

function describeState(stateCode: number, reasonCode: number): DomainStateInfo {
  return {
    state: stateName(stateCode),
    reason: stateReasonName(stateCode, reasonCode),
    stateCode,
    reasonCode,
  };
}

function openSocket(endpoint: Endpoint, timeoutMs: number): Promise<Socket> {
  const where = endpoint.transport === 'unix' ? endpoint.path : `${endpoint.host}:${endpoint.port}`;
  return new Promise((resolve, reject) => {
    const socket =
      endpoint.transport === 'unix'
        ? createConnection({ path: endpoint.path })
        : createConnection({ host: endpoint.host, port: endpoint.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new LibvirtClientError('connect', `timed out connecting to libvirt at ${where}`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new LibvirtClientError(
          'connect',
          `cannot connect to libvirt at ${where}: ${error.code ?? error.message}`,
          { cause: error },
        ),
      );
    });
  });
}
