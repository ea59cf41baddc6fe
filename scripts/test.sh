#!/usr/bin/env bash
# `just test`: every test of the workspace, with a nats-server available to the tests
# that start their own and a grpcurl for the tests that use it.
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_SERVER_BIN="$(scripts/nats-server.sh)"
export NATS_SERVER_BIN
# The operator's-eye tests drive the real grpcurl.
GRPCURL_BIN="$(scripts/grpcurl.sh)"
export GRPCURL_BIN
# The fault tests start the real binaries and kill them; build them first.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
