"""Pixel-level test-time shifts in the spirit of ImageNet-C: noise, contrast, blur, occlusion;
and the augmentations the image task offers for augmented views: random crops and flips.

Like the token shifts of attd-core they act on a collated batch before the strategy sees
it, never touch labels, leave padded positions alone and draw all randomness from the
generator they are given. They need each sample's `(height, width)` in
`Batch.aux["image_size"]` (`IMAGE_SIZE_KEY`), which `collate_encoded` adds for the
`pixels` encoder, where every token is one pixel; patch batches are refused.

Inputs are read as `(height, width, channels)` images:

- integer tokens `(B, L)` hold values 0..255 (integer RGB interleaves the channels, so a
  sample has `height * width * channels` real tokens). The value range is 0..255: noise
  sigma is a fraction of 255 and results are rounded and clipped to 0..255.
- floats `(B, L, C)` are one pixel per token, normalised with a mean and std the shift
  does not know. Each image is worked on in its own value range, the min..max of its
  real values over all channels: noise sigma is a fraction of that range and results
  are clipped to it (an image of one value gets no noise).

Severity 1..5 picks one parameter from each shift's table (index severity - 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from attd_core import Batch, ConfigError
from attd_vision.options import IMAGE_SIZE_KEY, FlipOptions, PixelShiftOptions

NOISE_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)
"""gaussian-noise: std of the additive noise, as a fraction of the value range (ImageNet-C's)."""
CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)
"""contrast: each pixel moves to mean + factor * (pixel - mean), the image's per-channel
mean (CIFAR-10-C's factors: ImageNet-C's 0.4..0.05 all but erase small images)."""
BLUR_SIGMA = (0.5, 0.75, 1.0, 1.5, 2.0)
"""gaussian-blur: std in pixels of the separable Gaussian kernel (radius ceil(3 sigma),
replicate padding); between CIFAR-10-C's 0.4..1 and ImageNet-C's 1..6, for images of
about 8 to 64 pixels a side."""
OCCLUSION_AREA = (0.05, 0.1, 0.2, 0.35, 0.5)
"""occlusion: share of the image covered by one square (side round(sqrt(share * H * W)),
at least 1, at most min(H, W)) at a random position, filled with the image's per-channel
mean."""
CROP_SHIFT = (0.0625, 0.125, 0.1875, 0.25, 0.375)
"""random-crop: the largest translation per axis, as a share of that side (at least one
pixel): pad-and-crop augmentation, CIFAR's 4 pixels of 32 at severity 2."""


@dataclass
class _Group:
    """Samples of one geometry: `values` are their real pixels as `(n, H, W, C)` floats."""

    index: Tensor
    values: Tensor
    low: Tensor
    high: Tensor


class _PixelShift:
    name = "pixel"
    table: tuple[float, ...] = ()

    def __init__(self, options: PixelShiftOptions) -> None:
        self.options = options
        self.parameter = self.table[options.severity - 1]

    def apply(self, batch: Batch, generator: torch.Generator) -> Batch:
        """A copy of `batch` with every image's real pixels corrupted."""
        inputs = batch.inputs.cpu()
        mask = _mask(batch)
        integer = not inputs.is_floating_point()
        out = inputs.clone()
        for group in self._groups(inputs, mask, _image_sizes(batch, self.name), integer):
            shifted = self.corrupt(group.values, group, generator)
            shifted = torch.minimum(torch.maximum(shifted, group.low), group.high)
            if integer:
                shifted = shifted.round()
            rows, keep = out[group.index], mask[group.index]
            rows[keep] = shifted.reshape(-1, *inputs.shape[2:]).to(out.dtype)
            out[group.index] = rows
        return replace(batch, inputs=out.to(batch.inputs.device))

    def corrupt(self, images: Tensor, group: _Group, generator: torch.Generator) -> Tensor:
        """`(n, H, W, C)` float images to corrupted ones (clipped and rounded after)."""
        raise NotImplementedError

    def _groups(self, inputs: Tensor, mask: Tensor, sizes: Tensor, integer: bool) -> list[_Group]:
        if integer != (inputs.dim() == 2):
            raise ConfigError(
                f"shift {self.name!r} needs integer pixel tokens (B, L) or float pixels "
                f"(B, L, C); this task feeds {inputs.dtype} inputs of shape "
                f"{tuple(inputs.shape)}"
            )
        counts = mask.sum(dim=1).tolist()
        keys: dict[tuple[int, int, int], list[int]] = {}
        for row, (height, width) in enumerate(sizes.tolist()):
            pixels, count = height * width, counts[row]
            fits = height >= 1 and width >= 1 and count > 0
            if not fits or (count % pixels if integer else count != pixels):
                per_pixel = "a multiple of" if integer else "exactly"
                raise ConfigError(
                    f"shift {self.name!r} needs one token per pixel: sample {row} has "
                    f"{count} real tokens, not {per_pixel} its {height}x{width} pixels "
                    f"(aux[{IMAGE_SIZE_KEY!r}]); use the `pixels` encoder"
                )
            keys.setdefault((height, width, count), []).append(row)
        groups = []
        compute = inputs.dtype if inputs.dtype == torch.float64 else torch.float32
        for (height, width, _), rows in keys.items():
            index = torch.tensor(rows, dtype=torch.long)
            real = inputs[index][mask[index]].to(compute)
            values = real.reshape(len(rows), height, width, -1)
            if integer:
                low = torch.zeros(len(rows), 1, 1, 1, dtype=compute)
                high = torch.full_like(low, 255.0)
            else:
                flat = values.reshape(len(rows), -1)
                low = flat.min(dim=1).values.reshape(-1, 1, 1, 1)
                high = flat.max(dim=1).values.reshape(-1, 1, 1, 1)
            groups.append(_Group(index=index, values=values, low=low, high=high))
        return groups


