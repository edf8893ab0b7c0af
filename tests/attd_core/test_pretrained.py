"""Pretrained Mamba weights keep their meaning: the RMSNorm option, and loading
transformers and mamba-ssm checkpoints whose output matches the source model's.

transformers is needed only to build the reference models (small, random, saved to disk:
nothing is downloaded); mamba-ssm needs CUDA, so its layout is written by renaming keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from attd_core import CheckpointError, ConfigError, MambaBackbone, load_pretrained_mamba
from attd_core.adapters.norm_affine import NormAffineAdapter
from attd_core.backbones.slots import delta_layer_norm
from attd_core.options import MambaOptions, NormAffineOptions
from attd_core.runtime.config import resolve_run_config
from attd_core.testing import ParityPlugin, ParityTask, new_plugin_manager, tiny_model

D_MODEL, N_LAYERS, D_STATE, VOCAB = 32, 2, 8, 50
SHAPE = {"d_model": D_MODEL, "n_layers": N_LAYERS, "d_state": D_STATE}
TRANSFORMERS_CONFIG = {
    "model_type": "mamba",
    "hidden_size": D_MODEL,
    "num_hidden_layers": N_LAYERS,
    "state_size": D_STATE,
    "vocab_size": VOCAB,
}
EPS = 1e-5


def inputs(length: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, length, D_MODEL, generator=torch.Generator().manual_seed(seed))


def rms_formula(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * weight


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter moved off its initial value (norm scales start at 1, conv biases
    at 0), so a loader that drops or misplaces one changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("A_log"):
                continue  # keep the modes decaying
            param.add_(0.2 * torch.randn(param.shape, generator=gen))
    return module.eval()


def attd_backbone(seed: int = 0, **options: Any) -> MambaBackbone:
    torch.manual_seed(seed)
    return randomised(MambaBackbone(MambaOptions(**{**SHAPE, **options})), seed)


def write_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def mamba_ssm_checkpoint(
    folder: Path, backbone_weights: dict, embedding: torch.Tensor, **extra: Any
) -> Path:
    """A `MambaLMHeadModel` state dict as mamba-ssm names it, its vocabulary padded to 8."""
    rows = -(-VOCAB // 8) * 8
    padded = torch.cat([embedding, torch.zeros(rows - VOCAB, D_MODEL)])
    tensors = {f"backbone.{key}": value for key, value in backbone_weights.items()}
    tensors |= {"backbone.embedding.weight": padded, "lm_head.weight": padded.clone()}
    mixer = {"d_state": D_STATE}
    config = {"d_model": D_MODEL, "n_layer": N_LAYERS, "vocab_size": VOCAB, "ssm_cfg": mixer}
    return write_checkpoint(folder, tensors, config | extra)


def attd_checkpoint(folder: Path, **config: Any) -> tuple[Path, MambaBackbone, torch.Tensor]:
    """A transformers-layout checkpoint written from an attd RMSNorm backbone."""
    backbone = attd_backbone(norm="rms")
    config = TRANSFORMERS_CONFIG | config
    rows = config["vocab_size"]
    embedding = torch.randn(rows, D_MODEL, generator=torch.Generator().manual_seed(4))
    tensors = {**backbone.state_dict(), "embeddings.weight": embedding}
    return write_checkpoint(folder, tensors, config), backbone, embedding


@pytest.fixture
def hf_mamba(tmp_path: Path):
    """A random transformers `MambaForCausalLM` saved with `save_pretrained`, and its model."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.MambaConfig(
        vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, state_size=D_STATE
    )
    model = randomised(transformers.MambaForCausalLM(config))
    model.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf", model


# -- the norm option ---------------------------------------------------------------------


def test_layer_norm_stays_the_default():
    backbone = MambaBackbone(MambaOptions(**SHAPE))
    assert all(isinstance(layer.norm, torch.nn.LayerNorm) for layer in backbone.layers)
    assert isinstance(backbone.norm_f, torch.nn.LayerNorm)
    assert "norm_f.bias" in backbone.adapter_slots()


def test_rms_norm_scales_by_the_root_mean_square_with_adapter_deltas():
    norm = attd_backbone(norm="rms").norm_f
    assert isinstance(norm, torch.nn.RMSNorm)
    x = inputs()
    shared = torch.randn(D_MODEL)
    per_sample = torch.randn(2, D_MODEL)
    torch.testing.assert_close(norm(x), rms_formula(x, norm.weight))
    torch.testing.assert_close(
        delta_layer_norm(x, norm, {"norm_f.weight": shared}, "norm_f"),
        rms_formula(x, norm.weight + shared),
    )
    torch.testing.assert_close(
        delta_layer_norm(x, norm, {"norm_f.weight": per_sample}, "norm_f"),
        rms_formula(x, (norm.weight + per_sample).unsqueeze(1)),
    )


