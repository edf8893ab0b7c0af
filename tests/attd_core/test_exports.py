"""Lazy exports: `lazy_exports` itself, and the four packages that use it.

A package's lazy names are listed twice: in its `lazy_exports(...)` table (what runs)
and under `if TYPE_CHECKING:` (what type checkers and editors read). Both are read
from the source with `ast`, so a name added to one list and not the other fails here.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest

from attd_core import lazy_exports

PACKAGES = ("attd_core", "attd_core.testing", "attd_text", "attd_vision")


def module_tree(package: str) -> ast.Module:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin is not None, f"{package} is not importable"
    return ast.parse(Path(spec.origin).read_text(), filename=spec.origin)


def lazy_table(tree: ast.Module) -> set[tuple[str, str]]:
    """(name, module) pairs of the `lazy_exports(globals(), {...})` call."""
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "lazy_exports"
    ]
    assert len(calls) == 1, f"expected one lazy_exports call, found {len(calls)}"
    table = ast.literal_eval(calls[0].args[1])
    return {(name, module) for module, names in table.items() for name in names}


def type_checking_imports(tree: ast.Module) -> list[ast.ImportFrom]:
    """The `from ... import ...` statements under the module's `if TYPE_CHECKING:`."""
    blocks = [
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    ]
    assert len(blocks) == 1, f"expected one `if TYPE_CHECKING:` block, found {len(blocks)}"
    return [node for node in blocks[0].body if isinstance(node, ast.ImportFrom)]


@pytest.mark.parametrize("package", PACKAGES)
def test_type_checking_imports_name_exactly_the_lazy_names(package):
    tree = module_tree(package)
    imported = {
        (alias.name, node.module or "")
        for node in type_checking_imports(tree)
        for alias in node.names
    }
    lazy = lazy_table(tree)
    assert not lazy - imported, f"lazy names without a TYPE_CHECKING import: {lazy - imported}"
    assert not imported - lazy, f"TYPE_CHECKING imports not in the lazy table: {imported - lazy}"


@pytest.mark.parametrize("package", PACKAGES)
def test_type_checking_imports_are_explicit_reexports(package):
    # `from m import X as X` tells mypy (no_implicit_reexport) and pyright that the
    # package re-exports X; a plain import would be private to the package.
    plain = [
        f"{node.module}.{alias.name}"
        for node in type_checking_imports(module_tree(package))
        for alias in node.names
        if alias.asname != alias.name
    ]
    assert not plain, f"write these as `Name as Name`: {plain}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    lazy = {name for name, _ in lazy_table(module_tree(package))}
    assert lazy <= set(module.__all__)
    assert lazy <= set(dir(module))
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing


@pytest.mark.parametrize("package", PACKAGES)
def test_an_unknown_name_is_an_attribute_error(package):
    module = importlib.import_module(package)
    with pytest.raises(AttributeError, match=rf"module '{package}' has no attribute 'Nope'"):
        module.Nope  # noqa: B018


@pytest.fixture
def probe_module(tmp_path, monkeypatch) -> str:
    """A module on sys.path that no test has imported yet."""
    (tmp_path / "attd_lazy_target.py").write_text("VALUE = 41\nOTHER = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "attd_lazy_target", raising=False)
    return "attd_lazy_target"


def test_a_lazy_name_is_imported_on_first_access_then_cached(probe_module):
    package = types.ModuleType("probe_package")
    names = lazy_exports(vars(package), {probe_module: ("VALUE", "OTHER")})
    assert names == ("VALUE", "OTHER")
    assert probe_module not in sys.modules
    assert {"VALUE", "OTHER"} <= set(dir(package))
    assert package.VALUE == 41
    assert probe_module in sys.modules
    assert vars(package)["VALUE"] == 41  # later accesses skip __getattr__
    assert "OTHER" not in vars(package)


def test_an_unknown_name_names_the_package(probe_module):
    package = types.ModuleType("probe_package")
    lazy_exports(vars(package), {probe_module: ("VALUE",)})
    with pytest.raises(AttributeError, match="module 'probe_package' has no attribute 'VALU'"):
        package.VALU  # noqa: B018
    assert probe_module not in sys.modules


def test_a_name_listed_for_two_modules_is_refused(probe_module):
    package = types.ModuleType("probe_package")
    with pytest.raises(ValueError, match="'VALUE' listed for both attd_lazy_target and json"):
        lazy_exports(vars(package), {probe_module: ("VALUE",), "json": ("VALUE",)})
