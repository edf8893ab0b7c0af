"""A fixed table of bad invocations: each exits 2 with one `error:` line naming the bad part.

Every command that takes user input is here (`run`, `eval`, `compare`, `report`, `config`,
`data`, `sweep`), with the installed plugins, as a user types it. Training and
evaluation are replaced by a function that fails the test: every row must be refused
before any work starts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import attd_core
import attd_core.runtime.run as runtime_run
from attd_cli.app import app

ENV = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
L = [
    "--task", "listops",
    "--set", "task.num_train=24", "--set", "task.num_val=8", "--set", "task.num_test=8",
    "--set", "task.min_length=10", "--set", "task.max_length=40",
]  # fmt: skip
"""ListOps, with splits small enough that a row which wrongly gets past checks ends soon."""
TINY_LISTOPS = [
    *L,
    "--set", "model.backbone.d_model=8", "--set", "model.backbone.n_layers=1",
    "--set", "model.backbone.d_state=4", "--set", "model.adapter.rank=1",
    "--set", "train.max_steps=1", "--set", "eval.limit=4",
]  # fmt: skip
LONG_NAME = "x" * 300

CASES: list[tuple[str, list[str], list[str]]] = [
    # (id, argv with {placeholders}, fragments the one error line must contain)
    ("run-unknown-task", ["run", "--task", "nosuch"], ["nosuch"]),
    ("run-unknown-backbone", ["run", *L, "--backbone", "nosuch"], ["nosuch"]),
    ("run-unknown-tta", ["run", *L, "--tta", "bogus"], ["bogus"]),
    ("run-tta-bad-count", ["run", *L, "--tta", "fixed:abc"], ["abc"]),
    ("run-tta-negative", ["run", *L, "--tta", "fixed:-1"], ["-1"]),
    ("run-tta-huge", ["run", *L, "--tta", "fixed:1000000000"], ["1000000000"]),
    ("run-tta-huge-adaptive", ["run", *L, "--tta", "adaptive:100000"], ["100000"]),
    ("run-unknown-preset", ["run", *L, "--preset", "nosuch"], ["nosuch"]),
    ("run-unknown-shift", ["run", *L, "--shift", "nosuch"], ["nosuch"]),
    ("run-pixel-shift-on-tokens", ["run", *L, "--shift", "gaussian-noise:3"], ["gaussian-noise"]),
    ("run-unknown-section", ["run", *L, "--set", "nosuch=1"], ["nosuch"]),
    ("run-unknown-key", ["run", *L, "--set", "train.nosuch=1"], ["train.nosuch"]),
    ("run-negative-lr", ["run", *L, "--set", "train.lr=-1"], ["train.lr"]),
    ("run-infinite-lr", ["run", *L, "--set", "train.lr=.inf"], ["train.lr"]),
    ("run-nan-lr", ["run", *L, "--set", "train.lr=.nan"], ["train.lr"]),
    ("run-text-lr", ["run", *L, "--set", "train.lr=abc"], ["train.lr"]),
    ("run-zero-epochs", ["run", *L, "--set", "train.epochs=0"], ["train.epochs"]),
    ("run-zero-batch", ["run", *L, "--set", "train.batch_size=0"], ["train.batch_size"]),
    ("run-unknown-regime", ["run", *L, "--set", "train.regime=nosuch"], ["train.regime"]),
    ("run-scalar-task", ["run", *L, "--set", "task=5"], ["task"]),
    ("run-scalar-train", ["run", *L, "--set", "train=5"], ["train"]),
    ("run-scalar-eval", ["run", *L, "--set", "eval=[1, 2]"], ["eval"]),
    ("run-zero-train-examples", ["run", *L, "--set", "task.num_train=0"], ["num_train"]),
    ("run-unknown-task-option", ["run", *L, "--set", "task.nosuch=1"], ["nosuch"]),
    ("run-huge-width", ["run", *L, "--set", "model.backbone.d_model=1000000"], ["d_model"]),
    ("run-zero-width", ["run", *L, "--set", "model.backbone.d_model=0"], ["d_model"]),
    ("run-huge-depth", ["run", *L, "--set", "model.backbone.n_layers=100000"], ["n_layers"]),
    ("run-unknown-adapter", ["run", *L, "--set", "model.adapter.name=nosuch"], ["nosuch"]),
    ("run-unknown-pooling", ["run", *L, "--set", "model.pooling=nosuch"], ["nosuch"]),
    ("run-unknown-split", ["run", *L, "--set", "eval.split=nosuch"], ["nosuch"]),
    (
        "run-unknown-calibration-split",
        ["run", *L, "--tta", "adaptive:4", "--set", "eval.calibration_split=nosuch"],
        ["nosuch"],
    ),
    ("run-unknown-objective", ["run", *L, "--set", "eval.objective.name=nosuch"], ["nosuch"]),
    ("run-unknown-device", ["run", *L, "--set", "runtime.device=tpu"], ["runtime.device"]),
    ("run-negative-seed", ["run", *L, "--set", "runtime.seed=-1"], ["runtime.seed"]),
    ("run-set-without-value", ["run", *L, "--set", "novalue"], ["novalue"]),
    ("run-missing-config", ["run", *L, "--config", "{tmp}/missing.yaml"], ["missing.yaml"]),
    ("run-broken-yaml", ["run", *L, "--config", "{broken_yaml}"], ["broken.yaml"]),
    ("run-list-yaml", ["run", *L, "--config", "{list_yaml}"], ["list.yaml"]),
    ("run-scalar-section-yaml", ["run", *L, "--config", "{scalar_yaml}"], ["train"]),
    ("run-empty-output-dir", ["run", *L, "--output-dir", ""], ["output"]),
    ("run-output-under-a-file", ["run", *L, "--output-dir", "{afile}/sub"], ["{afile}"]),
    ("run-output-too-long", ["run", *L, "--output-dir", f"{{tmp}}/{LONG_NAME}"], [LONG_NAME]),
    ("run-output-holds-a-run", ["run", *L, "--output-dir", "{run}"], ["{run}"]),
    ("run-resume-missing", ["run", "--resume", "{tmp}/missing"], ["missing"]),
    ("run-resume-with-options", ["run", "--resume", "{run}", *L], ["--resume"]),
    ("run-text-seed", ["run", *L, "--seed", "abc"], ["--seed"]),
    ("run-unknown-flag", ["run", *L, "--nosuch"], ["--nosuch"]),
    ("eval-missing-run", ["eval", "{tmp}/missing", "--tta", "fixed:1"], ["missing"]),
    ("eval-no-tta", ["eval", "{run}"], ["--tta"]),
    ("eval-unknown-tta", ["eval", "{run}", "--tta", "bogus"], ["bogus"]),
    ("eval-huge-tta", ["eval", "{run}", "--tta", "fixed:1000000000"], ["1000000000"]),
    ("eval-unknown-shift", ["eval", "{run}", "--tta", "fixed:1", "--shift", "nosuch"], ["nosuch"]),
    (
        "eval-pixel-shift-on-tokens",
        ["eval", "{run}", "--tta", "fixed:1", "--shift", "occlusion:2"],
        ["occlusion"],
    ),
    ("eval-zero-limit", ["eval", "{run}", "--tta", "fixed:1", "--set", "eval.limit=0"], ["limit"]),
    ("eval-unknown-key", ["eval", "{run}", "--tta", "fixed:1", "--set", "eval.x=1"], ["eval.x"]),
    ("eval-a-file", ["eval", "{afile}", "--tta", "fixed:1"], ["{afile}"]),
    ("eval-an-empty-folder", ["eval", "{empty}", "--tta", "fixed:1"], ["{empty}"]),
    ("compare-no-tta", ["compare", "{run}"], ["--tta"]),
    ("compare-missing-run", ["compare", "{tmp}/missing", "--tta", "fixed:1"], ["missing"]),
    ("compare-unknown-tta", ["compare", "{run}", "--tta", "bogus"], ["bogus"]),
    ("compare-unknown-shift", ["compare", "{run}", "--tta", "fixed:1", "--shift", "x"], ["'x'"]),
    (
        "compare-output-under-a-file",
        ["compare", "{run}", "--tta", "fixed:1", "--output", "{afile}/cmp"],
        ["{afile}"],
    ),
    (
        "compare-text-limit",
        ["compare", "{run}", "--tta", "fixed:1", "--set", "eval.limit=abc"],
        ["eval.limit"],
    ),
    ("report-missing-run", ["report", "{tmp}/missing"], ["missing"]),
    ("report-a-file", ["report", "{afile}"], ["{afile}"]),
    ("report-output-under-a-file", ["report", "{run}", "--output", "{afile}/sub"], ["{afile}"]),
    ("config-show-no-task", ["config", "show"], ["task"]),
    ("config-show-unknown-task", ["config", "show", "--task", "nosuch"], ["nosuch"]),
    ("config-show-bad-format", ["config", "show", *L, "--format", "xml"], ["xml"]),
    ("config-show-scalar-section", ["config", "show", *L, "--set", "task=5"], ["task"]),
    ("config-show-unknown-preset", ["config", "show", *L, "--preset", "nosuch"], ["nosuch"]),
    ("config-show-infinite-lr", ["config", "show", *L, "--set", "train.lr=.inf"], ["train.lr"]),
    ("config-validate-missing", ["config", "validate", "{tmp}/missing.yaml"], ["missing.yaml"]),
    ("config-validate-broken", ["config", "validate", "{broken_yaml}"], ["broken.yaml"]),
    ("config-schema-unknown-task", ["config", "schema", "--task", "nosuch"], ["nosuch"]),
    (
        "config-schema-output-under-a-file",
        ["config", "schema", "--output", "{afile}/schema.json"],
        ["{afile}"],
    ),
    ("data-export-unknown-task", ["data", "export", "--task", "x", "--out", "{out}"], ["'x'"]),
    (
        "data-export-under-a-file",
        ["data", "export", *L, "--out", "{afile}/x.jsonl"],
        ["{afile}"],
    ),
    (
        "data-export-unknown-split",
        ["data", "export", *L, "--split", "nosuch", "--out", "{out}"],
        ["nosuch"],
    ),
    (
        "data-export-unknown-option",
        ["data", "export", *L, "--set", "nosuch=1", "--out", "{out}"],
        ["nosuch"],
    ),
    (
        "data-export-zero-limit",
        ["data", "export", *L, "--limit", "0", "--out", "{out}"],
        ["--limit"],
    ),
    ("data-info-unknown-task", ["data", "info", "--task", "nosuch"], ["nosuch"]),
    ("data-info-unknown-split", ["data", "info", *L, "--split", "nosuch"], ["nosuch"]),
    ("data-info-no-examples", ["data", "info", *L, "--set", "num_train=0"], ["num_train"]),
    (
        "sweep-no-task",
        ["sweep", "--grid", "train.lr=0.1", "--output-dir", "{tmp}/sweep"],
        ["task"],
    ),
    (
        "sweep-unknown-key",
        ["sweep", *L, "--grid", "nosuch=1,2", "--output-dir", "{tmp}/sweep"],
        ["nosuch"],
    ),
    (
        "sweep-grid-without-values",
        ["sweep", *L, "--grid", "train.lr", "--output-dir", "{tmp}/sweep"],
        ["train.lr"],
    ),
    (
        "sweep-bad-value",
        ["sweep", *L, "--grid", "train.lr=-1,0.1", "--output-dir", "{tmp}/sweep"],
        ["train.lr"],
    ),
    (
        "sweep-scalar-section",
        ["sweep", *L, "--grid", "train=1,2", "--output-dir", "{tmp}/sweep"],
        ["train"],
    ),
    (
        "sweep-empty-output-dir",
        ["sweep", *L, "--grid", "train.lr=0.1", "--output-dir", ""],
        ["output"],
    ),
    (
        "sweep-output-under-a-file",
        ["sweep", *L, "--grid", "train.lr=0.1", "--output-dir", "{afile}/sub"],
        ["{afile}"],
    ),
    (
        "sweep-zero-jobs",
        ["sweep", *L, "--grid", "train.lr=0.1", "--jobs", "0", "--output-dir", "{tmp}/sweep"],
        ["--jobs"],
    ),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished ListOps run, trained once (one step of a tiny model) for the module."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = CliRunner().invoke(app, ["run", *TINY_LISTOPS, "--output-dir", str(out)], env=ENV)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def places(finished_run, tmp_path) -> dict[str, str]:
    """The paths the table's placeholders stand for, made fresh for each row."""
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.yaml").write_text("train: {lr: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- task\n- listops\n")
    (tmp_path / "scalar.yaml").write_text("task: listops\ntrain: 5\n")
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    return {
        "tmp": str(tmp_path),
        "run": str(run),
        "afile": str(tmp_path / "afile"),
        "empty": str(tmp_path / "empty"),
        "out": str(tmp_path / "out.jsonl"),
        "broken_yaml": str(tmp_path / "broken.yaml"),
        "list_yaml": str(tmp_path / "list.yaml"),
        "scalar_yaml": str(tmp_path / "scalar.yaml"),
    }


@pytest.fixture
def no_work(monkeypatch) -> None:
    """Training or evaluating fails the row: the bad input should have stopped it."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started although the input is bad")

    # attd_core's lazy name first: loading it reads runtime_run's, which must be the real one
    monkeypatch.setattr(attd_core, "evaluate_strategies", refuse)
    monkeypatch.setattr(runtime_run, "evaluate_strategies", refuse)
    monkeypatch.setattr(runtime_run, "train", refuse)


def test_the_table_covers_every_command_with_at_least_sixty_rows():
    commands = {argv[0] for _, argv, _ in CASES}
    assert {"run", "eval", "compare", "config", "data", "sweep"} <= commands
    assert len(CASES) >= 60 and len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("argv", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_invocation_is_one_error_line_naming_the_bad_part(
    argv, fragments, places, no_work, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    before = sorted(path.name for path in tmp_path.iterdir())
    args = [arg.format(**places) for arg in argv]
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment.format(**places) in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == before
