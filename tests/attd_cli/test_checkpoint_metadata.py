"""A hand-edited `metadata.json` is one `error:` line naming the field, for `attd run
--resume` and `attd eval` alike, never a traceback from deep inside a resume."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import attd_core
from attd_cli.app import app
from attd_core import resolve_run_config
from attd_core.runtime import trainer
from attd_core.runtime.run import run_experiment
from attd_core.testing import ParityPlugin, new_plugin_manager

SETTINGS = [
    "model.backbone.d_model=8",
    "model.backbone.n_layers=1",
    "model.backbone.d_state=4",
    "model.adapter.rank=1",
    "train.max_steps=11",
    "train.checkpoint_every=3",
    "eval.limit=8",
]
STOPPED_AT = 7
"""Training stops in step 8, so the last checkpoint holds the training state of step 6."""


class Stop(Exception):
    """Stands in for a kill."""


@pytest.fixture(scope="module")
def manager() -> attd_core.PluginManager:
    return new_plugin_manager(parity=ParityPlugin())


def _run(manager: attd_core.PluginManager, out: Path) -> None:
    resolved = resolve_run_config(manager, task="parity", overrides=SETTINGS, output_dir=out)
    run_experiment(resolved, manager)


@pytest.fixture(scope="module")
def stopped(manager, tmp_path_factory) -> Path:
    """A run stopped after step 7, its checkpoint holding step 6's training state."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    factor = trainer.lr_factor

    def limited(step: int, total: int, warmup: int) -> float:
        if step == STOPPED_AT + 1:
            raise Stop
        return factor(step, total, warmup)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "lr_factor", limited)
        with pytest.raises(Stop):
            _run(manager, out)
    return out


