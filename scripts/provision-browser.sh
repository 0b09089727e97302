#!/usr/bin/env bash
# Installs Debian's Chromium for the dashboard's browser tests (driven by playwright-core, which
# downloads no browser of its own), as root. Safe to run again: skipped when already installed.
set -euo pipefail

say() { echo "provision: $*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "provision: must run as root" >&2
  exit 1
fi

if [[ $(dpkg-query -W -f='${Status}' chromium 2>/dev/null) == 'install ok installed' ]]; then
  say "chromium present"
  exit 0
fi
say "installing chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
say "chromium $(chromium --version 2>/dev/null || echo 'installed')"
