#!/usr/bin/env bash
# Installs what Backhaul needs on a fresh Debian machine, and nothing twice:
#   - uv (from PyPI) and the locked Python workspace (.venv)
#   - Java 17+ and Maven (Debian) for the embedded Kafka, whose jars Maven fetches
#   - PostgreSQL's server binaries (Debian) for the test suites that run on PostgreSQL
#   - any Debian package listed in tools/apt-packages.txt (e.g. FreeRADIUS for its test)
# Usage: tools/install.sh [run|test]   ("test" also installs what only the tests need)
set -euo pipefail
cd "$(dirname "$0")/.."
purpose="${1:-test}"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to install: $*" >&2; return 1; fi
}

apt_updated=""
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { echo "apt-get not found; install ${missing[*]} yourself" >&2; return 1; }
  if [ -z "$apt_updated" ]; then say "apt-get update"; as_root apt-get update -qq; apt_updated=1; fi
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# uv and the workspace
if ! command -v uv >/dev/null 2>&1; then
  say "installing uv"
  python3 -m pip install --quiet --disable-pip-version-check uv
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
UV="$(command -v uv || echo "python3 -m uv")"
say "syncing the Python workspace (uv sync --locked)"
# Bytecode is compiled once here: machines that set PYTHONDONTWRITEBYTECODE (CI does)
# would otherwise compile every module again in every process, doubling each start-up.
$UV sync --locked --quiet --compile-bytecode
$UV run --no-sync python -m compileall -q -j 0 libs services >/dev/null

# Java + Maven for the embedded Kafka
if ! command -v java >/dev/null 2>&1; then apt_install openjdk-17-jre-headless; fi
if ! command -v mvn >/dev/null 2>&1; then apt_install maven; fi
say "fetching Kafka's jars from Maven Central (once)"
$UV run --no-sync backhaul-dev kafka fetch >/dev/null

if [ "$purpose" = "test" ]; then
  if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql
  fi
  if [ -s tools/apt-packages.txt ]; then
    mapfile -t extra < <(grep -v '^\s*#' tools/apt-packages.txt | sed '/^\s*$/d' | sort -u)
    [ ${#extra[@]} -gt 0 ] && apt_install "${extra[@]}"
  fi
  say "helm for the chart tests (built once from the Go module proxy)"
  tools/helm.sh
fi
say "ready"
