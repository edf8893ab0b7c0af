"""`attd list-plugins`: what is installed, what it provides, and what failed to load.

Only plugin specs are read, never factories, so this imports no torch; `--json` does
not even import rich, since it is what scripts call.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from attd_core import PluginManager, PluginRow

FIXED_COLUMNS = ("distribution", "version", "kind", "name")


def list_plugins(manager: PluginManager, *, as_json: bool) -> None:
    """Print every registered component, broken plugin and rejected duplicate to stdout."""
    rows = manager.rows()
    if as_json:
        sys.stdout.write(json.dumps([asdict(row) for row in rows], indent=2) + "\n")
    else:
        print_table(rows)


def print_table(rows: Sequence[PluginRow]) -> None:
    """A rich table of `PluginManager.rows()`; the load time joins the status column so
    that the table fits 80 columns."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="attd plugins", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in FIXED_COLUMNS:
        table.add_column(column, no_wrap=True)
    table.add_column("summary", min_width=12)
    table.add_column("status", min_width=12)
    for row in rows:
        values = (row.distribution, row.version, row.kind, row.name, row.summary)
        if row.status == "ok":
            status = f"[green]ok[/] {row.load_ms:.1f} ms"
        else:
            status = f"[red]{escape(row.status)}[/]"
        table.add_row(*(escape(value) for value in values), status)
    Console().print(table)
