#!/usr/bin/env bash
# Predict a folder or bucket prefix of images with Ray Data batch inference.
#   jobs/predict.sh s3://BUCKET/runs/RUN s3://BUCKET/images s3://BUCKET/predictions --concurrency 4
source "$(dirname "$0")/submit.sh"
ckpt="${1:?usage: jobs/predict.sh CHECKPOINT_OR_RUN INPUT OUTPUT [predict options]}"; input="${2:?}"; output="${3:?}"; shift 3
submit -m u2pl_ray.predict --checkpoint "$ckpt" --input "$input" --output "$output" "$@"
