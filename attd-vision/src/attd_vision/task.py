"""The `image-classification` task: one label per image, images encoded as sequences."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attd_core import Batch, ClassificationTask, ConfigError, InputSpec, PluginManager
from attd_vision.collate import collate_encoded
from attd_vision.data import SPLITS, LoadedImages, load_images, source_kind
from attd_vision.encoders import ENCODER_CLASSES, build_encoder
from attd_vision.images import image_size, is_grayscale, to_array
from attd_vision.options import ImageClassificationOptions

PIXEL_AUGMENTATIONS = ("random-crop:2", "gaussian-noise:1")
"""The image task's augmentations for `memo` with the `pixels` encoder (see
`ImageClassificationTask.augmentations`)."""


class ImageClassificationTask(ClassificationTask):
    """Images from `digits`, a local folder or the Hub, as pixel or patch sequences.

    Data load on first use (`load_split`, `num_classes`, or `input_spec` when it depends
    on the data's color), so building the task is cheap and a bad dataset fails there.
    `manager` (passed by `PluginManager.create`) builds an encoder that is a plugin.
    """

    def __init__(
        self,
        options: ImageClassificationOptions | None = None,
        *,
        manager: PluginManager | None = None,
    ) -> None:
        self.options = options or ImageClassificationOptions()
        self._manager = manager
        self._loaded: LoadedImages | None = None
        self._encoder: Any = None
        self._color: str | None = None

    # -- data ------------------------------------------------------------------------

    @property
    def data(self) -> LoadedImages:
        if self._loaded is None:
            self._loaded = load_images(self.options)
        return self._loaded

    def load_split(self, split: str) -> Any:
        """A `datasets.Dataset` with the image and label columns (and whatever else)."""
        if split not in SPLITS:
            raise ConfigError(
                f"image-classification has no split {split!r}; splits: {', '.join(SPLITS)}"
            )
        return self.data.splits[split]

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return self.data.num_classes

    @property
    def label_names(self) -> list[str] | None:
        """Class names (folder names, ClassLabel names), when the data have them."""
        return self.data.label_names

    # -- encoding --------------------------------------------------------------------

    @property
    def color(self) -> str:
        """grayscale or rgb; `auto` looks at the first training image (digits: grayscale)."""
        if self._color is None:
            if self.options.color != "auto":
                self._color = self.options.color
            elif source_kind(self.options.dataset) == "digits":
                self._color = "grayscale"
            else:
                train = self.load_split("train")
                first = train[0][self.data.image_column] if len(train) else None
                self._color = (
                    "rgb" if first is not None and not is_grayscale(first) else "grayscale"
                )
        return self._color

    @property
    def encoder(self) -> Any:
        """The built encoder (`pixels`, `patches` or an `encoder` plugin)."""
        if self._encoder is None:
            options = self.options
            self._encoder = build_encoder(
                options.encoder,
                options.encoder_options,
                color=self.color,
                size=options.image_size,
                resample=options.resample,
                manager=self._manager,
            )
        return self._encoder

    @property
    def augmentations(self) -> tuple[str, ...]:
        """What the `memo` objective's views apply: a translation of a few pixels and
        mild noise, for the `pixels` encoder (pixel shifts need one token per pixel);
        none for other encoders. `flip` is left out: digits, the default data, are not
        mirror-symmetric; name it in `memo`'s `augmentations` for natural images."""
        return PIXEL_AUGMENTATIONS if self.options.encoder == "pixels" else ()

    @property
    def input_spec(self) -> InputSpec:  # type: ignore[override]
        return self.encoder.input_spec

    @property
    def sequence_length(self) -> Callable[[dict[str, Any]], int] | None:
        """Tokens of an example, read from its image's header, where sizes can vary.

        None (so the runtime batches without measuring) when every image has one size
        (`image_size` set, or digits) or when a plugin encoder cannot say.
        """
        fixed = self.options.image_size is not None or source_kind(self.options.dataset) == "digits"
        measure = getattr(self.encoder, "sequence_length", None)
        if fixed or measure is None or self.options.encoder not in ENCODER_CLASSES:
            return None
        column = self.data.image_column

        def length(example: dict[str, Any]) -> int:
            return measure(*image_size(example[column]))

        return length

    def export_record(self, example: dict[str, Any]) -> dict[str, Any]:
        """One example as JSON-ready data for `attd data export`, the pixels the task
        encodes (color and size applied): `{"pixels": [row-major ints 0..255], "label",
        "height", "width", "channels"}`; RGB interleaves the channels of each pixel."""
        options = self.options
        pixels = to_array(
            example[self.data.image_column], self.color, options.image_size, options.resample
        )
        height, width, channels = pixels.shape
        return {
            "pixels": pixels.reshape(-1).tolist(),
            "label": int(example[self.data.label_column]),
            "height": int(height),
            "width": int(width),
            "channels": int(channels),
        }

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> Batch:
        image_column, label_column = self.data.image_column, self.data.label_column
        encoder = self.encoder
        if self.options.encoder in ENCODER_CLASSES:
            images = [row[image_column] for row in raw_batch]
        else:  # a plugin encoder gets (H, W, C) uint8 arrays in the task's color and size
            options = self.options
            images = [
                to_array(row[image_column], self.color, options.image_size, options.resample)
                for row in raw_batch
            ]
        encoded = [encoder.encode(image) for image in images]
        labels = [int(row[label_column]) for row in raw_batch]
        spec = encoder.input_spec
        pad_value = spec.fill_id if spec.vocab_size is not None else 0.0
        return collate_encoded(encoded, labels, pad_value=pad_value)
