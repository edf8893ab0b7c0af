"""The `attd compare` figure: accuracy against mean k, and each strategy's k histogram.

matplotlib loads inside `write_compare_png` only, so that CLI start-up stays fast; the
figure is drawn with the object API on the Agg canvas (no pyplot, no global backend).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attd_core import fsync_file

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def strategy_label(canonical: str, uses_labels: bool) -> str:
    """A strategy's name in legends and tables; the oracle says that it reads labels."""
    return f"{canonical} (uses labels)" if uses_labels else canonical


def write_compare_png(path: Path, report: Mapping[str, Any]) -> None:
    """Draw `report` (the `compare.json` content) to `path`, atomically."""
    staging = render_compare_png(path, report)
    os.replace(staging, path)


def render_compare_png(path: Path, report: Mapping[str, Any]) -> Path:
    """Draw `report` into a hidden sibling of `path` and return it (rename it to publish)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shifts: Mapping[str, Mapping[str, Any]] = report["shifts"]
    strategies: list[str] = list(report["strategies"])
    columns = max(len(strategies), 1)
    figure = Figure(figsize=(max(6.0, 2.6 * columns), 4.0 + 2.4 * len(shifts)), layout="tight")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(1 + len(shifts), columns, height_ratios=[1.7] + [1] * len(shifts))

    scatter = figure.add_subplot(grid[0, :])
    colours = {name: f"C{index % 10}" for index, name in enumerate(strategies)}
    for row, (shift, entries) in enumerate(shifts.items()):
        marker = MARKERS[row % len(MARKERS)]
        for name in strategies:
            entry = entries[name]
            if entry["accuracy"] is None:
                continue
            label = strategy_label(name, entry["uses_labels"])
            if len(shifts) > 1:
                label = f"{label} [{shift}]"
            scatter.scatter(
                entry["mean_k"], entry["accuracy"], color=colours[name], marker=marker, label=label
            )
            text = name if len(shifts) == 1 else f"{name} [{shift}]"
            scatter.annotate(
                text,
                (entry["mean_k"], entry["accuracy"]),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=8,
            )
    scatter.set_xlabel("mean inner steps k")
    scatter.set_ylabel("accuracy")
    scatter.set_title(f"{report['task']}: accuracy against mean k")
    scatter.grid(alpha=0.3)
    if scatter.collections:
        scatter.legend(fontsize=8, loc="best")

    for row, (shift, entries) in enumerate(shifts.items(), start=1):
        for column, name in enumerate(strategies):
            axes = figure.add_subplot(grid[row, column])
            histogram = entries[name]["k_histogram"]
            ks = [int(k) for k in histogram]
            axes.bar(ks, list(histogram.values()), color=colours[name], width=0.8)
            axes.set_xticks(ks)
            title = strategy_label(name, entries[name]["uses_labels"])
            axes.set_title(title if len(shifts) == 1 else f"{title} [{shift}]", fontsize=8)
            axes.set_xlabel("k", fontsize=8)
            axes.tick_params(labelsize=7)
            if column == 0:
                axes.set_ylabel("samples", fontsize=8)

    return stage_png(figure, path)


def stage_png(figure: Any, path: Path) -> Path:
    """Draw `figure` into a hidden sibling of `path` and return it; renaming it over
    `path` publishes the picture whole."""
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        figure.savefig(staging, format="png", dpi=100)
        fsync_file(staging)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return staging
