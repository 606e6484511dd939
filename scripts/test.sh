#!/usr/bin/env bash
# Run the whole test suite. Installs Debian's mosquitto when it is missing (the tests start their
# own broker on a free port). Extra arguments go to pytest (e.g. -k outbox, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  apt_install mosquitto mosquitto-clients || {
    echo "error: the tests need Debian's mosquitto broker: run 'apt-get install mosquitto' as root" >&2; exit 1; }
fi
export GATEWAY_MODELS_DIR="${GATEWAY_MODELS_DIR:-$(cd .. && pwd)/shared/models}"
exec .venv/bin/python -m pytest "$@"
