#!/usr/bin/env bash
# Starts and inspects the machine's libvirtd on a host without systemd (CI, containers, dev
# boxes), for scripts/provision-libvirt.sh. Tests never use it: suites that take libvirtd away run
# a private daemon of their own (test/support/private-libvirtd.ts).
#
#   scripts/libvirtd.sh start | status | stop | restart
#
# stop and restart act only on a daemon this script started, known by the pidfile it wrote (pid
# and start time, so a reused pid is never hit). Any other libvirtd (started by systemd, by hand,
# by someone else) may be running guests: it is left alone and the command fails saying so.
#
# Environment: LIBVIRTD_LOG (default /var/log/libvirt/libvirtd.log),
#              LIBVIRTD_WAIT_SECONDS (default 60) bounds every wait,
#              HVSYNC_LIBVIRTD_PIDFILE (default /run/hvsync-libvirtd.pid) where start records
#              the daemon it started.
set -euo pipefail

OWN_PIDFILE=${HVSYNC_LIBVIRTD_PIDFILE:-/run/hvsync-libvirtd.pid}
SOCKET=/var/run/libvirt/libvirt-sock
LOG=${LIBVIRTD_LOG:-/var/log/libvirt/libvirtd.log}
WAIT_SECONDS=${LIBVIRTD_WAIT_SECONDS:-60}
# qemu:///system rather than test:///default: the test driver also exists inside the client
# library, so only a URI served by the daemon proves the socket answers.
PROBE_URI=qemu:///system

say() { echo "libvirtd: $*"; }

# Clock ticks since boot at which the process started: survives exec, differs on pid reuse.
start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # Field 22 of /proc/PID/stat is the 20th after the command name.
  awk '{ print $20 }' <<<"$stat"
}

# The machine's (root) libvirtd, whoever started it: for reporting, never for killing. Tests'
# private daemons run unprivileged and are not the machine's.
all_pids() { pgrep -x -u 0 libvirtd | tr '\n' ' ' | sed 's/ $//' || true; }

process_state() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  echo "${stat%% *}"
}

# The daemon this script started, if it still runs: pid, name and start time must all match.
own_pid() {
  local pid started
  [[ -r $OWN_PIDFILE ]] || return 1
  read -r pid started <"$OWN_PIDFILE" || true
  [[ $pid =~ ^[0-9]+$ && -n $started ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == libvirtd ]] || return 1
  [[ $(start_time "$pid") == "$started" ]] || return 1
  # A zombie has exited; nobody may have reaped it yet.
  [[ $(process_state "$pid") != Z ]] || return 1
  echo "$pid"
}

answers() { timeout 10 virsh -q -c "$PROBE_URI" version >/dev/null 2>&1; }

wait_until_answering() {
  local deadline=$((SECONDS + WAIT_SECONDS))
  until answers; do
    if [[ -z $(all_pids) ]]; then
      say "exited during start; last lines of $LOG:"
      tail -n 20 "$LOG" >&2 || true
      return 1
    fi
    if ((SECONDS >= deadline)); then
      say "socket $SOCKET did not answer within ${WAIT_SECONDS}s; last lines of $LOG:"
      tail -n 20 "$LOG" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

start() {
  local running
  running=$(all_pids)
  if [[ -n $running ]]; then
    say "already running (pid $running)"
  else
    mkdir -p "$(dirname "$LOG")"
    say "starting, log in $LOG"
    # setsid + redirected fds: the daemon must not hold the caller's pipes open nor die with the
    # caller's process group.
    setsid libvirtd >>"$LOG" 2>&1 </dev/null &
    local pid=$!
    echo "$pid $(start_time "$pid")" >"$OWN_PIDFILE"
  fi
  wait_until_answering
  say "answering on $SOCKET"
}

stop() {
  local pid
  if ! pid=$(own_pid); then
    rm -f "$OWN_PIDFILE"
    local running
    running=$(all_pids)
    if [[ -z $running ]]; then
      say "not running"
      return 0
    fi
    say "libvirtd (pid $running) was not started by this script: left alone, it may run guests." >&2
    say "Stop it the way it was started (systemctl stop libvirtd, or its owner), if at all." >&2
    return 1
  fi
  say "stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + WAIT_SECONDS / 4))
  while own_pid >/dev/null; do
    if ((SECONDS >= deadline)); then
      say "still running after SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + WAIT_SECONDS))
      while own_pid >/dev/null; do
        if ((SECONDS >= deadline)); then
          say "did not exit after SIGKILL"
          return 1
        fi
        sleep 0.1
      done
      break
    fi
    sleep 0.1
  done
  rm -f "$OWN_PIDFILE"
  say "stopped"
}

status() {
  local running
  running=$(all_pids)
  if [[ -n $running ]]; then
    if answers; then
      say "running (pid $running), answering on $SOCKET"
      return 0
    fi
    say "running (pid $running), not answering on $SOCKET"
    return 1
  fi
  say "not running"
  return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart)
    stop
    start
    ;;
  status) status ;;
  *)
    echo "usage: $0 start|status|stop|restart" >&2
    exit 2
    ;;
esac
