"""Lazy exports: a package names its torch-backed API without importing torch up front.

`attd list-plugins` imports every plugin package, so a package's `__init__` must stay
light; its heavy names load on first attribute access instead (PEP 562). Type checkers
and editors cannot follow a module `__getattr__`, so a package that uses this helper
also imports the same names under `if TYPE_CHECKING:` (as `Name as Name`, the explicit
re-export form); tests/attd_core/test_exports.py checks the two lists agree.

This module imports only the standard library.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any


def lazy_exports(
    namespace: MutableMapping[str, Any], exports: Mapping[str, Iterable[str]]
) -> tuple[str, ...]:
    """Install a module `__getattr__` and `__dir__` in `namespace` (a module's `globals()`).

    `exports` maps a module's absolute name to the names it provides, as the matching
    `from module import ...` lines would. The first access to a name imports its module
    and stores the value in `namespace`, so later accesses are plain lookups. Returns the
    lazy names, in order, for the package's `__all__`.
    """
    package = namespace["__name__"]
    sources: dict[str, str] = {}
    for module, names in exports.items():
        for name in names:
            if name in sources:
                raise ValueError(
                    f"{package}: lazy name {name!r} listed for both {sources[name]} and {module}"
                )
            sources[name] = module

    def __getattr__(name: str) -> Any:
        module = sources.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *sources})

    namespace["__getattr__"] = __getattr__
    namespace["__dir__"] = __dir__
    return tuple(sources)


__all__ = ["lazy_exports"]
