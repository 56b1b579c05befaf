#!/usr/bin/env bash
# Set up callqa on a Debian machine: system tools, a virtualenv in .venv, the package and its bundled models.
#   ./setup.sh            runtime only (DNSMOS, Silero VAD; no PyTorch)
#   ./setup.sh --nisqa    also the NISQA extra (PyTorch CPU build)
#   ./setup.sh --dev      also test and lint tools (implies --nisqa, so every test can run)
set -euo pipefail
cd "$(dirname "$0")"

nisqa=0; dev=0
for arg in "$@"; do
  case "$arg" in
    --nisqa) nisqa=1 ;;
    --dev) dev=1; nisqa=1 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
packages="python3-venv python3-dev sox libsox-fmt-all ffmpeg espeak-ng tcpdump"
# the tests also place real SIP calls between baresip agents in a network namespace, impaired with nftables,
# fetch recordings from a real OpenSSH server, check the deployment files with systemd-analyze and nginx -t, and
# read ViciDial's tables from a real MariaDB server (.ci/mariadb starts it), and drive the web pages in headless
# Chromium (Playwright uses this browser; it never downloads its own)
[ "$dev" = 1 ] && packages="$packages baresip nftables iproute2 tshark tcpreplay openssh-server openssh-client openssl systemd nginx-light mariadb-server mariadb-client chromium fonts-dejavu-core"
missing=""
for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
say() { printf '==> %s\n' "$*"; }
if [ -n "$missing" ]; then
  say "installing Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

say "creating the virtualenv in .venv"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extras=""
if [ "$nisqa" = 1 ]; then
  # install the CPU build of torch first, so nothing pulls a CUDA build in later
  say "installing PyTorch (CPU build) for NISQA: a few hundred MB, about a minute"
  .venv/bin/python -m pip install -q "torch==2.13.0"
  extras="nisqa"
fi
[ "$dev" = 1 ] && extras="${extras:+$extras,}dev"
say "installing callqa${extras:+ [$extras]} and its bundled models (ONNX Runtime, Silero VAD, DNSMOS, Whisper tiny.en)"
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
say "models:"
.venv/bin/callqa models status
