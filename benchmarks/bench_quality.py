"""Does U2PL learn from unlabelled images? Supervised vs U2PL at 1/16 labels, and the all-labels ceiling.

    python benchmarks/bench_quality.py [--quick] [--seeds 0 1 2] [--out benchmarks/results]
                                       [--settings NAME ...] [--set KEY=VALUE ...]

For every setting (configs/quality/<setting>.yaml) and seed, runs the product's own training
(u2pl_ray.train.run_training) on the built-in synthetic benchmark with the bundled EfficientNet-Lite0
weights, and reads mIoU from the run's summary.json. All settings share the images, the labelled
subset (data.synthetic.seed) and the number of iterations; the seed varies the training only.

Reported mIoU: the last validation (end of training) of the model the trainer itself selects,
`summary.last_miou` = the EMA teacher for U2PL, the student for supervised runs. Student/teacher
and best-of-run values are kept in the JSON too.

Writes <out>/quality.json and <out>/quality.md; the last line printed is one JSON object. Each
(setting, seed) result is saved in <out>/quality_runs/ when it finishes and reused by the next
invocation with the same configs and overrides (--fresh trains everything again), so the table can
be completed across several sittings.
--quick: one seed, three settings (no paper variant), fewer iterations: the direction in ~10 minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

CONFIGS = REPO / "configs" / "quality"
SETTINGS = ("sup_1_16", "u2pl_official_1_16", "u2pl_paper_1_16", "sup_full")
QUICK_SETTINGS = ("sup_1_16", "u2pl_official_1_16", "sup_full")
# --quick: 4 x 40 = 160 iterations instead of 6 x 60 (warm-up stays one epoch).
QUICK_OVERRIDES = ("schedule.epochs=4", "schedule.iters_per_epoch=40", "eval.every_epochs=4")
BASELINE, CEILING = "sup_1_16", "sup_full"
TARGET_GAIN, TARGET_GAP = 0.05, 0.40


def run_one(setting: str, seed: int, overrides: list[str], storage: str) -> dict:
    from u2pl_ray.config import load_config
    from u2pl_ray.engine.launch import resolve_storage
    from u2pl_ray.train import run_training

    path = CONFIGS / f"{setting}.yaml"
    name = f"{setting}-s{seed}"
    cfg = load_config(path, [*overrides, f"seed={seed}", f"storage.name={name}"])
    rc = run_training(cfg, name, resolve_storage(storage), config_path=str(path))
    if rc != 0:
        raise SystemExit(f"{setting} seed {seed}: training failed (exit {rc})")
    s = json.loads((Path(storage) / name / "summary.json").read_text())
    return {
        "seed": seed, "miou": s["last_miou"], "best_miou": s["best_miou"],
        "student_last": s["student"]["last_miou"], "teacher_last": s["teacher"]["last_miou"],
        "iterations": s["iterations"], "wall_s": s["wall_s"], "images_per_s": s["images_per_s"],
    }


def run_key(setting: str, seed: int, overrides: list[str]) -> str:
    """What a saved (setting, seed) result depends on: the quality configs' text and the overrides."""
    digest = hashlib.sha256()
    for path in sorted(CONFIGS.glob("*.yaml")):
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(json.dumps([setting, seed, overrides]).encode())
    return digest.hexdigest()[:16]


def cached_run(folder: Path, setting: str, seed: int, overrides: list[str], run: Callable[[], dict]) -> dict:
    """The result of one (setting, seed), saved under `folder` when it finishes and reused by later
    invocations with the same configs and overrides, so that the table fills across several sittings."""
    path = folder / f"{setting}-s{seed}.json"
    key = run_key(setting, seed, overrides)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            print(f"{setting} seed {seed}: reusing {path}", flush=True)
            return saved["result"]
    result = run()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "result": result}, indent=1))
    tmp.replace(path)
    return result


