"""attd-tasks-lra's registrations: light, so `attd list-plugins` imports no torch."""

from __future__ import annotations

from collections.abc import Callable

from attd_core import PluginSpec, ShiftSpec, hookimpl
from attd_tasks_lra.listops.specs import SPECS as LISTOPS
from attd_tasks_lra.natural.specs import SPECS as NATURAL
from attd_tasks_lra.pathfinder.specs import SPECS as PATHFINDER
from attd_tasks_lra.shifts import HarderOptions

HARDER = ShiftSpec(
    name="harder",
    summary="Harder generated instances: deeper, longer ListOps trees; longer Pathfinder "
    "contours, more distractors (severity 1-5)",
    factory="attd_tasks_lra.shifts:HarderInstances",
    config=HarderOptions,
)
SPECS: tuple[PluginSpec, ...] = (*LISTOPS, *PATHFINDER, *NATURAL, HARDER)


@hookimpl
def attd_register(register: Callable[[PluginSpec], None]) -> None:
    for spec in SPECS:
        register(spec)
