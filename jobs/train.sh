#!/usr/bin/env bash
# Train a paper setting (or any config) on the cluster.
#   jobs/train.sh configs/u2pl_r101-os8_4xb4-80e_voc-classic-513.yaml \
#       --set data.root=s3://BUCKET/voc --set data.split="'92'" --set storage.path=s3://BUCKET/runs
#   jobs/train.sh --resume s3://BUCKET/runs/RUN          # continue a stopped run
source "$(dirname "$0")/submit.sh"
if [ "${1:-}" = "--resume" ]; then submit -m u2pl_ray.train "$@"; exit; fi
config="${1:?usage: jobs/train.sh CONFIG [--set key=value ...]}"; shift
submit -m u2pl_ray.train --config "$config" "$@"
