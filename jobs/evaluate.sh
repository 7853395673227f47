#!/usr/bin/env bash
# Evaluate a checkpoint or run folder (sliding window for Cityscapes, distributed over Ray tasks).
#   jobs/evaluate.sh s3://BUCKET/runs/RUN --mode slide --workers 8
source "$(dirname "$0")/submit.sh"
ckpt="${1:?usage: jobs/evaluate.sh CHECKPOINT_OR_RUN [evaluate options]}"; shift
submit -m u2pl_ray.evaluate --checkpoint "$ckpt" "$@"
