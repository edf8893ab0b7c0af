"""`attd new-plugin`: write a ready-to-install plugin package from the bundled templates.

The templates live in `attd_cli/templates/` (package data): `common/` holds what every
kind shares, `<kind>/` the rest, and a kind's file overrides a common one of the same
path. Each file is a `string.Template` (`$name` placeholders; `$$` is a dollar sign)
ending in `.tmpl`; a folder named `package` becomes the import package and
`gitignore` becomes `.gitignore`. The package is built in a hidden folder next to the
target and renamed into place, so a failure never leaves half a plugin behind.

Standard library only: the command must not slow down `attd`'s start-up.
"""

from __future__ import annotations

import os
import re
import shutil
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import attd_core
from attd_core import AttdError, PluginManager

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

KINDS = ("task", "strategy")
"""The kinds `new-plugin` can write; the first is the default."""

# The component-name rule of attd_core's specs (PluginSpec.name); a test keeps them equal.
NAME_PATTERN = r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$"
# Users type the name (`--task NAME`); the cap also keeps every generated line within
# the line length the generated ruff config sets.
MAX_NAME_LENGTH = 30

# Names whose distribution or import package would shadow one of attd's own.
RESERVED = frozenset({"core", "text", "vision", "cli", "tasks-lra", "plugin-example"})

TEMPLATE_SUFFIX = ".tmpl"


@dataclass(frozen=True)
class PluginNames:
    """Every name derived from NAME: what users type, pip installs and Python imports."""

    name: str  # the component's name and the entry point's name: `--task NAME`
    distribution: str  # attd-NAME, hyphens only: `pip install attd-NAME`
    package: str  # attd_NAME, underscores only: `import attd_NAME`
    class_name: str  # FooTask / FooStrategy
    options_class: str  # FooOptions

    @classmethod
    def from_name(cls, name: str, kind: str) -> PluginNames:
        if not re.fullmatch(NAME_PATTERN, name):
            raise AttdError(
                f"bad plugin name {name!r}: use lowercase letters and digits, starting with a "
                "letter, words joined by single '-' or '_' (e.g. my-task)"
            )
        if len(name) > MAX_NAME_LENGTH:
            raise AttdError(
                f"bad plugin name {name!r}: {len(name)} characters, at most "
                f"{MAX_NAME_LENGTH} allowed"
            )
        slug = name.replace("_", "-")
        if slug in RESERVED or slug.startswith("attd-"):
            raise AttdError(
                f"bad plugin name {name!r}: attd-{slug} would clash with attd's own packages; "
                "pick another name"
            )
        camel = "".join(part.capitalize() for part in re.split(r"[-_]", name))
        suffix = kind.capitalize()
        stem = camel[: -len(suffix)] if camel.endswith(suffix) and camel != suffix else camel
        return cls(
            name=name,
            distribution=f"attd-{slug}",
            package=f"attd_{name.replace('-', '_')}",
            class_name=f"{stem}{suffix}",
            options_class=f"{stem}Options",
        )