class GaussianNoise(_PixelShift):
    """Adds Gaussian noise of std NOISE_SIGMA[severity - 1] times the value range."""

    name = "gaussian-noise"
    table = NOISE_SIGMA

    def corrupt(self, images: Tensor, group: _Group, generator: torch.Generator) -> Tensor:
        noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
        return images + noise * self.parameter * (group.high - group.low)


class Contrast(_PixelShift):
    """Blends each image toward its per-channel mean by CONTRAST_FACTOR[severity - 1]."""

    name = "contrast"
    table = CONTRAST_FACTOR

    def corrupt(self, images: Tensor, group: _Group, generator: torch.Generator) -> Tensor:
        mean = images.mean(dim=(1, 2), keepdim=True)
        return mean + self.parameter * (images - mean)


class GaussianBlur(_PixelShift):
    """Blurs each channel with a separable Gaussian of std BLUR_SIGMA[severity - 1] pixels."""

    name = "gaussian-blur"
    table = BLUR_SIGMA

    def corrupt(self, images: Tensor, group: _Group, generator: torch.Generator) -> Tensor:
        n, height, width, channels = images.shape
        radius = max(1, math.ceil(3 * self.parameter))
        offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
        kernel = torch.exp(-(offsets**2) / (2 * self.parameter**2))
        kernel = kernel / kernel.sum()
        planes = images.permute(0, 3, 1, 2).reshape(n * channels, 1, height, width)
        planes = F.pad(planes, (radius, radius, radius, radius), mode="replicate")
        planes = F.conv2d(planes, kernel.reshape(1, 1, 1, -1))
        planes = F.conv2d(planes, kernel.reshape(1, 1, -1, 1))
        return planes.reshape(n, channels, height, width).permute(0, 2, 3, 1)


class Occlusion(_PixelShift):
    """Covers OCCLUSION_AREA[severity - 1] of each image with one mean-filled square."""

    name = "occlusion"
    table = OCCLUSION_AREA

    def side(self, height: int, width: int) -> int:
        """The square's side on a `height x width` image."""
        side = round(math.sqrt(self.parameter * height * width))
        return min(max(side, 1), height, width)

    def corrupt(self, images: Tensor, group: _Group, generator: torch.Generator) -> Tensor:
        n, height, width, _ = images.shape
        side = self.side(height, width)
        top = torch.randint(height - side + 1, (n, 1, 1), generator=generator)
        left = torch.randint(width - side + 1, (n, 1, 1), generator=generator)
        rows = torch.arange(height).reshape(1, -1, 1)
        cols = torch.arange(width).reshape(1, 1, -1)
        inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        mean = images.mean(dim=(1, 2), keepdim=True).expand_as(images)
        return torch.where(inside[..., None], mean, images)


class RandomCrop(_PixelShift):
    """Translates each image by a random offset of up to CROP_SHIFT[severity - 1] of each
    side (pad with the edge pixels, then crop back to the image's size)."""

    name = "random-crop"
    table = CROP_SHIFT

    def reach(self, side: int) -> int:
        """The largest translation along a side of `side` pixels."""
        return min(max(round(self.parameter * side), 1), side - 1) if side > 1 else 0

    def corrupt(self, images: Tensor, group: _Group, generator: torch.Generator) -> Tensor:
        n, height, width, _ = images.shape
        rows = _translated(height, self.reach(height), n, generator)
        cols = _translated(width, self.reach(width), n, generator)
        picked = images.gather(1, rows[:, :, None, None].expand(-1, -1, width, images.shape[3]))
        return picked.gather(2, cols[:, None, :, None].expand(-1, height, -1, images.shape[3]))


class Flip(_PixelShift):
    """Mirrors each image left to right with probability `probability`."""

    name = "flip"

    def __init__(self, options: FlipOptions) -> None:
        self.options = options

    def corrupt(self, images: Tensor, group: _Group, generator: torch.Generator) -> Tensor:
        flipped = torch.rand(len(images), generator=generator) < self.options.probability
        return torch.where(flipped[:, None, None, None], images.flip(2), images)


def _translated(side: int, reach: int, count: int, generator: torch.Generator) -> Tensor:
    """`(count, side)` source indices of a translation by -reach..reach, edges repeated."""
    offsets = torch.randint(-reach, reach + 1, (count, 1), generator=generator)
    return (torch.arange(side).unsqueeze(0) - offsets).clamp(0, side - 1)


def _mask(batch: Batch) -> Tensor:
    if batch.mask is None:
        return torch.ones(batch.inputs.shape[:2], dtype=torch.bool)
    return batch.mask.cpu().bool()


def _image_sizes(batch: Batch, name: str) -> Tensor:
    """The batch's `(B, 2)` `(height, width)`, or a ConfigError saying what is missing."""
    sizes = batch.aux.get(IMAGE_SIZE_KEY)
    if sizes is None:
        raise ConfigError(
            f"shift {name!r} needs each image's height and width in "
            f"Batch.aux[{IMAGE_SIZE_KEY!r}], and this task's batches have none: pixel "
            "shifts work on one token per pixel, so use the `pixels` encoder (patch "
            "encoders give none), or a task that sets it (attd_vision.collate_encoded)"
        )
    sizes = torch.as_tensor(sizes).cpu()
    if tuple(sizes.shape) != (len(batch), 2):
        raise ConfigError(
            f"shift {name!r} needs Batch.aux[{IMAGE_SIZE_KEY!r}] as a ({len(batch)}, 2) "
            f"tensor of (height, width); got shape {tuple(sizes.shape)}"
        )
    return sizes.long()
