#!/usr/bin/env bash
# Run the whole test suite. Installs Debian's mosquitto when it is missing (the tests start their
# own broker on a free port) and Debian's chromium (the web player's tests). Extra arguments go to pytest
# (e.g. -k outbox, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  apt_install mosquitto mosquitto-clients || {
    echo "error: the tests need Debian's mosquitto broker: run 'apt-get install mosquitto' as root" >&2; exit 1; }
fi
# Issue 6: the web player's tests (tests/test_web_player.py) run the page in headless Chromium.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  apt_install chromium || {
    echo "error: the web player's tests need Debian's chromium: run 'apt-get install chromium' as root" >&2; exit 1; }
fi
export GATEWAY_MODELS_DIR="${GATEWAY_MODELS_DIR:-$(cd .. && pwd)/shared/models}"
exec .venv/bin/python -m pytest "$@"
