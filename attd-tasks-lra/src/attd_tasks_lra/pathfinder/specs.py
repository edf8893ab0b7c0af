"""Registrations of this task family (options only: no torch, no datasets)."""

from __future__ import annotations

from attd_core import PluginSpec

SPECS: tuple[PluginSpec, ...] = ()