@pytest.fixture(scope="module")
def finished_summary(manager, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    _run(manager, out)
    return out / "summary.json"


def _set(*keys: Any, value: Any) -> Callable[[dict], None]:
    def edit(metadata: dict) -> None:
        *path, last = keys
        for key in path:
            metadata = metadata[key]
        metadata[last] = value

    return edit


def _delete(*keys: Any) -> Callable[[dict], None]:
    def edit(metadata: dict) -> None:
        *path, last = keys
        for key in path:
            metadata = metadata[key]
        del metadata[last]

    return edit


def _both(*edits: Callable[[dict], None]) -> Callable[[dict], None]:
    def edit(metadata: dict) -> None:
        for one in edits:
            one(metadata)

    return edit


def _drop_last_group(metadata: dict) -> None:
    metadata["training"]["optimizer_groups"].pop()


def _drop_a_parameter(metadata: dict) -> None:
    metadata["training"]["optimizer_groups"][0]["params"].pop()


def _far_ahead(metadata: dict) -> None:
    for where in (metadata, metadata["training"]["position"]):
        where["step"] = 400
    metadata["training"]["scheduler"]["last_epoch"] = 400


POSITION = ("training", "position")
GROUP = ("training", "optimizer_groups", 0)
SCHEDULER = ("training", "scheduler")
MALFORMED = {
    "step is text": (
        _set(*POSITION, "step", value="6"),
        "training.position.step: Input should be a valid integer",
    ),
    "step is a float": (_set("step", value=6.0), "step: Input should be a valid integer"),
    "no step": (_delete("step"), "step: Field required"),
    "no position step": (_delete(*POSITION, "step"), "training.position.step: Field required"),
    "negative step": (
        _both(_set("step", value=-5), _set(*POSITION, "step", value=-5)),
        "training.position.step: Input should be greater than or equal to 0",
    ),
    "step disagrees": (
        _set(*POSITION, "step", value=5),
        "step: 6 is not training.position.step (5)",
    ),
    "schedule disagrees": (
        _set(*SCHEDULER, "last_epoch", value=5),
        "training.scheduler.last_epoch: 5 is not training.position.step (6)",
    ),
    "window of text": (
        _set(*POSITION, "window", value=["x"]),
        "training.position.window.0: Input should be a valid number",
    ),
    "python rng too short": (
        _set("training", "python_rng", 1, value=[1, 2, 3]),
        "training.python_rng.1: List should have at least 625 items",
    ),
    "python rng position": (
        _set("training", "python_rng", 1, 624, value=700),
        "training.python_rng.1: position 700",
    ),
    "python rng version": (
        _set("training", "python_rng", 0, value=2),
        "training.python_rng.0: Input should be 3",
    ),
    "numpy rng kind": (
        _set("training", "numpy_rng", 0, value="PCG64"),
        "training.numpy_rng.0: Input should be 'MT19937'",
    ),
    "numpy rng word": (
        _set("training", "numpy_rng", 1, 5, value=2**40),
        "training.numpy_rng.1.5: Input should be less than 4294967296",
    ),
    "numpy rng missing": (
        _delete("training", "numpy_rng"),
        "training.numpy_rng: Field required",
    ),
    "groups not a list": (
        _set("training", "optimizer_groups", value={}),
        "training.optimizer_groups: Input should be a valid array",
    ),
    "group lr is text": (
        _set(*GROUP, "lr", value="fast"),
        "training.optimizer_groups.0.lr: Input should be a valid number",
    ),
    "group betas": (
        _set(*GROUP, "betas", value=[0.9]),
        "training.optimizer_groups.0.betas: List should have at least 2 items",
    ),
    "group params of text": (
        _set(*GROUP, "params", value=["a"]),
        "training.optimizer_groups.0.params.0: Input should be a valid integer",
    ),
    "a group fewer": (_drop_last_group, "training.scheduler.base_lrs: 3 entries for 2"),
    "scheduler step is text": (
        _set(*SCHEDULER, "last_epoch", value="6"),
        "training.scheduler.last_epoch: Input should be a valid integer",
    ),
    "scheduler without step count": (
        _delete(*SCHEDULER, "_step_count"),
        "training.scheduler._step_count: Field required",
    ),
    "scheduler with a lambda's state": (
        _set(*SCHEDULER, "lr_lambdas", value=[{"x": 1}, None]),
        "training.scheduler.lr_lambdas.0: Input should be null",
    ),
    "scheduler not an object": (
        _set(*SCHEDULER, value=[1]),
        "training.scheduler: Input should be an object",
    ),
    "no format": (_delete("format"), "format: Field required"),
    "other format": (
        _set("format", value="attd-checkpoint-v9"),
        "format: Input should be 'attd-checkpoint-v1'",
    ),
    "weights bytes as text": (
        _set("weights_bytes", value="4600"),
        "weights_bytes: Input should be a valid integer",
    ),
    "extra sizes not an object": (_set("extra", value=[]), "extra: Input should be an object"),
    "training is text": (_set("training", value="yes"), "training: Input should be an object"),
    "backbone is a number": (_set("backbone", value=5), "backbone: Input should be a valid"),
    "backbone disagrees": (
        _set("backbone", value="transformer"),
        "backbone: 'transformer' is not config.model.backbone.name ('mamba')",
    ),
    "model is a number": (_set("config", "model", value=5), "config.model: Input should be"),
    "width differs": (
        _set("config", "model", "backbone", "d_model", value=16),
        "config.model.backbone.d_model",
    ),
}
"""Edits of a stopped run's `metadata.json`, each with what its error must say."""

UNFIT = {
    "a parameter fewer": (
        _drop_a_parameter,
        "training.optimizer_groups.0.params: 4 parameters, but the model's group has 5",
    ),
    "unknown group key": (
        _set(*GROUP, "momentum", value=0.9),
        "training.optimizer_groups.0.momentum: not a key this torch's state has",
    ),
    "unknown scheduler key": (
        _set(*SCHEDULER, "optimizer", value=1),
        "training.scheduler.optimizer: not a key this torch's state has",
    ),
    "step past the end": (_far_ahead, "training.position.step: 400 is past the run's 11 steps"),
    "batches past the epoch": (
        _set(*POSITION, "batches", value=50),
        "training.position.batches: 50 is past the 2 batches of an epoch",
    ),
}
"""Edits that are well-formed data but do not fit the run: refused when resuming."""


def _edited(stopped: Path, tmp_path: Path, edit: Callable[[dict], None]) -> Path:
    run = Path(shutil.copytree(stopped, tmp_path / "run"))
    path = run / "checkpoint" / "metadata.json"
    metadata = json.loads(path.read_text())
    edit(metadata)
    path.write_text(json.dumps(metadata))
    return run


def invoke(manager: attd_core.PluginManager, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), obj=manager)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def _files(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize(("edit", "message"), MALFORMED.values(), ids=list(MALFORMED))
def test_resume_names_the_malformed_field(manager, stopped, tmp_path, edit, message):
    run = _edited(stopped, tmp_path, edit)
    checkpoint = _files(run / "checkpoint")
    result = invoke(manager, "run", "--resume", str(run))
    assert_one_line_error(result, message)
    assert _files(run / "checkpoint") == checkpoint
    assert not (run / "summary.json").exists()


@pytest.mark.parametrize(("edit", "message"), UNFIT.values(), ids=list(UNFIT))
def test_resume_refuses_a_state_that_does_not_fit_the_run(
    manager, stopped, tmp_path, edit, message
):
    run = _edited(stopped, tmp_path, edit)
    checkpoint = _files(run / "checkpoint")
    assert_one_line_error(invoke(manager, "run", "--resume", str(run)), message)
    assert _files(run / "checkpoint") == checkpoint


@pytest.mark.parametrize(("edit", "message"), MALFORMED.values(), ids=list(MALFORMED))
def test_eval_names_the_malformed_field(
    manager, stopped, finished_summary, tmp_path, edit, message
):
    """`attd eval` reads the metadata as `--resume` does, the architecture included."""
    run = _edited(stopped, tmp_path, edit)
    shutil.copy(finished_summary, run / "summary.json")
    before = _files(run)
    result = invoke(manager, "eval", str(run), "--tta", "fixed:1")
    assert_one_line_error(result, message)
    assert _files(run) == before


def test_an_unedited_checkpoint_resumes_and_evaluates(manager, stopped, finished_summary, tmp_path):
    resumed = Path(shutil.copytree(stopped, tmp_path / "resumed"))
    assert invoke(manager, "run", "--resume", str(resumed)).exit_code == 0
    evaluated = Path(shutil.copytree(stopped, tmp_path / "evaluated"))
    shutil.copy(finished_summary, evaluated / "summary.json")
    result = invoke(manager, "eval", str(evaluated), "--tta", "fixed:1")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("text", ["{", "[1, 2]", "null"])
@pytest.mark.parametrize("command", ["resume", "eval"])
def test_metadata_that_is_not_an_object_is_one_line(
    manager, stopped, finished_summary, tmp_path, text, command
):
    run = Path(shutil.copytree(stopped, tmp_path / "run"))
    (run / "checkpoint" / "metadata.json").write_text(text)
    args = ["run", "--resume", str(run)]
    if command == "eval":
        shutil.copy(finished_summary, run / "summary.json")
        args = ["eval", str(run), "--tta", "fixed:1"]
    assert_one_line_error(invoke(manager, *args), "metadata.json")


@pytest.mark.parametrize("case", ["negative step", "width differs", "python rng version"])
def test_compare_reads_the_metadata_as_eval_does(
    manager, stopped, finished_summary, tmp_path, case
):
    edit, message = MALFORMED[case]
    run = _edited(stopped, tmp_path, edit)
    shutil.copy(finished_summary, run / "summary.json")
    before = _files(run)
    assert_one_line_error(invoke(manager, "compare", str(run), "--tta", "fixed:1"), message)
    assert _files(run) == before
