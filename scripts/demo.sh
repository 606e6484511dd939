#!/usr/bin/env bash
# Run a whole simulated site on this machine: broker, central platform, gateway, devices.
# Extra arguments go to `gateway demo` (e.g. --duration 60, --broker HOST:PORT, --api-port 0).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
exec .venv/bin/gateway demo "$@"
