"""attd-text installs as its own distribution: what it requires, its extra, its entry point."""

from __future__ import annotations

import re
from importlib import metadata

import attd_text


def test_installed_metadata_matches_the_package():
    assert metadata.version("attd-text") == attd_text.__version__ == "0.1.0"
    requirements = metadata.requires("attd-text") or []
    plain = sorted(re.match(r"[\w.-]+", req).group() for req in requirements if "extra" not in req)
    assert plain == ["attd-core", "datasets", "pydantic"]
    extras = [req for req in requirements if "extra ==" in req]
    assert [re.match(r"[\w.-]+", req).group() for req in extras] == ["tokenizers"]
    assert all(re.search(r"extra == ['\"]tokenizers['\"]", req) for req in extras)


def test_registers_through_the_attd_entry_point_group():
    points = [ep for ep in metadata.entry_points(group="attd") if ep.dist.name == "attd-text"]
    assert [(ep.name, ep.value) for ep in points] == [("text", "attd_text._plugin")]
