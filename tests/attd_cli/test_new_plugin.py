"""`attd new-plugin` in-process: the files it writes, the names in them, its errors.

The generated packages' own tests run against installed wheels in
tests/integration/test_wheels.py; here one slow test runs them from the source folder.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import attd_core
import attd_core._plugin as core_plugin
from attd_cli import new_plugin as generator
from attd_cli.app import app
from attd_core import specs

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = Path(__file__).parent / "snapshots"
STABLE_ENV = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb", "TERMINAL_WIDTH": None}
# The dev venv's ruff (the repository's pin); a package-only environment may have none.
RUFF = next(
    (str(path) for path in [Path(sys.executable).with_name("ruff")] if path.is_file()),
    shutil.which("ruff"),
)

EXPECTED = {
    "task": {"module": "task", "spec": "TaskSpec", "base": "ClassificationTask"},
    "strategy": {"module": "strategy", "spec": "StrategySpec", "base": "InnerLoopStrategy"},
}


@pytest.fixture
def manager(fresh_plugin_manager: attd_core.PluginManager) -> attd_core.PluginManager:
    fresh_plugin_manager.add_plugin(core_plugin, name="core", distribution="attd-core")
    return fresh_plugin_manager


def invoke(manager: attd_core.PluginManager, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=STABLE_ENV, obj=manager)


def generate(manager: attd_core.PluginManager, out: Path, name: str, kind: str) -> Path:
    result = invoke(manager, "new-plugin", name, "--kind", kind, "--out", str(out))
    assert result.exit_code == 0, result.output
    return out / f"attd-{name.replace('_', '-')}"


def files_under(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


def assert_user_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# -- what it writes ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["task", "strategy"])
def test_writes_a_complete_package(manager, tmp_path, kind):
    target = generate(manager, tmp_path, "my-thing", kind)
    module = EXPECTED[kind]["module"]
    assert files_under(target) == {
        ".gitignore",
        "README.md",
        "pyproject.toml",
        "src/attd_my_thing/__init__.py",
        "src/attd_my_thing/_plugin.py",
        "src/attd_my_thing/options.py",
        f"src/attd_my_thing/{module}.py",
        "tests/test_plugin.py",
    }
    assert [path.name for path in tmp_path.iterdir()] == ["attd-my-thing"]  # no staging left
    for path in target.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "$" not in text, f"unfilled placeholder in {path}"


@pytest.mark.parametrize("kind", ["task", "strategy"])
def test_names_are_substituted_everywhere(manager, tmp_path, kind):
    target = generate(manager, tmp_path, "my_thing", kind)
    assert target.name == "attd-my-thing"
    package = target / "src" / "attd_my_thing"
    suffix = kind.capitalize()
    plugin = (package / "_plugin.py").read_text()
    assert 'name="my_thing"' in plugin
    assert f'factory="attd_my_thing.{EXPECTED[kind]["module"]}:MyThing{suffix}"' in plugin
    assert f"{EXPECTED[kind]['spec']}(" in plugin and "config=MyThingOptions" in plugin
    code = (package / f"{EXPECTED[kind]['module']}.py").read_text()
    assert f"class MyThing{suffix}({EXPECTED[kind]['base']}):" in code
    assert f"class TestMyThing{suffix}(" in (target / "tests" / "test_plugin.py").read_text()
    readme = (target / "README.md").read_text()
    assert readme.startswith("# attd-my-thing\n")
    assert "pip install -e" in readme and "pytest" in readme and "twine upload" in readme


def test_a_kind_suffix_in_the_name_is_not_doubled(manager, tmp_path):
    target = generate(manager, tmp_path, "counting-task", "task")
    assert "class CountingTask(" in (target / "src/attd_counting_task/task.py").read_text()
    assert "class CountingOptions(" in (target / "src/attd_counting_task/options.py").read_text()


@pytest.mark.parametrize("kind", ["task", "strategy"])
def test_pyproject_declares_the_entry_point_and_loose_ranges(manager, tmp_path, kind):
    target = generate(manager, tmp_path, "my-thing", kind)
    pyproject = tomllib.loads((target / "pyproject.toml").read_text())
    assert pyproject["build-system"]["build-backend"] == "hatchling.build"
    project = pyproject["project"]
    assert project["name"] == "attd-my-thing"
    assert project["entry-points"]["attd"] == {"my-thing": "attd_my_thing._plugin"}
    assert "attd-core>=0.1,<0.2" in project["dependencies"]
    assert all("==" not in requirement for requirement in project["dependencies"])
    assert any(item.startswith("pytest") for item in project["optional-dependencies"]["test"])
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [
        "src/attd_my_thing"
    ]


@pytest.mark.parametrize("doc", ["README.md", "docs/plugins.md"])
def test_the_docs_snippets_declare_what_a_generated_task_plugin_declares(doc):
    """The README's snippet left pydantic out while docs/plugins.md declared it."""
    snippet = re.search(r"^dependencies = \[(.*)\]", (ROOT / doc).read_text(), re.MULTILINE)
    assert snippet is not None, f"{doc} has no pyproject dependencies snippet"
    declared = [item.strip().strip('"') for item in snippet.group(1).split('",')]
    assert declared == generator.dependencies("task")


