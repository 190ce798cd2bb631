# Checks of the Kubernetes manifests in deploy/k8s (bash; run from the repository root).
#   VENV: the validators' virtualenv (check-jsonschema, kubernetes-validate, yamllint, pyyaml)
#   S:    the schemas folder (keda-scaledobject.json; and validate-k8s when it is the shared one)
# Fails on any error and on any WARN line (kubernetes-validate only warns, exit 0, on a kind it
# has no schema for). Offline. Conventions: *-patch.yaml files are strategic-merge patches
# (partial objects); kustomization.yaml files are not Kubernetes objects.
set -euo pipefail
VENV=${VENV:-.venv-validate}
S=${S:-scripts/validate/schemas}
# The shared validate-k8s tool when it is beside the schemas; else the same check kept here.
if [ -f "$S/validate-k8s" ]; then VALIDATE_K8S="$S/validate-k8s"; else VALIDATE_K8S=scripts/validate/k8s_documents.py; fi
K=deploy/k8s
KUBE_MINOR=1.30
no_warn() { local out rc=0; out=$("$@" 2>&1) || rc=$?; printf '%s\n' "$out"; [ "$rc" -eq 0 ] && ! grep -q '^WARN' <<<"$out"; }

# 1. Every YAML file: syntax, duplicate keys, style.
mapfile -t all < <(find "$K" -name '*.yaml' | sort)
"$VENV/bin/yamllint" -s -d '{extends: default, rules: {document-start: disable, line-length: {max: 200}, truthy: {check-keys: false}}}' "${all[@]}"

# 2. Every complete manifest: strict Kubernetes schemas; ScaledObject against the KEDA schema.
mapfile -t full < <(find "$K" -name '*.yaml' ! -name kustomization.yaml ! -name '*-patch.yaml' | sort)
no_warn "$VENV/bin/python" "$VALIDATE_K8S" "$S" "$KUBE_MINOR" "${full[@]}"

# 3. Every patch: the same strict schemas with only `required` switched off.
mapfile -t patches < <(find "$K" -name '*-patch.yaml' | sort)
no_warn "$VENV/bin/python" - "$S" "$KUBE_MINOR" "${patches[@]}" <<'PY'
import sys, json, re, yaml, jsonschema, kubernetes_validate.utils as ku
from referencing import Registry, Resource
schema_dir, minor, files = sys.argv[1], sys.argv[2], sys.argv[3:]
skip_required = {"required": lambda *a: iter(())}
K8s = jsonschema.validators.extend(jsonschema.Draft202012Validator, skip_required)
Keda = jsonschema.validators.extend(jsonschema.Draft7Validator, skip_required)
version = [v for v in ku.all_versions() if ku.major_minor(v) <= minor][-1]
base = f"kubernetes-json-schema/v{version}-local-strict"
defs = Resource.from_contents(ku.schema_contents(f"{base}/_definitions.json", minor))
keda = json.load(open(f"{schema_dir}/keda-scaledobject.json"))
rc = 0
for path in files:
    for doc in (d for d in yaml.safe_load_all(open(path)) if d):
        name = f"{path}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')} (patch)"
        try:
            if doc.get("kind") == "ScaledObject":
                errs = list(Keda(keda).iter_errors(doc))
            else:  # an unknown kind or apiVersion has no schema file: that fails too
                api = re.sub(r'^([^./]*)(?:\.[^/]*)?/', r'\1-', doc["apiVersion"])
                schema = ku.schema_contents(f"{base}/{doc['kind'].lower()}-{api}.json", minor)
                errs = list(K8s(schema, registry=Resource.from_contents(schema) @ (defs @ Registry())).iter_errors(doc))
            if errs:
                raise ValueError("; ".join(f"{e.json_path}: {e.message}" for e in errs))
            print("OK  ", name)
        except Exception as e:
            rc = 1
            print("FAIL", name, "-", e)
sys.exit(rc)
PY

# 4. Each overlay built with kustomize (kubectl's built-in; no cluster, no network), in a copy
#    with stand-in secret files, then the whole stream validated as in step 2.
# kustomize components need kubectl 1.21 or later (kustomize v4); Debian's kubernetes-client is 1.20.
kubectl_minor() { kubectl version --client -o json 2>/dev/null | "$VENV/bin/python" -c 'import json,sys; print(int(json.load(sys.stdin)["clientVersion"]["minor"].rstrip("+")))' 2>/dev/null || echo 0; }
if command -v kubectl >/dev/null && [ "$(kubectl_minor)" -ge 21 ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  cp -r "$K" "$tmp/k8s"
  for f in redis_password coordinator_tokens openrouter_key; do
    printf 'stand-in-secret-for-the-build-only' > "$tmp/k8s/base/secrets/$f"
  done
  for dir in "$tmp"/k8s/overlays/*/; do
    o=$(basename "$dir")
    kubectl kustomize "$dir" > "$tmp/$o.yaml"
    echo "built overlay $o: $(grep -c '^kind:' "$tmp/$o.yaml") objects"
    no_warn "$VENV/bin/python" "$VALIDATE_K8S" "$S" "$KUBE_MINOR" "$tmp/$o.yaml"
  done
else
  echo "SKIP overlay builds: no kubectl 1.21 or later (steps 1-3 still checked every file)"
fi
