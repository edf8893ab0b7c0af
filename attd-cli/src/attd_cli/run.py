"""`attd run`: resolve the config, train, evaluate every strategy, print the results.

`attd_core` loads its runtime lazily: the config resolves without torch, so a bad flag
fails fast, and torch loads with `run_experiment`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

import attd_core
from attd_cli.paired_columns import note, paired_table
from attd_cli.tables import WrappingTable
from attd_core import PluginManager

if TYPE_CHECKING:
    from attd_core import EvalSummary, RunSummary


def run(
    manager: PluginManager,
    *,
    task: str | None,
    backbone: str | None,
    tta: Sequence[str],
    preset: str | None,
    shift: str | None,
    config_files: Sequence[str],
    overrides: Sequence[str],
    seed: int | None,
    output_dir: str | None,
    console: Console,
    progress_console: Console,
    resume: str | None = None,
) -> RunSummary | None:
    """Run one experiment (or finish the stopped run `resume`); progress goes to
    `progress_console`, results to `console`. Under `torchrun`, ranks other than 0
    print nothing (and get None)."""
    if os.environ.get("RANK", "0") != "0":
        console, progress_console = Console(quiet=True), Console(quiet=True)
    if resume is not None:
        resolved = attd_core.resume_config(resume, manager)
    else:
        resolved = attd_core.resolve_run_config(
            manager,
            task=task,
            backbone=backbone,
            tta=tta,
            preset=preset,
            shift=shift,
            config_files=config_files,
            overrides=overrides,
            seed=seed,
            output_dir=output_dir,
        )
    config = resolved.config
    essentials = {
        "task": resolved.task.canonical,
        "backbone": resolved.backbone.canonical,
        "adapter": resolved.adapter_text,
        "tta": ", ".join(choice.canonical for choice in resolved.tta),
        "shift": config.eval.shift or "none (clean data)",
        "train": (
            f"epochs={config.train.epochs} max_steps={config.train.max_steps} "
            f"batch_size={config.train.batch_size} lr={config.train.lr}"
        ),
        "runtime": (
            f"seed={config.runtime.seed} device={config.runtime.device} "
            f"threads={config.runtime.threads}"
        ),
    }
    for key, value in essentials.items():
        console.print(f"[bold]{key:>9}[/] {escape(value)}", highlight=False)

    if resume is not None:
        console.print(f"[bold]   resume[/] {escape(resume)}", highlight=False)
    summary = attd_core.run_experiment(
        resolved, manager, console=progress_console, resume=resume is not None
    )
    if summary is None:  # a rank other than 0: it trained its share and wrote nothing
        return summary
    title = summary.task + (f" ({summary.shift})" if summary.shift else "")
    print_results(console, title, summary.eval)
    console.print(f"[bold]   output[/] {escape(summary.output_dir)}", highlight=False)
    return summary


def result_table(title: str, entries: Mapping[str, EvalSummary]) -> WrappingTable:
    """One row per strategy: the task's metrics (accuracy, or perplexity for language
    modelling, ...) and the cost, as `summary.json` holds them."""
    names = list(dict.fromkeys(name for entry in entries.values() for name in entry.metrics))
    table = WrappingTable("tta", *names, "mean k", "seconds", "n", title=title)
    for canonical, result in entries.items():
        table.add_row(
            canonical,
            *(_number(result.metrics.get(name)) for name in names),
            f"{result.mean_k:.2f}",
            f"{result.seconds:.2f}",
            str(result.n),
        )
    return table


def print_results(console: Console, title: str, entries: Mapping[str, EvalSummary]) -> None:
    """`result_table`, then, when a strategy other than `none` is there, its comparison
    with `none` and the note on it (what the columns hold, or why they are empty)."""
    console.print(result_table(title, entries))
    compared = {key: entry for key, entry in entries.items() if key.partition("@")[0] != "none"}
    if compared:
        rows = [(key, entry.accuracy, entry.paired) for key, entry in compared.items()]
        console.print(paired_table(title, rows))
        console.print(escape(note(entry.paired for entry in compared.values())), highlight=False)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
