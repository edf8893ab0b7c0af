"""Test sessions: one per distribution, `example`, `integration` and `lint`.

Each package session installs only that package and the attd packages it declares (from
the local folders, not editable), so a forgotten dependency fails its tests. torch is
the CPU build pinned in constraints-dev.txt; tool versions come from requirements-dev.txt.

    nox -l               list the sessions
    nox -s core          run one session
    nox -R -s core       run it again, reusing its environment without installing
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", "constraints-dev.txt")
PACKAGES = {
    "core": "attd-core",
    "text": "attd-text",
    "vision": "attd-vision",
    "tasks_lra": "attd-tasks-lra",
    "cli": "attd-cli",
}

nox.options.reuse_venv = "yes"


def dev_pins(*names: str) -> list[str]:
    """The exact requirements that requirements-dev.txt gives for `names`."""
    lines = (ROOT / "requirements-dev.txt").read_text().splitlines()
    pins = {line.split("==")[0]: line.split("#")[0].strip() for line in lines if "==" in line}
    return [pins[name] for name in names]


def with_attd_dependencies(folder: Path) -> list[str]:
    """`folder` and the folders of every attd package it needs, transitively."""
    found: list[str] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        if str(current) in found:
            continue
        found.append(str(current))
        project = tomllib.loads((current / "pyproject.toml").read_text())["project"]
        for requirement in project.get("dependencies", []):
            name = re.match(r"[\w.-]+", requirement).group()
            if name.startswith("attd-"):
                pending.append(ROOT / name)
    return found


def install(session: nox.Session, folder: Path) -> None:
    """torch first (the CPU build), then the package, its attd dependencies and pytest."""
    session.install(*CONSTRAINTS, "torch")
    tools = dev_pins("pytest", "hypothesis")
    session.install(*CONSTRAINTS, *with_attd_dependencies(folder), *tools)


def package_session(key: str, distribution: str) -> None:
    def run_tests(session: nox.Session) -> None:
        install(session, ROOT / distribution)
        session.run("pytest", f"tests/{distribution.replace('-', '_')}", *session.posargs)

    run_tests.__doc__ = f"Tests of {distribution}, with only what it declares installed."
    nox.session(name=key)(run_tests)


for key, distribution in PACKAGES.items():
    package_session(key, distribution)


@nox.session
def example(session: nox.Session) -> None:
    """The example plugin's own tests, run as its author would."""
    install(session, ROOT / "examples" / "attd-plugin-example")
    session.chdir(ROOT / "examples" / "attd-plugin-example")
    session.run("pytest", *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    """Cross-package tests (dependency rules, wheels in a fresh venv) in the dev setup."""
    session.install("-r", "requirements-dev.txt")
    session.run("pytest", "tests/integration", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole repository."""
    session.install(*dev_pins("ruff"))
    session.run("ruff", "check", ".", *session.posargs)
