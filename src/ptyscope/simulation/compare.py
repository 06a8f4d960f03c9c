"""Pattern-by-pattern comparison of two 4D-STEM datasets (simulator cross-checks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PatternAgreement", "compare_patterns"]


@dataclass(frozen=True)
class PatternAgreement:
    """Agreement of two datasets, pattern by pattern.

    Attributes
    ----------
    ncc:
        float64 (scan_y, scan_x): normalised cross-correlation (Pearson coefficient over
        the detector pixels) of each pair of patterns.
    intensity_ratio:
        float64 (scan_y, scan_x): total intensity of ``data`` over that of ``reference``.
    """

    ncc: np.ndarray
    intensity_ratio: np.ndarray

    @property
    def worst_ncc(self) -> float:
        return float(self.ncc.min())

    @property
    def worst_intensity_error(self) -> float:
        """Largest |I/I_ref − 1| over the scan."""
        return float(np.abs(self.intensity_ratio - 1).max())


def compare_patterns(data: np.ndarray, reference: np.ndarray) -> PatternAgreement:
    """Compare two (scan_y, scan_x, det_y, det_x) datasets of equal shape."""
    if data.shape != reference.shape or data.ndim != 4:
        raise ValueError(
            "data and reference must both have shape (scan_y, scan_x, det_y, det_x); got "
            f"{data.shape} and {reference.shape}"
        )
    a = data.reshape(*data.shape[:2], -1).astype(np.float64)
    b = reference.reshape(*reference.shape[:2], -1).astype(np.float64)
    a0 = a - a.mean(axis=-1, keepdims=True)
    b0 = b - b.mean(axis=-1, keepdims=True)
    ncc = (a0 * b0).sum(-1) / np.sqrt((a0**2).sum(-1) * (b0**2).sum(-1))
    return PatternAgreement(ncc, a.sum(-1) / b.sum(-1))
