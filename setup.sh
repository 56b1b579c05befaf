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
# Chromium (Playwright uses this browser; it never downloads its own), check the Prometheus rules with promtool
# and send incidents to a real Alertmanager, and run the scaled-out deployment on a real PostgreSQL server and
# RabbitMQ broker (.ci/postgres and .ci/rabbitmq start them; psql runs the Grafana dashboard's SQL there);
# gcc builds the pesq package (P.862, sdist only); tcpreplay replays captures in the live-capture benchmark;
# the call MOS corpus (bench/mos_corpus.py) takes real talkers from Asterisk's PCM voice prompts and alsa-utils'
# channel test voice
[ "$dev" = 1 ] && packages="$packages gcc baresip nftables iproute2 tshark tcpreplay openssh-server openssh-client openssl systemd nginx-light mariadb-server mariadb-client chromium fonts-dejavu-core prometheus prometheus-alertmanager postgresql postgresql-client rabbitmq-server asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav asterisk-prompt-it-menardi-wav alsa-utils"
missing=""
for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
say() { printf '==> %s\n' "$*"; }
if [ -n "$missing" ]; then
  say "installing Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  # the tests run promtool and their own Alertmanager on 127.0.0.1: the servers the packages start under systemd
  # (listening on every address) are stopped when this script installed them
  if [ -d /run/systemd/system ]; then
    for unit in prometheus prometheus-alertmanager; do
      case " $missing " in *" $unit "*) $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true ;; esac
    done
  fi
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
[ "$dev" = 1 ] && extras="${extras:+$extras,}dev,mosfit"
say "installing callqa${extras:+ [$extras]} and its bundled models (ONNX Runtime, Silero VAD, DNSMOS, Whisper tiny.en)"
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
say "models:"
.venv/bin/callqa models status
