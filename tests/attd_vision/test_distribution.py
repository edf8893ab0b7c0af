"""attd-vision installs as its own distribution, registers through the `attd` entry
point group, and listing its plugins imports none of its heavy dependencies."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import attd_vision

HEAVY = ("torch", "datasets", "PIL", "sklearn", "numpy")


def test_installed_metadata_matches_the_package():
    assert metadata.version("attd-vision") == attd_vision.__version__ == "0.1.0"
    requirements = metadata.requires("attd-vision") or []
    names = sorted(req.split(">")[0].split("<")[0].split("=")[0] for req in requirements)
    assert names == ["attd-core", "datasets", "numpy", "pillow", "pydantic", "scikit-learn"]


def test_the_entry_point_names_the_light_plugin_module():
    points = metadata.entry_points(group="attd")
    ours = [point for point in points if point.dist and point.dist.name == "attd-vision"]
    assert [(point.name, point.value) for point in ours] == [("vision", "attd_vision._plugin")]


def test_registering_imports_no_heavy_module():
    probe = (
        "import sys, attd_core\n"
        "from attd_vision import _plugin\n"
        "manager = attd_core.PluginManager(autoload=False, environ={})\n"
        "manager.add_plugin(_plugin, name='vision')\n"
        "assert manager.names('task') == ['image-classification']\n"
        "assert 'gaussian-noise' in manager.names('shift')\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
