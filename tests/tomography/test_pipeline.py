"""The array-level pipeline (alignment → volume → atoms) with the substrate mask on."""

from __future__ import annotations

import numpy as np
import torch

from ptyscope.config import (
    TomoAlignmentConfig,
    TomoAtomsConfig,
    TomoProjectionsConfig,
    TomoVolumeConfig,
)
from ptyscope.tomography.atoms import match_atoms
from ptyscope.tomography.pipeline import tomography_from_projections
from ptyscope.tomography.projector import project

from ._particle import ATOMS, TILTS


def test_masked_known_angle_pipeline_finds_every_atom(volume: torch.Tensor) -> None:
    """A flat 'substrate' slab under the particle is masked out of the projections by the
    particle's low-resolution support; the atoms come out as without it."""
    clean = project(volume, TILTS, 0.4)
    substrate = torch.zeros_like(volume)
    substrate[:6] = 0.02 * float(volume.max())  # a low, wide slab below the particle
    data = (clean + project(substrate, TILTS, 0.4)).numpy()
    result, _, curve, history = tomography_from_projections(
        data,
        np.ones_like(data),
        TILTS.numpy(),
        0.4,
        alignment=TomoAlignmentConfig(center_of_mass=False, common_line=False, refine=False),
        volume=TomoVolumeConfig(iterations=40),
        atoms=TomoAtomsConfig(min_distance_ang=1.8, symbols=("Fe", "Pt")),
        mask=TomoProjectionsConfig(substrate_mask=True, mask_threshold=0.2, mask_dilate_ang=1.5),
    )
    assert history == []
    match = match_atoms(result.positions_ang, ATOMS.positions, max_distance_ang=1.0)
    assert match.recall == 1.0
    assert match.precision == 1.0
    assert match.rmsd_ang < 0.05
    assert set(result.metrics["resolution_ang"]) == {"x", "y", "z"}
    assert np.isfinite(curve.resolution_ang_0143)
    assert result.metrics["reprojection_residual"] < 0.5


def test_genfire_pipeline_reports_rfree_and_finds_the_atoms(volume: torch.Tensor) -> None:
    """The GENFIRE path: projections moved by random shifts, found by the centre of mass
    and the common line, undone before gridding."""
    shifts = torch.as_tensor(np.random.default_rng(4).normal(0, 0.5, (len(TILTS), 2)))
    data = project(volume, TILTS, 0.4, shifts_ang=shifts).numpy()
    result, _, _, _ = tomography_from_projections(
        data,
        np.ones_like(data),
        TILTS.numpy(),
        0.4,
        alignment=TomoAlignmentConfig(refine=False),
        volume=TomoVolumeConfig(method="genfire", iterations=60),
        atoms=TomoAtomsConfig(min_distance_ang=1.8, symbols=("Fe", "Pt"), refine=False),
    )
    assert 0.0 < result.metrics["rfree"] < 0.5
    # The centre of mass puts the particle's centre on the box centre: remove that offset.
    found = result.positions_ang - result.positions_ang.mean(0) + ATOMS.positions.mean(0)
    match = match_atoms(found, ATOMS.positions, max_distance_ang=1.0)
    assert match.recall == 1.0
    assert match.rmsd_ang < 0.15  # GENFIRE's gridding, without the refinement
