#!/usr/bin/env bash
# Run a whole simulated site on this machine: broker, central platform, gateway, devices.
# Extra arguments go to `gateway demo` (e.g. --duration 60, --broker HOST:PORT, --api-port 0,
# --no-browser).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
# The atrium screen's web player runs in headless Chromium (Debian's chromium) when it is there;
# without it, a simulated player plays that screen and the demo says so.
if [[ " $* " != *" --no-browser "* ]] && ! command -v chromium >/dev/null 2>&1 \
    && ! command -v chromium-browser >/dev/null 2>&1; then
  apt_install chromium || echo "note: Debian's chromium is not installed ('apt-get install chromium' as root);" \
    "the web player will not run in a browser" >&2
fi
exec .venv/bin/gateway demo "$@"
