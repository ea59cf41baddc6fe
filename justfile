set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes
default:
    @just --list

# Build and start everything on embedded defaults (Ctrl-C stops it all)
dev:
    scripts/dev.sh

# Run every test, on SQLite then PostgreSQL (real NATS and SMTP; arguments: one nextest run)
[positional-arguments]
test *args:
    scripts/test.sh "$@"

# Benchmark fresh stacks of release binaries (--db sqlite|postgres|both, --runs N, --seconds N, --only ...); report in target/bench
[positional-arguments]
bench *args:
    scripts/bench.sh "$@"

# Steady registrations and clicks for MINUTES with one-minute retentions: row counts and memory each minute, and whether they level off (--db sqlite|postgres)
[positional-arguments]
soak minutes="60" *args:
    scripts/bench.sh --soak "$@"

# Fuzz token, email and code parsing, SECONDS per target (cargo-fuzz)
fuzz seconds="60":
    scripts/fuzz.sh {{seconds}}

# Build every crate
build:
    cargo build --workspace --all-targets

# Format the code
fmt:
    cargo fmt --all

# Formatting, clippy (warnings as errors), no import circles, the dependency rules of deny.toml, the alert rules with their unit tests (promtool), the Kubernetes manifests against the schemas
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy -p verimail-email --no-default-features -- -D warnings
    python3 scripts/import-circles.py
    cargo deny --log-level error check bans licenses sources
    promtool check rules deploy/prometheus/alerts.yaml
    cd deploy/prometheus && promtool test rules alerts.test.yaml
    scripts/kubernetes-validate.sh

# Remove local state: databases, mails and the dev NATS store
clean-data:
    rm -rf data