def test_an_rms_norm_has_a_scale_slot_and_no_bias_slot():
    backbone = attd_backbone(norm="rms")
    slots = backbone.adapter_slots()
    norms = sorted(name for name, slot in slots.items() if slot.kind.startswith("norm_"))
    assert norms == ["layers.0.norm.weight", "layers.1.norm.weight", "norm_f.weight"]
    state = NormAffineAdapter(NormAffineOptions()).init_state(backbone, batch_size=2)
    assert sorted(state) == norms
    with pytest.raises(ValueError, match="'norm_f.bias' names no slot"):
        backbone(inputs(), adapter_state={"norm_f.bias": torch.zeros(D_MODEL)})


# -- loading -----------------------------------------------------------------------------


def test_a_transformers_checkpoint_gives_the_source_models_output(hf_mamba):
    folder, model = hf_mamba
    loaded = load_pretrained_mamba(folder)
    x = inputs()
    with torch.no_grad():
        expected = model.backbone(inputs_embeds=x).last_hidden_state
        torch.testing.assert_close(loaded.backbone.eval()(x), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(loaded.embedding, model.backbone.embeddings.weight)
    assert isinstance(loaded.backbone.norm_f, torch.nn.RMSNorm)
    # The same weights read as LayerNorm scales (the old meaning) give another model.
    as_layer_norm = MambaBackbone(MambaOptions(**SHAPE, dt_rank=2)).eval()
    as_layer_norm.load_state_dict(loaded.backbone.state_dict(), strict=False)
    with torch.no_grad():
        assert (as_layer_norm(x) - expected).abs().max() > 1e-2


def test_a_bare_transformers_mamba_model_loads_too(hf_mamba, tmp_path):
    _, model = hf_mamba
    model.backbone.save_pretrained(tmp_path / "bare")  # keys without `backbone.`
    loaded = load_pretrained_mamba(tmp_path / "bare")
    x = inputs(length=5, seed=2)
    with torch.no_grad():
        expected = model.backbone(inputs_embeds=x).last_hidden_state
        torch.testing.assert_close(loaded.backbone.eval()(x), expected, rtol=1e-5, atol=1e-5)


def test_a_mamba_ssm_checkpoint_gives_the_source_models_output(hf_mamba, tmp_path):
    _, model = hf_mamba
    weights = {k: v for k, v in model.backbone.state_dict().items() if k != "embeddings.weight"}
    embedding = model.backbone.embeddings.weight.detach()
    folder = mamba_ssm_checkpoint(tmp_path / "ssm", weights, embedding)
    loaded = load_pretrained_mamba(folder)
    x = inputs()
    with torch.no_grad():
        expected = model.backbone(inputs_embeds=x).last_hidden_state
        torch.testing.assert_close(loaded.backbone.eval()(x), expected, rtol=1e-5, atol=1e-5)
    assert loaded.embedding.shape == (56, D_MODEL)  # mamba-ssm pads the vocabulary to 8
    assert torch.equal(loaded.embedding[:VOCAB], embedding)


def test_a_mamba_ssm_layer_norm_checkpoint_loads_as_layer_norm(tmp_path):
    source = attd_backbone(norm="layer")
    embedding = torch.randn(VOCAB, D_MODEL)
    folder = mamba_ssm_checkpoint(tmp_path / "ssm", source.state_dict(), embedding, rms_norm=False)
    loaded = load_pretrained_mamba(folder)
    assert isinstance(loaded.backbone.norm_f, torch.nn.LayerNorm)
    with torch.no_grad():
        assert torch.equal(loaded.backbone.eval()(inputs()), source(inputs()))


def test_the_run_config_reaches_a_checkpoint_and_the_model_takes_its_embedding(tmp_path):
    folder, source, _ = attd_checkpoint(tmp_path / "ckpt", vocab_size=3)  # parity's vocabulary
    manager = new_plugin_manager()
    manager.add_plugin(ParityPlugin(), name="parity")
    resolved = resolve_run_config(
        manager, task="parity", overrides=[f"model.backbone.pretrained={folder}"]
    )
    recorded = resolved.to_yaml_dict()["model"]["backbone"]
    assert recorded["d_model"] == D_MODEL and recorded["norm"] == "rms"
    assert recorded["dt_rank"] == 2 and recorded["pretrained"] == str(folder)
    backbone = resolved.backbone.create()
    model = tiny_model(task=ParityTask(), backbone=backbone)
    with torch.no_grad():
        assert torch.equal(backbone.eval()(inputs()), source(inputs()))
    assert torch.equal(model.embed.weight, backbone.pretrained_embedding)


def test_a_sharded_checkpoint_loads_from_its_index(tmp_path):
    folder, source, embedding = attd_checkpoint(tmp_path / "ckpt")
    tensors = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    shards = {"a.safetensors": {}, "b.safetensors": {}}
    for index, (key, tensor) in enumerate(sorted(tensors.items())):
        shards["ab"[index % 2] + ".safetensors"][key] = tensor
    for name, shard in shards.items():
        save_file(shard, str(folder / name))
    weight_map = {key: name for name, shard in shards.items() for key in shard}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = load_pretrained_mamba(folder)
    assert torch.equal(loaded.embedding, embedding)
    with torch.no_grad():
        assert torch.equal(loaded.backbone.eval()(inputs()), source(inputs()))


def test_shape_options_must_agree_with_the_checkpoint(tmp_path):
    folder, _, _ = attd_checkpoint(tmp_path / "ckpt")
    options = MambaOptions(pretrained=str(folder), scan_backend="reference")
    assert (options.d_model, options.n_layers, options.d_state) == (D_MODEL, N_LAYERS, D_STATE)
    with pytest.raises(ValidationError, match="d_model=64 disagrees with pretrained"):
        MambaOptions(pretrained=str(folder), d_model=64)
    with pytest.raises(ValidationError, match="bidirectional"):
        MambaOptions(pretrained=str(folder), bidirectional=True)


def test_a_relative_checkpoint_path_is_recorded_absolute(tmp_path, monkeypatch):
    folder, _, _ = attd_checkpoint(tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path)
    assert MambaOptions(pretrained="ckpt").pretrained == str(folder.resolve())


# -- refusals ----------------------------------------------------------------------------


def test_a_pickled_checkpoint_is_refused_by_name(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TRANSFORMERS_CONFIG))
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: a pickled checkpoint"):
        load_pretrained_mamba(folder)
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: a pickled checkpoint"):
        load_pretrained_mamba(folder / "pytorch_model.bin")


