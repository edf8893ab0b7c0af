"""Plugin discovery and the registry of components.

Plugins are modules named by entry points in the `attd` group. Each is imported and
asked to register its specs on its own, so a failure names its plugin; a broken plugin
is skipped with one line on stderr and listed as broken, never fatal (unless
`ATTD_STRICT_PLUGINS=1`). `ATTD_LOAD_PLUGINS=a,b` loads only the named plugins and
`ATTD_DISABLE_PLUGINS=x,y` skips some; both match an entry point's name or its
distribution's, act before anything is imported, and never drop attd-core's built-ins.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import Any

import pluggy

from attd_core import hookspecs
from attd_core.errors import PluginError, UnknownComponentError
from attd_core.specs import KINDS, PluginSpec

ENTRY_POINT_GROUP = "attd"
CORE_DISTRIBUTION = "attd-core"


@dataclass
class PluginInfo:
    """One plugin module: where it came from and whether it loaded."""

    name: str
    distribution: str
    version: str
    status: str = "ok"
    reason: str = ""
    load_seconds: float = 0.0


@dataclass(frozen=True)
class Registration:
    """A registered component and the plugin that provided it."""

    spec: PluginSpec
    plugin: PluginInfo


@dataclass
class PluginRow:
    """One line of `attd list-plugins`."""

    distribution: str
    version: str
    kind: str
    name: str
    summary: str
    status: str
    load_ms: float = field(default=0.0)


def _summary(spec: PluginSpec) -> str:
    """The spec's summary; a task with presets names them, so that users find `--preset`."""
    presets = getattr(spec, "presets", None)
    return f"{spec.summary} (presets: {', '.join(presets)})" if presets else spec.summary


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _name_set(value: str | None) -> set[str] | None:
    if value is None or not value.strip():
        return None
    return {_normalise(part) for part in value.split(",") if part.strip()}


