#!/usr/bin/env bash
# `just fuzz [SECONDS]`: runs each cargo-fuzz target (token, email and code parsing) for
# SECONDS (default 60). cargo fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP lets the
# machine's stable toolchain take them. Installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
for target in token email code; do
    echo "fuzz: $target for ${seconds} s"
    cargo fuzz run "$target" -- -max_total_time="$seconds" -max_len=4096
done
