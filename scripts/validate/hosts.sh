#!/usr/bin/env bash
# Checks of the host-side deploy files: docker-compose.yml, deploy/compose/*, the Dockerfiles and
# .dockerignore, deploy/systemd/*, deploy/launchd/*. Offline; run from the repository root.
#   VENV=.venv-validate S=../shared/schemas bash validate-hosts.sh
# Needs: $VENV/bin/{check-jsonschema,yamllint,python} (python with pyyaml), systemd-analyze
# (skipped with a note when missing). Exits non-zero on the first failing group; prints what it checked.
set -euo pipefail
VENV=${VENV:-.venv-validate}
S=${S:-scripts/validate/schemas}
PY="$VENV/bin/python"
YAMLLINT_CONFIG='{extends: default, rules: {document-start: disable, line-length: {max: 200}, truthy: {check-keys: false}}}'

echo "== compose: schema and yamllint"
"$VENV/bin/check-jsonschema" --schemafile "$S/compose-spec.json" docker-compose.yml
"$VENV/bin/yamllint" -d "$YAMLLINT_CONFIG" docker-compose.yml

echo "== compose: references, bind paths, switchyard services' shape; JSON files"
"$PY" - <<'EOF'
import json, os, re, sys
import yaml

errors = []
def err(msg): errors.append(msg)

c = yaml.safe_load(open("docker-compose.yml"))
services = c.get("services", {})
declared_volumes = set((c.get("volumes") or {}).keys())
declared_secrets = set((c.get("secrets") or {}).keys())
env_example = open("deploy/compose/.env.example").read()

def interpolate(s):
    # ${VAR:-default} / ${VAR-default} -> default; ${VAR} -> "" ; $$ -> $
    s = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", s)
    return s.replace("$$", "$")

# Every ${VAR} the file uses is documented in .env.example.
for var in sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", open("docker-compose.yml").read()))):
    if not re.search(rf"^#?{var}=", env_example, re.M):
        err(f".env.example does not mention {var}")

# Host paths that need not be in the repository: secret files (created per host, see ops docs)
# and the models folder (large files, per host; Docker creates it when missing).
EXEMPT_PREFIXES = ("./deploy/compose/secrets/", "./models")

for name, svc in services.items():
    profiles = set(svc.get("profiles", []))
    deps = svc.get("depends_on", {})
    for dep in (deps if isinstance(deps, list) else deps.keys()):
        if dep not in services:
            err(f"{name}: depends_on unknown service {dep}")
            continue
        dep_profiles = set(services[dep].get("profiles", []))
        if dep_profiles and not (profiles and profiles <= dep_profiles):
            err(f"{name}: depends on {dep}, which only starts with profiles {sorted(dep_profiles)}")
    for s in svc.get("secrets", []):
        sname = s if isinstance(s, str) else s["source"]
        if sname not in declared_secrets:
            err(f"{name}: secret {sname} is not declared")
    for v in svc.get("volumes", []):
        src = interpolate(v).split(":")[0] if isinstance(v, str) else interpolate(v.get("source", ""))
        if src.startswith((".", "/", "~")):
            if src.startswith(EXEMPT_PREFIXES):
                continue
            if not os.path.exists(src):
                err(f"{name}: bind-mounted host path {src} does not exist in the repository")
        elif src and src not in declared_volumes:
            err(f"{name}: named volume {src} is not declared")
    # switchyard services: exec-form command (no shell), literal environment, exec-form health check.
    if str(svc.get("image", "")).startswith(("switchyard:", "switchyard-gpu:")):
        cmd = svc.get("command")
        if not (isinstance(cmd, list) and cmd and cmd[0] in ("worker", "coordinator")):
            err(f"{name}: command must be an exec-form list starting with the subcommand, got {cmd!r}")
        env = svc.get("environment", {})
        if not isinstance(env, dict):
            err(f"{name}: environment must be a map")
        for k, val in (env.items() if isinstance(env, dict) else []):
            if "$" in str(val):
                err(f"{name}: environment {k} is not literal: {val!r}")
        test = (svc.get("healthcheck") or {}).get("test")
        if not (isinstance(test, list) and test[:3] == ["CMD", "switchyard", "health"]):
            err(f"{name}: healthcheck.test must be [CMD, switchyard, health, URL], got {test!r}")
        if "redis_password" not in svc.get("secrets", []):
            err(f"{name}: needs the redis_password secret")
        if env.get("SWITCHYARD_REDIS_PASSWORD_FILE") != "/run/secrets/redis_password":
            err(f"{name}: SWITCHYARD_REDIS_PASSWORD_FILE must be /run/secrets/redis_password")
        if cmd and cmd[0] == "worker":
            if svc.get("stop_grace_period") != "75s" or svc.get("stop_signal") != "SIGTERM":
                err(f"{name}: a worker needs stop_grace_period 75s and stop_signal SIGTERM")
            if "container_name" in svc or "ports" in svc:
                err(f"{name}: a scalable worker has no container_name or ports")
            if "--worker-id" in cmd:
                err(f"{name}: no --worker-id in a scaled service")

