"""A run whose training diverges stops with one error line, exit code 2, and leaves no
summary and no checkpoint of non-finite weights: `config.yaml` and `metrics.jsonl` say
what happened, in strict JSON. In every regime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner, Result

import attd_core
import attd_core._plugin as core_plugin
import attd_core.runtime.regimes as regimes
from attd_cli.app import app
from attd_core.testing import ParityPlugin, ParityTask

TINY = [
    "--set", "model.backbone.d_model=8",
    "--set", "model.backbone.n_layers=1",
    "--set", "model.backbone.d_state=4",
    "--set", "model.adapter.rank=1",
    "--set", "train.log_every=1",
]  # fmt: skip


@pytest.fixture
def manager(fresh_plugin_manager: attd_core.PluginManager) -> attd_core.PluginManager:
    fresh_plugin_manager.add_plugin(core_plugin, name="core")
    fresh_plugin_manager.add_plugin(ParityPlugin(), name="parity")
    return fresh_plugin_manager


def run(manager: attd_core.PluginManager, out: Path, *args: str) -> Result:
    command = ["run", "--task", "parity", *TINY, *args, "--output-dir", str(out)]
    return CliRunner().invoke(app, command, obj=manager)


def strict_records(path: Path) -> list[dict[str, Any]]:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not strict JSON: {constant}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def assert_stopped(result: Result, out: Path, message: str) -> dict[str, Any]:
    """Exit 2 with one `error:` line (after the progress bar) holding `message`; nothing
    that looks finished."""
    assert result.exit_code == 2, result.output
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: ") and result.stderr.count("error:") == 1, result.stderr
    assert message in error and "Traceback" not in result.output
    assert sorted(path.name for path in out.iterdir()) == ["config.yaml", "metrics.jsonl"]
    last = strict_records(out / "metrics.jsonl")[-1]
    assert last["event"] == "diverged"
    return last


@pytest.mark.parametrize("regime", ["base", "meta"])
def test_a_huge_learning_rate_stops_the_run(manager, tmp_path, regime):
    """`--set train.lr=1e6` used to log `loss nan`, save NaN weights, print an accuracy
    and exit 0."""
    out = tmp_path / "run"
    result = run(manager, out, "--set", "train.lr=1e6", "--set", f"train.regime={regime}")
    last = assert_stopped(result, out, "lower train.lr (now 1e+06)")
    assert "training diverged at step " in result.stderr and "the loss is nan" in result.stderr
    assert last["phase"] == "train" and last["loss"] is None
    if regime == "meta":
        assert "or the inner lr of train.strategy" in result.stderr


def test_a_non_finite_controller_loss_stops_the_controller_phase(manager, tmp_path, monkeypatch):
    def non_finite(*args: Any) -> tuple[torch.Tensor, float]:
        loss, mean_k = original(*args)
        return loss * float("inf"), mean_k

    original = regimes._controller_loss
    monkeypatch.setattr(regimes, "_controller_loss", non_finite)
    out = tmp_path / "run"
    result = run(manager, out, "--set", "train.regime=controller", "--set", "train.max_steps=1")
    last = assert_stopped(result, out, "controller training diverged at step 1: the loss is ")
    assert "lower train.controller_lr (now 0.01)" in result.stderr
    assert last["phase"] == "controller"


def test_non_finite_weights_are_never_checkpointed(manager, tmp_path, monkeypatch):
    """A finite loss with an infinite gradient turns the weights into NaN at step 1; the
    checkpoint due then must not save them."""

    def infinite_gradient(self: ParityTask, output: Any, batch: Any) -> torch.Tensor:
        logits = output.logits
        loss = torch.nn.functional.cross_entropy(logits, batch.labels)
        return loss + (logits - logits.detach()).abs().sqrt().sum()  # + 0, d/dx = inf

    monkeypatch.setattr(ParityTask, "compute_loss", infinite_gradient)
    out = tmp_path / "run"
    args = ["--set", "train.max_steps=3", "--set", "train.checkpoint_every=1"]
    last = assert_stopped(
        run(manager, out, *args), out, "training diverged at step 1: the weights are not finite"
    )
    assert last["step"] == 1


def test_a_run_that_stays_finite_is_unaffected(manager, tmp_path):
    out = tmp_path / "run"
    result = run(manager, out, "--set", "train.max_steps=2", "--set", "train.checkpoint_every=1")
    assert result.exit_code == 0, result.output
    assert (out / "summary.json").is_file()
    assert all(record["event"] != "diverged" for record in strict_records(out / "metrics.jsonl"))
