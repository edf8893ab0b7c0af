"""A strategy's paired comparison with `none` as table cells, for every table that shows it.

`attd run`, `attd eval`, `attd compare` and `attd report` show the same three columns
(difference with its interval, McNemar p-value, flips) and the same note saying what
they are, or why they are absent. The terminal gets them in a table of their own
(`paired_table`), beside the results table, so that neither is wider than a terminal;
Markdown tables take them as columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from attd_cli.tables import WrappingTable
from attd_core import PairedComparison

HEADERS = ("vs none [CI]", "McNemar p", "flips +/-")

NOTE = (
    "vs none: accuracy difference from `none` on the same examples, with a {level} "
    "paired bootstrap interval (percentile, {resamples} resamples, seed {seed}){runs}; "
    "McNemar p: exact two-sided test on the examples the two disagree on; flips: "
    "examples turned wrong->right / right->wrong."
)
ABSENT = (
    "No paired comparison with `none`: it needs `none` evaluated on the same examples "
    "and a task that judges each example (example_correct)."
)


def paired(value: PairedComparison | Mapping[str, Any] | None) -> PairedComparison | None:
    """The comparison, from `summary.json`'s model or `compare.json`'s mapping."""
    if value is None or isinstance(value, PairedComparison):
        return value
    return PairedComparison.model_validate(value)


def cells(value: PairedComparison | None) -> list[str]:
    """The three cells of one strategy; `-` where it has no comparison (or is `none`)."""
    if value is None:
        return ["-", "-", "-"]
    spread = "" if value.std is None else f" ±{value.std:.4f}"
    return [
        f"{value.difference:+.4f}{spread} [{value.ci_low:+.4f}, {value.ci_high:+.4f}]",
        f"{value.mcnemar_p:.3g}",
        f"+{value.wrong_to_right}/-{value.right_to_wrong}",
    ]


def note(values: Iterable[PairedComparison | None]) -> str:
    """What the columns mean (level, resamples and seed from the first comparison), or
    why there are none."""
    present = [value for value in values if value is not None]
    if not present:
        return ABSENT
    first = present[0]
    runs = "" if first.runs == 1 else f", pooled over {first.runs} runs (± std across runs)"
    return NOTE.format(
        level=f"{first.confidence:.0%}", resamples=first.resamples, seed=first.seed, runs=runs
    )


def paired_table(
    title: str, rows: Iterable[tuple[str, float | None, PairedComparison | None]]
) -> WrappingTable:
    """One row per compared strategy: its label, accuracy and the three cells."""
    table = WrappingTable("tta", "accuracy", *HEADERS, title=f"{title}: against none")
    for label, accuracy, value in rows:
        shown = "-" if accuracy is None else f"{accuracy:.4f}"
        table.add_row(label, shown, *cells(value))
    return table
