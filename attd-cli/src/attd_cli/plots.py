"""The `attd compare` figure: accuracy against mean k, each strategy's accuracy difference
from `none` with its interval, and each strategy's k histogram.

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
    compared = any(e.get("paired") for entries in shifts.values() for e in entries.values())
    top = [1.7, 1.2] if compared else [1.7]
    height = 4.0 + 2.4 * len(shifts) + (2.8 if compared else 0.0)
    figure = Figure(figsize=(max(6.0, 2.6 * columns), height), layout="tight")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(
        len(top) + len(shifts), columns, height_ratios=top + [1] * len(shifts)
    )

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

    if compared:
        draw_differences(figure.add_subplot(grid[1, :]), shifts, strategies, colours)

    for row, (shift, entries) in enumerate(shifts.items(), start=len(top)):
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


def draw_differences(
    axes: Any,
    shifts: Mapping[str, Mapping[str, Any]],
    strategies: list[str],
    colours: Mapping[str, str],
) -> None:
    """Each strategy's accuracy difference from `none` with its paired bootstrap interval
    (one point per shift), and the zero line: an interval across it is no clear gain."""
    labels: list[str] = []
    for name in strategies:
        for shift, entries in shifts.items():
            paired = entries[name].get("paired")
            if not paired:
                continue
            x = len(labels)
            difference = paired["difference"]
            error = [[difference - paired["ci_low"]], [paired["ci_high"] - difference]]
            axes.errorbar(x, difference, yerr=error, fmt="o", color=colours[name], capsize=4)
            label = strategy_label(name, entries[name]["uses_labels"])
            labels.append(label if len(shifts) == 1 else f"{label} [{shift}]")
    level = next(
        e["paired"]["confidence"] for es in shifts.values() for e in es.values() if e.get("paired")
    )
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_xticks(range(len(labels)), labels, fontsize=8)
    axes.set_xlim(-0.5, len(labels) - 0.5)
    axes.set_ylabel("accuracy - none", fontsize=8)
    axes.set_title(f"difference from none on the same examples ({level:.0%} CI)", fontsize=9)
    axes.grid(alpha=0.3, axis="y")


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
