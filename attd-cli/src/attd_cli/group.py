"""The root `attd` command group: one-line user errors, the plugin manager, plugin commands.

The commands are module-level functions on module-level Typer apps, so nothing here is
built per plugin manager. The manager reaches a command through the click context:
`main` (or a test) passes it as `obj`, and `plugin_manager(ctx)` loads the installed
plugins when none was passed. The plugins' own commands (the `attd_register_commands`
hook) are asked for once per run, when the group first looks a command up, and join the
built-in ones without changing the module-level app.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
import typer
from typer.core import TyperGroup

from attd_core import AttdError, PluginManager, get_plugin_manager

USER_ERROR = 2
PLUGIN_COMMANDS = "attd_cli.plugin_commands"
"""The `ctx.meta` key (shared by a run's contexts) of the plugins' commands."""


def fail(message: str, code: int = USER_ERROR) -> NoReturn:
    """Print one error line on stderr and exit."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def plugin_manager(ctx: click.Context) -> PluginManager:
    """The manager this run was started with, else the installed plugins (loaded once)."""
    root = ctx.find_root()
    if root.obj is None:
        root.obj = get_plugin_manager()
    return root.obj


class AttdGroup(TyperGroup):
    """Shows errors as one line (Typer's own display off) and adds the plugins' commands.

    Commands check where they will write before they work; a file system error that
    still escapes (a disk that fills up) is one line naming the file, not a traceback.

    A plugin command named like a built-in one is not reachable: plugins add commands,
    they do not replace attd's.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except AttdError as exc:
            fail(str(exc))
        except OSError as exc:  # a file system problem no check could foresee: a full disk
            fail(os_error_message(exc))
        except typer.TyperException as exc:  # usage errors: bad option, missing value, ...
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed
                raise SystemExit(exc.exit_code) from None
            fail(_usage_message(exc), exc.exit_code)
        except typer.Abort:
            fail("aborted", 1)
        if not standalone_mode:
            return result
        raise SystemExit(result if isinstance(result, int) else 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return [*names, *(name for name in _plugin_commands(ctx) if name not in names)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or _plugin_commands(ctx).get(cmd_name)


def os_error_message(exc: OSError) -> str:
    """`PATH: reason` for an error the system raised about a file (or the reason alone)."""
    reason = exc.strerror or str(exc)
    return reason if exc.filename is None else f"{exc.filename}: {reason}"


def _plugin_commands(ctx: click.Context) -> dict[str, click.Command]:
    """The commands the plugins add to a Typer app of their own, asked for once per run."""
    if PLUGIN_COMMANDS not in ctx.meta:
        plugins = typer.Typer()
        plugin_manager(ctx).register_commands(plugins)
        ctx.meta[PLUGIN_COMMANDS] = typer.main.get_group(plugins).commands
    return ctx.meta[PLUGIN_COMMANDS]


def _usage_message(exc: typer.TyperException) -> str:
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"{exc.format_message()}{hint}"
