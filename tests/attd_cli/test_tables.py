"""Result tables in a narrow console or a pipe: every column stays, no name is cut."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from attd_cli import list_plugins
from attd_cli.compare import COLUMNS, compare_table
from attd_cli.tables import WrappingTable
from attd_core import hookimpl

ENTRY = {
    "accuracy": 0.5,
    "mean_k": 2.5,
    "p50_k": 2,
    "p90_k": 8,
    "seconds_per_sample": 1.2e-3,
    "n": 1000,
    "uses_labels": False,
}
STRATEGIES = {
    "none": ENTRY,
    "fixed:1": ENTRY,
    "adaptive:8": ENTRY,
    "gate:8": ENTRY,
    "oracle:8": {**ENTRY, "uses_labels": True},
}
LABELS = ["none", "fixed:1", "adaptive:8", "gate:8", "oracle:8 (uses labels)"]


def render(table: WrappingTable, width: int) -> list[str]:
    """`table` as a console of `width` columns writing into a pipe shows it."""
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(table)
    return out.getvalue().splitlines()


def column(lines: list[str], border: str, index: int) -> str:
    """The text of one column, read down the lines whose cells `border` separates."""
    cells = [line.split(border)[index + 1].strip() for line in lines if line.startswith(border)]
    return " ".join(cell for cell in cells if cell)


def test_the_compare_table_keeps_strategy_names_whole_in_80_columns():
    lines = render(compare_table("listops", "clean", STRATEGIES), 80)
    text = "\n".join(lines)
    assert "…" not in text and all(len(line) <= 80 for line in lines)
    for name in ("none", "fixed:1", "adaptive:8", "gate:8", "oracle:8"):
        assert f"│ {name} " in text  # on one line, not folded
    headers = [column(lines, "┃", index) for index in range(len(COLUMNS))]
    assert headers == list(COLUMNS)  # headers wrap at their spaces, all of them kept


@pytest.mark.parametrize("width", [60, 40])
def test_a_narrower_console_folds_cells_and_drops_nothing(width):
    lines = render(compare_table("listops", "clean", STRATEGIES), width)
    assert "…" not in "\n".join(lines) and all(len(line) <= width for line in lines)
    names = column(lines, "│", 0)
    assert names.replace(" ", "") == "".join(LABELS).replace(" ", "")
    headers = column(lines, "┃", len(COLUMNS) - 1)
    assert headers.replace(" ", "") == "useslabels"


def test_cells_are_text_not_markup():
    table = WrappingTable("tta", title="[bold]task[/]")
    table.add_row("fixed:1,lr=[0.1]")
    text = "\n".join(render(table, 80))
    assert "[bold]task[/]" in text and "fixed:1,lr=[0.1]" in text


@pytest.mark.parametrize("width", [80, 40])
def test_the_plugin_table_keeps_every_column_and_character(attd_pm, width):
    class Broken:
        @hookimpl
        def attd_register(self, register: Any) -> None:
            raise RuntimeError("no [bold]markup[/] here")

    attd_pm.add_plugin(Broken(), name="broken", distribution="attd-broken")
    rows = attd_pm.rows()
    assert any(row.status != "ok" for row in rows) and any(row.status == "ok" for row in rows)
    lines = render(list_plugins.plugin_table(rows), width)
    assert "…" not in "\n".join(lines) and all(len(line) <= width for line in lines)
    headers = [column(lines, "┃", index).replace(" ", "") for index in range(7)]
    assert headers == [header.replace(" ", "") for header in list_plugins.COLUMNS]
    cells = [
        (row.distribution, row.version, row.kind, row.name, row.summary, row.status) for row in rows
    ]
    load_times = [f"{row.load_ms:.1f}ms" for row in rows if row.status == "ok"]
    for index, values in enumerate(zip(*cells, strict=True)):  # wrapped, nothing cut
        assert column(lines, "│", index).replace(" ", "") == "".join(values).replace(" ", "")
    assert column(lines, "│", 6).replace(" ", "") == "".join(load_times)
