"""LRA Image: CIFAR-10 in grayscale, 32 x 32 read row-major as 1024 pixel tokens (10 classes).

attd-vision's `image-classification` with LRA's defaults: the Hub copy of CIFAR-10,
grayscale (PIL's ITU-R 601-2 luma), 32 x 32, integer pixel tokens 0..255 (or, with
`encoder_options.dtype=float`, normalised floats for a linear encoder as S4 uses), and a
seeded 5,000-image validation split carved from the 50,000 training images.
"""

from __future__ import annotations

from attd_core import PluginManager
from attd_tasks_lra.natural.options import LraImageOptions
from attd_vision import ImageClassificationTask


class LraImageTask(ImageClassificationTask):
    """CIFAR-10 (or a local image folder) as LRA's Image task."""

    def __init__(
        self, options: LraImageOptions | None = None, *, manager: PluginManager | None = None
    ) -> None:
        super().__init__(options or LraImageOptions(), manager=manager)
