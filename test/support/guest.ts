// Real QEMU guests with no OS: a hand-assembled boot sector is the whole guest. One powers
// itself off from inside after a delay (the seed's scenario: the user runs `shutdown -h now`),
// the other idles until someone stops it.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { QEMU_URI, virsh } from './libvirt.ts';
import { giveToDaemon, type DaemonUser } from './private-libvirtd.ts';

export const BOOT_SECTOR_SIZE = 512;
export const DEFAULT_POWEROFF_DELAY_MS = 1500;

// The BIOS loads the sector at 0000:7C00 and jumps to it in 16-bit real mode.
const PROLOGUE = [
  0xfa, //              cli                 ; no interrupts while the stack is being set
  0x31,
  0xc0, //        xor  ax, ax
  0x8e,
  0xd8, //        mov  ds, ax
  0x8e,
  0xd0, //        mov  ss, ax
  0xbc,
  0x00,
  0x7c, //  mov  sp, 0x7c00     ; stack grows down below the sector
  0xfb, //              sti                 ; the BIOS wait and hlt need timer interrupts
];

// Halting with interrupts on lets QEMU's TCG sleep instead of spinning on `jmp $`.
const HALT_FOREVER = [
  0xf4, //              halt: hlt
  0xeb,
  0xfd, //        jmp  halt           ; an interrupt woke us: halt again
];

function waitMicroseconds(microseconds: number): number[] {
  const high = Math.floor(microseconds / 0x10000) & 0xffff;
  const low = microseconds & 0xffff;
  return [
    0xb4,
    0x86, //                          mov  ah, 0x86      ; BIOS: wait CX:DX microseconds
    0xb9,
    high & 0xff,
    high >> 8, //        mov  cx, high word
    0xba,
    low & 0xff,
    low >> 8, //          mov  dx, low word
    0xcd,
    0x15, //                          int  0x15
  ];
}

// PIIX4 ACPI (machine 'pc'): PM1a control is I/O port 0x604 once SeaBIOS has placed the PM
// block at 0x600; SLP_EN (bit 13) with SLP_TYP 0 enters S5, which QEMU treats as a
// guest-initiated poweroff (libvirt: SHUTDOWN/FINISHED, then STOPPED/SHUTDOWN).
const ACPI_POWEROFF = [
  0xba,
  0x04,
  0x06, //  mov  dx, 0x604
  0xb8,
  0x00,
  0x20, //  mov  ax, 0x2000
  0xef, //              out  dx, ax
];

function bootSector(code: number[]): Buffer {
  if (code.length > BOOT_SECTOR_SIZE - 2) throw new RangeError('boot code does not fit');
  const sector = Buffer.alloc(BOOT_SECTOR_SIZE);
  Buffer.from(code).copy(sector);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

/** A boot sector that waits delayMs (BIOS timer) and then powers the machine off via ACPI. */
export function selfStoppingBootSector(delayMs: number = DEFAULT_POWEROFF_DELAY_MS): Buffer {
  const microseconds = Math.round(delayMs * 1000);
  if (!Number.isFinite(microseconds) || microseconds < 0 || microseconds > 0xffffffff) {
    throw new RangeError(`delayMs must be between 0 and ${0xffffffff / 1000}, got ${delayMs}`);
  }
  return bootSector([
    ...PROLOGUE,
    ...waitMicroseconds(microseconds),
    ...ACPI_POWEROFF,
    ...HALT_FOREVER,
  ]);
}

/** A boot sector that halts forever, waking only for interrupts: a guest that stays running. */
export function idleBootSector(): Buffer {
  return bootSector([...PROLOGUE, ...HALT_FOREVER]);
}

export interface GuestOptions {
  name: string;
  /** The libvirt URI cleanup() removes the domain from, if a test left it defined. */
  uri?: string;
  /** For a private session daemon: its QEMU runs as this user and must open the disk. */
  owner?: DaemonUser;
}

export interface SelfStoppingGuestOptions extends GuestOptions {
  delayMs?: number;
}

export interface Guest {
  name: string;
  uuid: string;
  /** Domain XML for QEMU (TCG), ready for `virsh define` or DOMAIN_DEFINE_XML. */
  xml: string;
  diskPath: string;
  /** The same XML in a file beside the disk, for `virsh define`. */
  xmlPath: string;
  /** Destroys and undefines the domain if it still exists, then deletes the disk image. */
  cleanup(): Promise<void>;
}

function escapeXml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/'/g, '&apos;')
    .replace(/"/g, '&quot;');
}

// Only what the boot sector needs: no network, graphics, serial, USB or balloon, so QEMU starts
// fast and no host resource (bridge, pty, virtlogd) is involved.
export function guestDomainXml(name: string, uuid: string, diskPath: string): string {
  return `<domain type='qemu'>
  <name>${escapeXml(name)}</name>
  <uuid>${uuid}</uuid>
  <memory unit='MiB'>16</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='${escapeXml(diskPath)}'/>
      <target dev='hda' bus='ide'/>
    </disk>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

async function createGuest(options: GuestOptions, sector: Buffer): Promise<Guest> {
  const dir = await mkdtemp(join(tmpdir(), 'hvsync-guest-'));
  const diskPath = join(dir, 'boot.img');
  await writeFile(diskPath, sector);
  const uuid = randomUUID();
  const xml = guestDomainXml(options.name, uuid, diskPath);
  const xmlPath = join(dir, 'domain.xml');
  await writeFile(xmlPath, xml);
  if (options.owner) giveToDaemon([dir, diskPath, xmlPath], options.owner);
  const uri = options.uri ?? QEMU_URI;
  return {
    name: options.name,
    uuid,
    xml,
    diskPath,
    xmlPath,
    async cleanup() {
      // Either may fail because the test already did it, or never defined the domain.
      await virsh(['destroy', uuid], uri).catch(() => undefined);
      await virsh(['undefine', uuid], uri).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A guest that boots, waits delayMs and powers itself off as if its OS had shut down. */
export function createSelfStoppingGuest(options: SelfStoppingGuestOptions): Promise<Guest> {
  return createGuest(options, selfStoppingBootSector(options.delayMs));
}

/**
 * A guest that keeps running until it is destroyed. Nothing in it handles ACPI, so a graceful
 * shutdown request (virsh shutdown, DOMAIN_SHUTDOWN) is accepted and then ignored.
 */
export function createIdleGuest(options: GuestOptions): Promise<Guest> {
  return createGuest(options, idleBootSector());
}
