#!/usr/bin/env bash
# A Ray Tune sweep (the config's `tune:` section) on the cluster.
#   jobs/sweep.sh configs/tune_demo.yaml --set storage.path=s3://BUCKET/sweeps
source "$(dirname "$0")/submit.sh"
config="${1:?usage: jobs/sweep.sh CONFIG [--set key=value ...]}"; shift
submit -m u2pl_ray.tune --config "$config" "$@"
