#!/usr/bin/env bash
# The client packages outside Rust, clients/typescript (npm) and clients/python (PyPI):
#   scripts/clients.sh setup   installs what their tests need, pinned (package-lock.json,
#                              requirements-test.txt), from the registries: node_modules in
#                              clients/typescript (then builds it to dist/), a virtualenv in
#                              .tools/python-clients; again only when a pin changed.
#   scripts/clients.sh test    runs each package's own tests (offline, on 127.0.0.1).
# Both run in `just test`; tests/tests/system/clients.rs runs their example services against a
# real stack (CLIENTS_PYTHON names the virtualenv's python).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ts="$root/clients/typescript"
py="$root/clients/python"
venv="$root/.tools/python-clients"

need() { command -v "$1" >/dev/null || { echo "clients: $1 is needed ($2)" >&2; exit 1; }; }

setup() {
    need node "apt-get install nodejs npm"
    need npm "apt-get install npm"
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    [[ "$major" -ge 20 ]] || { echo "clients: Node.js 20 or later is needed, found $(node --version)" >&2; exit 1; }
    local stamp="$ts/node_modules/.verimail-lock"
    local want
    want="$(sha256sum "$ts/package-lock.json" | cut -d' ' -f1)"
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
        echo "clients: installing clients/typescript's packages (npm ci)" >&2
        (cd "$ts" && npm ci --silent --no-audit --no-fund) >&2
        echo "$want" > "$stamp"
    fi
    (cd "$ts" && npx --no-install tsc -p tsconfig.json) >&2

    local pystamp="$venv/.verimail-lock"
    want="$(cat "$py/requirements-test.txt" "$py/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [[ "$(cat "$pystamp" 2>/dev/null)" != "$want" ]]; then
        echo "clients: installing clients/python's packages into .tools/python-clients" >&2
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$py/requirements-test.txt" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$py" >&2
        echo "$want" > "$pystamp"
    fi
}

run_tests() {
    echo "== clients/typescript: node --test" >&2
    (cd "$ts" && node --test dist/test/)
    echo "== clients/python: pytest" >&2
    (cd "$py" && "$venv/bin/python" -m pytest -p no:cacheprovider)
}

case "${1:-}" in
    setup) setup ;;
    test) setup; run_tests ;;
    *) echo "usage: scripts/clients.sh setup|test" >&2; exit 2 ;;
esac
