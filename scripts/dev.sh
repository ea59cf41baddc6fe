#!/usr/bin/env bash
# `just dev`: builds and starts the whole stack on embedded defaults (SQLite under data/,
# emails as .eml files under data/mail/ unless SMTP_URL is set) and a nats-server: the one
# at NATS_URL if it answers, otherwise a child with its store under data/nats. Ctrl-C stops
# everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data/mail

# Development is an explicit opt-in: unset, every binary runs as in production.
export VERIMAIL_ENV=development
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
export USER_GRPC_ADDR="${USER_GRPC_ADDR:-127.0.0.1:50051}"
export AUTH_GRPC_ADDR="${AUTH_GRPC_ADDR:-127.0.0.1:50052}"
export EMAIL_GRPC_ADDR="${EMAIL_GRPC_ADDR:-127.0.0.1:50053}"
export GATEWAY_HTTP_ADDR="${GATEWAY_HTTP_ADDR:-127.0.0.1:8080}"
export PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-http://$GATEWAY_HTTP_ADDR}"
export RUST_LOG="${RUST_LOG:-info,sqlx=warn,sea_orm=warn,async_nats=warn,h2=warn}"
# A development token key kept under data/, so links survive a restart of auth-service.
if [[ -z "${AUTH_TOKEN_KEYS:-}" ]]; then
    if [[ ! -s data/auth-token.key ]]; then
        printf 'k4.local.%s' "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')" > data/auth-token.key
        chmod 600 data/auth-token.key
    fi
    AUTH_TOKEN_KEYS="$(cat data/auth-token.key)"
    export AUTH_TOKEN_KEYS
fi

pids=()
stop_all() {
    trap - INT TERM EXIT
    [[ ${#pids[@]} -gt 0 ]] && kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    echo "stopped"
}
trap stop_all EXIT
trap 'stop_all; exit 0' INT TERM

answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
nats_hostport="${NATS_URL#*://}"; nats_hostport="${nats_hostport%%/*}"
nats_host="${nats_hostport%:*}"; nats_port="${nats_hostport##*:}"
if answers "$nats_host" "$nats_port"; then
    echo "nats:     using the server at $NATS_URL"
else
    nats_bin="$(scripts/nats-server.sh)"
    "$nats_bin" -a "$nats_host" -p "$nats_port" -js -sd data/nats > data/nats-server.log 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do answers "$nats_host" "$nats_port" && break; sleep 0.1; done
    answers "$nats_host" "$nats_port" || { echo "nats-server did not start; see data/nats-server.log" >&2; exit 1; }
    echo "nats:     started $nats_bin on $NATS_URL (store data/nats, log data/nats-server.log)"
fi

cargo build --workspace --bins
# And an access-token signing key, so tokens from SignIn survive a restart too.
if [[ -z "${AUTH_SIGNING_KEYS:-}" ]]; then
    if [[ ! -s data/auth-signing.key ]]; then
        "${CARGO_TARGET_DIR:-target}/debug/auth-service" --new-signing-key > data/auth-signing.key
        chmod 600 data/auth-signing.key
    fi
    AUTH_SIGNING_KEYS="$(cat data/auth-signing.key)"
    export AUTH_SIGNING_KEYS
fi
bin="${CARGO_TARGET_DIR:-target}/debug"
DATABASE_URL="${USER_DATABASE_URL:-sqlite://data/user.db?mode=rwc}" "$bin/user-service" & pids+=($!)
DATABASE_URL="${AUTH_DATABASE_URL:-sqlite://data/auth.db?mode=rwc}" "$bin/auth-service" & pids+=($!)
DATABASE_URL="${EMAIL_DATABASE_URL:-sqlite://data/email.db?mode=rwc}" "$bin/email-service" & pids+=($!)
"$bin/gateway" & pids+=($!)

cat <<EOM

Verimail is running (Ctrl-C stops everything):
  user-service   grpc://$USER_GRPC_ADDR   (verimail.user.v1.UserService)
  auth-service   grpc://$AUTH_GRPC_ADDR   (verimail.auth.v1.AuthService)
  email-service  grpc://$EMAIL_GRPC_ADDR   (verimail.email.v1.EmailService)
  gateway        $PUBLIC_BASE_URL   (verify pages, /healthz)
  nats           $NATS_URL
  mail           ${SMTP_URL:-.eml files in data/mail/}
EOM
if [[ -z "${SMTP_URL:-}" && "${MAILBOX_HTTP_ADDR:-}" != "off" ]]; then
    echo "  mailbox        http://${MAILBOX_HTTP_ADDR:-127.0.0.1:8025}/   (open the emails in a browser)"
fi
cat <<EOM

EOM
# Stop everything as soon as any part exits: that is a failure (Ctrl-C exits through the trap).
status=0
wait -n "${pids[@]}" || status=$?
echo "a part of the stack exited (status $status); stopping the rest" >&2
exit $(( status == 0 ? 1 : status ))
