"""`attd compare`: a trained run under several strategies (and shifts), on the same data.

Writes `compare.json`, `compare.md` and `compare.png` (or `STEM.*` for `--output STEM`)
and prints one table per shift. `none` is always evaluated first, as the baseline: every
other strategy is compared with it on the same examples (accuracy difference with a
paired bootstrap interval, exact McNemar p-value, flips). The oracle (any strategy that
reads labels) is marked in every report.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from attd_cli.compare_seeds import check_seed_runs, pooled_entries, runs_markdown
from attd_cli.evaluate import check_run_dir, dump_json, evaluate_loaded, parse_shifts
from attd_cli.paired_columns import HEADERS, note, paired, paired_table
from attd_cli.paired_columns import cells as paired_cells
from attd_cli.plots import strategy_label
from attd_cli.tables import WrappingTable
from attd_core import ConfigError, PluginManager, check_destination

if TYPE_CHECKING:
    from attd_core import EvalResult, EvalSummary

DEFAULT_STEM = "compare"
ORACLE_NOTE = (
    "Strategies marked 'uses labels' read the labels while adapting (the oracle): "
    "an upper bound, not a deployable result."
)


def compare(
    manager: PluginManager,
    run_dirs: Sequence[str | Path],
    *,
    tta: Sequence[str],
    shifts: Sequence[str],
    overrides: Sequence[str],
    output: str | None,
    console: Console,
    progress_console: Console,
) -> dict[str, Any]:
    """Evaluate, write the three reports, print the tables; returns the JSON report.

    Several `run_dirs` (one config, different seeds) are evaluated each and pooled (see
    `attd_cli.compare_seeds`); their reports go to `--output`, which they need.
    """
    paths = [check_run_dir(run_dir) for run_dir in run_dirs]
    for index, path in enumerate(paths):
        if path.resolve() in [other.resolve() for other in paths[:index]]:
            raise ConfigError(f"run folder {str(path)!r} is given twice")
    if not tta:
        raise ConfigError("compare needs at least one --tta SPEC (none is always included)")
    if len(paths) > 1 and output is None:
        raise ConfigError("comparing several runs needs --output STEM: where to write the reports")
    stem = paths[0] / DEFAULT_STEM if output is None else Path(output)
    for file in report_paths(stem):  # before any work; missing folders are created
        check_destination(file, "--output" if output is not None else "report file")
    shift_choices = parse_shifts(shifts, manager)
    seeds = check_seed_runs(paths) if len(paths) > 1 else None

    from attd_core import load_run

    evaluated = []
    for path in paths:
        resolved, parts, device = load_run(path, manager, tta=tta, overrides=overrides)
        config = resolved.config
        results = evaluate_loaded(parts, config, device, shift_choices or [None], progress_console)
        evaluated.append(results)
    header = {
        "task": config.task.name,
        "split": config.eval.split,
        "limit": config.eval.limit,
        "device": str(device),
    }
    if seeds is None:
        report = build_report(
            evaluated[0], run_dir=str(paths[0]), seed=config.runtime.seed, **header
        )
    else:
        report = build_seeds_report(evaluated, paths, seeds, **header)
    written = write_reports(stem, report)
    for shift, entries in report["shifts"].items():
        console.print(compare_table(report["task"], shift, entries))
        console.print(compare_paired_table(report["task"], shift, entries))
    console.print(escape(paired_note(report)), highlight=False)
    if any(e["uses_labels"] for entries in report["shifts"].values() for e in entries.values()):
        console.print(escape(ORACLE_NOTE), highlight=False)
    for file in written:
        console.print(f"[bold]wrote[/] {escape(str(file))}", highlight=False)
    return report


def entry(result: EvalResult, summary: EvalSummary) -> dict[str, Any]:
    """One strategy under one shift, as `compare.json` holds it: its `summary` (with
    the comparison with `none`, without the per-example outcomes), guards and k counts."""
    counts = Counter(result.steps)
    return {
        **summary.model_dump(exclude={"correct"}),
        "stats": dict(result.stats),
        "k_histogram": {str(k): counts[k] for k in sorted(counts)},
    }


def shift_entries(by_tta: Mapping[str, EvalResult], *, seed: int) -> dict[str, dict[str, Any]]:
    """Every strategy under one shift, each compared with `none` (bootstrap seed `seed`)."""
    from attd_core import paired_summaries

    summaries = paired_summaries(by_tta, seed=seed)
    return {canonical: entry(result, summaries[canonical]) for canonical, result in by_tta.items()}


def build_report(
    results: Mapping[str, Mapping[str, EvalResult]], *, seed: int, **header: Any
) -> dict[str, Any]:
    """The `compare.json` content: `header`, the strategy order, then shift -> tta -> entry."""
    first = next(iter(results.values()))
    return {
        **header,
        "seed": seed,
        "strategies": list(first),
        "shifts": {shift: shift_entries(by_tta, seed=seed) for shift, by_tta in results.items()},
    }


def build_seeds_report(
    evaluated: Sequence[Mapping[str, Mapping[str, EvalResult]]],
    paths: Sequence[Path],
    seeds: Sequence[int],
    **header: Any,
) -> dict[str, Any]:
    """The `compare.json` content for several runs: `header`, the runs and their seeds,
    the strategy order, the pooled entries (shift -> tta -> entry, bootstrapped with the
    first run's seed), then each run's own report."""
    first = next(iter(evaluated[0].values()))
    return {
        **header,
        "run_dirs": [str(path) for path in paths],
        "seeds": list(seeds),
        "seed": seeds[0],
        "strategies": list(first),
        "shifts": {
            shift: pooled_entries([run[shift] for run in evaluated], seed=seeds[0])
            for shift in evaluated[0]
        },
        "runs": [
            build_report(results, run_dir=str(path), seed=seed)
            for results, path, seed in zip(evaluated, paths, seeds, strict=True)
        ],
    }


def report_paths(stem: Path) -> list[Path]:
    """`STEM.json`, `STEM.md` and `STEM.png`."""
    if not stem.name.strip():
        raise ConfigError(f"--output {str(stem)!r}: give a file stem such as results/compare")
    return [stem.with_name(f"{stem.name}{suffix}") for suffix in (".json", ".md", ".png")]


def write_reports(stem: Path, report: Mapping[str, Any]) -> list[Path]:
    """`STEM.json`, `STEM.md` and `STEM.png`, each atomically; the figure is drawn first,
    so that a plotting failure leaves no report behind."""
    from attd_cli.plots import render_compare_png
    from attd_core import atomic_write_text

    json_path, md_path, png_path = report_paths(stem)
    staging = render_compare_png(png_path, report)
    try:
        atomic_write_text(json_path, dump_json(report))
        atomic_write_text(md_path, markdown(report))
        os.replace(staging, png_path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return [json_path, md_path, png_path]


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _guards(stats: Mapping[str, float]) -> str:
    return ", ".join(f"{key}={value:g}" for key, value in stats.items()) or "-"


COLUMNS = ("tta", "accuracy", "mean k", "p50 k", "p90 k", "s/sample", "n", "uses labels")


def paired_note(report: Mapping[str, Any]) -> str:
    """What the comparison columns hold (or why they are empty), for every shift."""
    entries = (e for by_tta in report["shifts"].values() for e in by_tta.values())
    return note(paired(e.get("paired")) for e in entries)


def _row(canonical: str, e: Mapping[str, Any]) -> list[str]:
    spread = e.get("accuracy_std")
    return [
        strategy_label(canonical, e["uses_labels"]),
        _number(e["accuracy"], 4) + ("" if spread is None else f" ± {spread:.4f}"),
        f"{e['mean_k']:.2f}",
        f"{e['p50_k']:g}",
        f"{e['p90_k']:g}",
        f"{e['seconds_per_sample']:.2e}",
        str(e["n"]),
        "yes" if e["uses_labels"] else "no",
    ]


def compare_table(task: str, shift: str, entries: Mapping[str, Mapping[str, Any]]) -> WrappingTable:
    """The printed table for one shift; it wraps in a narrow console, never cuts."""
    table = WrappingTable(*COLUMNS, title=f"{task} ({shift})")
    for canonical, e in entries.items():
        table.add_row(*_row(canonical, e))
    return table


def compare_paired_table(
    task: str, shift: str, entries: Mapping[str, Mapping[str, Any]]
) -> WrappingTable:
    """The printed comparison with `none` for one shift."""
    rows = [
        (strategy_label(canonical, e["uses_labels"]), e["accuracy"], paired(e.get("paired")))
        for canonical, e in entries.items()
        if canonical != "none"
    ]
    return paired_table(f"{task} ({shift})", rows)


def markdown(report: Mapping[str, Any]) -> str:
    """`compare.md`: a header, then one table per shift (with adapter size and guards)."""
    limit = "all" if report["limit"] is None else report["limit"]
    where = f"split `{report['split']}` (limit {limit}); device `{report['device']}`"
    if "runs" in report:
        runs = ", ".join(
            f"`{run}` (seed {seed})"
            for run, seed in zip(report["run_dirs"], report["seeds"], strict=True)
        )
        heading = (
            f"Runs {runs}; {where}. Pooled over the {len(report['runs'])} runs: metrics "
            "are their means (accuracy ± its standard deviation across runs)."
        )
    else:
        heading = f"Run `{report['run_dir']}`; {where}; seed {report['seed']}."
    lines = [f"# attd compare: {report['task']}", "", heading]
    columns = [*COLUMNS[:2], *HEADERS, *COLUMNS[2:], "adapter params", "guards"]
    oracle = False
    for shift, entries in report["shifts"].items():
        lines += ["", f"## {shift}", ""]
        lines.append("| " + " | ".join(columns) + " |")
        lines.append(
            "|" + "|".join("---" if c in ("tta", "guards") else "---:" for c in columns) + "|"
        )
        for canonical, e in entries.items():
            oracle = oracle or e["uses_labels"]
            params = e["adapter_parameters"]
            row = _row(canonical, e)
            cells = [
                *row[:2],
                *paired_cells(paired(e.get("paired"))),
                *row[2:],
                "-" if params is None else str(params),
                _guards(e["stats"]),
            ]
            cells[0] = f"`{cells[0]}`" if not e["uses_labels"] else f"`{canonical}` (uses labels)"
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += ["", paired_note(report)]
    if "runs" in report:
        lines += runs_markdown(report)
    if oracle:
        lines += ["", ORACLE_NOTE]
    return "\n".join(lines) + "\n"
