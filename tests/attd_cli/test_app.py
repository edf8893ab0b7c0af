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
import attd_cli.group
import attd_core
import attd_core._plugin as core_plugin
from attd_cli.app import app, main
from attd_core import PluginError, hookimpl

SNAPSHOTS = Path(__file__).parent / "snapshots"
STABLE_ENV = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb", "TERMINAL_WIDTH": None}


@pytest.fixture
def manager(fresh_plugin_manager: attd_core.PluginManager) -> attd_core.PluginManager:
    fresh_plugin_manager.add_plugin(core_plugin, name="core", distribution="attd-core")
    return fresh_plugin_manager


def invoke(manager: attd_core.PluginManager, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=STABLE_ENV, obj=manager)


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


def test_plugin_commands_join_one_run_and_never_replace_a_builtin(manager):
    class Clashing:
        @hookimpl
        def attd_register_commands(self, app: typer.Typer) -> None:
            @app.command("list-plugins")
            def list_plugins() -> None:
                typer.echo("the plugin's list-plugins")

            @app.command("extra")
            def extra() -> None:
                typer.echo("extra")

    manager.add_plugin(Clashing(), name="clashing")
    assert "the plugin's" not in invoke(manager, "list-plugins").stdout
    help_text = invoke(manager, "--help").stdout
    assert "extra" in help_text and help_text.count("list-plugins") == 1
    # another manager's run does not see them: the module-level app is left unchanged
    other = attd_core.PluginManager(autoload=False, environ={})
    assert_user_error(invoke(other, "extra"), "No such command 'extra'")


def test_main_runs_with_the_given_manager(manager, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["list-plugins", "--json"], manager=manager)
    assert exit_info.value.code == 0
    names = [row["name"] for row in json.loads(capsys.readouterr().out)]
    assert names == [row.name for row in manager.rows()]


def test_plugins_that_fail_to_load_are_one_line(monkeypatch):
    def strict_failure() -> attd_core.PluginManager:
        raise PluginError("plugin 'x' is broken (ATTD_STRICT_PLUGINS=1)")

    monkeypatch.setattr(attd_cli.group, "get_plugin_manager", strict_failure)
    result = CliRunner().invoke(app, ["list-plugins"], env=STABLE_ENV)  # no obj: load them
    assert_user_error(result, "plugin 'x' is broken")
