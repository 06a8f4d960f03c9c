"""Preprocessing of 4D-STEM data, in pipeline order.

1. Bad detector pixels: :func:`find_bad_pixels`, :func:`repair_bad_pixels`
   (:mod:`ptyscope.data.bad_pixels`).
2. The bright-field disk and the detector calibration: :func:`find_bf_disk`,
   :func:`calibrate_detector` (:mod:`ptyscope.data.bright_field`).
3. Descan: :func:`measure_descan`, :func:`correct_descan` (:mod:`ptyscope.data.descan`).
4. Counts, dose and normalisation: :func:`estimate_dose`, :func:`normalise` (here).
5. PACBED: :func:`pacbed` (here).

Every function reads the data a block of scan rows at a time
(:meth:`~ptyscope.data.dataset.Dataset4D.iter_scan_rows`), so a lazy (memmap or HDF5)
dataset is never loaded whole; functions that return a dataset write an in-memory array
(or ``out``, e.g. a ``numpy.memmap``) and carry a consistent :class:`Calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ptyscope._validation import require_positive

from .bad_pixels import (
    BadPixels,
    PixelStatistics,
    find_bad_pixels,
    pixel_statistics,
    repair_bad_pixels,
)
from .bright_field import BrightFieldDisk, calibrate_detector, disk_centres, find_bf_disk
from .dataset import DEFAULT_BLOCK_BYTES, Dataset4D, output_array
from .descan import DescanModel, correct_descan, fit_descan, measure_descan, shift_patterns

__all__ = [
    "BadPixels",
    "BrightFieldDisk",
    "DescanModel",
    "DoseEstimate",
    "PixelStatistics",
    "calibrate_detector",
    "correct_descan",
    "disk_centres",
    "estimate_dose",
    "find_bad_pixels",
    "find_bf_disk",
    "fit_descan",
    "measure_descan",
    "normalise",
    "pacbed",
    "pattern_totals",
    "pixel_statistics",
    "repair_bad_pixels",
    "shift_patterns",
]


# ------------------------------------------------------------------------- dose
def pattern_totals(dataset: Dataset4D, max_bytes: int = DEFAULT_BLOCK_BYTES) -> np.ndarray:
    """float64 (scan_y, scan_x): the summed intensity of every pattern."""
    totals = np.empty(dataset.scan_shape)
    for rows, block in dataset.iter_scan_rows(max_bytes):
        totals[rows] = block.sum(axis=(2, 3), dtype=np.float64)
    return totals


@dataclass(frozen=True)
class DoseEstimate:
    """Counts and electron dose of a dataset.

    Attributes
    ----------
    totals:
        float64 (scan_y, scan_x): counts of each pattern.
    mean_counts_per_pattern:
        Mean of ``totals``.
    electrons_per_pattern:
        ``mean_counts_per_pattern / counts_per_electron``.
    dose_e_per_ang2:
        Electrons per pattern over the area per scan point, step_y · step_x [e/Å²].
    """

    totals: np.ndarray
    mean_counts_per_pattern: float
    electrons_per_pattern: float
    dose_e_per_ang2: float


def estimate_dose(
    dataset: Dataset4D,
    counts_per_electron: float = 1.0,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
) -> DoseEstimate:
    """Electrons per pattern and the areal dose D = N_e / (Δy · Δx) [e/Å²].

    ``counts_per_electron`` converts detector counts to electrons (1 for counting
    detectors; the gain of an integrating one). Electrons scattered outside the detector
    are not counted, so this is a lower bound on the dose.

    Examples
    --------
    >>> import numpy as np
    >>> from ptyscope.data.dataset import Calibration, Dataset4D
    >>> cal = Calibration(300e3, (0.5, 0.5), (0.05, 0.05))
    >>> estimate_dose(Dataset4D(np.full((2, 2, 4, 4), 5.0), cal)).dose_e_per_ang2
    320.0
    """
    require_positive("counts_per_electron", counts_per_electron)
    totals = pattern_totals(dataset, max_bytes)
    counts = float(totals.mean())
    electrons = counts / counts_per_electron
    step_y, step_x = dataset.calibration.scan_step_ang
    return DoseEstimate(totals, counts, electrons, electrons / (step_y * step_x))


def normalise(
    dataset: Dataset4D,
    *,
    per_pattern: bool = False,
    out: Any | None = None,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Dataset4D:
    """Divide the patterns by the mean pattern total (or each by its own total).

    Returns
    -------
    Dataset4D
        float32 data whose patterns sum to 1 on average (``per_pattern=False``; relative
        intensities between positions are kept) or each to exactly 1 (``per_pattern``,
        removes beam-current fluctuations, but also real changes of the counts on the
        detector). Metadata records ``normalisation_counts`` (the mean total).
    """
    totals = pattern_totals(dataset, max_bytes)
    mean = float(totals.mean())
    if mean <= 0 or (per_pattern and np.any(totals <= 0)):
        raise ValueError(f"patterns must have positive totals to normalise, mean {mean}")
    result = output_array(dataset, np.float32, out)
    for rows, block in dataset.iter_scan_rows(max_bytes):
        scale = totals[rows][..., None, None] if per_pattern else mean
        result[rows] = (block / scale).astype(np.float32)
    metadata = {**dataset.metadata, "normalisation_counts": mean}
    return replace(dataset, data=result, metadata=metadata)


def pacbed(
    dataset: Dataset4D,
    rows: slice | None = None,
    cols: slice | None = None,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
) -> np.ndarray:
    """Position-averaged pattern (PACBED) of the whole scan or of a region of it.

    Returns
    -------
    numpy.ndarray
        float64 (det_y, det_x): the mean of the patterns at scan rows ``rows`` and columns
        ``cols`` (unit-step slices; default all).
    """
    if rows is None and cols is None:
        return dataset.mean_pattern(max_bytes)
    ys = range(*(rows or slice(None)).indices(dataset.shape[0]))
    xs = range(*(cols or slice(None)).indices(dataset.shape[1]))
    if ys.step != 1 or xs.step != 1 or len(ys) == 0 or len(xs) == 0:
        raise ValueError(f"pacbed needs non-empty unit-step slices, got rows={rows}, cols={cols}")
    total = np.zeros(dataset.detector_shape)
    for block_rows, block in dataset.iter_scan_rows(max_bytes):
        lo, hi = max(ys.start, block_rows.start), min(ys.stop, block_rows.stop)
        if lo < hi:
            part = block[lo - block_rows.start : hi - block_rows.start, xs.start : xs.stop]
            total += part.sum(axis=(0, 1), dtype=np.float64)
    mean: np.ndarray = total / (len(ys) * len(xs))
    return mean
