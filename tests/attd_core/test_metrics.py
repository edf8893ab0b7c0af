"""MetricsWriter's optional TensorBoard mirror, with a fake SummaryWriter injected.

tensorboard is not a dependency; the JSON-lines log itself is tested in test_runtime.py.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

import attd_core.runtime.metrics as metrics_module
from attd_core.runtime.config import RuntimeConfig
from attd_core.runtime.metrics import MetricsWriter


class FakeSummaryWriter:
    instances: list[FakeSummaryWriter] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.scalars: list[tuple[str, float, int]] = []
        self.flushes = 0
        self.closed = False
        type(self).instances.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_board(monkeypatch) -> type[FakeSummaryWriter]:
    FakeSummaryWriter.instances = []
    monkeypatch.setattr(metrics_module, "summary_writer_class", lambda: FakeSummaryWriter)
    return FakeSummaryWriter


def test_numeric_fields_are_mirrored_as_scalars(tmp_path, fake_board, capsys):
    path = tmp_path / "metrics.jsonl"
    eval_record = {
        "event": "eval", "tta": "fixed:1", "split": "test", "accuracy": 0.75,
        "mean_k": 1.0, "n": 8, "uses_labels": False, "adapter_parameters": None,
    }  # fmt: skip
    with MetricsWriter(path, tensorboard=True) as writer:
        (board,) = fake_board.instances
        assert board.log_dir == str(tmp_path / "tensorboard")
        writer.write({"event": "train", "step": 10, "epoch": 1, "loss": 0.5, "lr": 1e-3})
        writer.write({"event": "train", "step": 20, "epoch": 1, "loss": float("nan"), "lr": 2e-3})
        writer.write({"event": "controller", "step": 1, "loss": 0.25, "mean_k": 2.5})
        writer.write(eval_record)
        writer.write({**eval_record, "accuracy": 0.5})
        writer.write({**eval_record, "shift": "token-deletion:3"})
        writer.write({"no": "event", "x": 1.0})
        assert board.flushes == 6 and not board.closed
    assert board.closed
    assert board.scalars == [
        ("train/epoch", 1, 10),
        ("train/loss", 0.5, 10),
        ("train/lr", 1e-3, 10),
        ("train/epoch", 1, 20),  # the non-finite loss is null in the log, not a scalar
        ("train/lr", 2e-3, 20),
        ("controller/loss", 0.25, 1),
        ("controller/mean_k", 2.5, 1),
        ("eval/fixed:1/accuracy", 0.75, 0),
        ("eval/fixed:1/mean_k", 1.0, 0),
        ("eval/fixed:1/n", 8, 0),
        ("eval/fixed:1/accuracy", 0.5, 1),  # no step: counted per tag prefix
        ("eval/fixed:1/mean_k", 1.0, 1),
        ("eval/fixed:1/n", 8, 1),
        ("eval/fixed:1@token-deletion:3/accuracy", 0.75, 0),
        ("eval/fixed:1@token-deletion:3/mean_k", 1.0, 0),
        ("eval/fixed:1@token-deletion:3/n", 8, 0),
    ]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 7 and lines[1]["loss"] is None
    assert capsys.readouterr().err == ""


def test_without_tensorboard_one_warning_line_and_the_log_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(metrics_module, "summary_writer_class", lambda: None)
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path, tensorboard=True) as writer:
        writer.write({"event": "train", "step": 1, "loss": 0.5})
        writer.write({"event": "train", "step": 2, "loss": 0.4})
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("attd: warning: runtime.tensorboard")
    assert "tensorboard package is not installed" in err
    assert len(path.read_text().splitlines()) == 2
    assert not (tmp_path / "tensorboard").exists()


def test_the_summary_writer_is_none_when_tensorboard_is_missing(monkeypatch):
    if importlib.util.find_spec("tensorboard") is not None:
        real_find_spec = importlib.util.find_spec

        def hide(name: str, *args: object) -> object:
            return None if name == "tensorboard" else real_find_spec(name, *args)

        monkeypatch.setattr(importlib.util, "find_spec", hide)
    assert metrics_module.summary_writer_class() is None


def test_tensorboard_is_off_by_default(tmp_path, fake_board, capsys):
    with MetricsWriter(tmp_path / "metrics.jsonl") as writer:
        writer.write({"event": "train", "step": 1, "loss": 0.5})
    assert fake_board.instances == [] and capsys.readouterr().err == ""
    assert RuntimeConfig().tensorboard is False
    assert RuntimeConfig.model_validate({"tensorboard": True}).tensorboard is True
