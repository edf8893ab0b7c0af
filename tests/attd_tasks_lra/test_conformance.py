"""The listops task against attd-core's task conformance suite, at a tiny size."""

from __future__ import annotations

import attd_tasks_lra._plugin as lra_plugin
from attd_core.testing import TaskConformance, new_plugin_manager

TINY = {"num_train": 12, "num_val": 4, "num_test": 4, "max_length": 60}


class TestListOps(TaskConformance):
    splits = ("train", "validation", "test")
    sample_size = 6

    def make_task(self):
        return new_plugin_manager(lra=lra_plugin).create("task", "listops", TINY)
