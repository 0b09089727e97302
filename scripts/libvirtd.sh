#!/usr/bin/env bash
# Starts, stops and inspects a libvirtd on a host without systemd (CI, containers, dev boxes).
# Tests use it to take libvirtd away while calls are in flight and bring it back.
#
#   scripts/libvirtd.sh start | stop | restart | status
#
# Environment: LIBVIRTD_LOG (default /var/log/libvirt/libvirtd.log),
#              LIBVIRTD_WAIT_SECONDS (default 60) bounds every wait.
set -euo pipefail

PIDFILE=/var/run/libvirtd.pid
SOCKET=/var/run/libvirt/libvirt-sock
LOG=${LIBVIRTD_LOG:-/var/log/libvirt/libvirtd.log}
WAIT_SECONDS=${LIBVIRTD_WAIT_SECONDS:-60}
# qemu:///system rather than test:///default: the test driver also exists inside the client
# library, so only a URI served by the daemon proves the socket answers.
PROBE_URI=qemu:///system

say() { echo "libvirtd: $*"; }

# The pidfile can outlive a killed daemon and its number can be reused, so check the name too.
daemon_pids() {
  local pid
  if [[ -r $PIDFILE ]]; then
    pid=$(tr -dc '0-9' <"$PIDFILE")
    if [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == libvirtd ]]; then
      echo "$pid"
      return 0
    fi
  fi
  # Started by someone else with another pidfile: fall back to the process name.
  pgrep -x libvirtd || true
}

is_running() { [[ -n $(daemon_pids) ]]; }

answers() { timeout 10 virsh -q -c "$PROBE_URI" version >/dev/null 2>&1; }

wait_until_answering() {
  local deadline=$((SECONDS + WAIT_SECONDS))
  until answers; do
    if ! is_running; then
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
  if is_running; then
    say "already running (pid $(daemon_pids | tr '\n' ' ' | sed 's/ $//'))"
  else
    mkdir -p "$(dirname "$LOG")"
    say "starting, log in $LOG"
    # setsid + redirected fds: the daemon must not hold the caller's pipes open (a test's
    # execFile would wait for them) nor die with the caller's process group.
    setsid libvirtd >>"$LOG" 2>&1 </dev/null &
  fi
  wait_until_answering
  say "answering on $SOCKET"
}

stop() {
  local pids
  pids=$(daemon_pids)
  if [[ -z $pids ]]; then
    say "not running"
    return 0
  fi
  say "stopping (pid $(echo "$pids" | tr '\n' ' ' | sed 's/ $//'))"
  # shellcheck disable=SC2086 # one pid per word
  kill -TERM $pids 2>/dev/null || true
  local deadline=$((SECONDS + WAIT_SECONDS / 4))
  while is_running; do
    if ((SECONDS >= deadline)); then
      say "still running after SIGTERM, sending SIGKILL"
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null || true
      deadline=$((SECONDS + WAIT_SECONDS))
      while is_running; do
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
  say "stopped"
}

status() {
  if is_running; then
    if answers; then
      say "running (pid $(daemon_pids | tr '\n' ' ' | sed 's/ $//')), answering on $SOCKET"
      return 0
    fi
    say "running (pid $(daemon_pids | tr '\n' ' ' | sed 's/ $//')), not answering on $SOCKET"
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
    echo "usage: $0 start|stop|restart|status" >&2
    exit 2
    ;;
esac
