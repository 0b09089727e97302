#!/usr/bin/env bash
# Makes a real libvirtd + QEMU (TCG) available on Debian 12 without systemd, as root: installs
# what is missing, writes a qemu.conf that works without cgroups, namespaces, virtlogd or
# /dev/kvm, and starts libvirtd. Safe to run again: each step is skipped when already done,
# including a libvirtd that is already running.
#
# On a machine someone already uses it changes nothing of theirs: an /etc/libvirt/qemu.conf with
# settings of its own is left untouched (the script lists what hvsync needs instead), a default
# one (only comments) is kept as a backup before it is replaced, and a running libvirtd is never
# restarted while it runs guests or when this script did not start it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PACKAGES=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86)
QEMU_CONF=/etc/libvirt/qemu.conf

say() { echo "provision: $*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "provision: must run as root" >&2
  exit 1
fi

installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == 'install ok installed' ]]
}

missing=()
for package in "${PACKAGES[@]}"; do
  installed "$package" || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Recommends included: the package set the libvirt suites are known to pass with.
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  say "packages present"
fi

# libvirtd 9.0 looks this user up at start even though qemu.conf below runs QEMU as root.
if id libvirt-qemu >/dev/null 2>&1; then
  say "user libvirt-qemu present"
else
  say "creating user libvirt-qemu"
  useradd -r -M libvirt-qemu
fi

# No systemd, no cgroup delegation, no virtlogd, root in a container: turn off everything that
# needs them.
MARKER='# Written by scripts/provision-libvirt.sh (hvsync): QEMU as root, no confinement.'
wanted_settings='user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
remember_owner = 0
stdio_handler = "file"'
wanted_conf="$MARKER
$wanted_settings"

# A file that only has comments and blank lines is the distribution's default: every setting at
# its built-in value. dpkg cannot tell (qemu.conf is not a registered conffile on Debian 12).
has_own_settings() { grep -qvE '^[[:space:]]*(#|$)' "$1"; }

conf_changed=false
if [[ -f $QEMU_CONF && $(cat "$QEMU_CONF") == "$wanted_conf" ]]; then
  say "$QEMU_CONF up to date"
elif [[ ! -e $QEMU_CONF ]] || [[ $(head -n 1 "$QEMU_CONF") == "$MARKER" ]]; then
  say "writing $QEMU_CONF"
  mkdir -p "$(dirname "$QEMU_CONF")"
  printf '%s\n' "$wanted_conf" >"$QEMU_CONF"
  conf_changed=true
elif ! has_own_settings "$QEMU_CONF"; then
  backup="$QEMU_CONF.before-hvsync.$(date +%Y%m%d%H%M%S)"
  cp -p "$QEMU_CONF" "$backup"
  say "$QEMU_CONF has only defaults: kept as $backup, writing hvsync's settings"
  printf '%s\n' "$wanted_conf" >"$QEMU_CONF"
  conf_changed=true
else
  say "$QEMU_CONF has settings of its own: left untouched." >&2
  missing_settings=$(while IFS= read -r line; do
    grep -qxF "$line" "$QEMU_CONF" || echo "    $line"
  done <<<"$wanted_settings")
  if [[ -n $missing_settings ]]; then
    say "hvsync's QEMU suites need these settings (missing or set otherwise) on a host without" \
      "systemd or /dev/kvm:" >&2
    echo "$missing_settings" >&2
    say "add them yourself if they suit the guests this libvirtd runs." >&2
  fi
fi

running_guests() { virsh -q -c qemu:///system list --name 2>/dev/null | grep -c . || true; }

# A daemon started with another qemu.conf keeps using it until it restarts. It is never restarted
# under running guests (whether they survive depends on how that host was set up), nor when this
# script did not start it (scripts/libvirtd.sh refuses that).
if $conf_changed && bash "$here/libvirtd.sh" status >/dev/null 2>&1; then
  guests=$(running_guests)
  if ((guests > 0)); then
    say "libvirtd runs $guests guest(s): not restarted; it reads the new $QEMU_CONF when it next" \
      "starts. Restart it yourself once they are stopped (scripts/libvirtd.sh restart if this" \
      "script started it)." >&2
  elif ! bash "$here/libvirtd.sh" restart; then
    say "libvirtd keeps its old settings until it is restarted the way it was started." >&2
  fi
else
  bash "$here/libvirtd.sh" start
fi

say "versions:"
virsh -c qemu:///system version
say "libvirtd ready"
