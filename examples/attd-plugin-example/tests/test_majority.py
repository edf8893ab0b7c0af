"""The plugin registers `majority`, meets attd's task contract, and yields deterministic,
well-formed batches.

`attd_pm` (a fixture) and `TaskConformance` come from attd-core's pytest plugin, which
pytest loads by itself wherever attd-core is installed.
"""

from __future__ import annotations

import attd_core
import pytest
from attd_core.testing import TaskConformance, new_plugin_manager

from attd_plugin_example import _plugin

SMALL = {"num_train": 12, "num_val": 4, "num_test": 6, "seq_len": 20, "seed": 3}


class TestMajorityContract(TaskConformance):
    """attd's checks of the Task contract: splits, batches, head, forward, losses, metrics."""

    splits = ("train", "validation", "test")
    sample_size = 6

    def make_task(self) -> attd_core.Task:
        return new_plugin_manager(example=_plugin).create("task", "majority", SMALL)


@pytest.fixture
def manager(attd_pm: attd_core.PluginManager) -> attd_core.PluginManager:
    """attd-core's built-ins plus this plugin, whatever else is installed."""
    attd_pm.add_plugin(_plugin, name="example", distribution="attd-plugin-example")
    return attd_pm


def test_registers_the_majority_task_without_importing_it(manager):
    assert manager.names("task") == ["majority"]
    assert manager.get("task", "majority").factory == "attd_plugin_example.task:MajorityTask"


def test_splits_have_the_configured_sizes_and_are_deterministic(manager):
    task = manager.create("task", "majority", SMALL)
    sizes = {split: len(task.load_split(split)) for split in ("train", "validation", "test")}
    assert sizes == {"train": 12, "validation": 4, "test": 6}
    again = manager.create("task", "majority", SMALL)
    assert task.load_split("train") == again.load_split("train")
    assert task.load_split("train") != task.load_split("test")


def test_labels_count_the_two_tokens(manager):
    for example in manager.create("task", "majority", SMALL).load_split("train"):
        tokens = example["tokens"]
        assert example["label"] == int(tokens.count(1) > tokens.count(2))
        assert all(1 <= token < 16 for token in tokens)


def test_preprocess_collates_a_padded_batch(manager):
    task = manager.create("task", "majority", SMALL)
    examples = task.load_split("test")
    batch = task.preprocess(examples)
    assert tuple(batch.inputs.shape) == (6, 20)
    assert tuple(batch.mask.shape) == (6, 20)
    assert bool(batch.mask.all())
    assert batch.labels.tolist() == [example["label"] for example in examples]


def test_unknown_split_and_option_are_rejected(manager):
    with pytest.raises(attd_core.ConfigError, match="unknown split 'dev'"):
        manager.create("task", "majority", SMALL).load_split("dev")
    with pytest.raises(ValueError, match="seq_length"):
        manager.create("task", "majority", {"seq_length": 5})
