// `hvsync events`: every lifecycle and reboot event as it arrives, one line each.
import {
  DEFAULT_URI,
  DomainEventId,
  LibvirtClient,
  type Domain,
  type LifecycleEventMessage,
} from '../libvirt/index.ts';

export interface EventsOptions {
  readonly uri?: string;
  readonly json?: boolean;
}

export interface EventLine {
  readonly time: string;
  readonly type: 'lifecycle' | 'reboot';
  readonly domain: { readonly name: string; readonly uuid: string; readonly id: number };
  readonly event: string | number;
  readonly detail: string | number | null;
}

/** The line virsh would print, `virsh event --all --loop --timestamp` style. */
function formatHuman(line: EventLine): string {
  const stamp = line.time.replace('T', ' ').replace('Z', '+0000');
  if (line.type === 'reboot') return `${stamp}: event 'reboot' for domain '${line.domain.name}'`;
  return `${stamp}: event 'lifecycle' for domain '${line.domain.name}': ${capitalize(line.event)} ${capitalize(line.detail ?? '')}`;
}

function lifecycleLine(message: LifecycleEventMessage): EventLine {
  return {
    time: new Date(message.receivedAt).toISOString(),
    type: 'lifecycle',
    domain: domainOf(message.domain),
    event: message.event,
    detail: message.detail,
  };
}

function domainOf(domain: Domain): EventLine['domain'] {
  return { name: domain.name, uuid: domain.uuid, id: domain.id };
}

function capitalize(word: string | number): string {
  const text = String(word);
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Runs until interrupted (exit 0) or the connection drops (exit 1). */
export async function runEvents(options: EventsOptions): Promise<number> {
  const uri = options.uri ?? DEFAULT_URI;
  const client = await LibvirtClient.connect({ uri });
  const print = (line: EventLine) =>
    process.stdout.write(`${options.json ? JSON.stringify(line) : formatHuman(line)}\n`);

  client.onLifecycle((message) => print(lifecycleLine(message)));
  client.onReboot(({ domain, receivedAt }) =>
    print({
      time: new Date(receivedAt).toISOString(),
      type: 'reboot',
      domain: domainOf(domain),
      event: 'reboot',
      detail: null,
    }),
  );
  try {
    await client.registerDomainEvent(DomainEventId.LIFECYCLE);
    await client.registerDomainEvent(DomainEventId.REBOOT);
  } catch (error) {
    await client.close();
    throw error;
  }
  process.stderr.write(`hvsync: listening for events on ${uri} (Ctrl-C to stop)\n`);

  return new Promise<number>((resolve) => {
    let interrupted = false;
    const stop = () => {
      interrupted = true;
      void client.close();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    client.onClose((reason, error) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      if (interrupted) return resolve(0);
      process.stderr.write(
        `hvsync: connection to libvirt lost (${reason}${error ? `: ${error.message}` : ''})\n`,
      );
      resolve(1);
    });
  });
}
