"""Hot and dead detector pixels: detection from per-pixel statistics, and repair.

Statistics (mean, standard deviation, maximum of every detector pixel over the scan) are
accumulated a block of scan rows at a time; each pixel is then compared with the ring of
its neighbours by robust statistics (median, quartile, median absolute deviation), so
that the smooth structure of the patterns (the bright-field disk, Kikuchi bands) is not
mistaken for defects. Repair replaces a bad pixel, in every pattern, by the median of its
valid neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ptyscope._validation import require_positive

from .dataset import DEFAULT_BLOCK_BYTES, Dataset4D, output_array

__all__ = [
    "BadPixels",
    "PixelStatistics",
    "find_bad_pixels",
    "pixel_statistics",
    "repair_bad_pixels",
]

#: 1.4826 · MAD estimates the standard deviation of normally distributed values.
_MAD_TO_SIGMA = 1.4826


# ------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class PixelStatistics:
    """Per-detector-pixel statistics over all scan positions.

    Attributes
    ----------
    mean, std, maximum:
        float64 (det_y, det_x): mean, standard deviation and maximum of each pixel.
    count:
        Number of patterns.
    """

    mean: np.ndarray
    std: np.ndarray
    maximum: np.ndarray
    count: int


def pixel_statistics(dataset: Dataset4D, max_bytes: int = DEFAULT_BLOCK_BYTES) -> PixelStatistics:
    """Mean, standard deviation and maximum of every detector pixel, read block-wise.

    Sums of x − x₀ and (x − x₀)² are accumulated with x₀ the first block's mean, which
    avoids the cancellation of E[x²] − E[x]² for pixels whose spread is tiny.
    """
    reference: np.ndarray | None = None
    total = np.zeros(dataset.detector_shape)
    squares = np.zeros(dataset.detector_shape)
    maximum = np.full(dataset.detector_shape, -np.inf)
    for _, block in dataset.iter_scan_rows(max_bytes):
        values = block.astype(np.float64)
        if reference is None:
            reference = values.mean(axis=(0, 1))
        values -= reference
        total += values.sum(axis=(0, 1))
        squares += (values**2).sum(axis=(0, 1))
        np.maximum(maximum, values.max(axis=(0, 1)) + reference, out=maximum)
    count = dataset.shape[0] * dataset.shape[1]
    offset = total / count
    mean = offset + (reference if reference is not None else 0.0)
    std = np.sqrt(np.clip(squares / count - offset**2, 0.0, None))
    return PixelStatistics(mean, std, maximum, count)


# ------------------------------------------------------------------------- bad pixels
@dataclass(frozen=True)
class BadPixels:
    """Bad detector pixels: bool (det_y, det_x) masks of hot and dead pixels."""

    hot: np.ndarray
    dead: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """bool (det_y, det_x): True for every pixel to repair."""
        combined: np.ndarray = self.hot | self.dead
        return combined


def _neighbours(image: np.ndarray, radius: int) -> np.ndarray:
    """(ny, nx, (2r+1)² − 1) values of the square ring of neighbours (edges reflected)."""
    size = 2 * radius + 1
    padded = np.pad(image, radius, mode="reflect")
    windows = sliding_window_view(padded, (size, size)).reshape(*image.shape, size * size)
    centre = size * size // 2
    ring: np.ndarray = np.delete(windows, centre, axis=-1)
    return ring


@dataclass(frozen=True)
class _Local:
    """Statistics of each pixel's ring of neighbours: median, lower quartile, MAD."""

    median: np.ndarray
    quartile: np.ndarray
    mad: np.ndarray


