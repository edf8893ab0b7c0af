"""Packaging rules that keep the five distributions and third-party plugins honest.

Imports are read from the sources with `ast`, never executed, so an environment that
happens to have every package installed cannot hide an undeclared dependency. Strings
that are nothing but a module path into one of our packages (factory strings such as
`"attd_tasks_lra.listops.task:ListOpsTask"`, lazy-import tables) count as imports too.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("attd-core", "attd-text", "attd-vision", "attd-tasks-lra", "attd-cli")
PROJECTS = {name: ROOT / name for name in PACKAGES}
PROJECTS["attd-plugin-example"] = ROOT / "examples" / "attd-plugin-example"
PLUGINS = [name for name in PROJECTS if name != "attd-core"]

_MODULE_STRING = re.compile(r"(attd_\w+(?:\.\w+)*)(?::[\w.]+)?")
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def import_name(distribution: str) -> str:
    return distribution.replace("-", "_")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _REQUIREMENT_NAME.match(requirement)
    assert match, f"cannot read a name from requirement {requirement!r}"
    return normalise(match.group())


def pyproject(project: str) -> dict:
    return tomllib.loads((PROJECTS[project] / "pyproject.toml").read_text())


def dependencies(project: str) -> list[str]:
    return pyproject(project)["project"].get("dependencies", [])


def declared_attd_imports(project: str) -> set[str]:
    names = {requirement_name(requirement) for requirement in dependencies(project)}
    return {import_name(name) for name in names if name.startswith("attd-")}


def source_files(project: str) -> list[Path]:
    return sorted((PROJECTS[project] / "src").rglob("*.py"))


def module_name(path: Path) -> str:
    src = next(parent for parent in path.parents if parent.name == "src")
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


KNOWN_MODULES = {module_name(path) for project in PROJECTS for path in source_files(project)}
IMPORT_NAMES = {import_name(project) for project in PROJECTS}


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str

    @property
    def top(self) -> str:
        return self.module.partition(".")[0]

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.module}"


def imported_modules(node: ast.AST) -> list[str]:
    """Absolute modules a node imports; `from a import b` means `a.b` when that is a module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        submodules = [f"{node.module}.{alias.name}" for alias in node.names]
        return [name if name in KNOWN_MODULES else node.module for name in submodules]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        match = _MODULE_STRING.fullmatch(node.value)
        if match and match.group(1).partition(".")[0] in IMPORT_NAMES:
            return [match.group(1)]
    return []


def attd_imports(project: str) -> list[Import]:
    found = []
    for path in source_files(project):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for module in imported_modules(node):
                if module.startswith("attd_"):
                    found.append(Import(path, node.lineno, module))
    return found


def report(offenders: list[Import]) -> str:
    return "\n".join(str(offender) for offender in sorted(set(offenders), key=str))


@pytest.mark.parametrize("project", PROJECTS)
def test_imports_only_declared_attd_packages(project):
    allowed = declared_attd_imports(project) | {import_name(project)}
    offenders = [imp for imp in attd_imports(project) if imp.top not in allowed]
    assert not offenders, (
        f"{project} imports attd packages it does not declare "
        f"(allowed: {sorted(allowed)}):\n{report(offenders)}"
    )


def test_core_declares_and_imports_no_other_attd_package():
    assert declared_attd_imports("attd-core") == set()
    offenders = [imp for imp in attd_imports("attd-core") if imp.top != "attd_core"]
    assert not offenders, f"attd_core imports other attd packages:\n{report(offenders)}"


@pytest.mark.parametrize("project", PLUGINS)
def test_plugins_use_only_the_public_api_of_core(project):
    offenders = [
        imp for imp in attd_imports(project) if imp.top == "attd_core" and imp.module != "attd_core"
    ]
    assert not offenders, (
        f"{project} reaches into attd_core's submodules; import from `attd_core` "
        f"instead:\n{report(offenders)}"
    )


@pytest.mark.parametrize("project", PROJECTS)
def test_hatchling_src_layout_version(project):
    data = pyproject(project)
    name = import_name(project)
    assert data["project"]["name"] == project
    assert data["project"]["version"] == "0.1.0"
    assert data["build-system"]["build-backend"] == "hatchling.build"
    assert any(requirement_name(req) == "hatchling" for req in data["build-system"]["requires"])
    assert data["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [f"src/{name}"]
    assert (PROJECTS[project] / "src" / name / "__init__.py").is_file()


@pytest.mark.parametrize("project", PROJECTS)
def test_packages_declare_ranges_not_pins(project):
    extras = pyproject(project)["project"].get("optional-dependencies", {})
    requirements = dependencies(project) + [req for reqs in extras.values() for req in reqs]
    pinned = [req for req in requirements if "==" in req]
    assert not pinned, f"{project} pins exactly (pins belong in requirements-dev.txt): {pinned}"


@pytest.mark.parametrize("project", PROJECTS)
def test_only_core_depends_on_torch(project):
    torch = [req for req in dependencies(project) if requirement_name(req) == "torch"]
    if project == "attd-core":
        assert torch == ["torch>=2.4"]
    else:
        assert torch == [], f"{project} should get torch through attd-core"


def test_core_depends_on_numba_for_the_fast_cpu_scan():
    """A plain `pip install attd-core` gets the fused CPU scan, not the 10x slower fallback."""
    numba = [req for req in dependencies("attd-core") if requirement_name(req) == "numba"]
    assert numba == ["numba>=0.60"]
    extras = pyproject("attd-core")["project"]["optional-dependencies"]
    assert "numba" not in extras


def test_core_cuda_extra_declares_the_fast_kernels():
    cuda = pyproject("attd-core")["project"]["optional-dependencies"]["cuda"]
    assert {requirement_name(req) for req in cuda} >= {"mamba-ssm", "causal-conv1d"}


def pins(path: Path) -> dict[str, str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    pairs = (line.split("==", 1) for line in lines if "==" in line)
    return {normalise(name.strip()): version.strip() for name, version in pairs}


def test_dev_requirements_pin_torch_and_numpy():
    dev = pins(ROOT / "requirements-dev.txt")
    assert dev.get("torch") == "2.13.0"
    assert "numpy" in dev
    assert pins(ROOT / "constraints-dev.txt") == {"torch": dev["torch"]}
