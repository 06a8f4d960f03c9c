"""A known 5 pm polar shift in a synthetic SrTiO3 [001] phase image is measured back."""

from __future__ import annotations

import numpy as np

from ptyscope.analysis.columns import lattice_sites, srtio3_lattice
from ptyscope.analysis.metrics import relative_displacements, summarize_displacements
from ptyscope.analysis.refine import refine_gaussian

from ._synthetic import gaussian_columns

A = 3.905
PIXEL = (0.1, 0.1)


def test_five_picometre_polar_shift_is_recovered_from_an_image() -> None:
    # Sr, TiO and O columns as Gaussians (σ 0.35 Å, amplitudes 1.0, 0.9, 0.35 rad) on a
    # 10x10-cell field; every TiO column moved by 5 pm along +x; 2% noise.
    lattice = srtio3_lattice((2.0, 2.0), A)
    sites, labels, _ = lattice_sites(lattice, (2.0, 2.0 + 9.9 * A, 2.0, 2.0 + 9.9 * A))
    labels_array = np.asarray(labels)
    shifted = sites.copy()
    shifted[labels_array == "TiO", 1] += 0.05
    amplitude = np.select([labels_array == "Sr", labels_array == "TiO"], [1.0, 0.9], 0.35)
    shape = (int(11 * A / PIXEL[0]), int(11 * A / PIXEL[1]))
    image = gaussian_columns(shifted, amplitude, shape, PIXEL, 0.35)
    image += np.random.default_rng(4).normal(0.0, 0.02, shape)
    fit = refine_gaussian(image, sites, PIXEL, 0.7)
    shift = relative_displacements(fit.positions_ang, labels, "TiO", "Sr", neighbours=4)
    summary = summarize_displacements(shift.displacements_ang)
    assert summary.count >= 50
    assert abs(summary.mean_pm[1] - 5.0) < 0.5, summary
    assert abs(summary.mean_pm[0]) < 0.5, summary
    # The O columns sit between TiO columns that moved: d_O-TiO along x reads −5 pm for the
    # O columns bridging TiO along x (their midpoint moved), up to the cross-talk of the
    # nearby heavy columns (documented in refine.py).
    bridge = relative_displacements(fit.positions_ang, labels, "O", "TiO", neighbours=2)
    assert abs(float(np.mean(bridge.displacements_pm[:, 1])) + 5.0) < 1.0