def rewrite(folder: Path, edit) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop("layers.1.mixer.D"), r"no tensor for 'layers\.1\.mixer\.D'"),
        (lambda t: t.update(extra=torch.zeros(1)), r"tensor 'extra' has no place"),
        (
            lambda t: t.update({"layers.0.mixer.D": torch.zeros(3)}),
            r"'layers\.0\.mixer\.D' has shape \(3,\), while its config\.json makes it \(64,\)",
        ),
        (lambda t: t.pop("embeddings.weight"), r"no token embedding"),
    ],
    ids=["missing", "unknown", "shape", "no-embedding"],
)
def test_weights_that_do_not_map_are_refused_with_the_key(tmp_path, edit, message):
    folder, _, _ = attd_checkpoint(tmp_path / "ckpt")
    rewrite(folder, edit)
    with pytest.raises(CheckpointError, match=message):
        load_pretrained_mamba(folder)


@pytest.mark.parametrize(
    "layout, config, message",
    [
        ("transformers", {"use_bias": True}, "use_bias=True is not supported"),
        ("transformers", {"model_type": "mamba2"}, "model_type 'mamba2'"),
        ("mamba-ssm", {"ssm_cfg": {"layer": "Mamba2"}}, "ssm_cfg.layer='Mamba2'"),
        ("mamba-ssm", {"attn_layer_idx": [1]}, "attn_layer_idx=\\[1\\]"),
        ("mamba-ssm", {"new_feature": 1}, "unknown key new_feature"),
    ],
)
def test_options_attd_lacks_are_refused_with_the_key(tmp_path, layout, config, message):
    if layout == "transformers":
        folder, _, _ = attd_checkpoint(tmp_path / "ckpt", **config)
    else:
        backbone = attd_backbone(norm="rms")
        embedding = torch.zeros(VOCAB, D_MODEL)
        folder = mamba_ssm_checkpoint(tmp_path / "ssm", backbone.state_dict(), embedding)
        stored = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(stored | config))
    with pytest.raises(ConfigError, match=message):
        load_pretrained_mamba(folder)


def test_a_folder_without_config_or_weights_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        load_pretrained_mamba(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_pretrained_mamba(tmp_path / "empty")
    folder, _, _ = attd_checkpoint(tmp_path / "ckpt")
    (folder / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json: missing"):
        load_pretrained_mamba(folder)


def test_an_embedding_of_another_vocabulary_is_not_taken_and_says_so(tmp_path):
    folder, _, _ = attd_checkpoint(tmp_path / "ckpt", vocab_size=7)  # parity has 3 tokens
    backbone = load_pretrained_mamba(folder).backbone
    with pytest.warns(UserWarning, match="trained from scratch"):
        model = tiny_model(task=ParityTask(), backbone=backbone)
    assert model.embed.weight.shape[0] == 3
