"""The pixels and patches encoders: exact tokens and floats on tiny known images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from attd_core import ConfigError, Encoder, InputSpec
from attd_vision import PIXEL_PAD_ID, PIXEL_VOCAB_SIZE, PatchesOptions, PixelsOptions
from attd_vision.encoders import PatchEncoder, PixelEncoder, build_encoder
from attd_vision.images import to_array

GRAY = np.array([[0, 10, 20], [30, 40, 255]], dtype=np.uint8)
PRIMARIES = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], np.uint8)
LUMA = [76, 150, 29, 255]  # PIL's ITU-R 601-2 luma of red, green, blue, white


def pixels(**options) -> PixelEncoder:
    return PixelEncoder(PixelsOptions(**options))


def patches(**options) -> PatchEncoder:
    return PatchEncoder(PatchesOptions(**options))


def test_integer_pixels_are_the_values_in_row_major_order():
    tokens, mask, metadata = pixels().encode(GRAY)
    assert tokens.dtype == torch.long and tokens.tolist() == [0, 10, 20, 30, 40, 255]
    assert mask.dtype == torch.bool and mask.tolist() == [True] * 6
    assert metadata == {"height": 2, "width": 3, "channels": 1, "image_size": (2, 3)}


def test_integer_pixels_have_a_pad_token_outside_the_values():
    spec = pixels().input_spec
    assert spec == InputSpec(vocab_size=PIXEL_VOCAB_SIZE, pad_id=PIXEL_PAD_ID)
    assert (PIXEL_VOCAB_SIZE, PIXEL_PAD_ID) == (257, 256)


def test_rgb_integer_pixels_interleave_the_channels():
    image = np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8)
    tokens, mask, metadata = pixels(color="rgb").encode(image)
    assert tokens.tolist() == [1, 2, 3, 4, 5, 6] and mask.shape == (6,)
    assert metadata == {"height": 1, "width": 2, "channels": 3, "image_size": (1, 2)}
    assert pixels(color="rgb").sequence_length(1, 2) == 6


def test_float_pixels_are_normalised_per_channel():
    tokens, _, _ = pixels(dtype="float").encode(np.array([[0, 51, 255]], dtype=np.uint8))
    assert tokens.dtype == torch.float32 and tokens.shape == (3, 1)
    torch.testing.assert_close(tokens[:, 0], torch.tensor([-1.0, -0.6, 1.0]))
    encoder = pixels(dtype="float", color="rgb", mean=[0.0, 0.5, 1.0], std=[1.0, 0.5, 0.25])
    tokens, _, metadata = encoder.encode(np.full((1, 2, 3), 255, dtype=np.uint8))
    assert encoder.input_spec == InputSpec(channels=3) and metadata["channels"] == 3
    torch.testing.assert_close(tokens, torch.tensor([[1.0, 1.0, 0.0]] * 2))


def test_rgb_becomes_gray_by_luma():
    for raw in (PRIMARIES, Image.fromarray(PRIMARIES)):
        tokens, _, metadata = pixels(color="grayscale").encode(raw)
        assert tokens.tolist() == LUMA and metadata["channels"] == 1


def test_gray_becomes_rgb_by_repeating_the_value():
    tokens, _, _ = pixels(color="rgb").encode(np.array([[100]], dtype=np.uint8))
    assert tokens.tolist() == [100, 100, 100]


def test_resize_to_a_side_or_to_height_and_width():
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    tokens, _, metadata = pixels(size=4).encode(image)
    assert tokens.shape == (16,) and (metadata["height"], metadata["width"]) == (4, 4)
    _, _, metadata = pixels(size=(2, 6), resample="nearest").encode(image)
    assert (metadata["height"], metadata["width"]) == (2, 6)
    uniform = np.full((5, 7), 90, dtype=np.uint8)
    assert pixels(size=3).encode(uniform)[0].tolist() == [90] * 9


def test_patches_are_row_major_and_flattened_row_major():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)  # value = 4 * row + column
    encoder = patches(patch_size=2, mean=0.0, std=1 / 255)
    tokens, mask, metadata = encoder.encode(image)
    assert tokens.shape == (4, 4) and mask.tolist() == [True] * 4
    expected = [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    torch.testing.assert_close(tokens, torch.tensor(expected, dtype=torch.float32))
    assert metadata == {
        "height": 4,
        "width": 4,
        "channels": 1,
        "patch_size": 2,
        "grid_height": 2,
        "grid_width": 2,
    }
    assert encoder.input_spec == InputSpec(channels=4) and encoder.sequence_length(4, 4) == 4


def test_rgb_patches_keep_channels_last_within_a_patch():
    image = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)
    encoder = patches(patch_size=2, color="rgb", mean=0.0, std=1 / 255)
    tokens, _, metadata = encoder.encode(image)
    assert tokens.shape == (2, 12) and encoder.input_spec == InputSpec(channels=12)
    first = np.concatenate([image[0, 0], image[0, 1], image[1, 0], image[1, 1]])
    second = np.concatenate([image[0, 2], image[0, 3], image[1, 2], image[1, 3]])
    torch.testing.assert_close(tokens, torch.tensor(np.stack([first, second]), dtype=torch.float32))
    assert (metadata["grid_height"], metadata["grid_width"]) == (1, 2)


def test_patches_must_tile_the_image():
    with pytest.raises(ConfigError, match="patch_size 4 does not divide the 6x8 image"):
        patches().encode(np.zeros((6, 8), dtype=np.uint8))
    assert patches(size=8).encode(np.zeros((6, 10), dtype=np.uint8))[0].shape == (4, 16)


def test_every_raw_form_gives_the_same_tokens(tmp_path):
    path = tmp_path / "primaries.png"
    Image.fromarray(PRIMARIES).save(path)
    forms = [
        PRIMARIES,
        PRIMARIES.tolist(),
        torch.from_numpy(PRIMARIES).permute(2, 0, 1),  # (C, H, W), as torch keeps images
        PRIMARIES.astype(np.float32) / 255,
        Image.fromarray(PRIMARIES),
        path,
        str(path),
        {"bytes": path.read_bytes(), "path": None},
        {"bytes": None, "path": str(path)},
    ]
    for raw in forms:
        assert pixels(color="rgb").encode(raw)[0].tolist() == PRIMARIES.reshape(-1).tolist()


def test_other_pil_modes_convert():
    palette = Image.fromarray(PRIMARIES).convert("P")
    assert pixels(color="rgb").encode(palette)[0].tolist() == PRIMARIES.reshape(-1).tolist()
    rgba = np.concatenate([PRIMARIES, np.full((2, 2, 1), 7, np.uint8)], axis=-1)
    assert pixels().encode(rgba)[0].tolist() == LUMA
    assert pixels().encode(np.array([[True, False]]))[0].tolist() == [255, 0]


def test_bad_images_are_config_errors_naming_the_problem(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"cannot read image '.*broken\.png'"):
        pixels().encode(broken)
    with pytest.raises(ConfigError, match=r"image file '.*missing\.png' not found"):
        pixels().encode(tmp_path / "missing.png")
    with pytest.raises(ConfigError, match="values must lie in 0..255, got 0..300"):
        pixels().encode(np.array([[0, 300]]))
    with pytest.raises(ConfigError, match=r"array of shape \(2, 2, 5\)"):
        pixels().encode(np.zeros((2, 2, 5)))
    with pytest.raises(ConfigError, match="not an image: ndarray of dtype <U1"):
        pixels().encode(np.array([["a"]]))
    with pytest.raises(ConfigError, match="neither bytes nor a path"):
        pixels().encode({"bytes": None, "path": None})


def test_a_truncated_png_is_unreadable(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(buffer, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[:40])  # the header, then nothing
    with pytest.raises(ConfigError, match="cut.png"):
        to_array(path)


def test_mean_and_std_take_one_value_or_one_per_channel():
    with pytest.raises(ValidationError, match="mean needs 1 value"):
        PixelsOptions(mean=[0.1, 0.2, 0.3])
    with pytest.raises(ValidationError, match="std must be positive"):
        PatchesOptions(color="rgb", std=[1.0, 0.0, 1.0])
    with pytest.raises(ValidationError, match="patch_size"):
        PatchesOptions(patch_size=0)
    assert PixelsOptions(color="rgb", mean=[0.1, 0.2, 0.3]).mean == [0.1, 0.2, 0.3]


def test_encoders_build_through_the_plugin_manager(manager):
    encoder = manager.create("encoder", "pixels", {"dtype": "float", "color": "rgb"})
    assert isinstance(encoder, PixelEncoder) and isinstance(encoder, Encoder)
    assert encoder.input_spec == InputSpec(channels=3)
    encoder = manager.create("encoder", "patches", {"patch_size": 2, "size": [4, 6]})
    assert isinstance(encoder, PatchEncoder) and isinstance(encoder, Encoder)
    assert encoder.encode(np.zeros((9, 9), np.uint8))[0].shape == (6, 4)


def test_build_encoder_gives_the_task_color_and_size_and_names_bad_options():
    encoder = build_encoder("patches", {"patch_size": 2}, color="rgb", size=4)
    assert encoder.input_spec == InputSpec(channels=12)
    with pytest.raises(ConfigError, match="invalid options for encoder 'pixels': dtype"):
        build_encoder("pixels", {"dtype": "half"})
