"""Does U2PL learn from unlabelled images? Supervised vs U2PL at 1/16 labels, the ablation without the
contrastive loss, UniMatch, and the all-labels ceiling, on two datasets.

    python benchmarks/bench_quality.py [--suite synthetic|inia19] [--quick] [--seeds 0 1 2]
                                       [--settings NAME ...] [--set KEY=VALUE ...] [--fresh] [--out DIR]

Suites: `synthetic` (configs/quality/: the built-in synthetic set with procedural objects, 320 images) and
`inia19` (configs/quality_inia19/: the INIA19 macaque MRI and its NeuroMaps atlas, built by
benchmarks/mri_data.py from Debian's mricron-data on first use). For every setting and seed, runs the
product's own training (u2pl_ray.train.run_training) and reads mIoU from the run's summary.json. All
settings of a suite share the images, the labelled subset and the number of iterations; the seed
varies the training only.

Reported mIoU: the last validation (end of training) of the model the trainer itself selects,
`summary.last_miou` = the EMA teacher for U2PL, the student for supervised runs. Student/teacher,
best-of-run values and the validation curve are kept in the JSON too.

Writes <out>/quality.json (one section per suite; a run of one suite keeps the other's), quality.md
and quality_curves_<suite>.png (the validation curves of every row); the last line printed is one
JSON object. Each (setting, seed) result is saved in <out>/quality_runs/<suite>/ when it finishes and
reused by the next invocation with the same configs, overrides and data (--fresh trains everything
again), so the table can be completed across several sittings.
--quick: one seed, three settings, a shorter schedule: the direction only, never the result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

SUITES = {"synthetic": REPO / "configs" / "quality", "inia19": REPO / "configs" / "quality_inia19"}
CONFIGS = SUITES["synthetic"]
SETTINGS = ("sup_1_16", "u2pl_nocontra_1_16", "u2pl_official_1_16", "u2pl_paper_1_16", "unimatch_1_16", "sup_full")
QUICK_SETTINGS = ("sup_1_16", "u2pl_official_1_16", "sup_full")
# --quick: a third of the schedule; the warm-up share is kept by the suite's quick.yaml.
BASELINE, CEILING = "sup_1_16", "sup_full"
TARGET_GAIN, TARGET_GAP = 0.05, 0.40
QUICK_NOTE = "--quick: one seed and a short schedule show the direction only; one seed is not the result."


def quick_overrides(suite: str) -> list[str]:
    """The overrides of `--quick` for a suite, from its quick.yaml (a flat `overrides:` list)."""
    import yaml

    path = SUITES[suite] / "quick.yaml"
    return list(yaml.safe_load(path.read_text())["overrides"]) if path.exists() else []


def suite_overrides(suite: str) -> list[str]:
    """What a suite needs on this machine: the MRI dataset's local folder (built on first use)."""
    if suite != "inia19":
        return []
    root = REPO / "data" / "inia19"
    if not (root / "shards" / "manifest.json").exists():
        from benchmarks.mri_data import main as build_mri

        if build_mri(["--out", str(root)]) != 0:
            raise SystemExit("could not build the INIA19 dataset (benchmarks/mri_data.py)")
    return [f"data.root={root / 'shards'}"]


def run_one(configs: Path, setting: str, seed: int, overrides: list[str], storage: str) -> dict:
    from u2pl_ray.config import load_config
    from u2pl_ray.engine.launch import resolve_storage
    from u2pl_ray.train import run_training

    path = configs / f"{setting}.yaml"
    name = f"{setting}-s{seed}"
    cfg = load_config(path, [*overrides, f"seed={seed}", f"storage.name={name}"])
    rc = run_training(cfg, name, resolve_storage(storage), config_path=str(path))
    if rc != 0:
        raise SystemExit(f"{setting} seed {seed}: training failed (exit {rc})")
    s = json.loads((Path(storage) / name / "summary.json").read_text())
    return {
        "seed": seed,
        "miou": s["last_miou"],
        "best_miou": s["best_miou"],
        "student_last": s["student"]["last_miou"],
        "teacher_last": s["teacher"]["last_miou"],
        "iterations": s["iterations"],
        "wall_s": s["wall_s"],
        "images_per_s": s["images_per_s"],
        "curve": [
            [h["iteration"], h.get("val/miou"), h.get("val/student/miou"), h.get("val/teacher/miou")]
            for h in s.get("history", [])
        ],
    }


def data_identity(configs: Path, setting: str, overrides: list[str]) -> str:
    """Which data a setting trains on: its dataset URI, or for the synthetic benchmark the object source
    it resolves to here (Fashion-MNIST when Debian's package is installed, else procedural shapes)."""
    from u2pl_ray.config import load_config
    from u2pl_ray.data.synthetic.generator import resolved_object_kind

    cfg = load_config(configs / f"{setting}.yaml", list(overrides))
    return cfg.data.root or f"synthetic:{resolved_object_kind(cfg.data.synthetic)}"


