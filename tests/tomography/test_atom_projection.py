"""Analytic projections of an atomic model, and the refinements that use them.

The reference data are the exact projected potentials of a turned FePt L1_0 particle
(radius 7 Å, 87 atoms, in the orientation of ``test_atoms.py``; 20 Å field of 0.4 Å
pixels), computed by :func:`projected_potential_series` from the simulator's own
projected potential (:func:`ptyscope.physics.potential.projected_potential`), a separate
implementation. No voxel grid is involved, so nothing but the model decides the fit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from ptyscope.config import TomoAtomsConfig
from ptyscope.physics.potential import POTENTIAL_PREFACTOR_V_ANG2, electron_scattering_factor
from ptyscope.simulation.specimens import ordered_alloy_cluster, rotate_atoms
from ptyscope.simulation.tilt_series import projected_potential_series
from ptyscope.tomography.alignment import refine_alignment_with_atoms, rotation_errors_deg
from ptyscope.tomography.atom_projection import check_profiles, project_atoms
from ptyscope.tomography.projector import project
from ptyscope.tomography.refine import refine_atoms_against_projections, render_gaussians

from .test_atoms import A_FEPT, EULER, VOXEL, _labels

F64 = torch.float64
SIZE = 50  # pixels of 0.4 Å: a 20 Å field
CENTER = (SIZE * VOXEL / 2,) * 3
SYMBOLS = ("Fe", "Pt")
BLUR = 0.5  # Å, Gaussian σ of the resolution
TILTS_DEG = np.linspace(-70.0, 70.0, 15)


def _euler(tilts_deg: np.ndarray = TILTS_DEG) -> torch.Tensor:
    euler = torch.zeros(len(tilts_deg), 3, dtype=F64)
    euler[:, 1] = torch.as_tensor(tilts_deg)
    return euler


def _integrals() -> torch.Tensor:
    """47.878 V·Å² · f_e(0) per species: the integral of one atom's potential [V·Å³]."""
    zero = torch.zeros((), dtype=F64)
    return torch.stack(
        [POTENTIAL_PREFACTOR_V_ANG2 * electron_scattering_factor(s, zero) for s in SYMBOLS]
    )


@pytest.fixture(scope="module")
def fept() -> dict[str, Any]:
    atoms = ordered_alloy_cluster(list(SYMBOLS), "L1_0", A_FEPT, 7.0, vacuum_ang=4.0)
    atoms.set_cell([SIZE * VOXEL] * 3)
    atoms.center()
    atoms = rotate_atoms(atoms, EULER)
    return {"atoms": atoms, "positions": atoms.positions.copy(), "labels": _labels(atoms)}


def _data(fept: dict[str, Any], euler: torch.Tensor, shifts: np.ndarray | None = None) -> Any:
    return torch.as_tensor(
        projected_potential_series(
            fept["atoms"],
            euler.numpy(),
            (SIZE, SIZE),
            VOXEL,
            center_ang=CENTER,
            shifts_ang=shifts,
            blur_ang=BLUR,
        )
    )


def test_element_profiles_reproduce_the_projected_potential_at_any_tilt(fept) -> None:
    # Two implementations of Kirkland's projected potential, turned and shifted the same
    # way, agree to 1e-4 of the peak (the rest: padding and cropping).
    euler = torch.tensor([[0.0, -70.0, 0.0], [12.0, 35.0, -20.0], [-5.0, 70.0, 40.0]], dtype=F64)
    shifts = np.array([[0.3, -0.7], [0.0, 0.0], [-1.1, 0.45]])
    labels = torch.as_tensor(fept["labels"])
    model = project_atoms(
        torch.as_tensor(fept["positions"]),
        labels,
        _integrals()[labels],
        torch.full((2,), BLUR, dtype=F64),
        euler,
        (SIZE, SIZE),
        VOXEL,
        profiles=SYMBOLS,
        center_ang=CENTER,
        shifts_ang=torch.as_tensor(shifts),
    )
    data = _data(fept, euler, shifts)
    assert float((model - data).abs().max() / data.max()) < 1e-4