def test_the_generated_ruff_settings_are_the_repositorys(manager, tmp_path):
    target = generate(manager, tmp_path, "my-thing", "task")
    generated = tomllib.loads((target / "pyproject.toml").read_text())["tool"]["ruff"]
    ours = tomllib.loads((ROOT / "ruff.toml").read_text())
    assert generated["line-length"] == ours["line-length"]
    assert generated["target-version"] == ours["target-version"]
    assert generated["lint"]["select"] == ours["lint"]["select"]


@pytest.mark.parametrize("kind", ["task", "strategy"])
def test_generated_code_passes_ruff(manager, tmp_path, kind):
    """Also with the longest name allowed, which makes the longest lines."""
    if RUFF is None:
        pytest.skip("ruff is not installed here (pip install -r requirements-dev.txt)")
    generate(manager, tmp_path, "my-thing", kind)
    generate(manager, tmp_path, "x" * generator.MAX_NAME_LENGTH, kind)
    for command in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [RUFF, *command, "--no-cache", "."],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("kind", ["task", "strategy"])
def test_the_plugin_module_imports_only_attd_core_and_its_options(manager, tmp_path, kind):
    target = generate(manager, tmp_path, "my-thing", kind)
    package = target / "src" / "attd_my_thing"
    imported = set()
    for path in (package / "_plugin.py", package / "options.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    allowed = {"__future__", "collections.abc", "typing", "pydantic", "attd_core"}
    assert imported <= allowed | {"attd_my_thing.options"}, imported


def test_an_existing_empty_folder_is_used(manager, tmp_path):
    (tmp_path / "attd-my-thing").mkdir()
    target = generate(manager, tmp_path, "my-thing", "task")
    assert (target / "pyproject.toml").is_file()


def test_the_output_folder_is_created(manager, tmp_path):
    target = generate(manager, tmp_path / "a" / "b", "my-thing", "task")
    assert (target / "pyproject.toml").is_file()


def test_output_names_the_files_and_next_steps(manager, tmp_path):
    result = invoke(manager, "new-plugin", "my-thing", "--out", str(tmp_path))
    assert result.exit_code == 0
    assert f"created {tmp_path / 'attd-my-thing'}" in result.stdout
    assert "  src/attd_my_thing/task.py\n" in result.stdout
    assert "attd run --task my-thing --tta fixed:3" in result.stdout


@pytest.mark.parametrize("kind", ["task", "strategy"])
def test_the_generated_plugin_registers_a_valid_spec(manager, tmp_path, monkeypatch, kind):
    name = f"gen-{kind}"
    package = f"attd_gen_{kind}"
    target = generate(manager, tmp_path, name, kind)
    monkeypatch.syspath_prepend(str(target / "src"))
    try:
        module = importlib.import_module(f"{package}._plugin")
        manager.add_plugin(module, name=name, distribution=f"attd-{name}")
    finally:
        for loaded in [key for key in sys.modules if key.partition(".")[0] == package]:
            del sys.modules[loaded]
    assert manager.plugins[name].status == "ok", manager.plugins[name].reason
    assert manager.get(kind, name).config.__name__ == "GenOptions"  # no GenTaskOptions


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("MyTask", "lowercase letters and digits"),
        ("1task", "starting with a letter"),
        ("my--task", "single '-' or '_'"),
        ("my-task-", "bad plugin name 'my-task-'"),
        ("x" * (generator.MAX_NAME_LENGTH + 1), f"at most {generator.MAX_NAME_LENGTH}"),
        ("core", "clash with attd's own packages"),
        ("tasks_lra", "clash with attd's own packages"),
        ("attd-thing", "clash with attd's own packages"),
    ],
)
def test_bad_names_are_refused(manager, tmp_path, name, fragment):
    assert_user_error(invoke(manager, "new-plugin", name, "--out", str(tmp_path)), fragment)
    assert list(tmp_path.iterdir()) == []


