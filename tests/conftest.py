"""Shared test setup: Hugging Face stays offline, and plugin managers load nothing."""

from __future__ import annotations

import os

import pytest

import attd_core

# pytest.ini cannot set environment variables; set them before any test imports datasets.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def fresh_plugin_manager() -> attd_core.PluginManager:
    """A manager with no plugins loaded (not even attd-core's); register them explicitly.

    It ignores the developer's ATTD_* variables so that tests do not depend on them.
    """
    return attd_core.PluginManager(autoload=False, environ={})
