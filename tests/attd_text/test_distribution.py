"""attd-text installs as its own distribution, on top of attd-core only."""

from __future__ import annotations

from importlib import metadata

import attd_text


def test_installed_metadata_matches_the_package():
    assert metadata.version("attd-text") == attd_text.__version__ == "0.1.0"
    requirements = metadata.requires("attd-text") or []
    assert [req.split(">")[0].split("<")[0] for req in requirements] == ["attd-core"]
