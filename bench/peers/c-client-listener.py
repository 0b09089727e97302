"""One listener of `npm run bench:peers`: libvirt's C client as Nova drives it.

python3-libvirt with libvirt's default event loop implementation registered before the connection
opens, a native thread running virEventRunDefaultImpl() forever, and a lifecycle callback
registered with domainEventRegisterAny on every domain. The callback runs on that native thread,
as Nova's does, and does what Nova's does first (read the domain's UUID) plus reading its name.

Same contract as hvsync-listener.ts: one JSON argument, "ready" on stdout once registered, the
CLOCK_MONOTONIC time (time.monotonic_ns) the callback ran written into the event's slot, and at
the end (every slot filled, or "end" on stdin) the slots to a file and one summary line to stdout.
"""

import array
import json
import re
import sys
import threading
import time

import libvirt

# The storm's six calls and the (event, detail) each causes; storm.ts holds the same table.
STEPS = [
    (libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_DEFINED_ADDED),
    (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED),
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED),
    (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED_REMOVED),
]
STEP_OF = {pair: index for index, pair in enumerate(STEPS)}


def status_bytes(field):
    with open("/proc/self/status") as status:
        match = re.search(r"^%s:\s+(\d+) kB" % field, status.read(), re.M)
    return int(match.group(1)) * 1024 if match else None


def cpu_seconds():
    # Process-wide: the native event thread's time counts.
    return time.process_time()


class Listener:
    def __init__(self, args):
        self.prefix = args["prefix"] + "-"
        self.chains = args["chains"]
        self.timestamps_path = args["timestampsPath"]
        self.slots = array.array("q", bytes(8 * self.chains * len(STEPS)))
        self.delivered = 0
        self.duplicates = 0
        self.unexpected = 0
        self.done = threading.Event()
        self.cpu_at_last = None

    def on_lifecycle(self, conn, dom, event, detail, opaque):
        now = time.monotonic_ns()
        dom.UUIDString()  # Nova's callback keys its event by UUID
        name = dom.name()
        if not name.startswith(self.prefix):
            return  # someone else's domain on the shared daemon
        try:
            chain = int(name[len(self.prefix):])
        except ValueError:
            return
        step = STEP_OF.get((event, detail), -1)
        if step < 0 or chain >= self.chains:
            self.unexpected += 1
            return
        slot = chain * len(STEPS) + step
        if self.slots[slot] != 0:
            self.duplicates += 1
            return
        self.slots[slot] = now
        self.delivered += 1
        if self.delivered == len(self.slots):
            self.cpu_at_last = cpu_seconds()
            self.done.set()


def version_text(number):
    return "%d.%d.%d" % (number // 1000000, number // 1000 % 1000, number % 1000)


def run_event_loop():
    while True:
        libvirt.virEventRunDefaultImpl()


def wait_for_end(done):
    for line in sys.stdin:
        if "end" in line:
            break
    done.set()


def main():
    args = json.loads(sys.argv[1])
    listener = Listener(args)
    # Order matters (Nova bug 1220278): the event implementation before the connection opens.
    libvirt.virEventRegisterDefaultImpl()
    threading.Thread(target=run_event_loop, name="libvirt-event-loop", daemon=True).start()
    conn = libvirt.open(args["uri"])
    conn.domainEventRegisterAny(
        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, listener.on_lifecycle, None
    )
    threading.Thread(target=wait_for_end, args=(listener.done,), daemon=True).start()

    rss_ready = status_bytes("VmRSS")
    cpu_at_ready = cpu_seconds()
    print("ready", flush=True)

    listener.done.wait()
    cpu_at_last = listener.cpu_at_last if listener.cpu_at_last is not None else cpu_seconds()
    with open(listener.timestamps_path, "wb") as out:
        listener.slots.tofile(out)
    summary = {
        "client": "libvirt C client %s" % version_text(libvirt.getVersion()),
        "delivered": listener.delivered,
        "duplicates": listener.duplicates,
        "unexpected": listener.unexpected,
        "cpuSeconds": cpu_at_last - cpu_at_ready,
        "rssReadyBytes": rss_ready,
        "rssPeakBytes": status_bytes("VmHWM"),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
