"""attd-core's own plugins against the conformance suites of `attd_core.testing`."""

from __future__ import annotations

from attd_core.testing import (
    AdapterConformance,
    BackboneConformance,
    StrategyConformance,
    TaskConformance,
    new_plugin_manager,
    tiny_backbone,
)

CORE = new_plugin_manager()


class TestTinyTask(TaskConformance):
    splits = ("train", "validation", "test")

    def make_task(self):
        from attd_core.testing import TinyTask

        return TinyTask()


def tiny_task_with(spec):
    """TinyTask (tokens 1..11, padded batches) with another input spec."""
    from attd_core.testing import TinyTask

    task = TinyTask()
    task.input_spec = spec
    return task


class _TinyTaskSuite(TaskConformance):  # not collected: its name does not start with Test
    splits = ("train", "test")


def test_the_task_suite_fails_a_task_whose_real_tokens_use_the_pad_id():
    import pytest

    from attd_core import InputSpec

    task = tiny_task_with(InputSpec(vocab_size=12, pad_id=1))  # 1 is a real token too
    with pytest.raises(AssertionError, match="real tokens .* of split 'train' have the pad id 1"):
        _TinyTaskSuite().test_real_tokens_never_use_the_pad_id(task)


def test_the_task_suite_fails_a_task_whose_unknown_split_is_not_a_config_error():
    import pytest

    from attd_core.testing import TinyTask

    class RaisesValueError(TinyTask):
        def load_split(self, split):
            if split not in self.splits:
                raise ValueError(f"unknown split {split!r}")
            return super().load_split(split)

    class ServesAnyName(TinyTask):
        def load_split(self, split):
            return super().load_split("train")

    suite = _TinyTaskSuite()
    with pytest.raises(pytest.fail.Exception, match="must raise attd_core.ConfigError"):
        suite.test_an_undeclared_split_is_a_config_error(RaisesValueError())
    with pytest.raises(pytest.fail.Exception, match="returned data for a split not in"):
        suite.test_an_undeclared_split_is_a_config_error(ServesAnyName())
    suite.test_an_undeclared_split_is_a_config_error(TinyTask())


def test_no_pad_id_is_reserved_by_default_so_token_0_is_learned():

    from attd_core import InputSpec
    from attd_core.testing import TinyTask, tiny_model

    spec = InputSpec(vocab_size=12)
    assert spec.pad_id is None and spec.fill_id == 0
    embed = tiny_model(tiny_task_with(spec)).embed
    assert embed.padding_idx is None and bool(embed.weight[0].ne(0).any())
    padded = tiny_model(TinyTask()).embed  # TinyTask reserves 0 for padding
    assert padded.padding_idx == 0 and not bool(padded.weight[0].any())


# -- backbones ---------------------------------------------------------------------------


class TestMamba(BackboneConformance):
    def make_backbone(self):
        return tiny_backbone("mamba", n_layers=2)


class TestBidirectionalMamba(BackboneConformance):
    def make_backbone(self):
        return tiny_backbone("mamba", bidirectional=True)


class TestRMSNormMamba(BackboneConformance):
    def make_backbone(self):
        return tiny_backbone("mamba", norm="rms")


class TestTransformer(BackboneConformance):
    def make_backbone(self):
        return tiny_backbone("transformer")


class TestHybrid(BackboneConformance):
    def make_backbone(self):
        return tiny_backbone("hybrid")


# -- adapters ----------------------------------------------------------------------------


class TestDeltaSSM(AdapterConformance):
    def make_adapter(self):
        return CORE.create("adapter", "delta-ssm", {"rank": 2, "dt_bias": True, "D": True})


class TestDeltaSSMShared(AdapterConformance):
    def make_adapter(self):
        return CORE.create("adapter", "delta-ssm", {"rank": 2, "per_sample": False})


class TestLoRA(AdapterConformance):
    def make_adapter(self):
        return CORE.create("adapter", "lora", {"rank": 2})


class TestLoRAOnTheTransformer(AdapterConformance):
    def make_adapter(self):
        return CORE.create("adapter", "lora", {"rank": 2})

    def make_backbone(self):
        return tiny_backbone("transformer")


class TestStateOffset(AdapterConformance):
    def make_adapter(self):
        return CORE.create("adapter", "state-offset")


class TestNormAffine(AdapterConformance):
    def make_adapter(self):
        return CORE.create("adapter", "norm-affine")


class TestNormAffineOnRMSNormMamba(AdapterConformance):
    def make_adapter(self):
        return CORE.create("adapter", "norm-affine")

    def make_backbone(self):
        return tiny_backbone("mamba", norm="rms")


class TestNormAffineOnTheHybrid(AdapterConformance):
    def make_adapter(self):
        return CORE.create("adapter", "norm-affine")

    def make_backbone(self):
        return tiny_backbone("hybrid")


# -- strategies --------------------------------------------------------------------------


def strategy(text: str):
    from attd_core import parse_component

    return parse_component(text, "strategy", CORE).create()


class TestNone(StrategyConformance):
    def make_strategy(self):
        return strategy("none")


class TestFixed(StrategyConformance):
    def make_strategy(self):
        return strategy("fixed:2,lr=10,rollback=true")


class TestGate(StrategyConformance):
    def make_strategy(self):
        return strategy("gate:2,lr=10")


class TestAdaptiveQuantile(StrategyConformance):
    def make_strategy(self):
        return strategy("adaptive:3,controller=quantile,target_k=1,lr=10,optimizer=adam")


class TestAdaptiveThreshold(StrategyConformance):
    def make_strategy(self):
        return strategy("adaptive:2,lr=10")


class TestOracle(StrategyConformance):
    def make_strategy(self):
        return strategy("oracle:2,lr=10")


# -- the pytest plugin itself ------------------------------------------------------------


def test_pytest_loads_attd_core_testing_through_its_entry_point(pytestconfig):
    import attd_core.testing

    assert pytestconfig.pluginmanager.get_plugin("attd") is attd_core.testing


def test_attd_pm_holds_attd_core_built_ins_only(attd_pm):
    assert list(attd_pm.plugins) == ["core"]
    assert attd_pm.plugins["core"].distribution == "attd-core"
    assert attd_pm.names("task") == []
    assert attd_pm.names("pooling") == ["cls", "last", "masked-mean", "mean"]
    assert attd_pm is not new_plugin_manager()


def test_importing_attd_core_testing_imports_no_torch():
    import subprocess
    import sys

    probe = (
        "import sys, attd_core.testing as t; t.TaskConformance; t.attd_pm; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_importing_attd_core_testing_without_pytest_says_it_needs_pytest():
    import subprocess
    import sys

    probe = (
        "import sys; sys.modules['pytest'] = None\n"
        "try:\n    import attd_core.testing\nexcept ImportError as exc:\n    print(exc)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.startswith("attd_core.testing needs pytest"), result.stderr
