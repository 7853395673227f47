#!/usr/bin/env bash
# VOCdevkit tree (on the head node or a shared disk) -> shards in object storage.
#   jobs/convert_voc.sh /data/VOCdevkit/VOC2012 /data/splits/pascal s3://BUCKET/voc
# Writes the classic splits (SPLITS/92 ... SPLITS/1464, named 92 ... 1464) and, where present, the blender
# splits (SPLITS/662 ... SPLITS/5291 of the SBD-augmented set, named blender_662 ... blender_5291), and val.
source "$(dirname "$0")/submit.sh"
root="${1:?usage: jobs/convert_voc.sh VOC2012_DIR SPLITS_DIR OUT_URI}"; splits="${2:?}"; out="${3:?}"; shift 3
args=()
for n in 92 183 366 732 1464; do args+=(--split "$n=$splits/$n"); done
for n in 662 1323 2646 5291; do [ -d "$splits/$n" ] && args+=(--split "blender_$n=$splits/$n"); done
submit -m u2pl_ray.data.convert voc --root "$root" "${args[@]}" --val "$splits/val.txt" --out "$out" "$@"
