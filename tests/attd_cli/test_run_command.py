"""`attd run` in-process, with a fake task and attd-core's real Mamba, adapter and strategies."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner, Result

import attd_core
import attd_core._plugin as core_plugin
from attd_cli.app import app
from attd_core import TaskSpec, hookimpl
from attd_core.backbones.scan import resolve_backend
from attd_core.testing import ParityPlugin

TINY = [
    "--set", "model.backbone.d_model=8",
    "--set", "model.backbone.n_layers=1",
    "--set", "model.backbone.d_state=4",
    "--set", "model.adapter.rank=1",
]  # fmt: skip


@pytest.fixture
def manager(fresh_plugin_manager: attd_core.PluginManager) -> attd_core.PluginManager:
    fresh_plugin_manager.add_plugin(core_plugin, name="core")
    fresh_plugin_manager.add_plugin(ParityPlugin(), name="parity")
    return fresh_plugin_manager


def invoke(manager: attd_core.PluginManager, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "100"}, obj=manager)


def test_run_trains_evaluates_and_prints_the_results(manager, tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "extra.yaml"
    config.write_text("train:\n  log_every: 1\n", encoding="utf-8")
    result = invoke(
        manager, "run", "--task", "parity", "--tta", "fixed:1", "--config", str(config),
        *TINY, "--seed", "3", "--output-dir", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "parity" in result.stdout and "mamba:d_model=8" in result.stdout
    for header in ("tta", "accuracy", "mean k", "seconds"):
        assert header in result.stdout
    assert "fixed:1" in result.stdout and str(out) in result.stdout.replace("\n", "")
    assert "train" in result.stderr  # the progress bar

    assert "against none" in result.stdout and "McNemar p" in result.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["eval"]) == ["none", "fixed:1"]
    assert summary["eval"]["fixed:1"]["mean_k"] == 1.0 and summary["eval"]["none"]["n"] == 32
    paired = summary["eval"]["fixed:1"]["paired"]
    assert paired["n"] == 32 and paired["seed"] == 3 and summary["eval"]["none"]["paired"] is None
    flips = f"+{paired['wrong_to_right']}/-{paired['right_to_wrong']}"
    assert flips in result.stdout and f"{paired['difference']:+.4f}" in result.stdout
    assert summary["seed"] == 3
    backend = resolve_backend("auto", torch.zeros(1, 1, 1), torch.zeros(1, 1))
    assert summary["scan_backend"] == backend
    metadata = json.loads((out / "checkpoint" / "metadata.json").read_text())
    assert metadata["scan_backend"] == backend
    assert {path.name for path in out.iterdir()} == {
        "config.yaml",
        "metrics.jsonl",
        "checkpoint",
        "summary.json",
    }
    assert (out / "checkpoint" / "model.safetensors").is_file()


def test_run_evaluates_under_a_shift_and_records_it(manager, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        manager, "run", "--task", "parity", "--shift", "token-substitution:5", *TINY,
        "--set", "train.max_steps=1", "--output-dir", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "parity (token-substitution:5)" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shift"] == "token-substitution:5"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["eval"]["shift"] == "token-substitution:5"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--task", "nope"], ["unknown task 'nope'; available: parity"]),
        (["--shift", "blur:2"], ["unknown shift 'blur'"]),
        (["--preset", "paper"], ["task 'parity' has no preset 'paper' (presets: none)"]),
        (
            ["--backbone", "nope"],
            ["unknown backbone 'nope'; available: hybrid, mamba, transformer"],
        ),
        (["--tta", "fixed:x"], ["fixed:x", "k"]),
        (["--tta", "fixed:-1"], ["fixed:-1", "greater than or equal to 0"]),
        (["--tta", "fixed:3,foo=1"], ["foo", "options: k, lr, optimizer, momentum"]),
        (["--tta", "bogus"], ["unknown strategy 'bogus'; available: adaptive, fixed, gate"]),
        (["--set", "train.lr=-1"], ["train.lr", "-1"]),
        (["--set", "task.size=3"], ["task.size", "allowed in task: none"]),
        (["--config", "missing.yaml"], ["config file 'missing.yaml': not found"]),
        (["--output-dir", ""], ["runtime.output_dir: Value error, must name a folder"]),
        (["--output-dir", "  "], ["runtime.output_dir: Value error, must name a folder"]),
    ],
)
def test_bad_run_arguments_are_one_line_errors(manager, args, fragments):
    result = invoke(manager, "run", "--task", "parity", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "eval.split=dev"], "eval.split: task 'parity' has no split 'dev'"),
        (
            ["--tta", "adaptive:2,controller=quantile", "--set", "eval.calibration_split=dev"],
            "eval.calibration_split: task 'parity' has no split 'dev'",
        ),
    ],
)
def test_a_split_the_task_lacks_is_refused_before_training(manager, tmp_path, args, message):
    """`--set eval.split=dev` used to train the whole model, then fail."""
    out = tmp_path / "run"
    result = invoke(manager, "run", "--task", "parity", *TINY, *args, "--output-dir", str(out))
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {message}; splits: train, validation, test\n"
    assert not out.exists()  # nothing trained, nothing written


def test_the_calibration_split_is_checked_only_when_a_strategy_calibrates(manager, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        manager, "run", "--task", "parity", *TINY, "--tta", "fixed:1",
        "--set", "eval.calibration_split=dev", "--set", "train.max_steps=1",
        "--output-dir", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "summary.json").is_file()


def test_an_output_dir_that_holds_a_run_is_refused(manager, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    result = invoke(manager, "run", "--task", "parity", "--output-dir", str(out))
    assert result.exit_code == 2
    assert f"output dir {str(out)!r} already holds a run (summary.json)" in result.stderr


def test_a_failing_factory_is_reported_without_a_traceback(manager, tmp_path: Path):
    class BrokenTaskPlugin:
        @hookimpl
        def attd_register(self, register: Any) -> None:
            register(TaskSpec(name="broken", summary="broken", factory="attd_no_such_module:X"))

    manager.add_plugin(BrokenTaskPlugin(), name="broken")
    result = invoke(manager, "run", "--task", "broken", "--output-dir", str(tmp_path / "r"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "task 'broken': cannot load factory 'attd_no_such_module:X'" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the run builds its model: the refusal must come first."""

    def built(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the run built its components before checking its folder")

    monkeypatch.setattr("attd_core.runtime.run.build_components", built)


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("afile/sub", ": cannot create it: Not a directory"),
        ("afile", " exists and is not a folder"),
        ("x" * 300, ": cannot create it: File name too long"),
    ],
)
def test_an_output_dir_that_cannot_be_made_is_one_error_before_training(
    manager, tmp_path, no_training, relative, reason
):
    (tmp_path / "afile").write_text("")
    out = tmp_path / relative
    result = invoke(manager, "run", "--task", "parity", *TINY, "--output-dir", str(out))
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: output dir {str(out)!r}{reason}\n"


def test_a_run_into_a_folder_another_run_writes_is_refused(manager, tmp_path, no_training):
    out = tmp_path / "run"
    with attd_core.lock_folder(out):  # another attd run, still writing
        result = invoke(manager, "run", "--task", "parity", *TINY, "--output-dir", str(out))
        assert list(out.iterdir()) == []
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: output dir {str(out)!r} is in use by another attd")
    assert result.stderr.count("\n") == 1


def test_a_run_into_a_folder_with_leftovers_removes_them(manager, tmp_path):
    out = tmp_path / "run"
    (out / ".checkpoint-abc").mkdir(parents=True)
    (out / ".config.yaml.tmp-12345").write_text("task: x")
    result = invoke(
        manager, "run", "--task", "parity", *TINY, "--set", "train.max_steps=1",
        "--output-dir", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {path.name for path in out.iterdir()} == {
        "config.yaml",
        "metrics.jsonl",
        "checkpoint",
        "summary.json",
    }


def test_a_file_system_error_during_a_run_is_one_line_naming_the_file(manager, tmp_path):
    """A disk that fills up mid-run cannot be checked for up front: one line, no traceback."""
    out = tmp_path / "run"

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "checkpoint"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("attd_core.runtime.run.save_checkpoint", full)
        result = invoke(
            manager, "run", "--task", "parity", *TINY, "--set", "train.max_steps=1",
            "--output-dir", str(out),
        )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    last = result.stderr.splitlines()[-1]
    assert last == f"error: {out / 'checkpoint'}: No space left on device"
