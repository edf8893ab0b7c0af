"""A shift whose inputs do not fit the task is refused before training, naming both.

It used to fail after the whole training, when the evaluation applied it.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner, Result

import attd_core
from attd_cli.app import app
from attd_core.testing import ParityPlugin

TINY = [
    "--set", "model.backbone.d_model=8", "--set", "model.backbone.n_layers=1",
    "--set", "model.backbone.d_state=4", "--set", "train.max_steps=1",
]  # fmt: skip
IMAGES = ["--task", "image-classification", "--set", "task.limit_train=16"]


@pytest.fixture
def both(manager: attd_core.PluginManager) -> attd_core.PluginManager:
    """attd-core, attd-vision and the token task `parity`."""
    manager.add_plugin(ParityPlugin(), name="parity")
    return manager


def run(manager: attd_core.PluginManager, out, *args: str) -> Result:
    command = ["run", *TINY, *args, "--output-dir", str(out)]
    return CliRunner().invoke(app, command, obj=manager)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["--task", "parity", "--shift", "gaussian-noise:2"],
            ["eval.shift 'gaussian-noise:2' does not fit task 'parity': ", "image_size"],
        ),
        (
            [*IMAGES, "--set", "task.encoder_options.dtype=int", "--shift", "token-deletion:2"],
            ["eval.shift 'token-deletion:2' does not fit task 'image-classification': ", "aux"],
        ),
        (
            [*IMAGES, "--set", "task.encoder=patches", "--shift", "token-substitution:1"],
            ["'token-substitution:1' does not fit task 'image-classification'", "integer"],
        ),
        (
            [*IMAGES, "--set", "task.encoder=patches", "--shift", "occlusion:1"],
            ["'occlusion:1' does not fit task 'image-classification'", "`pixels` encoder"],
        ),
    ],
)
def test_a_shift_the_task_does_not_suit_is_refused_before_training(both, tmp_path, args, fragments):
    out = tmp_path / "run"
    result = run(both, out, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert not out.exists()  # nothing trained, nothing written


def test_a_pixel_shift_on_pixel_tokens_still_runs(both, tmp_path):
    out = tmp_path / "run"
    result = run(both, out, *IMAGES, "--set", "eval.limit=8", "--shift", "gaussian-noise:2")
    assert result.exit_code == 0, result.output
    assert (out / "summary.json").is_file()