for path in ("deploy/compose/providers.json", "deploy/compose/models.json"):
    try:
        json.load(open(path))
    except Exception as e:
        err(f"{path}: {e}")
p = json.load(open("deploy/compose/providers.json"))
names = {x["name"] for x in p["providers"]}
for m, route in p.get("models", {}).items():
    if route.get("provider") not in names:
        err(f"providers.json: model {m} names unknown provider")
if p.get("default_provider") not in names:
    err("providers.json: default_provider is not defined")
cat = json.load(open("deploy/compose/models.json"))
for m, e in cat["models"].items():
    if set(e) - {"file", "framework", "memory_mb", "context_size", "extra_arguments", "command", "cache_ttl"}:
        err(f"models.json: {m} has unknown fields")
    if not {"file", "framework", "memory_mb"} <= set(e):
        err(f"models.json: {m} lacks file, framework or memory_mb")
for m in cat.get("pinned", []):
    if m not in cat["models"]:
        err(f"models.json: pinned {m} is not in models")

if errors:
    print("\n".join("FAIL " + e for e in errors))
    sys.exit(1)
print(f"ok -- {len(services)} services, {len(declared_volumes)} volumes, {len(declared_secrets)} secrets checked")
EOF

echo "== Dockerfiles and .dockerignore"
"$PY" - <<'EOF'
import fnmatch, json, os, re, sys
KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
         "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
ignore = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
def ignored(path):
    return any(fnmatch.fnmatch(path, pat.lstrip("/")) or fnmatch.fnmatch(path, pat.replace("**/", "")) for pat in ignore
               if not pat.startswith("!"))
errors = []
for df in ("deploy/Dockerfile", "deploy/Dockerfile.gpu"):
    text = open(df).read()
    logical = re.sub(r"\\\n", " ", text)
    stages = set()
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() not in KNOWN:
            errors.append(f"{df}: unknown instruction {word}")
            continue
        word = word.upper()
        if word == "FROM":
            m = re.search(r"\bAS\s+(\S+)", rest, re.I)
            if m: stages.add(m.group(1))
        if word in ("CMD", "ENTRYPOINT") or (word == "HEALTHCHECK" and " CMD [" in line):
            form = rest[rest.index("["):] if word == "HEALTHCHECK" else rest
            try:
                assert isinstance(json.loads(form), list)
            except Exception:
                errors.append(f"{df}: {word} is not an exec-form JSON list: {form}")
        if word == "COPY":
            args = rest.split()
            frm = [a for a in args if a.startswith("--from=")]
            srcs = [a for a in args if not a.startswith("--")][:-1]
            if frm:
                if frm[0][7:] not in stages:
                    errors.append(f"{df}: COPY --from={frm[0][7:]} names no earlier stage")
                continue
            for src in srcs:
                if "*" in src:
                    continue  # optional (Package.resolved*)
                if not os.path.exists(src):
                    errors.append(f"{df}: COPY source {src} does not exist")
                elif ignored(src):
                    errors.append(f"{df}: COPY source {src} is excluded by .dockerignore")
    if 'ENTRYPOINT ["switchyard"]' not in text or "USER 10001:10001" not in text:
        errors.append(f"{df}: must run switchyard as uid 10001")
