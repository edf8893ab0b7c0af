"""The hooks a plugin may implement. Arguments may be added later, never removed.

A plugin is a module named by an entry point in the `attd` group:

    [project.entry-points.attd]
    my_plugin = "my_package._plugin"

holding `@attd_core.hookimpl` functions. The module should import only `attd_core`
(no torch): components are described by specs whose factories load on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "attd"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def attd_register(register: Callable[..., None]) -> None:
    """Register components by calling `register(spec)` once per component.

    `spec` is a `PluginSpec` subclass instance (`TaskSpec`, `BackboneSpec`,
    `StrategySpec`, ...): its name must be unique within its kind across all installed
    plugins, and its `factory` string must not be imported here.
    """


@hookspec
def attd_register_commands(app: Any) -> None:
    """Add commands to the `attd` CLI: what is added to `app` (a `typer.Typer`) joins the
    root `attd` command, beside the built-in commands (which keep their names).

    Add a Typer sub-app (`app.add_typer(sub, name="my-data")`) or a command
    (`app.command()(fn)`). Import heavy modules inside the command, not here.
    """
