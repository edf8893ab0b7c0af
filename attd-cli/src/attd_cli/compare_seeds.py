"""`attd compare RUN1 RUN2 ...`: runs of one config that differ only in `runtime.seed`.

Each run is evaluated as `attd compare` evaluates one; the report then holds every run's
entries and, per shift and strategy, a pooled entry: the task's metrics averaged over the
runs (with the accuracy's standard deviation across them), the step counts of all of
them, and the comparison with `none` pooled over every run's pairs
(`attd_core.compare_runs`: mean +- std of the runs' differences, a bootstrap interval
that resamples examples jointly across runs, McNemar and flips over all pairs).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attd_cli.paired_columns import HEADERS, paired
from attd_cli.paired_columns import cells as paired_cells
from attd_core import ConfigError, flatten_dotted, load_yaml_file

if TYPE_CHECKING:
    from attd_core import EvalResult

VARYING = ("runtime.seed", "runtime.output_dir")
"""The config keys in which runs compared together may differ."""


def check_seed_runs(paths: Sequence[Path]) -> list[int]:
    """The runs' seeds, after checking that their configs differ in `VARYING` alone and
    their seeds are distinct; otherwise a `ConfigError` naming the run and the key."""
    configs = [flatten_dotted(load_yaml_file(path / "config.yaml")) for path in paths]
    first = configs[0]
    for path, config in zip(paths[1:], configs[1:], strict=True):
        for key in sorted(first.keys() | config.keys()):
            if key not in VARYING and first.get(key) != config.get(key):
                raise ConfigError(
                    f"run {str(path)!r} differs from {str(paths[0])!r} in {key} "
                    f"({config.get(key)!r}, not {first.get(key)!r}): runs compare together "
                    "only when their configs differ in runtime.seed alone"
                )
    seeds = [config.get("runtime.seed") for config in configs]
    for index, seed in enumerate(seeds):
        if seed in seeds[:index]:
            raise ConfigError(
                f"runs {str(paths[seeds.index(seed)])!r} and {str(paths[index])!r} both have "
                f"runtime.seed {seed}: compare runs of different seeds"
            )
    return [int(seed) for seed in seeds]


def pooled_entries(
    by_run: Sequence[Mapping[str, EvalResult]], *, seed: int
) -> dict[str, dict[str, Any]]:
    """Every strategy of one shift pooled over the runs (see the module's docstring);
    the comparison with `none` is bootstrapped with `seed`."""
    from attd_cli.compare import entry
    from attd_core import compare_runs

    pooled = {}
    for canonical in by_run[0]:
        results = [run[canonical] for run in by_run]
        merged = _merged(results)
        summary = merged.summary()
        baselines = [run["none"].correct for run in by_run]
        outcomes = [result.correct for result in results]
        if canonical != "none" and None not in baselines and None not in outcomes:
            pairs = list(zip(baselines, outcomes, strict=True))
            summary = summary.model_copy(update={"paired": compare_runs(pairs, seed=seed)})
        accuracies = [result.metrics.get("accuracy") for result in results]
        spread = statistics.stdev(accuracies) if None not in accuracies else None
        pooled[canonical] = {
            **entry(merged, summary),
            "n": results[0].n,
            "runs": len(results),
            "accuracy_std": spread,
        }
    return pooled


def _merged(results: Sequence[EvalResult]) -> EvalResult:
    """One strategy's evaluations in several runs as one: metrics averaged, step counts,
    seconds and guard counters together (so k and the cost per sample cover them all)."""
    first = results[0]
    counts = {result.n for result in results}
    if len(counts) > 1:
        raise ConfigError(
            f"{first.tta}: the runs evaluated {sorted(counts)} examples: runs compare "
            "together only on the same examples"
        )
    metrics = {key: statistics.fmean(r.metrics[key] for r in results) for key in first.metrics}
    stats: dict[str, float] = {}
    for result in results:
        for key, value in result.stats.items():
            stats[key] = stats.get(key, 0.0) + value
    return replace(
        first,
        metrics=metrics,
        steps=[step for result in results for step in result.steps],
        seconds=sum(result.seconds for result in results),
        stats=stats,
        correct=None,
    )


def runs_markdown(report: Mapping[str, Any]) -> list[str]:
    """The per-run section of a several-run report: each run's comparison with `none`."""
    columns = ["run", "seed", "shift", "tta", "accuracy", *HEADERS]
    lines = ["", "## Per run", "", "| " + " | ".join(columns) + " |"]
    lines.append(
        "|" + "|".join("---" if c in ("run", "shift", "tta") else "---:" for c in columns) + "|"
    )
    for run in report["runs"]:
        for shift, entries in run["shifts"].items():
            for canonical, e in entries.items():
                accuracy = "-" if e["accuracy"] is None else f"{e['accuracy']:.4f}"
                cells = [f"`{run['run_dir']}`", str(run["seed"]), shift, f"`{canonical}`"]
                cells += [accuracy, *paired_cells(paired(e.get("paired")))]
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines
