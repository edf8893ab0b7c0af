"""What can be checked before training is: empty evaluation splits, a shift the task's
inputs do not suit (for `attd eval` and `attd compare` too, before any evaluation), and
a model too large for memory. Each used to fail after the whole training (or with a
traceback from the allocator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import attd_core
import attd_core._plugin as core_plugin
from attd_cli.app import app
from attd_core import BackboneSpec, ConfigError, ShiftSpec, hookimpl
from attd_core.options import MambaOptions
from attd_core.testing import ParityPlugin, ParityTask

TINY = [
    "--set", "model.backbone.d_model=8",
    "--set", "model.backbone.n_layers=1",
    "--set", "model.backbone.d_state=4",
    "--set", "model.adapter.rank=1",
    "--set", "train.max_steps=1",
]  # fmt: skip


class ImagesOnly:
    """A third-party shift that needs images, as its apply says."""

    def __init__(self, options: Any) -> None:
        pass

    def apply(self, batch: attd_core.Batch, generator: Any) -> attd_core.Batch:
        raise ConfigError("shift 'images-only' needs image batches")


ALLOCATOR = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
    "memory: you tried to allocate 274877906944 bytes. Error code 12 (Cannot allocate memory)"
)
"""What torch raises for `nn.Linear(16384, 2**22)` on a machine without 256 GiB."""


def huge_backbone(options: Any) -> Any:
    raise RuntimeError(ALLOCATOR)


class ExtrasPlugin:
    @hookimpl
    def attd_register(self, register: Any) -> None:
        register(ShiftSpec(name="images-only", summary="images", factory=f"{__name__}:ImagesOnly"))
        register(
            BackboneSpec(
                name="huge",
                summary="huge",
                factory=f"{__name__}:huge_backbone",
                config=MambaOptions,
            )
        )


@pytest.fixture
def manager(fresh_plugin_manager: attd_core.PluginManager) -> attd_core.PluginManager:
    fresh_plugin_manager.add_plugin(core_plugin, name="core")
    fresh_plugin_manager.add_plugin(ParityPlugin(), name="parity")
    fresh_plugin_manager.add_plugin(ExtrasPlugin(), name="extras")
    return fresh_plugin_manager


def invoke(manager: attd_core.PluginManager, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), obj=manager)


def assert_refused(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr, result.stderr


@pytest.fixture
def without_split(monkeypatch) -> Any:
    """Make `split` of the parity task empty."""

    def empty(split: str) -> None:
        original = ParityTask.load_split

        def load_split(self: ParityTask, name: str) -> Any:
            return [] if name == split else original(self, name)

        monkeypatch.setattr(ParityTask, "load_split", load_split)

    return empty


@pytest.mark.parametrize(
    ("split", "args", "message"),
    [
        ("test", [], "eval.split: split 'test' of task 'parity' is empty"),
        (
            "validation",
            ["--tta", "adaptive:2"],
            "eval.calibration_split: split 'validation' of task 'parity' is empty",
        ),
        (
            "validation",
            [],
            "train.eval_split: split 'validation' of task 'parity' is empty; training "
            "validates on it (train.eval_split=null trains without validation)",
        ),
    ],
)
def test_an_empty_evaluation_split_is_refused_before_training(
    manager, tmp_path, without_split, split, args, message
):
    without_split(split)
    out = tmp_path / "run"
    result = invoke(manager, "run", "--task", "parity", *TINY, *args, "--output-dir", str(out))
    assert_refused(result, message)
    assert not out.exists()


def test_an_unused_empty_calibration_split_is_no_error(manager, tmp_path, without_split):
    without_split("validation")
    out = tmp_path / "run"
    unvalidated = ["--set", "train.eval_split=null"]
    result = invoke(
        manager, "run", "--task", "parity", *TINY, *unvalidated, "--output-dir", str(out)
    )
    assert result.exit_code == 0, result.output


def test_a_third_party_shift_that_refuses_the_task_stops_the_run_before_training(manager, tmp_path):
    out = tmp_path / "run"
    args = ["--shift", "images-only", "--output-dir", str(out)]
    result = invoke(manager, "run", "--task", "parity", *TINY, *args)
    assert_refused(
        result,
        "eval.shift 'images-only' does not fit task 'parity': shift 'images-only' needs "
        "image batches",
    )
    assert not out.exists()


@pytest.fixture
def trained(manager: attd_core.PluginManager, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    result = invoke(manager, "run", "--task", "parity", *TINY, "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("command", ["compare", "eval"])
def test_compare_and_eval_check_every_shift_before_evaluating(
    manager, trained, monkeypatch, command
):
    evaluated: list[Any] = []
    monkeypatch.setattr(attd_core, "evaluate_strategies", lambda *a, **k: evaluated.append(a))
    shifts = ["--shift", "images-only"]
    if command == "compare":
        shifts = ["--shift", "token-substitution:1", *shifts]
    result = invoke(manager, command, str(trained), "--tta", "none", *shifts)
    assert_refused(result, "eval.shift 'images-only' does not fit task 'parity'")
    assert evaluated == []  # not even the shift that fits was evaluated first
    assert not (trained / "compare.json").exists()


def test_a_model_too_large_for_memory_is_one_error_line(manager, tmp_path):
    out = tmp_path / "run"
    args = ["--backbone", "huge", "--output-dir", str(out)]
    result = invoke(manager, "run", "--task", "parity", *args)
    assert_refused(
        result,
        f"model.backbone 'huge' does not fit in memory ({ALLOCATOR}); lower d_model, "
        "n_layers, expand or d_state",
    )
    assert "Traceback" not in result.output and not out.exists()
