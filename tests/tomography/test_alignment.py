"""Alignment: pre-alignment shifts, gauges, and the joint refinement on a known particle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptyscope.tomography.alignment import (
    AlignmentSettings,
    center_of_mass_shifts,
    common_line_shifts,
    cross_correlation_shifts,
    refine_alignment,
    refine_alignment_with_atoms,
    rotation_errors_deg,
    translation_modes,
)
from ptyscope.tomography.atoms import classify_species, match_atoms, trace_atoms
from ptyscope.tomography.projector import project
from ptyscope.tomography.volume import VolumeSettings

from ._particle import ATOMS, TILTS


def _shifts(seed: int, scale: float = 0.5) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).normal(0, scale, (len(TILTS), 2)))


def _remove_translation(error: torch.Tensor, euler: torch.Tensor) -> torch.Tensor:
    modes = translation_modes(euler)
    flat = error.reshape(-1, 1)
    return (flat - modes @ torch.linalg.lstsq(modes, flat).solution).reshape(-1, 2)


def test_translating_the_volume_is_the_translation_mode(volume: torch.Tensor) -> None:
    """A volume moved by d projects like the original with shifts (R_t d)_{y,x}."""
    d = torch.tensor([0.8, -0.4, 1.2], dtype=torch.float64)  # (x, y, z) Å = (2, -1, 3) voxels
    moved = torch.roll(volume, shifts=(3, -1, 2), dims=(0, 1, 2))
    shifts = (translation_modes(TILTS) @ d).reshape(-1, 2)
    a = project(moved, TILTS, 0.4)
    b = project(volume, TILTS, 0.4, shifts_ang=shifts)
    assert float((a - b).norm() / a.norm()) < 0.03  # one bilinear resampling (measured 0.021)


def test_center_of_mass_recovers_shifts_up_to_the_gauge(volume: torch.Tensor) -> None:
    """Mass conservation makes the centre of mass exact: the error is only the (R_t d)
    translation mode of the particle's offset from the box centre, and round-off."""
    true = _shifts(0)
    data = project(volume, TILTS, 0.4, shifts_ang=true)
    found = center_of_mass_shifts(data, 0.4)
    residual = _remove_translation(found - true, TILTS)
    assert float(residual.abs().max()) < 0.02


def test_common_line_recovers_shifts_along_the_axis(volume: torch.Tensor) -> None:
    true = _shifts(1)
    data = project(volume, TILTS, 0.4, shifts_ang=true)
    found = common_line_shifts(data, TILTS, 0.4)
    along = true[:, 0] - true[:, 0].mean()  # axis y, mean removed (a volume translation)
    assert float((found[:, 0] - along).abs().max()) < 0.03
    assert float(found[:, 1].abs().max()) < 1e-12  # nothing across the axis


def test_cross_correlation_against_references(volume: torch.Tensor) -> None:
    true = _shifts(2)
    references = project(volume, TILTS, 0.4)
    data = project(volume, TILTS, 0.4, shifts_ang=true)
    found = cross_correlation_shifts(data, references, 0.4, upsample=50)
    assert float((found - true).abs().max()) < 0.03


def test_rotation_errors_remove_a_common_rotation() -> None:
    errors = rotation_errors_deg(TILTS + torch.tensor([0.0, 2.0, 0.0]), TILTS)  # about y
    assert float(errors.max()) < 1e-6
    noisy = TILTS.clone()
    noisy[3, 1] += 0.5
    errors = rotation_errors_deg(noisy, TILTS)
    assert float(errors[3]) == pytest.approx(0.5 * 14 / 15, abs=0.02)  # minus its share of Q


def test_joint_refinement_then_atoms_recover_angles_and_shifts(volume: torch.Tensor) -> None:
    """Noise-free, errors of 1° RMS on φ and θ and 0.5 Å on the shifts. The volume-based
    refinement brings the shifts to 0.05 Å and the angles most of the way (a volume of
    free voxels absorbs part of an angle error, so it converges slowly); the atom-based
    refinement (3N + 2S unknowns) then brings every tilt within 0.25° (geodesic, common
    rotation removed; measured 0.18° max) and the atoms within 0.05 Å."""
    rng = np.random.default_rng(3)
    true_shifts = _shifts(3)
    data = project(volume, TILTS, 0.4, shifts_ang=true_shifts).float()
    start = TILTS.clone()
    start[:, :2] += torch.as_tensor(rng.normal(0, 1.0, (len(TILTS), 2)))
    settings = AlignmentSettings(
        levels=(1,), outer_iterations=6, volume_iterations=20, volume=VolumeSettings(iterations=30)
    )
    coarse = refine_alignment(
        data, start, 0.4, shifts_ang=center_of_mass_shifts(data, 0.4), settings=settings
    )
    assert coarse.history[-1]["relative_residual"] < 0.3 * coarse.history[0]["relative_residual"]
    before = rotation_errors_deg(start, TILTS)
    middle = rotation_errors_deg(coarse.euler_deg, TILTS)
    assert float(middle.pow(2).mean()) < 0.5 * float(before.pow(2).mean())
    grid = coarse.volume.numpy()
    traced = trace_atoms(grid, 0.4, min_distance_ang=1.8)
    labels = classify_species(grid, 0.4, traced.positions_ang, num_species=2, radius_ang=0.9).labels
    fine = refine_alignment_with_atoms(
        data, coarse.euler_deg, 0.4, traced.positions_ang, labels, shifts_ang=coarse.shifts_ang
    )
    errors = rotation_errors_deg(fine.euler_deg, TILTS)
    assert float(errors.max()) < 0.25
    shift_error = _remove_translation(fine.shifts_ang - true_shifts, TILTS)
    assert float(shift_error.norm(dim=1).max()) < 0.05
    match = match_atoms(fine.positions_ang, ATOMS.positions, max_distance_ang=1.0)
    assert match.recall == 1.0
    assert match.rmsd_ang < 0.05


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: center_of_mass_shifts(torch.zeros(2, 3), 0.4), "projections must be a real array"),
        (lambda: center_of_mass_shifts(-torch.ones(2, 8, 8), 0.4), "positive integral"),
        (
            lambda: common_line_shifts(torch.ones(2, 8, 8), torch.zeros(3, 3), 0.4),
            "euler_deg must have shape",
        ),
        (
            lambda: common_line_shifts(
                torch.ones(2, 8, 8), torch.tensor([[0.0, 0, 0], [30.0, 0, 0]]), 0.4
            ),
            "single-axis series",
        ),
        (lambda: AlignmentSettings(levels=()), "levels must be binning factors"),
        (lambda: AlignmentSettings(fit_angles=("chi",)), "fit_angles must be a subset"),
    ],
)
def test_bad_input_names_the_parameter(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()
