"""attd-vision's registrations: light, so `attd list-plugins` imports no torch, datasets,
PIL or scikit-learn (the factories are imported only when a component is used)."""

from __future__ import annotations

from collections.abc import Callable

from attd_core import EncoderSpec, ObjectiveSpec, PluginSpec, ShiftSpec, TaskSpec, hookimpl
from attd_vision.options import (
    FlipOptions,
    ImageClassificationOptions,
    PatchesOptions,
    PixelShiftOptions,
    PixelsOptions,
    RotationOptions,
)

SPECS: tuple[PluginSpec, ...] = (
    EncoderSpec(
        name="pixels",
        summary="Image to a row-major pixel sequence: tokens 0..255 or normalised floats",
        factory="attd_vision.encoders:PixelEncoder",
        config=PixelsOptions,
    ),
    EncoderSpec(
        name="patches",
        summary="Image to non-overlapping P x P patches, flattened to float vectors",
        factory="attd_vision.encoders:PatchEncoder",
        config=PatchesOptions,
    ),
    ObjectiveSpec(
        name="rotation",
        summary="Predict each image's quarter turn (TTT's head; train.regime=aligned)",
        factory="attd_vision.rotation:Rotation",
        config=RotationOptions,
    ),
    TaskSpec(
        name="image-classification",
        summary="Classify images (digits 8x8 by default, an image folder or a Hub dataset)",
        factory="attd_vision.task:ImageClassificationTask",
        config=ImageClassificationOptions,
        # Digits as 64 pixel tokens: lr 1e-3 for 1 epoch stays near chance (13%). At lr
        # 0.01, 10 epochs reach ~91% and 20 epochs ~93% test accuracy (loss ~0.003; lr
        # 0.02 diverges, 0.005 or larger batches or more weight decay do no better), and
        # 20 epochs train in ~30 s on 2 CPU cores: about a minute for the whole run.
        run_defaults={"train.epochs": 20, "train.lr": 0.01},
    ),
    ShiftSpec(
        name="gaussian-noise",
        summary="Add Gaussian noise to each image's pixels (pixels encoder)",
        factory="attd_vision.shifts:GaussianNoise",
        config=PixelShiftOptions,
    ),
    ShiftSpec(
        name="contrast",
        summary="Lower each image's contrast toward its mean (pixels encoder)",
        factory="attd_vision.shifts:Contrast",
        config=PixelShiftOptions,
    ),
    ShiftSpec(
        name="gaussian-blur",
        summary="Blur each image with a Gaussian kernel (pixels encoder)",
        factory="attd_vision.shifts:GaussianBlur",
        config=PixelShiftOptions,
    ),
    ShiftSpec(
        name="occlusion",
        summary="Cover a square of each image with its mean color (pixels encoder)",
        factory="attd_vision.shifts:Occlusion",
        config=PixelShiftOptions,
    ),
    ShiftSpec(
        name="random-crop",
        summary="Translate each image a few pixels, edges repeated (pixels encoder)",
        factory="attd_vision.shifts:RandomCrop",
        config=PixelShiftOptions,
    ),
    ShiftSpec(
        name="flip",
        summary="Mirror images left to right at random (pixels encoder)",
        factory="attd_vision.shifts:Flip",
        config=FlipOptions,
    ),
)


@hookimpl
def attd_register(register: Callable[[PluginSpec], None]) -> None:
    for spec in SPECS:
        register(spec)
