"""Every installed task's sizes: at least one example where zero breaks, an upper bound
stated in the message, finite floats; checked while the config resolves, before any data.

They live with attd-tasks-lra, whose test session installs every task plugin.
"""

from __future__ import annotations

import pytest

from attd_core import ConfigError, get_plugin_manager, resolve_run_config

TEXT = ["task.data_files=reviews.csv"]
"""text-classification and language-modeling need a source; resolving never reads it."""


@pytest.mark.parametrize(
    ("task", "overrides", "fragments"),
    [
        ("listops", ["task.num_train=0"], ["task.num_train", "greater than or equal to 1"]),
        ("listops", ["task.num_val=0"], ["task.num_val", "greater than or equal to 1"]),
        ("listops", ["task.num_test=0"], ["task.num_test", "greater than or equal to 1"]),
        ("listops", ["task.num_train=100000000"], ["task.num_train", "10000000"]),
        ("listops", ["task.max_args=1000"], ["task.max_args", "less than or equal to 100"]),
        ("listops", ["task.max_length=10000000"], ["task.max_length", "1000000"]),
        ("listops", ["task.max_tokens=10000000"], ["task.max_tokens", "1048576"]),
        ("listops", ["task.value_p=.nan"], ["task.value_p", "finite number"]),
        ("pathfinder", ["task.num_train=0"], ["task.num_train", "greater than or equal to 1"]),
        ("pathfinder", ["task.num_test=100000000"], ["task.num_test", "10000000"]),
        ("pathfinder", ["task.workers=100000"], ["task.workers", "4096"]),
        ("pathfinder", ["task.contrast=.inf"], ["task.contrast", "finite number"]),
        ("pathx", ["task.num_val=0"], ["task.num_val", "greater than or equal to 1"]),
        ("lra-text", ["task.max_length=10000000"], ["task.max_length", "1048576"]),
        ("lra-image", ["task.image_size=100000"], ["task.image_size", "4096"]),
        ("lra-retrieval", ["task.head_hidden=100000"], ["task.head_hidden", "16384"]),
        ("lra-retrieval", ["task.limit_test=10000000000"], ["task.limit_test", "1000000000"]),
        ("text-classification", [*TEXT, "task.max_length=10000000"], ["task.max_length"]),
        ("text-classification", [*TEXT, "task.num_classes=10000000"], ["task.num_classes"]),
        ("text-classification", [*TEXT, "task.test_fraction=.nan"], ["task.test_fraction"]),
        ("language-modeling", [*TEXT, "task.block_size=10000000"], ["task.block_size", "1048576"]),
        ("image-classification", ["task.image_size=100000"], ["task.image_size", "4096"]),
        ("image-classification", ["task.limit_train=10000000000"], ["task.limit_train"]),
        (
            "image-classification",
            ["task.encoder=patches", "task.encoder_options.patch_size=100000"],
            ["patch_size", "4096"],
        ),
    ],
)
def test_task_sizes_are_bounded_and_floats_finite(task, overrides, fragments):
    """`task.num_train=0` used to pass validation and fail inside the data loader."""
    with pytest.raises(ConfigError) as caught:
        resolve_run_config(get_plugin_manager(), task=task, overrides=overrides)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_the_config_schema_states_the_limits():
    from attd_cli.config_command import config_schema

    definitions = config_schema(get_plugin_manager(), ["listops"])["$defs"]
    d_model = definitions["backbone-mamba"]["properties"]["d_model"]
    assert (d_model["minimum"], d_model["maximum"]) == (1, 16384)
    num_train = definitions["task-listops"]["properties"]["num_train"]
    assert (num_train["minimum"], num_train["maximum"]) == (1, 10_000_000)
