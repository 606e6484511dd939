#!/usr/bin/env bash
# Shared by scripts/demo.sh and scripts/test.sh: make .venv with the project installed.
# Works on a fresh Debian machine with Python 3.11+; installs python3-venv when venv is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else return 1
  fi
}

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: $* is needed and this is not a Debian/Ubuntu machine; install it by hand" >&2; return 1
  fi
  echo "installing $* with apt-get..." >&2
  as_root apt-get update -qq >/dev/null || { echo "error: apt-get update failed (are you root or in sudoers?)" >&2; return 1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
    || { echo "error: could not install $* (run as root, or install it yourself: apt-get install $*)" >&2; return 1; }
}

PYTHON=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 \
     && "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    PYTHON=$candidate; break
  fi
done
if [ -z "$PYTHON" ]; then
  echo "error: Python 3.11 or newer is needed (apt-get install python3)" >&2; exit 1
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    apt_install python3-venv
    "$PYTHON" -m venv .venv
  fi
fi

# Reinstall only when pyproject.toml changed since the last install.
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "installing the gateway and its dependencies into .venv..." >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,bench]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
