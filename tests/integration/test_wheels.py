"""attd as an outsider gets it: wheels in a folder, a fresh venv, the `attd` command.

Builds wheels of the five distributions and of the example plugin, installs attd-core and
attd-tasks-lra into a new virtual environment (torch pinned by constraints-dev.txt, other
dependencies from the configured index), lists the plugins and runs ListOps with tiny
settings; then installs the example plugin, sees it listed, runs its task and its tests;
then has that venv's `attd new-plugin` write a task plugin and a strategy plugin, builds
and installs them, runs their generated tests there and one tiny run with both.
The tests share one venv and run in file order (the later ones install more into it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "attd-plugin-example"
PACKAGES = ("attd-core", "attd-text", "attd-vision", "attd-cli", "attd-tasks-lra")
PROJECTS = [*(ROOT / name for name in PACKAGES), EXAMPLE]

# Tiny run settings, the one place to fix when run-config or task option names change.
TINY_RUN = {
    "train.max_steps": 5,
    "train.batch_size": 8,
    "model.backbone.d_model": 16,
    "model.backbone.n_layers": 1,
    "eval.limit": 16,
}
TINY_DATA = {"task.num_train": 64, "task.num_val": 16, "task.num_test": 32}
# What `attd new-plugin` is asked to write: kind -> component name (distribution attd-NAME).
GENERATED = {"task": "gen-task", "strategy": "gen-steps"}
TINY = {
    "listops": TINY_RUN | TINY_DATA | {"task.max_length": 100},
    "majority": TINY_RUN | TINY_DATA | {"task.seq_len": 32},
    GENERATED["task"]: TINY_RUN | TINY_DATA | {"task.seq_len": 32},
}

ROW_KEYS = {"distribution", "version", "kind", "name", "summary", "status", "load_ms"}


def dev_pins(*names: str) -> list[str]:
    """The exact requirements that requirements-dev.txt gives for `names`."""
    lines = (ROOT / "requirements-dev.txt").read_text().splitlines()
    pins = {line.split("==")[0]: line.split("#")[0].strip() for line in lines if "==" in line}
    return [pins[name] for name in names]


def environment(venv: Path | None = None) -> dict[str, str]:
    """The caller's environment minus anything that leaks the dev venv or attd settings."""
    leaks = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    env = {k: v for k, v in os.environ.items() if k not in leaks and not k.startswith("ATTD_")}
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1", PIP_NO_INPUT="1")
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(args: list[object], *, venv: Path | None = None, cwd: Path = ROOT, timeout: int) -> str:
    """Run a command to completion; on failure, fail the test showing all of its output."""
    command = [str(arg) for arg in args]
    shown = " ".join(command)
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=environment(venv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out after {timeout} s: {shown}\n{output(exc.stdout, exc.stderr)}")
    if done.returncode != 0:
        pytest.fail(f"exit code {done.returncode}: {shown}\n{output(done.stdout, done.stderr)}")
    return done.stdout


def output(stdout: str | bytes | None, stderr: str | bytes | None) -> str:
    def text(stream: str | bytes | None) -> str:
        return stream.decode(errors="replace") if isinstance(stream, bytes) else stream or ""

    return f"--- stdout ---\n{text(stdout)}\n--- stderr ---\n{text(stderr)}"


def pip_install(venv: Path, wheelhouse: Path, *requirements: str) -> None:
    constraints = ROOT / "constraints-dev.txt"
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-c", constraints]
    run([*pip, "--find-links", wheelhouse, *requirements], venv=venv, timeout=900)


def list_plugins(venv: Path) -> dict[tuple[str, str], dict]:
    rows = json.loads(run([venv / "bin" / "attd", "list-plugins", "--json"], venv=venv, timeout=60))
    assert all(set(row) == ROW_KEYS for row in rows), rows
    broken = [row for row in rows if row["status"] != "ok"]
    assert not broken, broken
    return {(row["kind"], row["name"]): row for row in rows}


def attd_run(venv: Path, task: str, out: Path, tta: tuple[str, ...] = ("fixed:3",)) -> dict:
    """A tiny `attd run`; every `tta` spec must be canonical and end in its k or k_max."""
    overrides = [arg for key, value in TINY[task].items() for arg in ("--set", f"{key}={value}")]
    strategies = [arg for spec in tta for arg in ("--tta", spec)]
    command = [venv / "bin" / "attd", "run", "--task", task, *strategies, *overrides]
    run([*command, "--output-dir", out], venv=venv, timeout=600)
    assert {"config.yaml", "metrics.jsonl", "checkpoint", "summary.json"} <= {
        path.name for path in out.iterdir()
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == task
    assert set(summary["eval"]) == {"none", *tta}
    for result in summary["eval"].values():
        assert 0.0 <= result["accuracy"] <= 1.0
        assert result["n"] > 0
    assert summary["eval"]["none"]["mean_k"] == 0.0
    for spec in tta:
        k = float(spec.rpartition(":")[2])
        mean_k = summary["eval"][spec]["mean_k"]
        assert mean_k == k if spec.startswith("fixed:") else 0.0 <= mean_k <= k, (spec, mean_k)
    return summary


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    for project in PROJECTS:
        build = [sys.executable, "-m", "build", "--wheel", "--no-isolation"]
        run([*build, "--outdir", folder, project], timeout=300)
    return folder


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    location = tmp_path_factory.mktemp("fresh") / "venv"
    run([sys.executable, "-m", "venv", location], timeout=120)
    pip_install(location, wheelhouse, "attd-core", "attd-tasks-lra")
    return location


def test_the_fresh_venv_sees_only_what_it_installed(venv):
    probe = (
        "import importlib.util as u, json, attd_core; print(json.dumps({'core': attd_core.__file__,"
        " 'visible': [m for m in ('pytest', 'attd_plugin_example') if u.find_spec(m)]}))"
    )
    seen = json.loads(run([venv / "bin" / "python", "-c", probe], venv=venv, timeout=60))
    assert Path(seen["core"]).is_relative_to(venv)
    assert seen["visible"] == []


def test_list_plugins_shows_core_and_lra(venv):
    plugins = list_plugins(venv)
    assert plugins[("task", "listops")]["distribution"] == "attd-tasks-lra"
    assert plugins[("task", "listops")]["version"] == "0.1.0"
    assert plugins[("backbone", "mamba")]["distribution"] == "attd-core"
    assert ("task", "majority") not in plugins


def test_run_listops_tiny(venv, tmp_path):
    summary = attd_run(venv, "listops", tmp_path / "listops")
    assert summary["scan_backend"] == "numba"  # attd-core's own dependencies bring it


def test_example_plugin_installs_lists_and_runs(venv, wheelhouse, tmp_path):
    pip_install(venv, wheelhouse, "attd-plugin-example")
    majority = list_plugins(venv)[("task", "majority")]
    assert majority["distribution"] == "attd-plugin-example"
    attd_run(venv, "majority", tmp_path / "majority")


def test_example_plugin_tests_pass_against_its_wheel(venv, wheelhouse):
    pip_install(venv, wheelhouse, "attd-plugin-example", *dev_pins("pytest"))
    pytest_command = [venv / "bin" / "python", "-m", "pytest", "-p", "no:cacheprovider"]
    run(pytest_command, venv=venv, cwd=EXAMPLE, timeout=300)


@pytest.fixture(scope="module")
def generated(venv: Path, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """kind -> the package folder that the fresh venv's `attd new-plugin` wrote (so the
    templates came from attd-cli's wheel); each is built into the wheelhouse."""
    out = tmp_path_factory.mktemp("generated")
    folders = {}
    for kind, name in GENERATED.items():
        command = [venv / "bin" / "attd", "new-plugin", name, "--kind", kind, "--out", out]
        run(command, venv=venv, timeout=60)
        folders[kind] = out / f"attd-{name}"
        build = [sys.executable, "-m", "build", "--wheel", "--no-isolation"]
        run([*build, "--outdir", wheelhouse, folders[kind]], timeout=300)
    return folders


def test_generated_plugins_install_list_and_pass_their_tests(venv, wheelhouse, generated):
    distributions = [f"attd-{name}[test]" for name in GENERATED.values()]
    pip_install(venv, wheelhouse, *distributions, *dev_pins("pytest"))
    plugins = list_plugins(venv)
    for kind, name in GENERATED.items():
        assert plugins[(kind, name)]["distribution"] == f"attd-{name}"
    pytest_command = [venv / "bin" / "python", "-m", "pytest", "-p", "no:cacheprovider"]
    for folder in generated.values():
        run(pytest_command, venv=venv, cwd=folder, timeout=300)


def test_generated_task_and_strategy_run_tiny(venv, tmp_path):
    strategy = f"{GENERATED['strategy']}:2"
    attd_run(venv, GENERATED["task"], tmp_path / "generated", tta=("fixed:1", strategy))
