"""Scoring a reconstruction against the ground truth of a simulation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np
from scipy import ndimage

from ptyscope.physics.constants import interaction_constant

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
    with h5py.File(result_path) as handle:
        obj = handle["object"][0]
        pixel = np.asarray(handle["object"].attrs["pixel_size_ang"], dtype=np.float64)
        origin = np.asarray(handle["object"].attrs["origin_ang"], dtype=np.float64)
        positions = handle["positions_ang"][()]
    phase = np.angle(obj).sum(axis=0)
    potential = ground_truth["potential"]
    projected = potential["slices_vang"].sum(axis=0) * interaction_constant(energy_ev)
    truth_pixel = np.asarray(potential["pixel_size_ang"], dtype=np.float64)
    sampled = sample_periodic(
        projected,
        (float(truth_pixel[0]), float(truth_pixel[1])),
        (float(origin[0]), float(origin[1])),
        (phase.shape[0], phase.shape[1]),
        (float(pixel[0]), float(pixel[1])),
    )
    low = np.ceil((positions.min(axis=0) - origin + margin_ang) / pixel).astype(int)
    high = np.floor((positions.max(axis=0) - origin - margin_ang) / pixel).astype(int)
    if np.any(high - low < 4):
        raise ValueError(
            f"the scanned area less margin_ang={margin_ang} Å leaves no region to compare"
        )
    blurred = ndimage.gaussian_filter(sampled, blur_ang / pixel[0])
    a = phase[low[0] : high[0], low[1] : high[1]]
    b = blurred[low[0] : high[0], low[1] : high[1]]
    # Both frames are known, so only a residual offset is searched (at most max_shift_ang).
    shift = register_translation(a, b, max_shift_px=max_shift_ang / float(pixel[0]))
    return pearson(a, fourier_shift_image(b, shift))
