"""Relative column displacements, lattice fit and strain from column positions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptyscope.analysis.metrics import (
    LatticeFit,
    lattice_parameters,
    relative_displacements,
    strain_map,
    summarize_displacements,
)

A_ANG = 3.905  # cubic SrTiO3


def _srtio3(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """[001] projection of cubic SrTiO3, n x n cells: Sr at the cell corners (i, j)·a,
    TiO at (i + ½, j + ½)·a and O at (i + ½, j)·a and (i, j + ½)·a, (y, x) [Å].
    Every column type fills i, j in [0, n), so the last row and column of TiO columns lack
    neighbours (an image's field of view cuts the crystal like this)."""
    i, j = (g.ravel() for g in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    cells = np.column_stack([i, j]).astype(float)
    parts = {
        "Sr": cells,
        "TiO": cells + 0.5,
        "O": np.vstack([cells + np.array([0.5, 0.0]), cells + np.array([0.0, 0.5])]),
    }
    positions = np.vstack(list(parts.values())) * A_ANG
    labels = np.concatenate([[name] * len(p) for name, p in parts.items()])
    order = np.random.default_rng(7).permutation(len(labels))  # input order must not matter
    return positions[order], labels[order]


@pytest.mark.parametrize("neighbour", ["Sr", "O"])
def test_cubic_srtio3_has_no_relative_displacement(neighbour: str) -> None:
    positions, labels = _srtio3()
    _, d = relative_displacements(positions, labels, "TiO", neighbour)
    assert len(d) == 11 * 11  # the 23 TiO columns on the open edges are skipped
    assert np.abs(d).max() < 1e-9


@pytest.mark.parametrize("neighbour", ["Sr", "O"])
def test_polar_shift_of_ti_o_columns_is_recovered_to_half_a_pm(neighbour: str) -> None:
    rng = np.random.default_rng(2022)
    positions, labels = _srtio3(16)
    shift_ang = 0.05 * np.array([math.sin(0.4), math.cos(0.4)])  # 5 pm, oblique
    positions[labels == "TiO"] += shift_ang
    positions += rng.normal(scale=0.01, size=positions.shape)  # 1 pm on every column
    result = relative_displacements(positions, labels, "TiO", neighbour)
    summary = summarize_displacements(result.displacements_ang)
    assert summary.count == 15 * 15
    np.testing.assert_allclose(summary.mean_pm, 100 * shift_ang, atol=0.5)
    assert summary.mean_magnitude_pm == pytest.approx(5.0, abs=0.5)
    # Precision: one column's 1 pm noise plus a quarter of four neighbours' -> ~1.1 pm.
    assert 0.8 < max(summary.std_pm) < 1.5
    np.testing.assert_allclose(result.displacements_pm, 100 * result.displacements_ang)


def test_edge_columns_are_skipped_and_would_be_wrong() -> None:
    positions, labels = _srtio3()
    kept, _ = relative_displacements(positions, labels, "TiO", "Sr")
    assert kept.max(axis=0) == pytest.approx([10.5 * A_ANG] * 2)  # row/column 11.5 dropped
    everything, d = relative_displacements(positions, labels, "TiO", "Sr", max_distance_ang=100.0)
    assert len(everything) == 12 * 12
    assert np.hypot(*d.T).max() > 0.5 * A_ANG  # one-sided neighbours: a meaningless shift
    tight, _ = relative_displacements(positions, labels, "TiO", "Sr", max_distance_ang=2.7)
    assert len(tight) == 0  # the Sr neighbours are a/√2 = 2.761 Å away


def test_displacement_errors_name_the_parameter() -> None:
    positions, labels = _srtio3(3)
    with pytest.raises(ValueError, match=r"center_label='Ti' is not among the labels"):
        relative_displacements(positions, labels, "Ti", "Sr")
    with pytest.raises(ValueError, match=r"neighbours must lie in \[1, 9\]"):
        relative_displacements(positions, labels, "TiO", "Sr", neighbours=10)
    with pytest.raises(ValueError, match=r"positions_ang must have shape \(K, 2\)"):
        relative_displacements(positions.T, labels, "TiO", "Sr")
    with pytest.raises(ValueError, match="labels must hold one label per column"):
        relative_displacements(positions, labels[:-1], "TiO", "Sr")
    with pytest.raises(ValueError, match="max_distance_ang must be > 0"):
        relative_displacements(positions, labels, "TiO", "Sr", max_distance_ang=-1.0)


def _lattice(basis: np.ndarray, n: int = 14) -> np.ndarray:
    i, j = (g.ravel() for g in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    points: np.ndarray = np.column_stack([i, j]) @ basis + np.array([1.3, -2.1])
    return points


def _basis(a_ang: float, b_ang: float, gamma_deg: float, phi_deg: float) -> np.ndarray:
    """Rows a, b in (y, x): a at phi from +x, b at phi + gamma (towards +y)."""
    phi, gamma = math.radians(phi_deg), math.radians(gamma_deg)
    a = a_ang * np.array([math.sin(phi), math.cos(phi)])
    b = b_ang * np.array([math.sin(phi + gamma), math.cos(phi + gamma)])
    return np.stack([a, b])


@pytest.mark.parametrize(
    ("a", "b", "gamma", "phi"),
    [(3.944, 3.885, 90.6, 7.0), (3.905, 5.522, 88.7, -4.0), (2.46, 2.47, 119.6, 12.0)],
    ids=["strained-cubic", "rectangular", "hexagonal-like"],
)
def test_lattice_parameters_recover_a_strained_lattice(
    a: float, b: float, gamma: float, phi: float
) -> None:
    rng = np.random.default_rng(5)
    points = _lattice(_basis(a, b, gamma, phi))
    points += rng.normal(scale=0.002, size=points.shape)  # 0.2 pm
    others = rng.uniform(-5, 50, size=(40, 2))  # other species are ignored
    labels = ["Sr"] * len(points) + ["O"] * len(others)
    fit = lattice_parameters(np.vstack([points, others]), labels, "Sr")
    assert fit.a_ang == pytest.approx(a, rel=1e-4)
    assert fit.b_ang == pytest.approx(b, rel=1e-4)
    assert fit.angle_deg == pytest.approx(gamma, rel=1e-4)
    assert math.degrees(math.atan2(*fit.basis_ang[0])) == pytest.approx(phi, abs=0.01)
    assert fit.residual_rms_ang == pytest.approx(0.002 * math.sqrt(2), rel=0.2)
    np.testing.assert_allclose(fit.origin_ang + fit.indices @ fit.basis_ang, points, atol=0.01)


def test_lattice_errors_name_the_parameter() -> None:
    with pytest.raises(ValueError, match=r"label='Sr' must have >= 3 columns"):
        lattice_parameters(np.zeros((2, 2)), ["Sr", "Sr"], "Sr")
    with pytest.raises(ValueError, match="do not span a 2D lattice"):
        lattice_parameters(np.column_stack([np.zeros(5), np.arange(5.0)]), ["Sr"] * 5, "Sr")


def _reference() -> tuple[np.ndarray, LatticeFit]:
    basis = _basis(3.905, 3.905, 90.0, 3.0)
    points = _lattice(basis, 12)
    return points, lattice_parameters(points, ["Sr"] * len(points), "Sr")


def test_strain_map_recovers_a_uniform_strain() -> None:
    points, reference = _reference()
    strain = np.array([[0.01, 0.003], [0.003, -0.004]])  # (y, x): eps_yy, eps_xy, eps_xx
    strained = points @ (np.eye(2) + strain).T
    result = strain_map(strained, reference)
    assert np.all(result.neighbours >= 3)  # corners have 3 neighbour vectors
    for values, expected in [
        (result.eps_yy, 0.01),
        (result.eps_xx, -0.004),
        (result.eps_xy, 0.003),
        (result.rotation_mrad, 0.0),
    ]:
        np.testing.assert_allclose(values, expected, atol=1e-9)
    noisy = strained + np.random.default_rng(3).normal(scale=0.002, size=points.shape)
    result = strain_map(noisy, reference)  # 0.2 pm noise
    assert np.mean(result.eps_yy) == pytest.approx(0.01, abs=1e-4)
    assert np.mean(result.eps_xx) == pytest.approx(-0.004, abs=1e-4)
    assert np.mean(result.eps_xy) == pytest.approx(0.003, abs=1e-4)


def test_strain_map_rotation_sign_turns_x_towards_y() -> None:
    points, reference = _reference()
    omega = 2e-3  # x̂ -> (sin ω, cos ω) in (y, x)
    rotation = np.array([[math.cos(omega), math.sin(omega)], [-math.sin(omega), math.cos(omega)]])
    result = strain_map(points @ rotation.T, reference.basis_ang)
    np.testing.assert_allclose(result.rotation_mrad, 2.0, atol=1e-9)
    np.testing.assert_allclose(result.eps_xy, 0.0, atol=1e-12)
    np.testing.assert_allclose(result.eps_yy, math.cos(omega) - 1, atol=1e-12)


def test_strain_map_leaves_isolated_columns_out_and_checks_its_inputs() -> None:
    points, reference = _reference()
    lonely = np.vstack([points, [[200.0, 200.0]]])
    result = strain_map(lonely, reference)
    assert np.isnan(result.eps_yy[-1]) and result.neighbours[-1] == 0
    assert np.all(np.isfinite(result.eps_yy[:-1]))
    with pytest.raises(ValueError, match="reference_lattice must be a LatticeFit"):
        strain_map(points, np.eye(3))
    with pytest.raises(ValueError, match="radius_ang must be > 0"):
        strain_map(points, reference, radius_ang=0.0)
    with pytest.raises(ValueError, match="min_neighbours must be an integer >= 2"):
        strain_map(points, reference, min_neighbours=1)