def aggregate(runs: list[dict]) -> dict:
    values = [r["miou"] for r in runs]
    return {"runs": runs, "miou": values, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def targets(results: dict) -> dict:
    """Gain of each U2PL setting over sup_1_16 and the share of the sup_1_16 -> sup_full gap it closes."""
    out: dict = {}
    if BASELINE not in results:
        return out
    base = results[BASELINE]["mean"]
    ceiling = results[CEILING]["mean"] if CEILING in results else None
    for name, r in results.items():
        if not name.startswith("u2pl"):
            continue
        gain = r["mean"] - base
        closed = gain / (ceiling - base) if ceiling is not None and ceiling > base else None
        out[name] = {"gain": gain, "gap_closed": closed, "gain_ok": gain >= TARGET_GAIN,
                     "gap_ok": closed is not None and closed >= TARGET_GAP}
    return out


def markdown(report: dict) -> str:
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    res, tg = report["results"], report["targets"]
    lines = [
        f"# Semi-supervised benchmark{' (--quick)' if report['quick'] else ''}", "",
        f"`{report['command']}`", "",
        f"{report['date']} on {report['machine']} (1-min load average at start/end: "
        f"{report['load_avg_start']:.1f}/{report['load_avg_end']:.1f}); total wall time "
        f"{report['wall_s'] / 60:.1f} min.", "",
        "Synthetic benchmark (Fashion-MNIST objects on photo backgrounds, 640 training / 96 validation "
        "images, 96 px), EfficientNet-Lite0 ImageNet weights, "
        f"{report['iterations']} iterations of 4 labelled (+ 4 unlabelled for U2PL) images, AdamW. "
        "The same labelled subset in every setting; the seed varies the training.", "",
        "mIoU (%) is the **last** validation, at the end of training, of the model the trainer selects: "
        "the EMA teacher for U2PL, the student for supervised runs.", "",
        "| setting | " + " | ".join(f"seed {s}" for s in report["seeds"])
        + " | mean ± std | gain vs sup_1_16 | gap closed | student, mean |",
        "|---|" + "---|" * len(report["seeds"]) + "---|---|---|---|",
    ]
    for name, r in res.items():
        by_seed = {x["seed"]: x["miou"] for x in r["runs"]}
        t = tg.get(name, {})
        gain = f"{100 * t['gain']:+.1f}" if t else "–"
        closed = f"{100 * t['gap_closed']:.0f} %" if t.get("gap_closed") is not None else "–"
        # The U2PL student, for reference: at this short schedule the EMA teacher still lags it.
        students = [x["student_last"] for x in r["runs"] if x.get("student_last") is not None]
        student = pct(statistics.fmean(students)) if students else "–"
        lines.append(f"| {name} | " + " | ".join(pct(by_seed.get(s)) for s in report["seeds"])
                     + f" | {100 * r['mean']:.1f} ± {100 * r['std']:.1f} | {gain} | {closed} | {student} |")
    lines += ["", f"Targets: U2PL ≥ sup_1_16 + {100 * TARGET_GAIN:.0f} mIoU and ≥ {100 * TARGET_GAP:.0f} % "
              "of the gap to sup_full closed."]
    for name, t in tg.items():
        lines.append(f"- {name}: gain {'met' if t['gain_ok'] else 'missed'}, "
                     f"gap {'met' if t['gap_ok'] else 'missed'}")
    return "\n".join(lines) + "\n"


def rerender(path: Path) -> None:
    """Rewrites the markdown next to a results JSON (after a change of the table's format)."""
    path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 seed, 3 settings, 160 iterations (~10 min)")
    p.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2; --quick: 0)")
    p.add_argument("--settings", nargs="+", choices=SETTINGS, help="default: all four (--quick: three)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run (after --quick's)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--storage", default=str(REPO / "runs" / "bench_quality"), help="where the runs are kept")
    p.add_argument("--fresh", action="store_true", help="train every (setting, seed) again instead of reusing "
                   "the results saved in <out>/<quality|quality_quick>_runs/")
    args = p.parse_args()
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    settings = args.settings or (QUICK_SETTINGS if args.quick else SETTINGS)
    overrides = [*(QUICK_OVERRIDES if args.quick else ()), *args.overrides]

    import ray

    started, load_start = time.monotonic(), os.getloadavg()[0]
    ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=1 << 30, log_to_driver=False)
    storage = str(Path(args.storage) / dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    results: dict = {}
    out = Path(args.out)
    stem = "quality_quick" if args.quick else "quality"
    saved = out / f"{stem}_runs"
    if args.fresh:
        for old in saved.glob("*.json"):
            old.unlink()
    try:
        for setting in settings:
            runs = []
            for seed in seeds:
                runs.append(cached_run(saved, setting, seed, overrides,
                                       lambda: run_one(setting, seed, overrides, storage)))  # noqa: B023
                print(f"{setting} seed {seed}: {json.dumps(runs[-1])}", flush=True)
            results[setting] = aggregate(runs)
    finally:
        ray.shutdown()
    wall = time.monotonic() - started
    first = next(iter(results.values()))["runs"][0]
    report = {
        "benchmark": "bench_quality", "quick": args.quick, "seeds": seeds, "results": results,
        "targets": targets(results), "iterations": first["iterations"], "overrides": overrides,
        "command": " ".join(["python benchmarks/bench_quality.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.system()}",
        "date": dt.datetime.now().isoformat(timespec="seconds"), "wall_s": round(wall, 1),
        "load_avg_start": load_start, "load_avg_end": os.getloadavg()[0], "runs_dir": storage,
        "reported": "last validation mIoU of the selected model (U2PL: EMA teacher; supervised: student)",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    (out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    tg = report["targets"]
    print(json.dumps({
        "benchmark": "bench_quality", "quick": args.quick,
        "means": {k: round(v["mean"], 4) for k, v in results.items()},
        "gain_ok": {k: t["gain_ok"] for k, t in tg.items()}, "gap_ok": {k: t["gap_ok"] for k, t in tg.items()},
        "wall_s": round(wall, 1),
    }))


if __name__ == "__main__":
    main()
