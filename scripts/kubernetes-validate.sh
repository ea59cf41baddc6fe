#!/usr/bin/env bash
# Validates the Kubernetes manifests (deploy/kubernetes, the production overlay built with
# `kubectl kustomize`) against the Kubernetes schemas: kubernetes-validate (pinned, from PyPI,
# installed into .tools/) in strict mode, so an unknown or misspelt field fails too.
set -euo pipefail
VERSION=1.37.0
KUBERNETES=1.32.0
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.tools/kubernetes-validate-$VERSION"
command -v kubectl >/dev/null || { echo "kubectl is needed for kustomize (apt-get install kubectl)" >&2; exit 1; }
if [[ ! -x "$venv/bin/kubernetes-validate" ]]; then
    echo "installing kubernetes-validate $VERSION into .tools/" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$VERSION" >&2
fi
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for overlay in base overlays/production; do
    kubectl kustomize "$root/deploy/kubernetes/$overlay" > "$out"
    # Each resource that passes says so; only failures are worth reading.
    if ! "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$KUBERNETES" "$out" > "$out.log" 2>&1; then
        grep -v " passed for resource " "$out.log" >&2
        rm -f "$out.log"
        exit 1
    fi
    echo "deploy/kubernetes/$overlay: $(grep -c ' passed for resource ' "$out.log") resources valid for Kubernetes $KUBERNETES"
    rm -f "$out.log"
done
