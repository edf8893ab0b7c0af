"""Pathfinder / Path-X image generator: a re-implementation of drewlinsley/pathfinder.

The official archive cannot be downloaded everywhere, so the images are regenerated with the
algorithm of ``snakes2.py`` as specs/lra.md describes it: two target contours of dashes, short
distractor contours, and two marker discs that lie on the same target contour (label 1) or on
different ones (label 0).

Speed comes from doing all geometry once per parameter set (`_tables`): every dash the
algorithm can draw starts on a pixel and points in one of a finite set of directions (360
whole degrees for a contour's first dash, the directions to the candidate end points on a
pixel circle for the others), so its anti-aliased image and its occupancy footprints are
precomputed stamps (numpy). Most attempts at the two target contours fail (at 32x32 with 14
dashes, about 1 in 25 succeeds), so the hot loop is the occupancy test, done on Python ints
used as bit sets. Only numpy is needed.

Image ``i`` of a config is a pure function of ``(seed, i)``: its random stream is
``np.random.default_rng([seed, i])``, so any split of the indices over processes gives the
same arrays.
"""

from __future__ import annotations

import math
import os
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext

import numpy as np

from attd_tasks_lra.pathfinder.config import PathfinderGeneratorConfig, ResolvedParameters

SEED_DIRECTIONS = 360
"""A contour's first dash points in a whole number of degrees, as in the original."""
SEGMENT_TRIES = 3
"""Draws of a dash before its contour fails: one try and two retries."""
DISTRACTOR_TRIES = 5
"""Attempts at each distractor contour: one try and four retries."""
MIN_FREE_FRACTION = 0.01
"""Distractors stop once less than this fraction of the image is unoccupied."""
MAX_PAIR_ATTEMPTS = 50_000
"""Attempts at the two target contours before an image is declared impossible."""
_SUBSAMPLES = 8
"""Coverage is measured on an 8 x 8 sub-grid per pixel: the spec's drawing at 2x resolution
then downsampling, with each 2x pixel itself anti-aliased (4 x 4 samples). Sampling the 2x
grid alone puts a 0.5-pixel-wide dash's edges exactly on sample points when it is axis-aligned
and lights it fully or not at all."""
_MAX_MEMO = 20_000
"""Entries kept by `_free_turns` (about 10 MB at most) before it starts afresh."""
_KEPT_TABLES = 4
"""Parameter sets whose tables a process keeps."""
_MIN_COVERAGE = 1 / 8
"""Slivers of a pixel under this coverage are not drawn: every lit pixel is part of a dash's
occupancy footprint, and slivers would fatten footprints with pixels nobody can see."""


# ---------------------------------------------------------------------------------------------
# Geometry tables
#
# Positions are flat indices into a canvas: the image with `pad` pixels on every side, so that
# every stamp drawn from a pixel of the image fits. Occupancy is kept as Python ints used as
# bit sets (bit i = canvas pixel i): testing or adding a dash's footprint is one shift and one
# bitwise operation on a few hundred machine words, where numpy would spend a microsecond per
# call on arrays this small, and an image takes a few hundred such steps.


@dataclass(frozen=True)
class _Tables:
    """Stamps and lookup tables for one parameter set.

    A dash is identified by a direction index k: k < SEED_DIRECTIONS is a contour's first
    dash, pointing k - 180 degrees from its start (its tail); k = SEED_DIRECTIONS + c is a
    later dash whose end point is candidate c around the pivot, drawn from there back towards
    the pivot, as in the original.
    """

    params: ResolvedParameters
    side: int
    pad: int
    inner: np.ndarray  # flat indices of the image's pixels, row-major
    image_bits: int  # the image's pixels
    border: int  # the padding and the canvas beyond: occupied from the start
    border_wide: int  # the same, dilated by the margin disc
    origin: int  # a stamp's bits start `origin` pixels before the dash's start pixel
    occupied: tuple[int, ...]  # per k: footprint, the pixels within the margin of the dash
    wide: tuple[int, ...]  # per k: footprint dilated by the margin disc
    lit: tuple[np.ndarray, ...]  # per k: flat offsets of the pixels the dash lights
    intensity: tuple[np.ndarray, ...]  # per k: their values, gain * coverage clipped to 1
    marker: tuple[np.ndarray, np.ndarray]  # flat offsets and coverage of a marker disc
    # Candidate end points lie within `reach` = length + margin rows and columns of the pivot,
    # so within bits pivot - window ... pivot + window of the canvas: (wide >> (pivot -
    # window)) & window_mask holds them all.
    window: int
    window_mask: int
    # Per k, (bit, c, weight) of the candidates the next dash may turn to (weight > 0): the
    # end point's bit in that window, and its continuity weight; and all their bits.
    turns: tuple[tuple[tuple[int, int, float], ...], ...]
    cone: tuple[int, ...]
    candidates: tuple[int, ...]  # per c: flat offset of the end point from the pivot
    step: tuple[int, ...]  # per k: how far the pivot moves (a seed's: from its tail)
    # (k, blocked cone bits) -> the free candidates' cumulative weights and indices.
    choices: dict[tuple[int, int], tuple[list[float], list[int]]] = field(
        default_factory=dict, compare=False
    )


