#!/usr/bin/env bash
# Shared by the job scripts: `ray job submit` of a u2pl-ray command with this repo as the working dir.
#
#   RAY_ADDRESS   the cluster's dashboard (default http://127.0.0.1:8265; `ray dashboard cluster.yaml`
#                 forwards a cloud cluster's there)
#   DRY_RUN=1     print the command instead of submitting it
#   NO_WAIT=1     submit and return at once (follow with `ray job logs -f ID`)
#   WITH_WEIGHTS=1  ship ./weights/ with the job (the official configs' model.pretrained path; or point
#                 model.pretrained at s3://... and every worker fetches the file itself)
#   WITH_DEPS=1   for a bare cluster (Ray and torch only): the job's runtime_env also pip-installs this
#                 package's other dependencies from pyproject.toml (Ray builds a venv per job: slower start)
#
# Credentials are never passed here: nodes get them from their IAM role / environment (cluster.yaml).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
: "${RAY_ADDRESS:=http://127.0.0.1:8265}"

# The working dir ships the package's source with every job; WITH_DEPS adds its dependencies.
runtime_env=$(WITH_DEPS="${WITH_DEPS:-0}" WITH_WEIGHTS="${WITH_WEIGHTS:-0}" python3 - "$repo/pyproject.toml" <<'PY'
import json, os, sys, tomllib
excludes = [".venv", "runs", ".cache", "data", "benchmarks/results"]
if os.environ["WITH_WEIGHTS"] != "1":
    excludes.append("weights")
env = {"excludes": excludes,
       "env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "PYTHONUNBUFFERED": "1"}}
if os.environ["WITH_DEPS"] == "1":
    deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
    # torch and Ray are the cluster's own (CUDA builds, the cluster's Ray version)
    env["pip"] = {"packages": [d for d in deps if not d.startswith(("torch", "ray"))], "pip_check": False}
print(json.dumps(env))
PY
)

submit() {
  local cmd=(ray job submit --address "$RAY_ADDRESS" --working-dir "$repo" --runtime-env-json "$runtime_env")
  [ "${NO_WAIT:-0}" = "1" ] && cmd+=(--no-wait)
  cmd+=(-- python "$@")
  if [ "${DRY_RUN:-0}" = "1" ]; then
    printf '%q ' "${cmd[@]}"; echo
  else
    "${cmd[@]}"
  fi
}
