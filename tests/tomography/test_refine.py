"""Refinement of atom positions against the projections of an FePt nanoparticle.

The specimen is FePt L1_0 (a = 3.85 Å, radius 7 Å: 87 atoms) in the random orientation of
``test_atoms.py``, centred in a 20 Å cube: 50³ voxels of exactly 0.4 Å. Its truth volume
is the voxel-averaged potential of :func:`potential_volume` blurred by a Gaussian of
σ = 0.7 Å (a realistic tomographic resolution, at which an atom traced alone in the volume
is pulled ~0.08 Å towards its neighbours), projected by :func:`project` at θ = −70 … 70° in
10° steps about y. The noisy series adds white noise of 2 % of the brightest projected
pixel. The data come from :func:`project`, the refinement uses its cached sparse form
(``ProjectionOperator``). The refined model is a Gaussian per atom while the truth is the
potential of real atoms: the part of the signal a Gaussian cannot describe (0.9 %) is
measured below.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy import ndimage

from ptyscope.physics.potential import POTENTIAL_PREFACTOR_V_ANG2, electron_scattering_factor
from ptyscope.simulation.specimens import ordered_alloy_cluster, rotate_atoms
from ptyscope.simulation.tilt_series import potential_volume
from ptyscope.tomography.atoms import match_atoms, trace_atoms
from ptyscope.tomography.projector import project
from ptyscope.tomography.refine import refine_atoms_against_projections, render_gaussians

from .test_atoms import A_FEPT, EULER, MATCH, MIN_DISTANCE, VOXEL, _labels

BLUR = 0.7  # Å, Gaussian σ of the resolution
NOISE = 0.02  # × the brightest projected pixel
TILTS_DEG = np.linspace(-70.0, 70.0, 15)
PERTURBATION = 0.25  # Å, RMS |Δr| of the perturbed starting positions


def _specimen(radius_ang: float, box_ang: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions (N, 3) [Å], labels (N,), blurred potential (n, n, n) [V])."""
    atoms = ordered_alloy_cluster(["Fe", "Pt"], "L1_0", A_FEPT, radius_ang, vacuum_ang=4.0)
    atoms.set_cell([box_ang] * 3)  # a box of whole 0.4 Å voxels
    atoms.center()
    atoms = rotate_atoms(atoms, EULER)
    result = potential_volume(atoms, VOXEL)
    assert result["voxel_size_ang"] == (VOXEL, VOXEL, VOXEL)
    volume = ndimage.gaussian_filter(result["potential_v"].astype(np.float64), BLUR / VOXEL)
    return atoms.positions.copy(), _labels(atoms), volume


def _series(volume: np.ndarray, noise: float, seed: int = 1) -> torch.Tensor:
    """Projections (tilts, n, n) [V·Å] at (0, θ, 0), plus white noise of ``noise`` × max."""
    data = project(torch.as_tensor(volume), _euler(), VOXEL)
    if noise:
        generator = torch.Generator().manual_seed(seed)
        scale = noise * float(data.max())
        data = data + scale * torch.randn(data.shape, generator=generator, dtype=data.dtype)
    return data


def _euler() -> torch.Tensor:
    euler = torch.zeros(TILTS_DEG.size, 3, dtype=torch.float64)
    euler[:, 1] = torch.as_tensor(TILTS_DEG)
    return euler


def _perturbed(positions: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return positions + rng.normal(0.0, PERTURBATION / math.sqrt(3), positions.shape)


@pytest.fixture(scope="module")
def fept() -> dict[str, Any]:
    positions, labels, volume = _specimen(radius_ang=7.0, box_ang=20.0)
    traced = trace_atoms(volume, VOXEL, min_distance_ang=MIN_DISTANCE)
    return {
        "positions": positions,
        "labels": labels,
        "clean": _series(volume, 0.0),
        "noisy": _series(volume, NOISE),
        "traced": traced.positions_ang,
    }


# ---------------------------------------------------------------------------------------
# render_gaussians


def test_render_keeps_the_integral_centre_and_width_of_a_gaussian() -> None:
    # The voxel average of a Gaussian: integral A, centroid r0 and per-axis variance
    # σ² + v²/12 (Sheppard's correction), exact up to terms ~exp(−2π²σ²/v²) ≈ 1e-11.
    centre = torch.tensor([[4.137, 4.561, 4.282]], dtype=torch.float64)  # (x, y, z) Å
    sigma, amplitude = 0.45, 3.0
    rho = render_gaussians(
        centre,
        torch.tensor([amplitude], dtype=torch.float64),
        torch.tensor([sigma], dtype=torch.float64),
        (24, 24, 24),
        VOXEL,
        cutoff_sigmas=6.0,
    )
    mass = rho.sum() * VOXEL**3
    assert float(mass) == pytest.approx(amplitude, rel=1e-8)
    z, y, x = (torch.arange(24, dtype=torch.float64) * VOXEL for _ in range(3))
    grid = torch.meshgrid(z, y, x, indexing="ij")
    mean = [float((rho * g).sum() * VOXEL**3 / mass) for g in grid]  # (z, y, x)
    np.testing.assert_allclose(mean[::-1], centre[0].numpy(), atol=1e-9)
    variance = [
        float((rho * (g - m) ** 2).sum() * VOXEL**3 / mass) for g, m in zip(grid, mean, strict=True)
    ]
    np.testing.assert_allclose(variance, sigma**2 + VOXEL**2 / 12, rtol=1e-7)


def test_render_is_differentiable_in_positions_amplitudes_and_widths() -> None:
    inputs = (
        torch.tensor([[1.3, 1.1, 1.6], [2.0, 1.7, 1.2]], dtype=torch.float64),
        torch.tensor([1.0, 2.0], dtype=torch.float64),
        torch.tensor([0.5, 0.4], dtype=torch.float64),
    )
    for tensor in inputs:
        tensor.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, a, s: render_gaussians(p, a, s, (8, 8, 8), VOXEL), inputs
    )


