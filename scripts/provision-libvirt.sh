#!/usr/bin/env bash
# Makes a real libvirtd + QEMU (TCG) available on Debian 12 without systemd, as root: installs
# what is missing, writes a qemu.conf that works without cgroups, namespaces, virtlogd or
# /dev/kvm, and starts libvirtd. Safe to run again: each step is skipped when already done,
# including a libvirtd that is already running.
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
wanted_conf='# Written by scripts/provision-libvirt.sh (hvsync): QEMU as root, no confinement.
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
remember_owner = 0
stdio_handler = "file"
'
conf_changed=false
if [[ -f $QEMU_CONF && $(cat "$QEMU_CONF") == "${wanted_conf%$'\n'}" ]]; then
  say "$QEMU_CONF up to date"
else
  say "writing $QEMU_CONF"
  mkdir -p "$(dirname "$QEMU_CONF")"
  printf '%s' "$wanted_conf" >"$QEMU_CONF"
  conf_changed=true
fi

# A daemon started with another qemu.conf would keep using it.
if $conf_changed && bash "$here/libvirtd.sh" status >/dev/null 2>&1; then
  bash "$here/libvirtd.sh" restart
else
  bash "$here/libvirtd.sh" start
fi

say "versions:"
virsh -c qemu:///system version
say "libvirtd ready"
