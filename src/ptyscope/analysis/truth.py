"""Scoring a reconstruction against the ground truth of a simulation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from ptyscope.physics.constants import interaction_constant

from .images import load_phase
from .registration import fourier_shift_image, pearson, register_translation, sample_periodic

__all__ = ["phase_potential_agreement"]


def phase_potential_agreement(
    result_path: str | os.PathLike[str],
    ground_truth: Mapping[str, Any],
    energy_ev: float,
    *,
    blur_ang: float = 0.2,
    margin_ang: float = 1.0,
    max_shift_ang: float = 1.0,
) -> float:
    """Pearson r of a result's summed phase and the true projected phase σ·V_z.

    The truth (``ground_truth["potential"]`` of a simulation: slices [V·Å] and their pixel)
    is summed over slices, sampled on the object grid by band-limited interpolation,
    blurred by a Gaussian of ``blur_ang`` (the reconstruction's resolution: the nuclear
    cusps are beyond any probe's reach) and registered to sub-pixel precision; the score
    uses the scanned area less ``margin_ang`` at each edge. The registration searches at
    most ``max_shift_ang`` from the known frame (a crystal correlates with itself at every
    lattice vector). State 0 is used; the phase is
    Σ_slices angle(O_j), which does not wrap as long as each slice's phase stays below π.
    """
    image = load_phase(result_path)
    phase = image.phase_rad
    pixel = image.pixel_size_ang
    potential = ground_truth["potential"]
    projected = potential["slices_vang"].sum(axis=0) * interaction_constant(energy_ev)
    truth_pixel = np.asarray(potential["pixel_size_ang"], dtype=np.float64)
    sampled = sample_periodic(
        projected,
        (float(truth_pixel[0]), float(truth_pixel[1])),
        image.origin_ang,
        (phase.shape[0], phase.shape[1]),
        pixel,
    )
    rows, cols = image.inner_slices(margin_ang)
    if rows.stop - rows.start < 4 or cols.stop - cols.start < 4:
        raise ValueError(
            f"the scanned area less margin_ang={margin_ang} Å leaves no region to compare"
        )
    blurred = ndimage.gaussian_filter(sampled, blur_ang / pixel[0])
    a = phase[rows, cols]
    b = blurred[rows, cols]
    # Both frames are known, so only a residual offset is searched (at most max_shift_ang).
    shift = register_translation(a, b, max_shift_px=max_shift_ang / pixel[0])
    return pearson(a, fourier_shift_image(b, shift))
