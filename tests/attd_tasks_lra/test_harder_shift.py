"""The `harder` shift: harder generated test instances, drawn instead of the clean split."""

from __future__ import annotations

import pytest

from attd_core import ConfigError, get_plugin_manager
from attd_core.testing import TinyTask
from attd_tasks_lra.listops.tokenizer import source_to_symbols

TINY = {"num_train": 24, "num_val": 8, "num_test": 30, "max_length": 120}


def depth(source: str) -> int:
    """Nesting depth of a Source, counted from its brackets alone (a leaf is depth 1)."""
    deepest = level = 0
    for symbol in source_to_symbols(source):
        if symbol.startswith("["):
            level += 1
            deepest = max(deepest, level)
        elif symbol == "X":
            level -= 1
    return deepest + 1


def harder(severity: int):
    return get_plugin_manager().create("shift", "harder", {"severity": severity})


@pytest.mark.parametrize("severity", [1, 3])
def test_harder_listops_trees_are_longer_and_may_be_deeper(severity):
    task = get_plugin_manager().create("task", "listops", TINY)
    clean = task.load_split("test")
    shifted = harder(severity).load_split(task, "test")
    step = severity * (120 - 50) // 2
    lengths = [len(source_to_symbols(row["Source"])) for row in shifted]
    assert len(shifted) == len(clean) == 30
    assert all(50 + step < length < 120 + step for length in lengths)
    assert max(depth(row["Source"]) for row in shifted) <= 6 + severity
    assert max(depth(row["Source"]) for row in clean) <= 6
    assert not {row["Source"] for row in shifted} & {row["Source"] for row in clean}


def test_harder_batches_pass_through_unchanged():
    task = get_plugin_manager().create("task", "listops", TINY)
    batch = task.preprocess([task.load_split("test")[0]])
    assert harder(2).apply(batch, None) is batch


def test_harder_needs_a_generated_task(tmp_path):
    task = get_plugin_manager().create("task", "listops", {"dataset": str(tmp_path)})
    with pytest.raises(ConfigError, match="regenerates ListOps; task.dataset is"):
        harder(1).load_split(task, "test")
    with pytest.raises(ConfigError, match="needs a generated task .* TinyTask cannot"):
        harder(1).load_split(TinyTask(), "test")


def test_harder_on_a_task_that_cannot_make_harder_instances_is_refused_before_training(
    tmp_path,
):
    """It used to fail after the whole training, when the evaluation asked for the split."""
    from typer.testing import CliRunner

    from attd_cli.app import app

    out = tmp_path / "run"
    args = ["run", "--task", "image-classification", "--shift", "harder:2"]
    result = CliRunner().invoke(app, [*args, "--output-dir", str(out)])  # installed plugins
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        "error: eval.shift 'harder:2' does not fit task 'image-classification': shift 'harder' "
        "needs a generated task"
    )
    assert not out.exists()