def run_key(configs: Path, setting: str, seed: int, overrides: list[str], data: str) -> str:
    """What a saved (setting, seed) result depends on: the suite's configs, the overrides and the data."""
    digest = hashlib.sha256()
    for path in sorted(configs.glob("*.yaml")):
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(json.dumps([setting, seed, overrides, data]).encode())
    return digest.hexdigest()[:16]


def cached_run(folder: Path, setting: str, seed: int, key: str, run: Callable[[], dict] | None) -> dict | None:
    """The result of one (setting, seed), saved under `folder` when it finishes and reused by later
    invocations with the same `key`, so that the table fills across several sittings. `run=None`: the
    saved result or None (a table of what is there)."""
    path = folder / f"{setting}-s{seed}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            print(f"{setting} seed {seed}: reusing {path}", flush=True)
            return saved["result"]
    if run is None:
        return None
    result = run()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "result": result}, indent=1))
    tmp.replace(path)
    return result


def aggregate(runs: list[dict]) -> dict:
    values = [r["miou"] for r in runs]
    return {
        "runs": runs,
        "miou": values,
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def targets(results: dict) -> dict:
    """Gain of each semi-supervised setting over sup_1_16, the share of the sup_1_16 -> sup_full gap it closes,
    and whether it is ahead of sup_1_16 for every seed."""
    out: dict = {}
    if BASELINE not in results:
        return out
    base = results[BASELINE]["mean"]
    base_by_seed = {r["seed"]: r["miou"] for r in results[BASELINE]["runs"]}
    ceiling = results[CEILING]["mean"] if CEILING in results else None
    for name, r in results.items():
        if name in (BASELINE, CEILING):
            continue
        gain = r["mean"] - base
        closed = gain / (ceiling - base) if ceiling is not None and ceiling > base else None
        pairs = [(x["miou"], base_by_seed[x["seed"]]) for x in r["runs"] if x["seed"] in base_by_seed]
        out[name] = {
            "gain": gain,
            "gap_closed": closed,
            "gain_ok": gain >= TARGET_GAIN,
            "gap_ok": closed is not None and closed >= TARGET_GAP,
            "ahead_every_seed": bool(pairs) and all(u > s for u, s in pairs),
        }
    return out


def plateau(run: dict) -> float | None:
    """|last - previous| validation mIoU of a run (the plateau check of a supervised baseline)."""
    values = [point[1] for point in run.get("curve", []) if point[1] is not None]
    return abs(values[-1] - values[-2]) if len(values) >= 2 else None


def suite_markdown(suite: str, report: dict) -> str:
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    res, tg = report["results"], report["targets"]
    lines = [
        f"## {suite}{' (--quick)' if report['quick'] else ''}",
        "",
        f"`{report['command']}`",
        "",
        f"{report['date']} on {report['machine']} (1-min load average at start/end: "
        f"{report['load_avg_start']:.1f}/{report['load_avg_end']:.1f}); wall time of this invocation "
        f"{report['wall_s'] / 60:.1f} min; {report['iterations']} iterations per run.",
        "",
        "| setting | "
        + " | ".join(f"seed {s}" for s in report["seeds"])
        + " | mean ± std | gain vs sup_1_16 | gap closed | ahead every seed | student, mean |",
        "|---|" + "---|" * len(report["seeds"]) + "---|---|---|---|---|",
    ]
    for name, r in res.items():
        by_seed = {x["seed"]: x["miou"] for x in r["runs"]}
        t = tg.get(name, {})
        gain = f"{100 * t['gain']:+.1f}" if t else "–"
        closed = f"{100 * t['gap_closed']:.0f} %" if t.get("gap_closed") is not None else "–"
        ahead = ("yes" if t["ahead_every_seed"] else "no") if t else "–"
        students = [x["student_last"] for x in r["runs"] if x.get("student_last") is not None]
        student = pct(statistics.fmean(students)) if students else "–"
        lines.append(
            f"| {name} | "
            + " | ".join(pct(by_seed.get(s)) for s in report["seeds"])
            + f" | {100 * r['mean']:.1f} ± {100 * r['std']:.1f} | {gain} | {closed} | {ahead} | {student} |"
        )
    lines += [
        "",
        f"Targets: U2PL ≥ sup_1_16 + {100 * TARGET_GAIN:.0f} mIoU, ≥ {100 * TARGET_GAP:.0f} % of the "
        "gap to sup_full closed, ahead of sup_1_16 in every seed.",
    ]
    for name, t in tg.items():
        lines.append(
            f"- {name}: gain {'met' if t['gain_ok'] else 'missed'}, gap {'met' if t['gap_ok'] else 'missed'}, "
            f"every seed {'met' if t['ahead_every_seed'] else 'missed'}"
        )
    if BASELINE in res:
        steps = [plateau(r) for r in res[BASELINE]["runs"]]
        lines.append("- sup_1_16 last two validations differ by " + ", ".join(pct(s) for s in steps) + " mIoU")
    if report["quick"]:
        lines += ["", QUICK_NOTE]
    return "\n".join(lines) + "\n"


def markdown(sections: dict) -> str:
    head = [
        "# Semi-supervised benchmark",
        "",
        "mIoU (%) is the **last** validation, at the end of training, of the model the trainer selects: "
        "the EMA teacher for U2PL, the student for supervised runs. The same labelled subset in every "
        "setting of a suite; the seed varies the training.",
        "",
    ]
    return "\n".join(head) + "\n".join(suite_markdown(s, r) for s, r in sections.items())


def draw_curves(suite: str, report: dict, path: Path) -> None:
    """The validation mIoU of every row against the iteration: each seed thin, the seed mean thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for index, (name, r) in enumerate(report["results"].items()):
        colour = f"C{index}"
        curves = [[(p[0], p[1]) for p in run.get("curve", []) if p[1] is not None] for run in r["runs"]]
        for curve in curves:
            if curve:
                ax.plot([x for x, _ in curve], [100 * y for _, y in curve], color=colour, alpha=0.3, linewidth=0.8)
        steps = sorted(set.intersection(*[{x for x, _ in c} for c in curves if c])) if any(curves) else []
        if steps:
            mean = [100 * statistics.fmean(dict(c)[s] for c in curves if c) for s in steps]
            ax.plot(steps, mean, color=colour, linewidth=2, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation mIoU % (selected model)")
    ax.set_title(f"bench_quality, {suite}: {len(report['seeds'])} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), default="synthetic")
    p.add_argument("--quick", action="store_true", help="1 seed, 3 settings, a short schedule (the direction)")
    p.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2; --quick: 0)")
    p.add_argument("--settings", nargs="+", choices=SETTINGS, help="default: all six (--quick: three)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run (after --quick's)",
    )
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--storage", default=str(REPO / "runs" / "bench_quality"), help="where the runs are kept")
    p.add_argument(
        "--fresh", action="store_true", help="train every (setting, seed) again instead of reusing the saved results"
    )
    p.add_argument(
        "--saved-only",
        action="store_true",
        help="train nothing: the table of the saved results (missing seeds left out)",
    )
    args = p.parse_args()
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    settings = args.settings or (QUICK_SETTINGS if args.quick else SETTINGS)
    configs = SUITES[args.suite]
    overrides = [*suite_overrides(args.suite), *(quick_overrides(args.suite) if args.quick else ()), *args.overrides]
    if args.quick:
        print(QUICK_NOTE, flush=True)

    import ray

    started, load_start = time.monotonic(), os.getloadavg()[0]
    out = Path(args.out)
    stem = "quality_quick" if args.quick else "quality"
    saved = out / f"{stem}_runs" / args.suite
    if args.fresh:
        for old in saved.glob("*.json"):
            old.unlink()
    storage = str(Path(args.storage) / dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    results: dict = {}
    if not args.saved_only:
        ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=1 << 30, log_to_driver=False)
    try:
        for setting in settings:
            runs = []
            data = data_identity(configs, setting, overrides)
            for seed in seeds:
                key = run_key(configs, setting, seed, overrides, data)
                train = (
                    None if args.saved_only else functools.partial(run_one, configs, setting, seed, overrides, storage)
                )
                result = cached_run(saved, setting, seed, key, train)
                if result is not None:
                    runs.append(result)
                    print(f"{setting} seed {seed}: miou {result['miou']:.4f}", flush=True)
            if runs:
                results[setting] = aggregate(runs)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    if not results:
        raise SystemExit("no result to report (--saved-only with nothing saved)")
    wall = time.monotonic() - started
    first = next(iter(results.values()))["runs"][0]
    report = {
        "benchmark": "bench_quality",
        "suite": args.suite,
        "quick": args.quick,
        "seeds": seeds,
        "results": results,
        "targets": targets(results),
        "iterations": first["iterations"],
        "overrides": overrides,
        "command": " ".join(["python benchmarks/bench_quality.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.system()}",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "wall_s": round(wall, 1),
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg()[0],
        "runs_dir": storage,
        "reported": "last validation mIoU of the selected model (U2PL: EMA teacher; supervised: student)",
    }
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{stem}.json"
    sections = json.loads(json_path.read_text()) if json_path.exists() else {}
    sections = {k: v for k, v in sections.items() if k in SUITES}  # older single-suite files start afresh
    sections[args.suite] = report
    json_path.write_text(json.dumps(sections, indent=1))
    (out / f"{stem}.md").write_text(markdown(sections))
    draw_curves(args.suite, report, out / f"{stem}_curves_{args.suite}.png")
    print(suite_markdown(args.suite, report))
    tg = report["targets"]
    print(
        json.dumps(
            {
                "benchmark": "bench_quality",
                "suite": args.suite,
                "quick": args.quick,
                "means": {k: round(v["mean"], 4) for k, v in results.items()},
                "gain_ok": {k: t["gain_ok"] for k, t in tg.items()},
                "gap_ok": {k: t["gap_ok"] for k, t in tg.items()},
                "ahead_every_seed": {k: t["ahead_every_seed"] for k, t in tg.items()},
                "wall_s": round(wall, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
