#!/usr/bin/env bash
# `just bench`: builds the release binaries and the benchmark, then runs it on fresh stacks
# (arguments: --db sqlite|postgres|both, --runs N, --seconds N per measurement,
# --only registration|verification|tokens|sessions|scale-out|bounces|webhooks).
# The report goes to <target>/bench/report.json.
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_SERVER_BIN="$(scripts/nats-server.sh)"
export NATS_SERVER_BIN
cargo build --release --workspace --bins
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/verimail-bench" "$@"