def core_requirement(version: str = attd_core.__version__) -> str:
    """A loose range on attd-core: the installed minor series (0.x) or major series (>= 1)."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        return "attd-core"
    major, minor = int(match.group(1)), int(match.group(2))
    if major == 0:
        return f"attd-core>={major}.{minor},<{major}.{minor + 1}"
    return f"attd-core>={major}.{minor},<{major + 1}"


def dependencies(kind: str) -> list[str]:
    """What the generated package imports, each with a loose range."""
    found = [core_requirement(), "pydantic>=2.6"]  # pydantic: the options model
    if kind == "strategy":
        found.append("torch>=2.4")  # the strategy module computes step counts with torch
    return found


def template_root() -> Traversable:
    return resources.files("attd_cli") / "templates"


def _walk(folder: Traversable, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
    found: dict[tuple[str, ...], str] = {}
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.is_dir():
            if entry.name != "__pycache__":
                found.update(_walk(entry, (*prefix, entry.name)))
        elif entry.name.endswith(TEMPLATE_SUFFIX):
            found[(*prefix, entry.name)] = entry.read_text(encoding="utf-8")
    return found


def _output_path(parts: tuple[str, ...], package: str) -> str:
    names = list(parts)
    names[-1] = names[-1].removesuffix(TEMPLATE_SUFFIX)
    if names[-1] == "gitignore":
        names[-1] = ".gitignore"
    if len(names) > 1 and names[0] == "src" and names[1] == "package":
        names[1] = package
    return "/".join(names)


def render(kind: str, names: PluginNames) -> dict[str, str]:
    """The generated files, `relative/path -> text`, in a stable order."""
    root = template_root()
    templates = _walk(root / "common") | _walk(root / kind)
    values = {
        "kind": kind,
        "name": names.name,
        "distribution": names.distribution,
        "package": names.package,
        "class_name": names.class_name,
        "options_class": names.options_class,
        "core_requirement": core_requirement(),
        "dependencies": "\n".join(f'    "{item}",' for item in dependencies(kind)),
        "run_example": _run_example(kind, names.name),
    }
    files: dict[str, str] = {}
    for parts, text in templates.items():
        path = _output_path(parts, names.package)
        try:
            files[path] = string.Template(text).substitute(values)
        except (KeyError, ValueError) as exc:  # a broken template is our bug, not the user's
            raise RuntimeError(f"template {'/'.join(parts)}: bad placeholder: {exc}") from exc
    return dict(sorted(files.items()))


def _run_example(kind: str, name: str) -> str:
    if kind == "task":
        return f"attd run --task {name} --tta fixed:3"
    return f"attd run --task listops --tta fixed:2 --tta {name}:4"


def check_target(target: Path) -> None:
    """Refuse anything but a new or empty folder."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise AttdError(f"{target} exists and is not a folder; pick another --out or name")
    if target.is_dir() and any(target.iterdir()):
        raise AttdError(f"{target} already exists and is not empty; pick another --out or name")


def write_tree(files: dict[str, str], target: Path) -> None:
    """Write `files` under `target` all at once: staged next to it, then renamed into place."""
    check_target(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as exc:
        raise AttdError(f"cannot create {target}: {exc.strerror or exc}") from None
    try:
        # A folder made with mkdir (not mkdtemp's 0o700) gets the user's usual permissions.
        built = staging / target.name
        built.mkdir()
        for relative, text in files.items():
            path = built / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
        check_target(target)  # again: something may have appeared meanwhile
        if target.is_dir():
            target.rmdir()  # empty (checked); os.rename cannot replace a folder everywhere
        os.rename(built, target)
    except OSError as exc:
        raise AttdError(f"cannot create {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def new_plugin(
    manager: PluginManager,
    name: str,
    *,
    kind: str = KINDS[0],
    out: str | Path = ".",
    echo: Callable[[str], None] = print,
) -> Path:
    """Write the plugin package `out/attd-NAME` and print what to do next; returns its path."""
    if kind not in KINDS:
        raise AttdError(
            f"new-plugin cannot write a {kind!r} plugin; supported kinds: {', '.join(KINDS)}"
        )
    names = PluginNames.from_name(name, kind)
    if name in manager.names(kind):
        raise AttdError(
            f"a {kind} named {name!r} is already installed; pick another name "
            "(names are unique within a kind)"
        )
    target = Path(out) / names.distribution
    files = render(kind, names)
    write_tree(files, target)
    echo(f"created {target}: {names.distribution}, a {kind} plugin registering {kind} {name!r}")
    for relative in files:
        echo(f"  {relative}")
    echo("next steps:")
    echo(f'  pip install -e "{target}[test]"')
    echo(f"  cd {target} && pytest")
    echo(f"  {_run_example(kind, name)}")
    return target