def _local_statistics(image: np.ndarray, radius: int) -> _Local:
    """:class:`_Local` of every pixel, computed in chunks of rows to bound the memory."""
    median, quartile, mad = (np.empty_like(image) for _ in range(3))
    chunk = max(1, 2**22 // (image.shape[1] * (2 * radius + 1) ** 2))
    for start in range(0, image.shape[0], chunk):
        rows = slice(max(0, start - radius), min(image.shape[0], start + chunk + radius))
        ring = _neighbours(image[rows], radius)[start - rows.start :][:chunk]
        med = np.median(ring, axis=-1)
        median[start : start + chunk] = med
        quartile[start : start + chunk] = np.percentile(ring, 25.0, axis=-1)
        mad[start : start + chunk] = np.median(np.abs(ring - med[..., None]), axis=-1)
    return _Local(median, quartile, mad)


def _bright_level(image: np.ndarray) -> float:
    """The 99th percentile: the level of the brightest features (the bright-field disk),
    not raised by a few hot pixels."""
    return float(np.percentile(image, 99.0))


def _outlier_score(
    image: np.ndarray, radius: int, own_error: np.ndarray | None = None
) -> np.ndarray:
    """Robust z-score of each pixel against its ring of neighbours N.

    z = (v − median_N) / sqrt((1.4826 · max(MAD_N, f))² + e²), with the floor
    f = 10⁻³ × the 99th percentile (a smooth, noise-free image gets no huge scores from
    its tiny local spread) and e the pixel's own standard error if known (a sparse pixel
    that caught a few electrons among empty neighbours is not an outlier).
    """
    local = _local_statistics(image, radius)
    floor = max(1e-3 * abs(_bright_level(image)), np.finfo(np.float64).tiny)
    variance = (_MAD_TO_SIGMA * np.maximum(local.mad, floor)) ** 2
    if own_error is not None:
        variance = variance + own_error**2
    score: np.ndarray = (image - local.median) / np.sqrt(variance)
    return score


def find_bad_pixels(
    dataset: Dataset4D,
    *,
    hot_threshold: float = 10.0,
    dead_fraction: float = 0.1,
    min_signal_fraction: float = 0.01,
    radius: int = 2,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
) -> BadPixels:
    """Find hot and dead detector pixels from per-pixel statistics over the scan.

    A pixel is compared with the ring of its (2r+1)² − 1 neighbours:

    * **hot** if its mean is a robust outlier above the neighbours' median,
      z > ``hot_threshold`` (:func:`_outlier_score`, with the pixel's own standard error
      std/√N in the noise), or if, where there is signal (below), its standard deviation
      is such an outlier (a flickering pixel whose mean looks normal).
    * **dead** if its mean is below ``dead_fraction`` × the lower quartile of its
      neighbours' means (the quartile, not the median, so that a dark pixel just outside
      the bright-field disk is not taken for a dead one), by more than 5 standard
      errors of those means (typical std/√N), where there is signal.

    "Signal" means the neighbours' median exceeds ``min_signal_fraction`` × the 99th
    percentile of the mean pattern: elsewhere a dead pixel cannot be told from a dark
    one (and does little harm) and the standard deviation is Poisson noise.

    Parameters
    ----------
    dataset:
        Any :class:`Dataset4D` (read block-wise).
    hot_threshold:
        z-score above which a pixel is hot (default 10: far beyond the fluctuations of a
        mean over many patterns, yet catching pixels a few times too bright).
    dead_fraction, min_signal_fraction:
        See above.
    radius:
        Neighbourhood half-width [px]; clusters of up to about ``radius`` bad pixels are
        found.

    Returns
    -------
    BadPixels
        Boolean (det_y, det_x) masks ``hot`` and ``dead``; ``mask`` is their union.
    """
    require_positive("hot_threshold", hot_threshold)
    require_positive("dead_fraction", dead_fraction)
    require_positive("min_signal_fraction", min_signal_fraction)
    if not isinstance(radius, int) or radius < 1:
        raise ValueError(f"radius must be an integer >= 1 [px], got {radius!r}")
    stats = pixel_statistics(dataset, max_bytes)
    local = _local_statistics(stats.mean, radius)
    signal = local.median > min_signal_fraction * _bright_level(stats.mean)
    own_error = stats.std / np.sqrt(stats.count)
    hot = _outlier_score(stats.mean, radius, own_error) > hot_threshold
    hot |= signal & (_outlier_score(stats.std, radius) > hot_threshold)
    # Dead: far below the neighbours, and significantly so (5 standard errors of the
    # neighbours' means): a sparse pixel that caught no electron by chance is not dead.
    typical_error = _local_statistics(own_error, radius).median
    deficit = local.quartile - stats.mean
    dead = signal & (stats.mean < dead_fraction * local.quartile) & ~hot
    dead &= deficit > 5.0 * typical_error
    return BadPixels(hot=hot, dead=dead)


def _repair_indices(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each bad pixel, the flat indices of its valid neighbours (padded, with validity).

    The neighbourhood is the 3 × 3 ring, widened (5 × 5, 7 × 7, ...) until it holds a
    valid pixel.
    """
    ny, nx = mask.shape
    bad = np.flatnonzero(mask)
    lists: list[np.ndarray] = []
    for flat in bad:
        y, x = divmod(int(flat), nx)
        for r in range(1, max(ny, nx)):
            ys, xs = np.mgrid[
                max(0, y - r) : min(ny, y + r + 1), max(0, x - r) : min(nx, x + r + 1)
            ]
            idx = (ys * nx + xs).ravel()
            idx = idx[~mask.ravel()[idx]]
            if idx.size:
                lists.append(idx)
                break
        else:
            raise ValueError("every detector pixel is marked bad; nothing to repair from")
    width = max((len(v) for v in lists), default=1)
    index = np.zeros((len(bad), width), dtype=np.intp)
    valid = np.zeros((len(bad), width), dtype=bool)
    for n, idx in enumerate(lists):
        index[n, : len(idx)] = idx
        valid[n, : len(idx)] = True
    return bad, index, valid


def repair_bad_pixels(
    dataset: Dataset4D,
    bad: BadPixels | np.ndarray,
    *,
    out: Any | None = None,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Dataset4D:
    """Replace bad pixels, in every pattern, by the median of their valid neighbours.

    Parameters
    ----------
    dataset:
        Dataset to repair (read block-wise; left unchanged).
    bad:
        :class:`BadPixels` or a bool (det_y, det_x) mask.
    out:
        Optional array of the dataset's shape to write into (e.g. a ``numpy.memmap``);
        default a new in-memory array.

    Returns
    -------
    Dataset4D
        Same dtype (integer data get the rounded median) and calibration.
    """
    mask = np.asarray(bad.mask if isinstance(bad, BadPixels) else bad, dtype=bool)
    if mask.shape != dataset.detector_shape:
        raise ValueError(
            f"bad pixel mask must have the detector shape {dataset.detector_shape}, "
            f"got {mask.shape}"
        )
    flat_bad, index, valid = _repair_indices(mask)
    result = output_array(dataset, dataset.dtype, out)
    for rows, block in dataset.iter_scan_rows(max_bytes):
        patterns = block.reshape(*block.shape[:2], -1).astype(np.float64)
        if flat_bad.size:
            values = np.where(valid, patterns[..., index], np.nan)
            patterns[..., flat_bad] = np.nanmedian(values, axis=-1)
        if dataset.dtype.kind in "iu":
            patterns = np.rint(patterns)
        result[rows] = patterns.reshape(block.shape).astype(dataset.dtype)
    return replace(dataset, data=result)
