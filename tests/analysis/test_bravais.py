"""Bravais lattice and basis of column sets whose nearest-neighbour vectors are not lattice
vectors (honeycomb, two-species checkerboard), and of a four-atom perovskite cell."""

from __future__ import annotations

import numpy as np
import pytest

from ptyscope.analysis.bravais import find_crystal_lattice, high_symmetry_path
from ptyscope.analysis.columns import lattice_sites, srtio3_lattice


def _honeycomb(a_ang: float, rotation_deg: float, half_width_ang: float) -> np.ndarray:
    """(K, 2) (y, x) of a honeycomb: A sites, then B sites, inside a square."""
    rho = np.radians(rotation_deg)
    turn = np.array([[np.cos(rho), -np.sin(rho)], [np.sin(rho), np.cos(rho)]])
    a1, a2 = np.array([a_ang, 0.0]), np.array([a_ang / 2, a_ang * np.sqrt(3) / 2])  # (x, y)
    i, j = np.meshgrid(np.arange(-12, 13), np.arange(-12, 13), indexing="ij")
    sites = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    xy = np.concatenate([sites, sites + (a1 + a2) / 3]) @ turn.T
    return xy[:, ::-1]


@pytest.mark.parametrize("values", [(1.0, 0.75), (1.0, 1.0)], ids=["hBN", "graphene"])
def test_honeycomb_is_hexagonal_with_two_atoms(values: tuple[float, float]) -> None:
    rng = np.random.default_rng(1)
    points = _honeycomb(2.504, 17.0, 12.0)
    brightness = np.repeat(values, len(points) // 2)
    inside = np.all(np.abs(points) < 12.0, axis=1)
    noisy = points[inside] + rng.normal(0, 0.02, (inside.sum(), 2))
    crystal = find_crystal_lattice(
        noisy, brightness[inside] * (1 + rng.normal(0, 0.01, inside.sum()))
    )
    # The nearest-neighbour vectors (1.45 Å) take A onto B: the lattice is a = 2.504 Å.
    assert crystal.hexagonal and crystal.num_basis == 2
    assert crystal.angle_deg == pytest.approx(120.0, abs=0.5)
    lattice = crystal.lattice
    assert np.hypot(*lattice.a_ang) == pytest.approx(2.504, abs=0.01)
    assert np.hypot(*lattice.b_ang) == pytest.approx(2.504, abs=0.01)
    # With a, b at 120° the second atom sits at (2/3, 1/3) or (1/3, 2/3).
    second = np.sort(lattice.fractional[1] % 1.0)
    assert np.allclose(second, [1 / 3, 2 / 3], atol=0.01)
    if values[0] != values[1]:
        assert crystal.basis_values[0] > crystal.basis_values[1]  # brightest first
    assert [label for label, _ in high_symmetry_path(crystal)] == ["Γ", "K", "M", "Γ"]


def test_checkerboard_of_two_species_is_not_its_diagonal_lattice() -> None:
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    cells = np.column_stack([i.ravel(), j.ravel()]) * 4.0
    points = np.concatenate([cells, cells + 2.0])
    two = find_crystal_lattice(points, np.repeat([0.6, 1.0], 64))
    assert two.num_basis == 2 and not two.hexagonal
    assert np.hypot(*two.lattice.a_ang) == pytest.approx(4.0)
    assert two.angle_deg == pytest.approx(90.0)
    assert two.basis_values.tolist() == pytest.approx([1.0, 0.6])  # basis 0 is the bright one
    offset = np.asarray(two.lattice.origin_ang) - 2.0  # a bright column: (2, 2) + 4·(i, j)
    assert np.allclose((offset + 2.0) % 4.0 - 2.0, 0.0, atol=1e-9)
    # Equal columns: the diagonals are lattice vectors, one atom per cell.
    one = find_crystal_lattice(points, np.ones(128))
    assert one.num_basis == 1
    assert np.hypot(*one.lattice.a_ang) == pytest.approx(np.sqrt(8.0))
    assert [label for label, _ in high_symmetry_path(one)] == ["Γ", "X", "M", "Γ"]


def test_small_field_with_scattered_brightness_as_reconstructed() -> None:
    # What a 3 x 3-cell mixed-object reconstruction gave (13 columns inside the margin):
    # the bright species scatters by 0.82-1.03, the dim one by 0.59-0.73, and a lattice
    # translation maps a third of the columns out of the field.
    bright = np.array([[4.0, 8.0], [8.0, 4.0], [4.0, 4.0], [8.0, 8.0]])
    dim = np.array([[y, x] for y in (2.0, 6.0, 10.0) for x in (2.0, 6.0, 10.0)])
    values = np.array(
        [1.03, 0.97, 0.92, 0.82, 0.73, 0.66, 0.64, 0.66, 0.67, 0.62, 0.63, 0.61, 0.59]
    )
    crystal = find_crystal_lattice(np.concatenate([bright, dim]), values)
    assert crystal.num_basis == 2 and crystal.angle_deg == pytest.approx(90.0)
    assert np.hypot(*crystal.lattice.a_ang) == pytest.approx(4.0)
    assert crystal.basis_values[0] > crystal.basis_values[1]


def test_perovskite_cell_has_four_columns_ordered_by_brightness() -> None:
    positions, labels, _ = lattice_sites(
        srtio3_lattice((1.0, 1.0), rotation_deg=5.0), (0, 30, 0, 30)
    )
    values = np.array([{"Sr": 1.0, "TiO": 0.8, "O": 0.35}[label] for label in labels])
    crystal = find_crystal_lattice(positions, values)
    assert crystal.num_basis == 4
    assert np.hypot(*crystal.lattice.a_ang) == pytest.approx(3.905, abs=1e-6)
    assert crystal.basis_values.tolist() == pytest.approx([1.0, 0.8, 0.35, 0.35])
    fractional = crystal.lattice.fractional % 1.0
    assert np.allclose(fractional[1], [0.5, 0.5], atol=1e-6)  # TiO in the cell centre


def test_too_few_columns_or_no_lattice_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least 4 columns"):
        find_crystal_lattice(np.zeros((3, 2)), np.ones(3))
    rng = np.random.default_rng(0)
    scattered = rng.uniform(0, 30, (60, 2))
    with pytest.raises(ValueError, match="lattice translations"):
        find_crystal_lattice(scattered, np.ones(60))