class PluginManager:
    """Loads plugins, validates their specs and resolves components by kind and name."""

    def __init__(self, *, autoload: bool = True, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.strict = env.get("ATTD_STRICT_PLUGINS", "") == "1"
        self._only = _name_set(env.get("ATTD_LOAD_PLUGINS"))
        self._disabled = _name_set(env.get("ATTD_DISABLE_PLUGINS")) or set()
        self._pluggy = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pluggy.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.rejected: list[PluginRow] = []
        self._components: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        if autoload:
            self.load_entry_points(metadata.entry_points(group=ENTRY_POINT_GROUP))

    # -- loading ---------------------------------------------------------------------

    def _wanted(self, entry_name: str, distribution: str) -> bool:
        if _normalise(distribution) == CORE_DISTRIBUTION:
            return True
        names = {_normalise(entry_name), _normalise(distribution)}
        if names & self._disabled:
            return False
        return self._only is None or bool(names & self._only)

    def load_entry_points(self, entry_points: Iterable[metadata.EntryPoint]) -> None:
        """Import and register every wanted entry point, isolating failures."""
        for entry_point in entry_points:
            dist = entry_point.dist
            distribution = dist.name if dist is not None else "(unknown)"
            version = dist.version if dist is not None else ""
            if not self._wanted(entry_point.name, distribution):
                continue
            start = time.perf_counter()
            try:
                module = entry_point.load()
            except Exception as exc:  # a plugin's import error must not kill the host
                info = PluginInfo(entry_point.name, distribution, version)
                self.plugins[info.name] = info
                self._fail(info, f"import failed: {type(exc).__name__}: {exc}")
                continue
            self.add_plugin(
                module,
                name=entry_point.name,
                distribution=distribution,
                version=version,
                started=start,
            )

    def add_plugin(
        self,
        plugin: object,
        *,
        name: str,
        distribution: str = "(local)",
        version: str = "",
        started: float | None = None,
    ) -> PluginInfo:
        """Register one plugin object (a module or instance with hook implementations).

        Its specs land all together or not at all; a duplicate name is rejected alone.
        """
        start = time.perf_counter() if started is None else started
        info = PluginInfo(name, distribution, version)
        if name in self.plugins:
            self._fail(info, f"a plugin named {name!r} is already loaded")
            self.rejected.append(self._problem_row(info))
            return info
        self.plugins[name] = info
        try:
            self._pluggy.register(plugin, name=name)
            self._pluggy.check_pending()
            collected: list[PluginSpec] = []
            for impl in self._implementations("attd_register", name):
                impl.function(register=self._collector(collected))
        except Exception as exc:  # hook errors are the plugin's fault
            if self._pluggy.is_registered(plugin):
                self._pluggy.unregister(plugin)
            self._fail(info, f"registration failed: {type(exc).__name__}: {exc}")
            return info
        for spec in collected:
            self._add_spec(spec, info)
        info.load_seconds = time.perf_counter() - start
        return info

    def _collector(self, collected: list[PluginSpec]) -> Callable[[PluginSpec], None]:
        def register(spec: PluginSpec) -> None:
            if not isinstance(spec, PluginSpec):
                raise TypeError(f"register() takes a PluginSpec, got {type(spec).__name__}")
            collected.append(spec)

        return register

    def _implementations(self, hook_name: str, plugin_name: str) -> list[Any]:
        caller = getattr(self._pluggy.hook, hook_name)
        return [impl for impl in caller.get_hookimpls() if impl.plugin_name == plugin_name]

    def _add_spec(self, spec: PluginSpec, info: PluginInfo) -> None:
        existing = self._components[spec.kind].get(spec.name)
        if existing is None:
            self._components[spec.kind][spec.name] = Registration(spec, info)
            return
        other = existing.plugin
        message = (
            f"duplicate {spec.kind} name {spec.name!r}: registered by plugin {info.name!r} "
            f"({info.distribution}) and already by plugin {other.name!r} ({other.distribution});"
            f" keeping the first"
        )
        row = PluginRow(
            info.distribution,
            info.version,
            spec.kind,
            spec.name,
            spec.summary,
            f"rejected: duplicate of {other.name!r} ({other.distribution})",
        )
        self.rejected.append(row)
        self._warn_or_raise(message)

    def _fail(self, info: PluginInfo, reason: str) -> None:
        info.status, info.reason = "broken", reason
        self._warn_or_raise(f"skipping plugin {info.name!r} ({info.distribution}): {reason}")

    def _warn_or_raise(self, message: str) -> None:
        if self.strict:
            raise PluginError(f"{message} (ATTD_STRICT_PLUGINS=1)")
        sys.stderr.write(f"attd: warning: {message}\n")

    def register_commands(self, app: Any) -> None:
        """Let every loaded plugin add CLI commands; a failing plugin is marked broken."""
        for info in list(self.plugins.values()):
            if info.status != "ok":
                continue
            try:
                for impl in self._implementations("attd_register_commands", info.name):
                    impl.function(app=app)
            except Exception as exc:
                self._fail(info, f"adding commands failed: {type(exc).__name__}: {exc}")

    # -- lookup ----------------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        """Registered names of one kind, sorted."""
        return sorted(self._components[self._check_kind(kind)])

    def get(self, kind: str, name: str) -> PluginSpec:
        """The spec registered as `name`; the error lists what is available."""
        registered = self._components[self._check_kind(kind)].get(name)
        if registered is None:
            raise UnknownComponentError(kind, name, self.names(kind))
        return registered.spec

    def create(self, kind: str, name: str, options: Any = None) -> Any:
        """Validate `options` and build the component (imports its factory now).

        A factory that declares a keyword-only `manager` parameter gets this manager, to
        build its own sub-components from the same registry.
        """
        return self.get(kind, name).create(options, manager=self)

    def _check_kind(self, kind: str) -> str:
        if kind not in self._components:
            raise PluginError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}")
        return kind

    def rows(self) -> list[PluginRow]:
        """Everything for `attd list-plugins`: components, broken plugins, rejections."""
        rows = [
            PluginRow(
                reg.plugin.distribution,
                reg.plugin.version,
                kind,
                name,
                _summary(reg.spec),
                "ok",
                round(reg.plugin.load_seconds * 1000, 1),
            )
            for kind, registered in self._components.items()
            for name, reg in registered.items()
        ]
        rows += [self._problem_row(info) for info in self.plugins.values() if info.status != "ok"]
        rows += self.rejected
        return sorted(rows, key=lambda row: (row.distribution, row.kind, row.name))

    @staticmethod
    def _problem_row(info: PluginInfo) -> PluginRow:
        return PluginRow(
            info.distribution,
            info.version,
            "plugin",
            info.name,
            "(not loaded)",
            f"broken: {info.reason}",
        )


@lru_cache(maxsize=1)
def get_plugin_manager() -> PluginManager:
    """The process-wide manager: entry points are read once, on first use.

    For entry points (the CLI, scripts); components never call it: a component that
    needs the registry receives it from the manager that creates it.
    """
    return PluginManager()
