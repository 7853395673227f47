#!/usr/bin/env bash
# Cityscapes (leftImg8bit/ + gtFine/) -> shards in object storage.
#   jobs/convert_cityscapes.sh /data/cityscapes /data/splits/cityscapes s3://BUCKET/cityscapes
source "$(dirname "$0")/submit.sh"
root="${1:?usage: jobs/convert_cityscapes.sh CITYSCAPES_DIR SPLITS_DIR OUT_URI}"; splits="${2:?}"; out="${3:?}"; shift 3
args=()
for n in 186 372 744 1488; do args+=(--split "$n=$splits/$n"); done
submit -m u2pl_ray.data.convert cityscapes --root "$root" "${args[@]}" --out "$out" "$@"
