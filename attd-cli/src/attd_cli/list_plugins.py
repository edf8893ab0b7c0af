"""`attd list-plugins`: what is installed, what it provides, and what failed to load.

Only plugin specs are read, never factories, so this imports no torch; `--json` does
not even import rich, since it is what scripts call.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from attd_core import PluginManager, PluginRow, json_text

if TYPE_CHECKING:
    from attd_cli.tables import WrappingTable

COLUMNS = ("distribution", "version", "kind", "name", "summary", "status", "load time")


def list_plugins(manager: PluginManager, *, as_json: bool) -> None:
    """Print every registered component, broken plugin and rejected duplicate to stdout."""
    rows = manager.rows()
    if as_json:
        sys.stdout.write(json_text([asdict(row) for row in rows], indent=2) + "\n")
    else:
        from rich.console import Console

        Console().print(plugin_table(rows))


def plugin_table(rows: Sequence[PluginRow]) -> WrappingTable:
    """`PluginManager.rows()` as a table that wraps rather than cuts, so that a pipe or an
    80-column CI log still shows every column and every name whole."""
    from rich.text import Text

    from attd_cli.tables import WrappingTable

    table = WrappingTable(*COLUMNS, title="attd plugins")
    for row in rows:
        ok = row.status == "ok"
        status = Text(row.status, style="green" if ok else "red")
        load_time = f"{row.load_ms:.1f} ms" if ok else ""
        values = (row.distribution, row.version, row.kind, row.name, row.summary)
        table.add_row(*values, status, load_time)
    return table
