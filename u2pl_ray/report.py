"""Redraw the pictures of a finished (or running) run: the training curves.

    python -m u2pl_ray.report RUN [--out DIR]

RUN is a run folder, local or s3://. Reads the newest checkpoint's meta.json (validation history) and
the TensorBoard event files under RUN/tensorboard/ (training scalars), and writes RUN/plots/curves.png
(losses, mIoU of student and teacher, reliable-pixel share, drop percent against the iteration) plus
one curves_<name>.png per panel. The pseudo-label grids written during training are listed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m u2pl_ray.report", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run folder (local or s3://)")
    p.add_argument("--out", default=None, help="where the PNGs go (default RUN/plots)")
    return p


def _grids(run: str) -> list[str]:
    import pyarrow.fs as pafs

    from u2pl_ray.data.fs import join_uri, resolve_filesystem

    fs, path = resolve_filesystem(join_uri(run, "images"))
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(
        join_uri(run, "images", i.base_name)
        for i in infos
        if i.type == pafs.FileType.File and i.base_name.startswith("val_") and i.base_name.endswith(".png")
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from u2pl_ray.data.errors import DataError
    from u2pl_ray.data.fs import exists, join_uri
    from u2pl_ray.engine.checkpoint import CheckpointError
    from u2pl_ray.viz.curves import PANELS, read_run_curves, write_curves

    try:
        if not exists(join_uri(args.run, "config.yaml")) and not exists(join_uri(args.run, "summary.json")):
            print(f"error: {args.run} is not a run folder (no config.yaml or summary.json)", file=sys.stderr)
            return 2
        curves = read_run_curves(args.run)
        if not curves.series:
            print(
                f"error: {args.run} has no history yet (no checkpoint, summary.json or TensorBoard scalars)",
                file=sys.stderr,
            )
            return 1
        written = write_curves(curves, args.out or join_uri(args.run, "plots"))
        grids = _grids(args.run)
    except (CheckpointError, DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("read: " + ", ".join(curves.sources))
    for stem, (_, _, tags) in PANELS.items():
        found = [t for t in tags if curves.get(t)]
        print(f"  {stem}: " + (", ".join(f"{t} ({len(curves.get(t))} points)" for t in found) or "not recorded"))
    print("wrote:\n  " + "\n  ".join(written))
    if grids:
        print(f"pseudo-label grids ({len(grids)}): {grids[0]} ... {grids[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
