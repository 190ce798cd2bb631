#!/usr/bin/env bash
# Validates deploy/observability/ (Grafana dashboard and provisioning, Prometheus config, alert
# rules and their unit tests). Run from the repository root; needs no network.
#   VENV      the validators' virtualenv (check-jsonschema, yamllint); default .venv-validate
#   S         the schemas folder (grafana-dashboard.json); default ../shared/schemas
#   PROMTOOL  promtool 2.42; default promtool on PATH
set -euo pipefail
VENV=${VENV:-.venv-validate}
S=${S:-scripts/validate/schemas}
PROMTOOL=${PROMTOOL:-promtool}
O=deploy/observability

# YAML syntax and style.
"$VENV/bin/yamllint" -d '{extends: default, rules: {document-start: disable, line-length: {max: 200}, truthy: {check-keys: false}}}' \
  "$O/prometheus/prometheus.yml" "$O/prometheus/alerts.yml" "$O/prometheus/alerts_test.yml" \
  "$O/grafana/provisioning/datasources/prometheus.yml" "$O/grafana/provisioning/dashboards/switchyard.yml"

# Grafana dashboard against the strict dashboard schema.
"$VENV/bin/check-jsonschema" --schemafile "$S/grafana-dashboard.json" "$O/grafana/dashboards/switchyard.json"

# Alert rules: syntax, PromQL, templates; then the unit tests (every alert fires and stays silent as expected).
"$PROMTOOL" check rules "$O/prometheus/alerts.yml"
(cd "$O/prometheus" && "$PROMTOOL" test rules alerts_test.yml)

# prometheus.yml names the container path /etc/prometheus/alerts.yml: check a copy that points at this checkout's file.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#^  - /etc/prometheus/alerts.yml\$#  - $PWD/$O/prometheus/alerts.yml#" "$O/prometheus/prometheus.yml" > "$tmp/prometheus.yml"
grep -qF "  - $PWD/$O/prometheus/alerts.yml" "$tmp/prometheus.yml"
"$PROMTOOL" check config "$tmp/prometheus.yml"

# Every metric the dashboard and the rules name must be one the coordinator exports.
exported=$(grep -ohE '"switchyard_[a-z_]+"' Sources/SwitchyardCoordinator/PrometheusExposition.swift | tr -d '"' | sort -u)
used=$(grep -ohE 'switchyard_[a-z_]+' "$O/grafana/dashboards/switchyard.json" "$O/prometheus/alerts.yml" "$O/prometheus/alerts_test.yml" \
  | sed -E 's/_(bucket|sum|count)$//' | sort -u)
unknown=$(comm -13 <(printf '%s\n' "$exported") <(printf '%s\n' "$used"))
if [ -n "$unknown" ]; then
  echo "metric names not exported by PrometheusExposition.swift:" >&2
  printf '  %s\n' $unknown >&2
  exit 1
fi
echo "observability files: OK"
