#!/usr/bin/env bash
# Prints the path of axe-core's axe.min.js, the accessibility checker the page tests run in
# Chromium: AXE_CORE_JS, else a pinned one installed into .tools/ from the npm registry.
set -euo pipefail
AXE_CORE_VERSION=4.14.1
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -n "${AXE_CORE_JS:-}" ]]; then
    echo "$AXE_CORE_JS"; exit 0
fi
prefix="$root/.tools/axe-core-$AXE_CORE_VERSION"
script="$prefix/node_modules/axe-core/axe.min.js"
if [[ ! -f "$script" ]]; then
    command -v npm >/dev/null || { echo "npm is needed to install axe-core (apt-get install npm)" >&2; exit 1; }
    echo "installing axe-core $AXE_CORE_VERSION into .tools/" >&2
    npm install --silent --no-audit --no-fund --prefix "$prefix" "axe-core@$AXE_CORE_VERSION" >&2
fi
echo "$script"