def test_the_name_rule_is_the_specs(manager):
    assert generator.NAME_PATTERN == specs._NAME_PATTERN


def test_a_name_already_installed_for_the_kind_is_refused(manager, tmp_path):
    result = invoke(manager, "new-plugin", "fixed", "--kind", "strategy", "--out", str(tmp_path))
    assert_user_error(result, "a strategy named 'fixed' is already installed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["backbone", "nope"])
def test_unsupported_kinds_list_the_supported_ones(manager, tmp_path, kind):
    result = invoke(manager, "new-plugin", "thing", "--kind", kind, "--out", str(tmp_path))
    assert_user_error(result, f"cannot write a {kind!r} plugin", "supported kinds: task, strategy")


def test_a_non_empty_target_is_never_touched(manager, tmp_path):
    target = tmp_path / "attd-my-thing"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = invoke(manager, "new-plugin", "my-thing", "--out", str(tmp_path))
    assert_user_error(result, "already exists and is not empty")
    assert files_under(target) == {"notes.txt"}
    assert [path.name for path in tmp_path.iterdir()] == ["attd-my-thing"]


def test_a_file_in_the_way_is_refused(manager, tmp_path):
    (tmp_path / "attd-my-thing").write_text("a file")
    result = invoke(manager, "new-plugin", "my-thing", "--out", str(tmp_path))
    assert_user_error(result, "exists and is not a folder")


def test_a_failed_write_leaves_nothing_behind(manager, tmp_path, monkeypatch):
    written = []
    real_write = Path.write_text

    def failing_write(self: Path, *args: object, **kwargs: object) -> int:
        if written:
            raise OSError(28, "No space left on device")
        written.append(self)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing_write)
    result = invoke(manager, "new-plugin", "my-thing", "--out", str(tmp_path))
    assert_user_error(result, "cannot create", "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_missing_name_is_a_usage_error(manager):
    assert_user_error(invoke(manager, "new-plugin"), "Missing argument 'NAME'")


# -- helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "requirement"),
    [
        ("0.1.0", "attd-core>=0.1,<0.2"),
        ("0.12.3.dev1", "attd-core>=0.12,<0.13"),
        ("1.4.2", "attd-core>=1.4,<2"),
        ("unknown", "attd-core"),
    ],
)
def test_core_requirement_is_a_loose_range(version, requirement):
    assert generator.core_requirement(version) == requirement


def test_help_matches_its_snapshot(manager):
    result = invoke(manager, "new-plugin", "--help")
    assert result.exit_code == 0
    shown = "".join(f"{line.rstrip()}\n" for line in result.stdout.splitlines())
    path = SNAPSHOTS / "attd_new_plugin_help.txt"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(shown, encoding="utf-8")
    assert shown == path.read_text(encoding="utf-8"), (
        f"help changed; if intended, rerun with UPDATE_SNAPSHOTS=1 and review {path}"
    )


# -- the generated tests -----------------------------------------------------------------


def pytest_plugin_args() -> list[str]:
    """Name attd-core's pytest plugin explicitly unless its entry point is installed."""
    registered = {ep.value for ep in metadata.entry_points(group="pytest11")}
    return [] if "attd_core.testing" in registered else ["-p", "attd_core.testing"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["task", "strategy"])
def test_the_generated_tests_pass_from_source(manager, tmp_path, kind):
    target = generate(manager, tmp_path, f"gen-{kind}", kind)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTD_")}
    env["PYTHONPATH"] = str(target / "src")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*command, *pytest_plugin_args()],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
