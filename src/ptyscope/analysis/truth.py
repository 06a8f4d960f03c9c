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

__all__ = ["column_displacements", "phase_potential_agreement"]


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


def column_displacements(
    positions_ang: np.ndarray,
    displacements_ang: np.ndarray,
    *,
    tolerance_ang: float = 0.01,
    depth_range_ang: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """In-plane displacements of atomic columns, from 3D snapshots of a specimen.

    Atoms whose undisplaced (x, y) agree within ``tolerance_ang`` form one column; the
    column's displacement in a snapshot is the mean in-plane displacement of its atoms
    (within ``depth_range_ang`` when given: one slice of a reconstruction). This is the
    ground truth a mixed-object reconstruction's per-state column positions are scored
    against (CAVIAR scores against the snapshots that made the data).

    Parameters
    ----------
    positions_ang:
        float (N, 3): undisplaced (x, y, z) of the atoms [Å] (ase order).
    displacements_ang:
        float (M, N, 3): (x, y, z) displacement of every atom in each snapshot [Å].
    tolerance_ang:
        Atoms closer than this in (x, y) share a column [Å].
    depth_range_ang:
        (z_min, z_max) [Å]: only atoms with z_min <= z < z_max count.

    Returns
    -------
    columns_ang:
        float64 (K, 2): the columns' (y, x) [Å], sorted by y then x.
    column_displacements_ang:
        float64 (M, K, 2): their (y, x) displacements [Å].
    """
    positions = np.asarray(positions_ang, dtype=np.float64)
    u = np.asarray(displacements_ang, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or u.shape[1:] != positions.shape:
        raise ValueError(
            "positions_ang must be (N, 3) and displacements_ang (M, N, 3) with the same N, "
            f"got {positions.shape} and {u.shape}"
        )
    keep = np.ones(len(positions), dtype=bool)
    if depth_range_ang is not None:
        keep = (positions[:, 2] >= depth_range_ang[0]) & (positions[:, 2] < depth_range_ang[1])
        if not keep.any():
            raise ValueError(f"no atom has z in depth_range_ang = {depth_range_ang}")
    yx = positions[keep][:, [1, 0]]
    keys = np.rint(yx / tolerance_ang).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse)
    sums = np.zeros((first.size, u.shape[0], 2))
    np.add.at(sums, inverse, np.swapaxes(u[:, keep][:, :, [1, 0]], 0, 1))
    return yx[first], np.swapaxes(sums, 0, 1) / counts[None, :, None]
