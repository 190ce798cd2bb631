#!/usr/bin/env bash
# Validates every deploy file offline: the compose file and Dockerfiles, the Kubernetes manifests
# and KEDA ScaledObjects (each overlay built with kustomize when kubectl is installed), the
# systemd units and launchd plist, the Grafana dashboard, the Prometheus config and alert rules
# with their unit tests. Fails on any error, warning or unknown kind. Run from anywhere; the
# validators come from scripts/setup.sh (.venv-validate and Debian's prometheus for promtool).
# The commands inside these files are run for real by Tests/SwitchyardDeployTests.
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV="${VENV:-$PWD/.venv-validate}"
# The schemas: the workspace's shared set when it is there, else the copies kept with the checks.
if [ -n "${SWITCHYARD_SCHEMAS:-}" ]; then
    S="$SWITCHYARD_SCHEMAS"
elif [ -f ../shared/schemas/compose-spec.json ]; then
    S="$(cd ../shared/schemas && pwd)"
else
    S="$PWD/scripts/validate/schemas"
fi
export S
for tool in check-jsonschema yamllint kubernetes-validate; do
    [ -x "$VENV/bin/$tool" ] || { echo "validate-deploy: $VENV/bin/$tool is missing; run scripts/setup.sh" >&2; exit 1; }
done
command -v promtool >/dev/null || { echo "validate-deploy: promtool is missing (Debian: apt-get install prometheus)" >&2; exit 1; }
echo "validate-deploy: schemas from $S"
for part in hosts k8s observability; do
    echo "== validate-deploy: $part"
    bash "scripts/validate/$part.sh"
done
echo "validate-deploy: every deploy file passed"
