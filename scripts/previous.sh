#!/usr/bin/env bash
# Prints the directory of the binaries of the previous release (the commit in
# scripts/previous-release), building them on first use: the rolling-upgrade test
# (tests/tests/system/upgrade.rs) starts a stack from them and replaces each part with this
# build's. The commit's tree (git archive) and its debug build are kept under
# $VERIMAIL_PREVIOUS_CACHE/<commit> (default: $CARGO_TARGET_DIR/previous), so later runs only
# check that the build is fresh.
# Fails loudly if the commit is not in this clone's history (a shallow clone).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
commit="$(tr -d '[:space:]' < "$root/scripts/previous-release")"
cache="${VERIMAIL_PREVIOUS_CACHE:-${CARGO_TARGET_DIR:-$root/target}/previous}"
dir="$cache/$commit"
if [[ ! -f "$dir/src/.extracted" ]]; then
    git -C "$root" cat-file -e "$commit^{commit}" 2>/dev/null \
        || { echo "previous.sh: commit $commit is not in this clone (a shallow clone? fetch its history)" >&2; exit 1; }
    echo "previous.sh: extracting $commit into $dir/src" >&2
    rm -rf "$dir/src"; mkdir -p "$dir/src"
    git -C "$root" archive "$commit" | tar -x -C "$dir/src"
    touch "$dir/src/.extracted"
fi
echo "previous.sh: building the binaries of $commit (cached in $dir/target)" >&2
(cd "$dir/src" && CARGO_TARGET_DIR="$dir/target" cargo build --locked --quiet --workspace --bins >&2)
echo "$dir/target/debug"
