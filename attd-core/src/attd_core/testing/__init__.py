"""Test helpers for attd plugins: a pytest plugin, conformance suites and tiny factories.

It needs pytest, which attd-core does not install: a plugin declares it in its `test`
extra. attd-core registers this module as a pytest plugin (entry point `attd` in the
`pytest11` group), so any project with attd-core and pytest installed gets the fixture
below; `-p no:attd` switches it off, and a project that switched it off can name
`attd_core.testing` in its `pytest_plugins` instead. Importing this module imports no
torch: the suites import it inside their tests, and the factories load on first use.

Fixture:

- `attd_pm`: a fresh `PluginManager(autoload=False, environ={})` holding attd-core's
  built-ins only; a plugin's tests add theirs with `attd_pm.add_plugin(module, name=...)`.

Conformance suites check a component against the contracts in `attd_core.interfaces`,
with tiny sizes. Subclass one in a test module under a name pytest collects (`Test...`)
and supply the factory hook; the suites' own names do not start with `Test`, so pytest
never collects the bases themselves. Every failure says which contract was broken.

    class TestMajority(TaskConformance):
        splits = ("train", "validation", "test")  # optional, default ("train", "test")
        sample_size = 8  # optional: examples per batch

        def make_task(self):
            return new_plugin_manager(example=_plugin).create("task", "majority", SMALL)

- `TaskConformance`: `make_task()`; optional `splits`, `sample_size`, `pooling`
  (`masked-mean`), `loss_reduction` (`"mean"`: `compute_loss` is the mean of
  `sample_losses`; None skips that check), `make_backbone()` (a tiny Mamba).
- `BackboneConformance`: `make_backbone()`; optional `batch_size`, `length`.
- `AdapterConformance`: `make_adapter()`; optional `make_backbone()` (a tiny Mamba).
- `StrategyConformance`: `make_strategy()`; optional `make_bound_model()` (a tiny
  classifier with a Delta-SSM adapter), `make_objective()` (`entropy-kl`) and
  `make_batch(model, split)`. Strategies that need calibration are calibrated first on
  the `validation` split, as the evaluator does.

Each suite also has `atol` and `rtol`, the tolerances of its "unchanged" comparisons.

Factories (they import torch when first used):

- `new_plugin_manager(**plugins)`: attd-core's built-ins plus `name=module` plugins.
- `TinyTask`: three classes over a 12-token vocabulary, four variable-length sequences
  per split (so batches are padded).
- `ParityTask`, and `ParityPlugin` registering it as the task `parity`: two classes,
  32 short sequences per split, for end-to-end runs of the runtime and the CLI.
- `tiny_backbone(name="mamba", seed=0, **options)`: a small built-in backbone (`mamba`,
  `transformer` or `hybrid`), in eval mode.
- `tiny_model(task=None, backbone=None, pooling="masked-mean", seed=0)`: an `AttdModel`.
- `tiny_bound_model(task=None, backbone=None, adapters=None, seed=0)`: a frozen
  `BoundModel` whose predictions are confident, as a trained model's are, with a
  Delta-SSM adapter by default: what strategies adapt.
- `first_examples(task, split, n)` and `task_batch(task, split, n)`: the first `n`
  examples of a split, raw or collated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

try:
    import pytest
except ImportError:  # attd-core does not depend on pytest; only its tests' users need it
    raise ImportError(
        "attd_core.testing needs pytest, which attd-core does not install: "
        "pip install pytest (declare it in your plugin's test extra)"
    ) from None

from attd_core.lazy import lazy_exports
from attd_core.plugins import PluginManager

pytest.register_assert_rewrite("attd_core.testing._suites")

from attd_core.testing._suites import (  # noqa: E402  (after the rewrite registration)
    AdapterConformance,
    BackboneConformance,
    StrategyConformance,
    TaskConformance,
)


def new_plugin_manager(**plugins: object) -> PluginManager:
    """A manager with attd-core's built-ins and `plugins` (`name=module`), nothing else.

    It loads no entry points and ignores the ATTD_* environment variables, so tests do
    not depend on what else is installed or on the developer's settings.
    """
    from attd_core import __version__, _plugin

    manager = PluginManager(autoload=False, environ={})
    manager.add_plugin(_plugin, name="core", distribution="attd-core", version=__version__)
    for name, plugin in plugins.items():
        manager.add_plugin(plugin, name=name)
    return manager


@pytest.fixture
def attd_pm() -> PluginManager:
    """A fresh plugin manager with attd-core's built-ins only (see `new_plugin_manager`)."""
    return new_plugin_manager()


if TYPE_CHECKING:
    from attd_core.testing._factories import ParityPlugin as ParityPlugin
    from attd_core.testing._factories import ParityTask as ParityTask
    from attd_core.testing._factories import TinyTask as TinyTask
    from attd_core.testing._factories import first_examples as first_examples
    from attd_core.testing._factories import task_batch as task_batch
    from attd_core.testing._factories import tiny_backbone as tiny_backbone
    from attd_core.testing._factories import tiny_bound_model as tiny_bound_model
    from attd_core.testing._factories import tiny_model as tiny_model


_LAZY_NAMES = lazy_exports(
    globals(),
    {
        "attd_core.testing._factories": (
            "ParityPlugin",
            "ParityTask",
            "TinyTask",
            "first_examples",
            "task_batch",
            "tiny_backbone",
            "tiny_bound_model",
            "tiny_model",
        ),
    },
)


__all__ = [
    "AdapterConformance",
    "BackboneConformance",
    "StrategyConformance",
    "TaskConformance",
    "attd_pm",
    "new_plugin_manager",
    *_LAZY_NAMES,
]
