"""The `attd` app in-process: version, help snapshots, list-plugins, one-line user errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

import attd_cli
import attd_core
import attd_core._plugin as core_plugin
from attd_cli.app import create_app
from attd_core import PluginError, hookimpl

SNAPSHOTS = Path(__file__).parent / "snapshots"
STABLE_ENV = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb", "TERMINAL_WIDTH": None}


@pytest.fixture
def manager(fresh_plugin_manager: attd_core.PluginManager) -> attd_core.PluginManager:
    fresh_plugin_manager.add_plugin(core_plugin, name="core", distribution="attd-core")
    return fresh_plugin_manager


def invoke(manager: attd_core.PluginManager, *args: str) -> Result:
    return CliRunner().invoke(create_app(manager), list(args), env=STABLE_ENV)


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit code 2, one `error: ...` line on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr


def test_version_names_both_packages(manager):
    result = invoke(manager, "--version")
    assert result.exit_code == 0
    assert result.stdout == f"attd-cli {attd_cli.__version__} (attd-core {attd_core.__version__})\n"


@pytest.mark.parametrize(
    ("args", "snapshot"),
    [
        (["--help"], "attd_help.txt"),
        (["run", "--help"], "attd_run_help.txt"),
        (["data", "export", "--help"], "attd_data_export_help.txt"),
        (["sweep", "--help"], "attd_sweep_help.txt"),
        (["report", "--help"], "attd_report_help.txt"),
        (["config", "show", "--help"], "attd_config_show_help.txt"),
    ],
)
def test_help_matches_its_snapshot(manager, args, snapshot):
    result = invoke(manager, *args)
    assert result.exit_code == 0
    shown = "".join(f"{line.rstrip()}\n" for line in result.stdout.splitlines())
    path = SNAPSHOTS / snapshot
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(shown, encoding="utf-8")
    assert shown == path.read_text(encoding="utf-8"), (
        f"help changed; if intended, rerun with UPDATE_SNAPSHOTS=1 and review {path}"
    )


def test_list_plugins_prints_a_table(manager):
    result = invoke(manager, "list-plugins")
    assert result.exit_code == 0
    for header in ("distribution", "version", "kind", "name", "summary", "status"):
        assert header in result.stdout
    assert "delta-ssm" in result.stdout and "ok" in result.stdout


def test_list_plugins_json_has_the_same_rows(manager):
    result = invoke(manager, "list-plugins", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [(row["kind"], row["name"]) for row in rows] == [
        (row.kind, row.name) for row in manager.rows()
    ]
    assert set(rows[0]) == {
        "distribution",
        "version",
        "kind",
        "name",
        "summary",
        "status",
        "load_ms",
    }


def test_list_plugins_shows_broken_plugins(manager):
    class Broken:
        @hookimpl
        def attd_register(self, register: Any) -> None:
            raise RuntimeError("boom")

    manager.add_plugin(Broken(), name="broken", distribution="attd-broken")
    result = invoke(manager, "list-plugins", "--json")
    broken = [row for row in json.loads(result.stdout) if row["name"] == "broken"]
    assert broken[0]["status"].startswith("broken: registration failed: RuntimeError: boom")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run"], ["no task: pass --task NAME"]),
        (["run", "--task", "nope"], ["unknown task 'nope'; available: none installed"]),
        (["run", "--bogus"], ["No such option: --bogus", "attd run --help"]),
        (["run", "--seed", "x"], ["Invalid value for '--seed'", "integer"]),
        (["run", "--set", "train.lr"], ["train.lr", "KEY=VALUE"]),
        (["nope"], ["No such command 'nope'"]),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(manager, args, fragments):
    assert_user_error(invoke(manager, *args), *fragments)


def test_plugins_add_commands(manager):
    class WithCommand:
        @hookimpl
        def attd_register_commands(self, app: typer.Typer) -> None:
            @app.command("hello")
            def hello() -> None:
                typer.echo("hello from a plugin")

            @app.command("fails")
            def fails() -> None:
                raise PluginError("the plugin says no")

    manager.add_plugin(WithCommand(), name="greeter")
    assert invoke(manager, "hello").stdout == "hello from a plugin\n"
    assert_user_error(invoke(manager, "fails"), "the plugin says no")
