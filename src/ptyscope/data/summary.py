"""A quick, bounded look at a 4D-STEM dataset: calibration, counts and dose.

Reads a sample of patterns spread over the scan (never the whole file), so it is instant
on a dataset of any size. Used by ``ptyscope info``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .dataset import Dataset4D

__all__ = ["CountStatistics", "count_statistics", "describe_dataset"]


@dataclass(frozen=True)
class CountStatistics:
    """Counts per pattern estimated from a sample of scan rows.

    Attributes
    ----------
    mean_counts:
        Mean total intensity per pattern (electrons when the data are counts).
    std_counts:
        Standard deviation of the per-pattern totals.
    integer_valued:
        Whether every sampled value is a whole number (counted electrons).
    sampled_patterns:
        How many patterns the estimate used.
    dose_e_per_ang2:
        mean_counts / (step_y · step_x): the dose, if the data count electrons.
    """

    mean_counts: float
    std_counts: float
    integer_valued: bool
    sampled_patterns: int
    dose_e_per_ang2: float


def count_statistics(dataset: Dataset4D, max_rows: int = 8) -> CountStatistics:
    """Estimate counts per pattern and the dose from up to ``max_rows`` scan rows."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    rows = np.unique(np.linspace(0, dataset.shape[0] - 1, min(max_rows, dataset.shape[0])))
    totals = []
    integer = True
    for row in rows.astype(int):
        block = np.asarray(dataset.data[row])  # (scan_x, det_y, det_x)
        totals.append(block.sum(axis=(1, 2), dtype=np.float64))
        if integer and block.dtype.kind == "f":
            integer = bool(np.all(block == np.round(block)))
    sums = np.concatenate(totals)
    step_y, step_x = dataset.calibration.scan_step_ang
    mean = float(sums.mean())
    return CountStatistics(
        mean, float(sums.std()), integer, int(sums.size), mean / (step_y * step_x)
    )


def describe_dataset(dataset: Dataset4D, *, unknown: Sequence[str] = ()) -> str:
    """Multi-line summary: shapes, calibration, counts per pattern and dose estimate.

    ``unknown`` names calibration the file does not record and nobody gave
    ("energy_ev", "scan_step_ang", "detector_pixel"): those lines say so instead of
    showing placeholder values, and without the scan step there is no dose.
    """
    cal = dataset.calibration
    stats = count_statistics(dataset)
    mrad = cal.detector_pixel_mrad
    cy, cx = dataset.detector_center_px
    kind = "integer counts" if stats.integer_valued else "not integer: normalised or gain-corrected"
    head = (
        f"dataset:  scan {dataset.scan_shape[0]} x {dataset.scan_shape[1]}, detector "
        f"{dataset.detector_shape[0]} x {dataset.detector_shape[1]}, {dataset.dtype}, "
        f"{'on disk (lazy)' if dataset.is_lazy else 'in memory'}"
    )
    counts = (
        f"counts:   {stats.mean_counts:.4g} ± {stats.std_counts:.3g} per pattern "
        f"({stats.sampled_patterns} sampled, {kind})"
    )
    lines = [head]
    if "energy_ev" in unknown:
        lines.append("beam:     energy unknown (give --energy-ev)")
    else:
        lines.append(
            f"beam:     {cal.energy_ev / 1e3:g} kV (λ = {cal.wavelength_ang:.6f} Å)"
            + (f", semiangle {cal.semiangle_mrad:g} mrad" if cal.semiangle_mrad else "")
        )
    if "scan_step_ang" in unknown:
        lines.append("scan:     step unknown (give --scan-step-ang)")
    else:
        lines.append(
            f"scan:     step (y, x) = ({cal.scan_step_ang[0]:.4g}, {cal.scan_step_ang[1]:.4g}) "
            f"Å, rotation {cal.scan_rotation_deg:g}°, "
            f"transpose {'yes' if cal.scan_transpose else 'no'}"
        )
    if "detector_pixel" in unknown or "energy_ev" in unknown:
        lines.append("detector: pixel size not calibrated (ptyscope preprocess calibrates it)")
    else:
        lines.append(
            f"detector: pixel (y, x) = ({mrad[0]:.4g}, {mrad[1]:.4g}) mrad = "
            f"({cal.detector_pixel_inv_ang[0]:.4g}, {cal.detector_pixel_inv_ang[1]:.4g}) Å⁻¹, "
            f"optical axis at ({cy:.2f}, {cx:.2f}) px"
        )
    lines.append(counts)
    if "scan_step_ang" not in unknown:
        lines.append(f"dose:     {stats.dose_e_per_ang2:.4g} e/Å² if one count is one electron")
    return "\n".join(lines)