def _disc(radius: float) -> np.ndarray:
    """Boolean disc of whole pixels within `radius` of the centre (the dilation kernel)."""
    r = math.floor(radius)
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= radius * radius


def _dilate(masks: np.ndarray, radius: int) -> np.ndarray:
    """Dilate the last two axes of a boolean stack by a disc (nothing enters from outside)."""
    out = masks.copy()
    height, width = masks.shape[-2:]
    for dy, dx in np.argwhere(_disc(radius)) - math.floor(radius):
        ys, yd = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height - max(0, -dy))
        xs, xd = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx))
        out[..., yd, xd] |= masks[..., ys, xs]
    return out


def _subpixel_grid(half: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-sample positions (y, x) of a (2 * half + 1)^2 stamp relative to the centre pixel's
    centre, shaped (S * n, S * n) with n sub-samples per pixel side."""
    n = _SUBSAMPLES
    offsets = (np.arange(n) + 0.5) / n - 0.5
    axis = (np.arange(-half, half + 1)[:, None] + offsets[None, :]).ravel()
    return axis[:, None], axis[None, :]


def _average_pixels(samples: np.ndarray) -> np.ndarray:
    """Mean of each pixel's n x n sub-samples: (..., S * n, S * n) -> (..., S, S)."""
    n = _SUBSAMPLES
    *lead, height, width = samples.shape
    return samples.reshape(*lead, height // n, n, width // n, n).mean(axis=(-3, -1))


def _dash_stamps(
    angles: np.ndarray, p: ResolvedParameters, half: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dashes starting at the centre pixel's centre, pointing along each angle (radians, y
    down): the fraction of each pixel a dash covers (slivers dropped), and its footprint,
    the pixels at least half within `margin` of the dash plus those it lights. (K, S, S)."""
    y, x = _subpixel_grid(half)
    coverage, near = [], []
    for chunk in np.array_split(angles, math.ceil(len(angles) / 32)):  # bounded memory
        uy, ux = np.sin(chunk)[:, None, None], np.cos(chunk)[:, None, None]
        along = y * uy + x * ux
        across = np.abs(x * uy - y * ux)
        # Distance to the dash, a paddle_length x paddle_thickness rectangle.
        beyond_ends = np.maximum(np.maximum(-along, along - p.paddle_length), 0.0)
        beyond_sides = np.maximum(across - p.paddle_thickness / 2, 0.0)
        distance = np.hypot(beyond_ends, beyond_sides)
        coverage.append(_average_pixels(distance == 0))
        near.append(_average_pixels(distance <= p.margin) >= 0.5)
    covered = np.concatenate(coverage)
    covered = np.where(covered >= _MIN_COVERAGE, covered, 0.0)
    return covered, np.concatenate(near) | (covered > 0)


def _candidates(radius: int) -> np.ndarray:
    """Distinct whole-pixel offsets (dy, dx) on a circle of `radius`: the end points a dash
    may take around its pivot, sampled finer than a pixel of arc."""
    angles = np.linspace(-math.pi, math.pi, 64 * (radius + 1), endpoint=False)
    points = np.rint(radius * np.stack([np.sin(angles), np.cos(angles)], axis=1)).astype(int)
    return np.unique(points, axis=0)


def _offset(angle: float, distance: float) -> tuple[int, int]:
    """Whole-pixel (dy, dx) of a move by `distance` along `angle`."""
    return round(distance * math.sin(angle)), round(distance * math.cos(angle))


def _bits(mask: np.ndarray, side: int) -> int:
    """A boolean (rows, cols) array laid out with `side` pixels per row, as a bit set."""
    rows, cols = mask.shape
    grid = np.zeros((rows, side), dtype=bool)
    grid[:, :cols] = mask
    return int.from_bytes(np.packbits(grid.ravel(), bitorder="little").tobytes(), "little")


def _flat_offsets(stamp: np.ndarray, side: int) -> np.ndarray:
    """Flat canvas offsets of a stamp's nonzero pixels from its centre."""
    half = stamp.shape[-1] // 2
    ys, xs = np.nonzero(stamp)
    return (ys - half) * side + (xs - half)


def _turns(
    headings: np.ndarray, candidate_angles: np.ndarray, bits: np.ndarray, continuity: float
) -> tuple[tuple[tuple[int, int, float], ...], ...]:
    """Per heading, (bit, c, weight) of the candidates with a positive continuity weight
    cos(min(turn * continuity, pi/2))^2, exactly 0 from pi/2 on (cos(pi/2) is 6e-17)."""
    turn = np.abs(headings[:, None] - candidate_angles[None, :])
    turn = np.minimum(turn, 2 * math.pi - turn) * continuity
    weights = np.where(turn < math.pi / 2, np.cos(turn) ** 2, 0.0)
    return tuple(
        tuple((int(bits[c]), int(c), float(row[c])) for c in np.flatnonzero(row)) for row in weights
    )


_TABLES: dict[ResolvedParameters, _Tables] = {}


def _tables(p: ResolvedParameters) -> _Tables:
    """This process's tables for a parameter set, built on first use (0.2-1 s); the few
    most recent are kept."""
    if p not in _TABLES:
        if len(_TABLES) >= _KEPT_TABLES:
            del _TABLES[next(iter(_TABLES))]
        _TABLES[p] = _build_tables(p)
    return _TABLES[p]


def _adopt(tables: _Tables) -> None:
    """Pool initializer: take the parent's tables instead of building them again."""
    _TABLES.setdefault(tables.params, tables)


def _build_tables(p: ResolvedParameters) -> _Tables:
    m, length, size = p.margin, p.paddle_length, p.resolution
    half = math.ceil(length + p.paddle_thickness / 2 + m) + m + 1  # wide stamps fit
    reach = length + m
    pad = max(half, math.ceil(p.marker_radius) + 1, reach + m + 2)
    side = size + 2 * pad

    offsets = _candidates(reach)
    candidate_angles = np.arctan2(offsets[:, 0], offsets[:, 1])
    seed_angles = np.deg2rad(np.arange(SEED_DIRECTIONS) - SEED_DIRECTIONS // 2)
    coverage, occupied = _dash_stamps(
        np.concatenate([seed_angles, candidate_angles + math.pi]), p, half
    )
    wide = _dilate(occupied, m)
    intensity = np.minimum(coverage * p.contrast, 1.0)

    window = reach * side + reach
    turns = _turns(
        np.concatenate([seed_angles, candidate_angles]),
        candidate_angles,
        offsets[:, 0] * side + offsets[:, 1] + window,
        p.continuity,
    )
    # A seed's next pivot lies margin beyond its head; a later dash's, length + 2 * margin
    # beyond its own pivot.
    step = [_offset(a, length + m) for a in seed_angles]
    step += [_offset(a, length + 2 * m) for a in candidate_angles]

    r = math.ceil(p.marker_radius) + 1
    y, x = _subpixel_grid(r)
    marker = _average_pixels(y * y + x * x <= p.marker_radius**2)

    inner = slice(pad + p.padding, pad + size - p.padding)
    border = np.ones((side, side), dtype=bool)
    border[inner, inner] = False
    image = np.zeros((side, side), dtype=bool)
    image[pad : pad + size, pad : pad + size] = True
    return _Tables(
        params=p,
        side=side,
        pad=pad,
        inner=np.flatnonzero(image),
        image_bits=_bits(image, side),
        border=_bits(border, side),
        border_wide=_bits(_dilate(border, m), side),
        origin=half * side + half,
        occupied=tuple(_bits(stamp, side) for stamp in occupied),
        wide=tuple(_bits(stamp, side) for stamp in wide),
        lit=tuple(_flat_offsets(stamp, side) for stamp in intensity),
        intensity=tuple(stamp[stamp > 0] for stamp in intensity),
        marker=(_flat_offsets(marker, side), marker[marker > 0]),
        window=window,
        window_mask=(1 << (2 * window + 1)) - 1,
        turns=turns,
        cone=tuple(sum(1 << bit for bit, _, _ in row) for row in turns),
        candidates=tuple(int(dy * side + dx) for dy, dx in offsets),
        step=tuple(dy * side + dx for dy, dx in step),
    )


# ---------------------------------------------------------------------------------------------
# Drawing


@dataclass
class _Contour:
    """A contour being grown. Its last dash stays out of the canvas's occupancy until the
    next is placed, since consecutive dashes of a contour may touch (as in the original)."""

    tail: int  # start of the first dash: where an origin marker goes
    start: int  # start of the last dash; for later dashes, their end point
    direction: int  # k of the last dash
    pivot: int  # the next dash's end point lies length + margin from here
    occupied: int  # footprint bits of the last dash
    wide: int


class _Canvas:
    """The occupancy of an image being drawn (bit sets), and the dashes placed so far.

    `occupied`: footprints (dashes dilated by the margin), which a new dash may not overlap;
    `wide`: the footprints dilated once more, which a candidate end point must avoid. Both
    leave out the last dash of each contour still growing. The image is painted at the end.
    """

    def __init__(self, tables: _Tables) -> None:
        self.tables = tables
        self.occupied = tables.border
        self.wide = tables.border_wide
        self.dashes: list[tuple[int, int]] = []  # (k, start) of every dash placed

    def overlaps(self, k: int, start: int, others: int = 0) -> bool:
        """Whether dash k started at `start` would overlap the footprints (and `others`)."""
        t = self.tables
        return bool((self.occupied | others) >> (start - t.origin) & t.occupied[k])

    def place(self, k: int, start: int, contour: _Contour | None = None) -> _Contour:
        """Place dash k at `start`: a new contour's first, or `contour`'s next (its previous
        dash enters the occupancy)."""
        t = self.tables
        self.dashes.append((k, start))
        shift = start - t.origin
        occupied, wide = t.occupied[k] << shift, t.wide[k] << shift
        if contour is None:
            return _Contour(start, start, k, start + t.step[k], occupied, wide)
        self.commit(contour)
        contour.start, contour.direction = start, k
        contour.pivot += t.step[k]
        contour.occupied, contour.wide = occupied, wide
        return contour

    def commit(self, contour: _Contour) -> None:
        """Add a contour's last dash to the occupancy."""
        self.occupied |= contour.occupied
        self.wide |= contour.wide

    def free_fraction(self) -> float:
        size = self.tables.params.resolution**2
        return 1.0 - (self.occupied & self.tables.image_bits).bit_count() / size

    def free_starts(self) -> np.ndarray:
        """Image pixels a new contour may start on: clear of every footprint by a margin."""
        t = self.tables
        packed = np.frombuffer(self.wide.to_bytes(t.side * t.side // 8 + 1, "little"), np.uint8)
        taken = np.unpackbits(packed, bitorder="little")
        return t.inner[taken.take(t.inner) == 0]

    def paint(self, markers: Sequence[int]) -> np.ndarray:
        """The image, uint8 (resolution, resolution): dashes, then marker discs, composited
        by pixel-wise maximum."""
        t = self.tables
        image = np.zeros(t.side * t.side)
        for k, start in self.dashes:
            pixels = start + t.lit[k]
            image[pixels] = np.maximum(image[pixels], t.intensity[k])
        offsets, disc = t.marker
        for centre in markers:
            image[centre + offsets] = np.maximum(image[centre + offsets], disc)
        size = t.params.resolution
        return np.rint(image.take(t.inner) * 255.0).astype(np.uint8).reshape(size, size)


def _free_turns(t: _Tables, k: int, blocked: int) -> tuple[list[float], list[int]]:
    """Cumulative continuity weights and indices of the candidates after dash k that are not
    blocked. Memoised: a direction meets the same few blocked patterns over and over (about
    9 calls in 10 hit at 32x32), and this loop is the generator's hottest."""
    options = t.choices.get((k, blocked))
    if options is None:
        total, cumulative, choices = 0.0, [], []
        for bit, c, weight in t.turns[k]:
            if not blocked >> bit & 1:
                total += weight
                cumulative.append(total)
                choices.append(c)
        if len(t.choices) >= _MAX_MEMO:
            t.choices.clear()
        options = t.choices[k, blocked] = cumulative, choices
    return options


def _extend(
    canvas: _Canvas, contour: _Contour, draw: Callable[[], float], others: int = 0, wide: int = 0
) -> bool:
    """Add a dash: sample its end point among the candidates around the pivot, weighted by
    continuity and by being clear of the (wide) footprints, and of `others`, `wide`: the
    last dashes of other growing contours. False when no candidate is free or SEGMENT_TRIES
    draws all overlap."""
    t = canvas.tables
    pivot = contour.pivot
    window = ((canvas.wide | wide) >> (pivot - t.window)) & t.window_mask
    cumulative, choices = _free_turns(t, contour.direction, window & t.cone[contour.direction])
    if not choices:
        return False
    total = cumulative[-1]
    for _ in range(SEGMENT_TRIES):
        c = choices[bisect_right(cumulative, draw() * total)]
        k, start = SEED_DIRECTIONS + c, pivot + t.candidates[c]
        if not canvas.overlaps(k, start, others):
            canvas.place(k, start, contour)
            return True
    return False


def _seed_pair(canvas: _Canvas, draw: Callable[[], float]) -> list[_Contour] | None:
    """The first dashes of the two target contours: A on a pixel at least 2 * seed_distance
    from the border, B seed_distance from A's start in a random direction."""
    t = canvas.tables
    sd, span = t.params.seed_distance, t.params.resolution - 4 * t.params.seed_distance
    for _ in range(SEGMENT_TRIES):
        y = t.pad + 2 * sd + int(draw() * span)
        x = t.pad + 2 * sd + int(draw() * span)
        k = int(draw() * SEED_DIRECTIONS)
        if not canvas.overlaps(k, y * t.side + x):
            first = canvas.place(k, y * t.side + x)
            break
    else:
        return None
    for _ in range(SEGMENT_TRIES):
        dy, dx = _offset(math.radians(int(draw() * 360)), sd)
        start, k = first.tail + dy * t.side + dx, int(draw() * SEED_DIRECTIONS)
        if not canvas.overlaps(k, start, first.occupied):
            return [first, canvas.place(k, start)]
    return None


def _grow_pair(canvas: _Canvas, pair: list[_Contour], draw: Callable[[], float]) -> bool:
    """Extend the two target contours a dash at a time, in turn, to contour_length dashes."""
    first, second = pair
    for _ in range(canvas.tables.params.contour_length - 1):
        if not _extend(canvas, first, draw, second.occupied, second.wide):
            return False
        if not _extend(canvas, second, draw, first.occupied, first.wide):
            return False
    return True


def _draw_targets(tables: _Tables, draw: Callable[[], float]) -> tuple[_Canvas, list[_Contour]]:
    """A canvas with the two target contours; both restart from scratch when either fails."""
    p = tables.params
    for _ in range(MAX_PAIR_ATTEMPTS):
        canvas = _Canvas(tables)
        pair = _seed_pair(canvas, draw)
        if pair is not None and _grow_pair(canvas, pair, draw):
            for contour in pair:
                canvas.commit(contour)
            return canvas, pair
    raise RuntimeError(
        f"could not draw two target contours of {p.contour_length} dashes in a "
        f"{p.resolution}x{p.resolution} image in {MAX_PAIR_ATTEMPTS} attempts; lower "
        "contour_length, margin or paddle_length, or raise the resolution"
    )


def _draw_distractor(canvas: _Canvas, draw: Callable[[], float]) -> bool:
    """One distractor contour of distractor_length dashes, started anywhere free."""
    starts = canvas.free_starts()
    if starts.size == 0:
        return False
    for _ in range(SEGMENT_TRIES):
        start, k = int(starts[int(draw() * starts.size)]), int(draw() * SEED_DIRECTIONS)
        if not canvas.overlaps(k, start):
            contour = canvas.place(k, start)
            length = canvas.tables.params.distractor_length
            if all(_extend(canvas, contour, draw) for _ in range(length - 1)):
                canvas.commit(contour)
                return True
            return False
    return False


def _draw_distractors(canvas: _Canvas, draw: Callable[[], float]) -> None:
    """num_distractors contours, each given DISTRACTOR_TRIES attempts (a failed attempt leaves
    no trace), until less than MIN_FREE_FRACTION of the image is free."""
    for _ in range(canvas.tables.params.num_distractors):
        if canvas.free_fraction() < MIN_FREE_FRACTION:
            return
        for _ in range(DISTRACTOR_TRIES):
            occupied, wide, count = canvas.occupied, canvas.wide, len(canvas.dashes)
            if _draw_distractor(canvas, draw):
                break
            canvas.occupied, canvas.wide = occupied, wide
            del canvas.dashes[count:]


def _uniforms(seed: int, index: int) -> Iterator[float]:
    """Image `index`'s stream of U(0, 1) draws, in blocks: numpy's scalar draw costs as much
    as a whole occupancy test, and an image takes hundreds."""
    rng = np.random.default_rng([seed, index])
    while True:
        yield from rng.random(256).tolist()


def _render(tables: _Tables, seed: int, index: int) -> tuple[np.ndarray, int]:
    draw = _uniforms(seed, index).__next__
    label = int(draw() * 2)
    canvas, targets = _draw_targets(tables, draw)
    _draw_distractors(canvas, draw)
    origin = int(draw() * 2)
    terminal = targets[origin if label == 1 else 1 - origin]
    return canvas.paint([targets[origin].tail, terminal.start]), label


# ---------------------------------------------------------------------------------------------
# Public API


def render(config: PathfinderGeneratorConfig, index: int) -> tuple[np.ndarray, int]:
    """Image `index` of the config, uint8 (resolution, resolution), and its label (1: the
    markers lie on one contour); a pure function of (config, index)."""
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    return _render(_tables(config.resolved()), config.seed, index)


def _render_many(
    config: PathfinderGeneratorConfig, indices: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    tables = _tables(config.resolved())
    size = config.resolution
    images = np.empty((len(indices), size, size), dtype=np.uint8)
    labels = np.empty(len(indices), dtype=np.int64)
    for row, index in enumerate(indices):
        images[row], labels[row] = _render(tables, config.seed, index)
    return images, labels


def _checked(indices: Sequence[int] | range) -> list[int]:
    indices = [int(i) for i in indices]
    if any(i < 0 for i in indices):
        raise ValueError(f"indices must be >= 0, got {min(indices)}")
    return indices


def _pool_context() -> BaseContext:
    """forkserver where the platform has it, else spawn. Workers then never fork the caller,
    which may run threads (torch's, a progress bar's) that a fork can deadlock; forkserver
    starts them from a clean server that has imported this module once, far faster than
    spawn's fresh interpreter per worker."""
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _worker_count(workers: int | None) -> int:
    if workers is None:
        return os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1 or None, got {workers}")
    return workers


def iter_chunks(
    config: PathfinderGeneratorConfig,
    indices: Sequence[int] | range,
    chunk_size: int = 256,
    workers: int | None = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (images (n, H, W) uint8, labels (n,) int64) for consecutive chunks of `indices`,
    in order. With workers > 1 (None: every CPU) chunks render in a process pool, at most
    2 * workers ahead of the consumer so that memory stays bounded; the arrays are the same
    for any number of workers."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    workers = _worker_count(workers)
    indices = _checked(indices)
    chunks = [indices[i : i + chunk_size] for i in range(0, len(indices), chunk_size)]
    if workers == 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield _render_many(config, chunk)
        return
    tables = replace(_tables(config.resolved()), choices={})
    with ProcessPoolExecutor(
        min(workers, len(chunks)),
        mp_context=_pool_context(),
        initializer=_adopt,
        initargs=(tables,),
    ) as pool:
        pending: deque[Future[tuple[np.ndarray, np.ndarray]]] = deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(_render_many, config, chunk))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def generate(
    config: PathfinderGeneratorConfig,
    indices: Sequence[int] | range,
    workers: int | None = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, H, W) uint8 and labels (n,) int64 for `indices`, identical for any
    number of workers (None: every CPU)."""
    # A few chunks per worker balance the load; 1024 caps what one result carries.
    chunk_size = max(1, min(1024, math.ceil(len(indices) / (4 * _worker_count(workers)))))
    chunks = list(iter_chunks(config, indices, chunk_size, workers))
    if not chunks:
        size = config.resolution
        return np.empty((0, size, size), dtype=np.uint8), np.empty(0, dtype=np.int64)
    images, labels = zip(*chunks, strict=True)
    return np.concatenate(images), np.concatenate(labels)
