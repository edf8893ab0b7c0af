"""Shared test setup: Hugging Face stays offline, and plugin managers load nothing.

`attd_pm` (a fresh manager holding attd-core's built-ins only) comes from attd-core's
pytest plugin, `attd_core.testing`, which pytest loads through its `pytest11` entry point.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

import attd_core

# pytest.ini cannot set environment variables; set them before any test imports datasets.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Generated LRA data go to a fresh folder per session, never the user's cache.
os.environ["ATTD_CACHE_DIR"] = tempfile.mkdtemp(prefix="attd-test-cache-")
atexit.register(shutil.rmtree, os.environ["ATTD_CACHE_DIR"], ignore_errors=True)


@pytest.fixture
def fresh_plugin_manager() -> attd_core.PluginManager:
    """A manager with no plugins loaded (not even attd-core's); register them explicitly.

    It ignores the developer's ATTD_* variables so that tests do not depend on them. Take
    `attd_pm` instead for a manager that already holds attd-core's built-ins.
    """
    return attd_core.PluginManager(autoload=False, environ={})
