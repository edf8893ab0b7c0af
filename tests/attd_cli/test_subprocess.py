"""`attd` as a real process, with the plugins installed in this environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import attd_cli
import attd_core

# Runs the CLI as `python -m attd_cli` would, then reports which heavy packages it imported
# (any of their modules): what listing plugins or rejecting a bad flag must not pay for.
PROBE = """
import runpy, sys
sys.argv = ["attd", *sys.argv[1:]]
try:
    runpy.run_module("attd_cli", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
heavy = {"torch", "numpy", "datasets", "scipy"} & {name.split(".")[0] for name in sys.modules}
sys.stderr.write("\\nHEAVY=" + ",".join(sorted(heavy)))
sys.exit(code)
"""


def attd(
    *args: str, probe: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = ["-c", PROBE, *args] if probe else ["-m", "attd_cli", *args]
    return subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def test_python_dash_m_prints_the_versions():
    result = attd("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"attd-cli {attd_cli.__version__} (attd-core {attd_core.__version__})\n"
    )


def test_list_plugins_json_imports_no_torch_numpy_datasets_or_scipy():
    result = attd("list-plugins", "--json", probe=True)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {"none", "fixed", "mamba", "pathfinder", "listops"} <= {row["name"] for row in rows}
    assert result.stderr.rsplit("HEAVY=", 1)[1] == ""


def test_the_list_plugins_table_imports_no_torch_numpy_datasets_or_scipy():
    result = attd("list-plugins", probe=True)
    assert result.returncode == 0, result.stderr
    assert "pathfinder" in result.stdout
    assert result.stderr.rsplit("HEAVY=", 1)[1] == ""


def test_list_plugins_into_a_pipe_keeps_every_column_within_80():
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    result = attd("list-plugins", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "…" not in result.stdout and max(len(line) for line in lines) == 80
    header = " ".join(line for line in lines if line.startswith("┃"))
    for word in ("version", "kind", "name", "summary", "status", "load", "time"):
        assert f" {word} " in header, word
    rows = json.loads(attd("list-plugins", "--json").stdout)
    assert result.stdout.count("│ ok ") == sum(row["status"] == "ok" for row in rows)


def test_an_unknown_task_is_one_line_and_exit_code_2():
    result = attd("run", "--task", "nope", probe=True)
    assert result.returncode == 2
    shown, heavy = result.stderr.rsplit("\nHEAVY=", 1)
    lines = [line for line in shown.splitlines() if not line.startswith("attd: warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: unknown task 'nope'; available: ")
    assert "Traceback" not in result.stderr
    assert heavy == ""  # a bad flag is reported before torch loads