# ---------------------------------------------------------------------------------------
# refine_atoms_against_projections


def test_refine_recovers_an_exact_gaussian_model() -> None:
    # Data made by the model itself (two species), moved by known shifts, one tilt
    # corrupted and masked by zero weights: the model is recovered to ~1e-6 Å.
    truth = torch.tensor(
        [[3.1, 3.3, 2.9], [5.6, 3.2, 3.4], [3.5, 5.7, 4.1], [5.2, 5.5, 5.8]], dtype=torch.float64
    )
    labels = torch.tensor([0, 1, 1, 0])
    amplitudes = torch.tensor([2.0, 5.0], dtype=torch.float64)
    widths = torch.tensor([0.55, 0.45], dtype=torch.float64)
    rho = render_gaussians(truth, amplitudes[labels], widths[labels], (22, 22, 22), VOXEL)
    euler = torch.tensor([[0.0, t, 0.0] for t in (-60, -25, 0, 30, 65)], dtype=torch.float64)
    euler[1, 0], euler[3, 2] = 20.0, -40.0  # not a single-axis series
    shifts = torch.tensor([[0.3, -0.2], [0.0, 0.1], [0.0, 0.0], [-0.4, 0.2], [0.1, 0.3]])
    data = project(rho, euler, VOXEL, shifts_ang=shifts.double())
    weights = torch.ones_like(data)
    data[2] += 5.0 * data.max()  # a ruined projection ...
    weights[2] = 0.0  # ... that the weights leave out
    moves = np.array([[0.2, -0.15, 0.1], [-0.1, 0.2, 0.15], [0, 0.1, -0.2], [0.15, 0, 0.1]])
    start = truth.numpy() + moves
    fit = refine_atoms_against_projections(
        data,
        euler,
        VOXEL,
        start,
        labels,
        shifts_ang=shifts,
        weights=weights,
        iterations=25,
    )
    # Measured after 25 iterations: positions to 1e-6 Å, amplitudes and widths to 2e-7.
    np.testing.assert_allclose(fit.positions_ang, truth.numpy(), atol=1e-5)
    np.testing.assert_allclose(fit.amplitudes, amplitudes.numpy(), rtol=1e-5)
    np.testing.assert_allclose(fit.widths_ang, widths.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(fit.atom_shifts_ang, fit.positions_ang - start)
    assert fit.relative_residuals[-1] < 1e-5  # from 0.25


def test_refine_removes_the_neighbour_bias_of_traced_positions(fept: dict[str, Any]) -> None:
    truth, labels, data = fept["positions"], fept["labels"], fept["clean"]
    start = _perturbed(truth)
    fit = refine_atoms_against_projections(data, _euler(), VOXEL, start, labels, iterations=30)
    before = match_atoms(start, truth, max_distance_ang=MATCH)
    after = match_atoms(fit.positions_ang, truth, max_distance_ang=MATCH)
    traced = match_atoms(fept["traced"], truth, max_distance_ang=MATCH)
    # Measured: 0.254 Å → 0.018 Å in 30 iterations, against 0.090 Å for the Gaussian
    # fits of trace_atoms in the blurred volume (each atom alone, pulled by its
    # neighbours' tails). What remains is the Gaussian model's misfit to real atoms.
    assert before.rmsd_ang > 0.2 and after.recall == 1.0
    assert after.rmsd_ang < 0.03
    assert traced.recall == 1.0 and traced.rmsd_ang > 0.07
    assert after.rmsd_ang < traced.rmsd_ang / 3
    # The misfit falls at every iteration, from 7.5 % to the floor of the model, 0.91 %:
    # the potential of an atom blurred by 0.7 Å is not exactly a Gaussian.
    residuals = np.asarray(fit.relative_residuals)
    assert np.all(np.diff(residuals) <= 0)
    assert residuals[0] > 0.05 and 0.005 < residuals[-1] < 0.012
    # The integral of an atom's potential is 47.878 V·Å² × f_e(0) (Kirkland), blurring
    # and projecting keep it: the fitted amplitudes are it to 0.7 % (Fe) and 1.2 % (Pt).
    expected = [
        POTENTIAL_PREFACTOR_V_ANG2 * float(electron_scattering_factor(s, torch.zeros(1))[0])
        for s in ("Fe", "Pt")
    ]  # 343.0 and 535.2 V·Å³
    np.testing.assert_allclose(fit.amplitudes, expected, rtol=0.03)
    # The widths: the 0.7 Å blur with the atom's own extent (measured 0.85 and 0.79 Å).
    assert np.all((fit.widths_ang > BLUR) & (fit.widths_ang < BLUR + 0.25))


def test_refine_noisy_projections_from_traced_positions(fept: dict[str, Any]) -> None:
    truth, labels, data = fept["positions"], fept["labels"], fept["noisy"]
    start = fept["traced"]
    order = match_atoms(start, truth, max_distance_ang=MATCH).pairs
    start_labels = np.empty(len(start), dtype=np.int64)
    start_labels[order[:, 0]] = labels[order[:, 1]]
    fit = refine_atoms_against_projections(
        data, _euler(), VOXEL, start, start_labels, iterations=20
    )
    before = match_atoms(start, truth, max_distance_ang=MATCH)
    after = match_atoms(fit.positions_ang, truth, max_distance_ang=MATCH)
    # Measured 0.090 → 0.039 Å in 20 iterations (0.036 Å at convergence). The noise
    # alone allows ~0.02 Å RMS (Cramér-Rao for isolated Gaussians of the fitted amplitudes
    # and widths in 15 projections: 0.015 Å per coordinate for Fe, 0.009 Å for Pt), the
    # model ~0.018 Å, and overlapping neighbours share information: allow 0.06 Å
    # (experimental AET: ~0.2 Å).
    assert after.recall == 1.0 and after.precision == 1.0
    assert after.rmsd_ang < 0.06 and after.rmsd_ang < before.rmsd_ang / 2
    # The fit stops at the noise: the residual is the noise and the model's floor (0.91 %
    # of the clean signal) added in quadrature (measured 6.946 % for 6.964 %).
    clean = fept["clean"]
    noise = float(torch.linalg.norm(data - clean) / torch.linalg.norm(data))
    floor = 0.0091 * float(torch.linalg.norm(clean) / torch.linalg.norm(data))
    assert fit.relative_residuals[-1] == pytest.approx(math.hypot(noise, floor), rel=0.02)


def test_per_atom_amplitudes_flag_mislabelled_atoms() -> None:
    positions, labels, volume = _specimen(radius_ang=5.0, box_ang=16.0)  # 43 atoms, 40³
    data = _series(volume, NOISE)
    wrong = labels.copy()
    pt_as_fe, fe_as_pt = np.flatnonzero(labels == 1)[:2], np.flatnonzero(labels == 0)[:1]
    wrong[pt_as_fe], wrong[fe_as_pt] = 0, 1
    fit = refine_atoms_against_projections(
        data,
        _euler(),
        VOXEL,
        _perturbed(positions),
        wrong,
        iterations=15,
        per_atom_amplitudes=True,
    )
    # Each atom's amplitude follows its true species (measured Fe 312-343 V·Å³, Pt
    # 523-564 V·Å³; the mislabelled Pt atoms 540 and 553, the Fe atom 311), so the
    # labels can be corrected; with per-species amplitudes these three atoms end 0.3-0.9 Å
    # off and drag the whole model to 0.13 Å RMSD (measured).
    midpoint = 0.5 * (fit.amplitudes[0] + fit.amplitudes[1])
    assert np.all(fit.atom_amplitudes[pt_as_fe] > midpoint)
    assert np.all(fit.atom_amplitudes[fe_as_pt] < midpoint)
    right = np.setdiff1d(np.arange(len(labels)), np.r_[pt_as_fe, fe_as_pt])
    assert np.all((fit.atom_amplitudes[right] < midpoint) == (labels[right] == 0))
    match = match_atoms(fit.positions_ang, positions, max_distance_ang=MATCH)
    assert match.recall == 1.0 and match.rmsd_ang < 0.08  # measured 0.040 Å


def test_zero_iterations_return_the_starting_model() -> None:
    truth = torch.tensor([[3.0, 3.2, 2.8]], dtype=torch.float64)
    one, width = torch.ones(1, dtype=torch.float64), torch.full((1,), 0.6, dtype=torch.float64)
    rho = render_gaussians(truth, one, width, (16, 16, 16), VOXEL)
    euler = torch.tensor([[0.0, -50.0, 0.0], [0.0, 40.0, 0.0]], dtype=torch.float64)
    data = project(rho, euler, VOXEL)
    fit = refine_atoms_against_projections(
        data, euler, VOXEL, truth, torch.tensor([0]), iterations=0, initial_widths_ang=0.6
    )
    np.testing.assert_array_equal(fit.positions_ang, truth.numpy())
    assert not fit.atom_shifts_ang.any() and len(fit.relative_residuals) == 1
    # The amplitude is the linear least-squares one: exact for the right width.
    assert fit.amplitudes[0] == pytest.approx(1.0, rel=1e-6)
    assert fit.relative_residuals[0] < 1e-6 and not fit.converged


# ---------------------------------------------------------------------------------------
# Bad input


DATA = torch.ones(2, 10, 10, dtype=torch.float64)
EULER2 = torch.tensor([[0.0, -30.0, 0.0], [0.0, 30.0, 0.0]], dtype=torch.float64)
POSITIONS = np.array([[2.0, 2.0, 2.0]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"projections": torch.ones(10, 10)}, r"projections must .* got .*\(10, 10\)"),
        ({"projections": np.ones((2, 10, 10))}, "projections must be a torch tensor"),
        ({"projections": DATA * np.nan}, "projections must be finite"),
        ({"projections": DATA * 0}, "projections must not be zero"),
        ({"euler_deg": EULER2[:1]}, r"euler_deg must .*\(tilts, 3\) = \(2, 3\).*\(1, 3\)"),
        ({"voxel_ang": 0.0}, r"voxel_ang must be > 0 Å, got 0.0"),
        ({"positions": np.zeros((1, 2))}, r"positions must have shape \(N, 3\).*\(1, 2\)"),
        ({"positions": np.zeros((0, 3))}, r"positions must .* N >= 1"),
        ({"positions": [[9.0, 2.0, 2.0]]}, r"positions must lie inside the volume.*9.0"),
        ({"labels": [0, 1]}, r"labels must be integers of shape \(1,\).*\(2,\)"),
        ({"labels": [-1]}, "labels must be >= 0, got minimum -1"),
        ({"shifts_ang": torch.zeros(3, 2)}, r"shifts_ang must .*\(2, 2\).*\(3, 2\)"),
        ({"weights": -torch.ones(2, 10, 10)}, "weights must be >= 0 .* minimum -1"),
        ({"weights": torch.zeros(2, 10, 10)}, "weights must be >= 0 with at least one > 0"),
        ({"depth": 1}, "depth must be an integer >= 2, got 1"),
        ({"iterations": -1}, "iterations must be an integer >= 0, got -1"),
        ({"iterations": 2.5}, "iterations must be an integer >= 0, got 2.5"),
        ({"initial_widths_ang": 0.05}, r"initial_widths_ang must be > voxel_ang / 4 = 0.1 Å"),
        ({"initial_widths_ang": [0.5, 0.6]}, r"initial_widths_ang must be one number or one"),
        ({"initial_amplitudes": -1.0}, "initial_amplitudes must be > 0 .* got -1.0"),
        ({"cutoff_sigmas": 1.0}, "cutoff_sigmas must be >= 2, got 1.0"),
        ({"tolerance": -1e-3}, "tolerance must be >= 0, got -0.001"),
    ],
)
def test_bad_input_names_the_parameter_the_rule_and_the_value(
    kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {
        "projections": DATA,
        "euler_deg": EULER2,
        "voxel_ang": 0.4,
        "positions": POSITIONS,
        "labels": [0],
    }
    arguments |= kwargs
    with pytest.raises(ValueError, match=message):
        refine_atoms_against_projections(**arguments)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: render_gaussians(torch.zeros(2, 2), torch.ones(2), torch.ones(2), (4,) * 3, 1),
            r"positions_ang must have shape \(N, 3\)",
        ),
        (
            lambda: render_gaussians(torch.zeros(2, 3), torch.ones(3), torch.ones(2), (4,) * 3, 1),
            r"amplitudes must have shape \(2,\), got \(3,\)",
        ),
        (
            lambda: render_gaussians(torch.zeros(1, 3), torch.ones(1), torch.zeros(1), (4,) * 3, 1),
            "widths_ang must be > 0 Å, got minimum 0",
        ),
        (
            lambda: render_gaussians(torch.zeros(1, 3), torch.ones(1), torch.ones(1), (4, 4), 1),
            r"shape must be \(nz, ny, nx\)",
        ),
        (
            lambda: render_gaussians(torch.zeros(1, 3), torch.ones(1), torch.ones(1), (4,) * 3, 0),
            "voxel_ang must be > 0 Å, got 0",
        ),
    ],
)
def test_render_bad_input(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
