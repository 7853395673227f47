#!/usr/bin/env bash
# The built-in synthetic benchmark -> shards (a quick end-to-end check of a cluster's storage).
#   jobs/convert_synthetic.sh s3://BUCKET/synthetic [--num-train 640 ...]
source "$(dirname "$0")/submit.sh"
out="${1:?usage: jobs/convert_synthetic.sh OUT_URI [options]}"; shift
submit -m u2pl_ray.data.convert synthetic --out "$out" "$@"
