#!/usr/bin/env bash
# `just test`: every test of the workspace, in two variants:
#   1. SQLite: every test but those that need PostgreSQL (their names say `postgresql`);
#   2. PostgreSQL: the whole system-test suite again with every service on a fresh
#      PostgreSQL database (TEST_DATABASE=postgres), and the tests that need PostgreSQL.
# The second runs when PostgreSQL answers at TEST_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432); otherwise it says loudly that it did not run, and fails
# when REQUIRE_POSTGRES is set (CI sets it). With arguments (`just test -E 'test(x)'`), one run
# with those arguments, on TEST_DATABASE (SQLite unless set).
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_SERVER_BIN="$(scripts/nats-server.sh)"
export NATS_SERVER_BIN
# The operator's-eye tests drive the real grpcurl.
GRPCURL_BIN="$(scripts/grpcurl.sh)"
export GRPCURL_BIN
# The page tests audit every page with axe-core in Chromium.
AXE_CORE_JS="$(scripts/axe-core.sh)"
export AXE_CORE_JS
# The client packages outside Rust: installed (pinned, from npm and PyPI) and built; their
# example services run in the system tests, on the virtualenv's Python.
scripts/clients.sh setup
export CLIENTS_PYTHON="$PWD/.tools/python-clients/bin/python"
# The fault tests start the real binaries and kill them; build them first.
cargo build --workspace --bins
# The rolling-upgrade test starts the previous release's binaries (built once, then cached).
VERIMAIL_PREVIOUS_BIN="$(scripts/previous.sh)"
export VERIMAIL_PREVIOUS_BIN

nextest() { cargo nextest --version >/dev/null 2>&1; }
run() {
    if nextest; then
        cargo nextest run --workspace --no-fail-fast "$@"
    else
        cargo test --workspace --no-fail-fast "$@"
    fi
}

if [[ $# -gt 0 ]]; then
    run "$@"
    exit
fi

echo "== The client packages' own tests"
scripts/clients.sh test
echo "== SQLite variant"
if nextest; then run -E 'not test(/postgresql/)'; else run -- --skip postgresql; fi
# nextest does not run doctests; the ones that matter say what must not compile.
echo "== Doctests"
cargo test --workspace --doc

pg_url="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}"
pg_hostport="${pg_url#*://}"; pg_hostport="${pg_hostport#*@}"; pg_hostport="${pg_hostport%%/*}"
if ! (exec 3<>"/dev/tcp/${pg_hostport%:*}/${pg_hostport##*:}") 2>/dev/null; then
    echo "!! The PostgreSQL variant was NOT run: nothing answers at $pg_hostport (TEST_POSTGRES_URL)." >&2
    echo "!! Only the SQLite variant passed above; start PostgreSQL to run both." >&2
    [[ -z "${REQUIRE_POSTGRES:-}" ]] || exit 1
    exit 0
fi
echo "== PostgreSQL variant ($pg_hostport)"
export TEST_DATABASE=postgres
if nextest; then
    run -E 'package(verimail-system-tests) | test(/postgresql/)'
else
    cargo test -p verimail-system-tests --no-fail-fast
    cargo test --workspace --no-fail-fast -- postgresql
fi
