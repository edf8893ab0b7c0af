"""attd-text's registrations: what it provides, and that listing it stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import attd_core
from attd_text import _plugin


def test_registers_two_encoders_and_two_tasks(manager):
    assert {"bytes", "tokenizer"} <= set(manager.names("encoder"))
    assert {"text-classification", "language-modeling"} <= set(manager.names("task"))
    for spec in _plugin.SPECS:
        assert spec.factory.startswith("attd_text.")
        assert spec.config.model_config.get("extra") == "forbid"


def test_every_factory_loads(manager):
    for spec in _plugin.SPECS:
        assert callable(spec.load())


def test_listing_imports_neither_torch_nor_datasets():
    code = (
        "import json, sys, attd_core\n"
        "manager = attd_core.PluginManager()\n"
        "print(json.dumps({'tasks': manager.names('task'), 'encoders': manager.names('encoder'),"
        " 'heavy': sorted(m for m in ('torch', 'datasets', 'tokenizers') if m in sys.modules)}))"
    )
    env = {**os.environ, "ATTD_LOAD_PLUGINS": "text", "ATTD_STRICT_PLUGINS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["heavy"] == []
    assert found["tasks"] == ["language-modeling", "text-classification"]
    assert found["encoders"] == ["bytes", "tokenizer"]


def test_package_exports_load_lazily():
    import attd_text

    assert attd_text.ByteEncoder is attd_text.encoders.ByteEncoder
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        attd_text.Nope  # noqa: B018


def test_bad_task_options_fail_while_the_config_resolves(manager):
    with pytest.raises(attd_core.ConfigError, match=r"task.encoder_options.*eso"):
        attd_core.resolve_run_config(
            manager,
            task="text-classification",
            overrides=["task.data_files=x.csv", "task.encoder_options.eso=true"],
        )
    with pytest.raises(attd_core.ConfigError, match="exactly one of dataset or data_files"):
        attd_core.resolve_run_config(manager, task="text-classification")
