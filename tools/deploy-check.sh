#!/usr/bin/env bash
# Validates the deployment files offline (no Docker, no cluster):
#   1. helm, built once from the Go module proxy into .cache/bin (git-ignored);
#   2. `helm lint --strict` and `helm template` of deploy/helm/backhaul for every values file
#      in deploy/helm/backhaul/ci/;
#   3. every rendered manifest against the Kubernetes schemas (kubernetes-validate, which
#      ships them), strictly (unknown fields are errors), for the oldest and newest
#      Kubernetes the chart supports;
#   4. docker-compose.yml against the Compose specification's JSON schema
#      (deploy/compose/compose-spec.schema.json);
#   5. the Dockerfile parses with BuildKit's parser and keeps its rules (non-root, health
#      check, exec-form entrypoint);
#   6. the Grafana dashboard is what deploy/grafana/build_dashboard.py writes, and every
#      query in it parses as PromQL;
#   7. tests/deploy: compose and the chart give each service the same settings, and the
#      dashboard queries the metrics the services export.
# Usage: tools/deploy-check.sh   (from anywhere; exits non-zero on the first failure)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
HELM_VERSION=${HELM_VERSION:-v3.22.0}
KUBERNETES_VALIDATE_VERSION=${KUBERNETES_VALIDATE_VERSION:-1.37.0}
PROMQL_PARSER_VERSION=${PROMQL_PARSER_VERSION:-0.11.0}
DOCKERFILE_PARSER_VERSION=${DOCKERFILE_PARSER_VERSION:-3.4.0}
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS=${KUBERNETES_VERSIONS:-"1.29.0 1.37.0"}
CHART=deploy/helm/backhaul
OUT=$ROOT/.cache/deploy-check
HELM=$ROOT/.cache/bin/helm

# helm keeps its caches and config in .cache, not in the home directory.
export HELM_CACHE_HOME=$ROOT/.cache/helm/cache HELM_CONFIG_HOME=$ROOT/.cache/helm/config \
  HELM_DATA_HOME=$ROOT/.cache/helm/data

step() { printf '\n== %s\n' "$*"; }

# The packages the checks need, beside the project's environment until they are dev
# dependencies (kubernetes-validate brings pyyaml and jsonschema).
py() { uv run --no-sync --quiet --with "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "$@"; }

step "helm $HELM_VERSION"
tools/helm.sh
"$HELM" version --short

rm -rf "$OUT" && mkdir -p "$OUT"
shopt -s nullglob
values_files=("$CHART"/ci/*-values.yaml)
[[ ${#values_files[@]} -gt 0 ]] || { echo "no values files in $CHART/ci" >&2; exit 1; }

for version in $KUBERNETES_VERSIONS; do
  mkdir -p "$OUT/$version"
  for values in "${values_files[@]}"; do
    name=$(basename "$values" .yaml)
    step "Kubernetes $version, $name: helm lint --strict, helm template"
    "$HELM" lint --strict --kube-version "$version" "$CHART" --values "$values"
    "$HELM" template backhaul "$CHART" --namespace backhaul --kube-version "$version" \
      --values "$values" > "$OUT/$version/$name.yaml"
    printf '%s objects rendered into %s\n' "$(grep -c '^kind:' "$OUT/$version/$name.yaml")" \
      "${OUT#"$ROOT"/}/$version/$name.yaml"
  done
  step "Kubernetes $version: kubernetes-validate $KUBERNETES_VALIDATE_VERSION --strict"
  py kubernetes-validate --strict --quiet --kubernetes-version "$version" "$OUT/$version"/*.yaml
  echo "ok: ${values_files[*]##*/}"
done

step "docker-compose.yml against the Compose specification"
py python - <<'PY'
import json
import sys

import jsonschema
import yaml

with open("deploy/compose/compose-spec.schema.json") as f:
    schema = json.load(f)
with open("docker-compose.yml") as f:
    compose = yaml.safe_load(f)
validator = jsonschema.validators.validator_for(schema)(schema)
errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
for error in errors:
    where = "/".join(str(p) for p in error.absolute_path) or "(top)"
    print(f"docker-compose.yml: {where}: {error.message}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"ok: {len(compose['services'])} services")
PY

step "Dockerfile: parses (BuildKit's own parser), runs as a numeric non-root user, health check"
uv run --no-sync --quiet --with "dockerfile==$DOCKERFILE_PARSER_VERSION" python - <<'PY'
import re
import subprocess

import dockerfile

commands = dockerfile.parse_file("Dockerfile")
stages, problems = [], []
for command in commands:
    flags = dict(f.lstrip("-").split("=", 1) for f in command.flags if "=" in f)
    if command.cmd == "FROM":
        stages.append({"name": command.value[2].lower() if len(command.value) > 2 else None, "cmds": []})
    elif stages:
        stages[-1]["cmds"].append(command)
    source = flags.get("from")
    if command.cmd == "COPY" and source and ":" not in source and "/" not in source:
        if source.lower() not in {s["name"] for s in stages[:-1]}:
            problems.append(f"line {command.start_line}: COPY --from={source}: no earlier stage")
final = {c.cmd: c for c in stages[-1]["cmds"]}
user = final.get("USER")
if not user or not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user.value[0]):
    problems.append("the final stage must run as a numeric, non-root USER")
if "HEALTHCHECK" not in final:
    problems.append("the final stage has no HEALTHCHECK")
entrypoint = final.get("ENTRYPOINT")
if not entrypoint or not entrypoint.json:
    problems.append("ENTRYPOINT must be in exec form")
uv_arg = next(c.value[0] for c in commands if c.cmd == "ARG" and c.value[0].startswith("UV_VERSION="))
local = subprocess.run(["uv", "--version"], capture_output=True, text=True, check=True).stdout.split()[1]
if uv_arg.split("=", 1)[1] != local:
    print(f"note: the image builds with {uv_arg}, this machine has uv {local}")
if problems:
    raise SystemExit("Dockerfile: " + "; ".join(problems))
print(f"ok: {len(stages)} stages, final runs as {user.value[0]}")
PY

step "Grafana dashboard: current, and every query parses as PromQL"
uv run --no-sync --quiet python deploy/grafana/build_dashboard.py --check
uv run --no-sync --quiet --with "promql-parser==$PROMQL_PARSER_VERSION" python - <<'PY'
import json

import promql_parser

with open("deploy/grafana/backhaul.json") as f:
    dashboard = json.load(f)
# Grafana's variables, as Grafana would substitute them.
variables = {"$__rate_interval": "1m", "$__range": "3h", "$service": ".*"}
count = 0
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        expr = target["expr"]
        for name, value in variables.items():
            expr = expr.replace(name, value)
        try:
            promql_parser.parse(expr)
        except ValueError as error:
            raise SystemExit(f"panel {panel['title']!r}: {error}: {target['expr']}") from None
        count += 1
print(f"ok: {count} queries")
PY

step "compose and the chart agree, the dashboard's metrics exist (tests/deploy)"
HELM=$HELM py pytest -q -p no:cacheprovider tests/deploy

step "deploy check passed"
