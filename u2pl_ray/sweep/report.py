"""The end of a sweep: a table of trials (printed and CSV), the best trial's config as YAML, and a
plot of mIoU against each swept parameter."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from u2pl_ray.config import build_config, dump_config
from u2pl_ray.sweep.space import apply_params


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, Any]
    best_metric: float | None
    iterations: int
    reports: int
    status: str


def rows_from_results(results: Any, metric: str, keys: list[str]) -> list[TrialRow]:
    rows = []
    for result in results:
        frame = result.metrics_dataframe
        values = frame[metric].dropna().tolist() if frame is not None and metric in frame else []
        iters = frame["iteration"].dropna().tolist() if frame is not None and "iteration" in frame else []
        config = result.config or {}
        rows.append(
            TrialRow(
                trial_id=str((result.metrics or {}).get("trial_id", result.path.rsplit("/", 1)[-1])),
                params={k: config.get(k) for k in keys},
                best_metric=max(values) if values else None,
                iterations=int(max(iters)) if iters else 0,
                reports=len(values),
                status="error" if result.error else "done",
            )
        )
    return rows


def table_text(rows: list[TrialRow], keys: list[str], metric: str) -> str:
    header = ["trial", *keys, f"best {metric}", "iterations", "reports", "status"]
    body = [
        [
            r.trial_id,
            *[_fmt(r.params[k]) for k in keys],
            _fmt(r.best_metric),
            str(r.iterations),
            str(r.reports),
            r.status,
        ]
        for r in sorted(rows, key=_rank)
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def _rank(row: TrialRow) -> float:
    return -row.best_metric if row.best_metric is not None else math.inf


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table_csv(rows: list[TrialRow], keys: list[str], metric: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", *keys, f"best_{metric.replace('/', '_')}", "iterations", "reports", "status"])
    for r in sorted(rows, key=_rank):
        writer.writerow([r.trial_id, *[r.params[k] for k in keys], r.best_metric, r.iterations, r.reports, r.status])
    return out.getvalue()


def best_config_yaml(base: dict[str, Any], best: TrialRow) -> str:
    cfg = build_config(apply_params(base, best.params), source="best trial")
    cfg.tune = type(cfg.tune)()  # the result is a training config; the sweep section goes back to defaults
    swept = ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
    return f"# best trial {best.trial_id}: {swept} (best mIoU {_fmt(best.best_metric)})\n" + dump_config(cfg)


def plot_params(rows: list[TrialRow], keys: list[str], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    scored = [r for r in rows if r.best_metric is not None]
    for ax, key in zip(axes[0], keys):
        values = [r.params[key] for r in scored]
        numeric = all(isinstance(v, (int, float)) for v in values)
        xs = values if numeric else [str(v) for v in values]
        ax.scatter(
            xs, [r.best_metric for r in scored], c=["tab:red" if r.status == "error" else "tab:blue" for r in scored]
        )
        if numeric and values and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"best {metric}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