def test_gaussian_profile_matches_rendered_voxels_without_tilt_and_is_sharper_with() -> None:
    # At θ = 0 the bilinear projector does not interpolate: rendered Gaussians projected
    # by it equal the analytic projection up to the 4σ cut-off of the rendering. At 45°
    # the projector's resampling blurs the peak (what the analytic path avoids): linear
    # interpolation adds a variance of v²/6 on average along x, lowering a peak of
    # width σ by about v²/(12 σ²) = 3.7 %.
    positions = torch.tensor([[9.3, 10.1, 10.7], [11.2, 8.9, 9.4]], dtype=F64)
    amplitudes, widths = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.6], dtype=F64)
    labels = torch.tensor([0, 0])
    volume = render_gaussians(positions, amplitudes, widths[labels], (SIZE,) * 3, VOXEL)
    for theta, low, high in ((0.0, 0.0, 2e-4), (45.0, 0.02, 0.06)):
        euler = torch.tensor([[0.0, theta, 0.0]], dtype=F64)
        analytic = project_atoms(
            positions,
            labels,
            amplitudes,
            widths,
            euler,
            (SIZE, SIZE),
            VOXEL,
            profiles=["gaussian"],
            center_ang=CENTER,
        )
        voxels = project(volume, euler, VOXEL)
        loss = float(1 - voxels.max() / analytic.max())
        assert low <= abs(loss) < high, (theta, loss)
        if theta == 0.0:  # and the integral is the same
            assert float(voxels.sum()) == pytest.approx(float(analytic.sum()), rel=1e-4)


def test_projection_is_differentiable_in_every_input() -> None:
    inputs = (
        torch.tensor([[3.1, 2.7, 3.4], [2.2, 3.3, 2.9]], dtype=F64),
        torch.tensor([1.0, 1.5], dtype=F64),
        torch.tensor([0.4, 0.3], dtype=F64),
        torch.tensor([[3.0, 20.0, -4.0]], dtype=F64),
        torch.tensor([[0.2, -0.1]], dtype=F64),
    )
    for tensor in inputs:
        tensor.requires_grad_(True)

    def projection(p, a, s, e, shift):
        return project_atoms(
            p,
            torch.tensor([0, 1]),
            a,
            s,
            e,
            (16, 16),
            VOXEL,
            profiles=["Fe", "Pt"],
            center_ang=(3.0, 3.0, 3.0),
            shifts_ang=shift,
        )

    assert torch.autograd.gradcheck(projection, inputs)


def test_refinement_with_element_profiles_recovers_positions_and_blur(fept) -> None:
    # Exact data, known angles, positions perturbed by 0.15 Å RMS: the element model is
    # the data's own, so the positions and the blur come back to the optimiser's
    # tolerance (the Gaussian model cannot: ~1 % of the signal is not a Gaussian).
    euler = _euler()
    data = _data(fept, euler)
    rng = np.random.default_rng(0)
    start = fept["positions"] + rng.normal(0.0, 0.15 / math.sqrt(3), fept["positions"].shape)
    fit = refine_atoms_against_projections(
        data, euler, VOXEL, start, fept["labels"], iterations=60, profiles=SYMBOLS
    )
    rmsd = float(np.sqrt(((fit.positions_ang - fept["positions"]) ** 2).sum(1).mean()))
    assert rmsd < 0.005
    np.testing.assert_allclose(fit.widths_ang, BLUR, rtol=0.01)
    np.testing.assert_allclose(fit.amplitudes, _integrals().numpy(), rtol=0.01)
    assert fit.relative_residuals[-1] < 1e-3


def test_atom_alignment_with_element_profiles_recovers_every_tilt(fept) -> None:
    # Angles off by 0.5° RMS and shifts by 0.2 Å: every tilt comes back within 0.05°
    # (the issue asks 0.2°), the common rotation aside.
    euler = _euler()
    rng = np.random.default_rng(3)
    shifts = rng.normal(0.0, 0.3, (len(euler), 2))
    data = _data(fept, euler, shifts)
    start = euler.clone()
    start[:, :2] += torch.as_tensor(rng.normal(0.0, 0.5, (len(euler), 2)))
    start_shifts = torch.as_tensor(shifts + rng.normal(0.0, 0.2, shifts.shape))
    positions = fept["positions"] + rng.normal(0.0, 0.05, fept["positions"].shape)
    result = refine_alignment_with_atoms(
        data,
        start,
        VOXEL,
        positions,
        fept["labels"],
        shifts_ang=start_shifts,
        rounds=6,
        profiles=SYMBOLS,
    )
    errors = rotation_errors_deg(result.euler_deg, euler)
    assert float(rotation_errors_deg(start, euler).max()) > 0.5
    assert float(errors.max()) < 0.05, errors


def test_bad_profiles_are_named() -> None:
    with pytest.raises(ValueError, match=r"profiles must name one profile per species \(2\)"):
        check_profiles("profiles", ["Fe"], 2)
    with pytest.raises(ValueError, match=r"got \['Xx'\]"):
        check_profiles("profiles", ["Fe", "Xx"], 2)
    with pytest.raises(ValueError, match=r"atoms\.profile = 'gaussian'"):
        TomoAtomsConfig(symbols=("Fe", "Qq"))
    assert TomoAtomsConfig(symbols=("A", "Qq"), profile="gaussian").profile == "gaussian"