if ignored("Package.resolved"):
    errors.append(".dockerignore excludes Package.resolved")
if errors:
    print("\n".join("FAIL " + e for e in errors)); sys.exit(1)
print("ok -- instructions, exec forms, COPY sources and stages")
EOF

echo "== systemd units (systemd-analyze verify; the binary mocked by /bin/true)"
# verify needs ExecStart's binary to exist: copies with /usr/local/bin/switchyard -> /bin/true. The
# template is verified as the instance switchyard-worker@default. Unknown keys only warn (exit 0),
# so any output fails the check. The real command lines are run by the lead's tests.
if command -v systemd-analyze >/dev/null; then
    T=$(mktemp -d)
    sed 's#/usr/local/bin/switchyard#/bin/true#' deploy/systemd/switchyard-coordinator.service > "$T/switchyard-coordinator.service"
    sed 's#/usr/local/bin/switchyard#/bin/true#' 'deploy/systemd/switchyard-worker@.service' > "$T/switchyard-worker@.service"
    cp "$T/switchyard-worker@.service" "$T/switchyard-worker@default.service"
    out=$(systemd-analyze verify "$T/switchyard-coordinator.service" "$T/switchyard-worker@default.service" 2>&1) || { echo "$out"; exit 1; }
    [ -z "$out" ] || { echo "$out"; echo "FAIL: systemd-analyze printed warnings"; exit 1; }
    grep -q '^KillMode=mixed' 'deploy/systemd/switchyard-worker@.service'
    grep -q '^TimeoutStopSec=75s' 'deploy/systemd/switchyard-worker@.service'
    grep -q '^KillSignal=SIGTERM' 'deploy/systemd/switchyard-worker@.service'
    ! grep -qiE 'password=|token=|api_key=' deploy/systemd/switchyard.env || { echo "FAIL: a secret in switchyard.env"; exit 1; }
    rm -rf "$T"
    echo "ok -- 2 units"
else
    echo "skipped: systemd-analyze not installed"
fi

echo "== launchd plist"
"$PY" - <<'EOF'
import plistlib, re, sys
p = "deploy/launchd/dev.switchyard.worker.plist"
raw = open(p).read()
assert all("--" not in c for c in re.findall(r"<!--(.*?)-->", raw, re.S)), "an XML comment holds '--'"
d = plistlib.load(open(p, "rb"))
for key in ("Label", "ProgramArguments", "EnvironmentVariables", "RunAtLoad", "KeepAlive", "ExitTimeOut",
            "StandardOutPath", "StandardErrorPath"):
    assert key in d, f"missing {key}"
assert d["ProgramArguments"][:2] == ["/usr/local/bin/switchyard", "worker"], d["ProgramArguments"]
assert d["ExitTimeOut"] >= 75 and d["KeepAlive"] == {"SuccessfulExit": False}
env = d["EnvironmentVariables"]
assert "SWITCHYARD_REDIS_URL" in env and "PATH" in env and "/opt/homebrew/bin" in env["PATH"]
assert "SWITCHYARD_MODELS_FILE" in env or "SWITCHYARD_PROVIDERS_FILE" in env
assert "SWITCHYARD_REDIS_PASSWORD" not in env, "no password in the plist"
print("ok --", d["Label"])
EOF
if command -v plutil >/dev/null; then plutil -lint deploy/launchd/dev.switchyard.worker.plist; fi
echo "all host deploy checks passed"
