"""Specimen builders: composition, geometry, rotation convention, file round trips."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.geometry import get_distances

from ptyscope.simulation.specimens import (
    crystal_slab,
    fcc_cluster,
    load_atoms,
    load_trajectory,
    ordered_alloy_cluster,
    ordered_alloy_unit_cell,
    rotate_atoms,
    rotation_matrix,
    srtio3_slab,
    srtio3_two_domain,
    srtio3_unit_cell,
    tilted_crystal,
    two_domain_specimen,
)

A_STO = 3.905  # Å
A_AU = 4.08  # Å


def column_direction(atoms: Atoms, symbol: str, spacing_ang: float) -> np.ndarray:
    """Unit vector along the atomic columns, measured from positions alone: the mean of
    the nearest-neighbour steps (length ``spacing_ang``) that point mostly along +z."""
    pos = atoms.positions[np.array(atoms.get_chemical_symbols()) == symbol]
    steps = (pos[None, :, :] - pos[:, None, :]).reshape(-1, 3)
    near = np.abs(np.linalg.norm(steps, axis=1) - spacing_ang) < 1e-6
    along = steps[near & (steps[:, 2] > 0.5 * spacing_ang)]
    assert len(along) > 10
    direction: np.ndarray = along.mean(axis=0)
    return direction / np.linalg.norm(direction)


# --- crystal slabs ----------------------------------------------------------------------


def test_srtio3_slab_composition_cell_and_density() -> None:
    slab = srtio3_slab((3, 2), thickness_ang=10.0)  # 10 / 3.905 = 2.56 -> 3 cells
    assert len(slab) == 3 * 2 * 3 * 5
    assert Counter(slab.get_chemical_symbols()) == {"Sr": 18, "Ti": 18, "O": 54}
    np.testing.assert_allclose(slab.cell.array, np.diag([3, 2, 3]) * A_STO, atol=1e-12)
    assert slab.pbc.tolist() == [True, True, False]
    assert len(slab) / slab.get_volume() == pytest.approx(5 / A_STO**3, rel=1e-12)
    assert slab.positions[:, 2].min() == 0.0  # entrance surface is a SrO plane at z = 0
    assert slab.positions[:, 2].max() < 3 * A_STO


def test_srtio3_bond_lengths() -> None:
    slab = srtio3_slab((2, 2), thickness_ang=2 * A_STO)
    symbols = np.array(slab.get_chemical_symbols())

    def min_distance(s1: str, s2: str) -> float:
        _, d = get_distances(
            slab.positions[symbols == s1], slab.positions[symbols == s2], slab.cell, slab.pbc
        )
        return float(d.min())

    assert min_distance("Ti", "O") == pytest.approx(A_STO / 2, abs=1e-12)
    assert min_distance("Sr", "O") == pytest.approx(A_STO / math.sqrt(2), abs=1e-12)
    assert min_distance("Sr", "Ti") == pytest.approx(A_STO * math.sqrt(3) / 2, abs=1e-12)


@pytest.mark.parametrize(
    ("cells", "expected_nz"), [(0.5, 1), (1.49, 1), (1.5, 2), (2.51, 3), (7.0, 7)]
)
def test_thickness_rounds_to_whole_cells(cells: float, expected_nz: int) -> None:
    slab = srtio3_slab((1, 1), thickness_ang=cells * A_STO)
    assert len(slab) == 5 * expected_nz
    assert slab.cell[2, 2] == pytest.approx(expected_nz * A_STO)


def test_slab_errors_name_the_parameter_and_value() -> None:
    with pytest.raises(ValueError, match=r"thickness_ang must be >= half .* got 1\.0"):
        srtio3_slab((1, 1), thickness_ang=1.0)
    with pytest.raises(ValueError, match=r"thickness_ang must be > 0 Å, got -3"):
        srtio3_slab((1, 1), thickness_ang=-3)
    with pytest.raises(ValueError, match=r"repeat_xy entries must be >= 1, got \(0, 2\)"):
        srtio3_slab((0, 2), thickness_ang=4.0)
    with pytest.raises(TypeError, match="repeat_xy must be a pair of integers"):
        srtio3_slab((2.0, 2), thickness_ang=4.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unit_cell must have an orthorhombic cell"):
        crystal_slab(bulk("Cu", "fcc", a=3.61), (2, 2), 10.0)  # primitive fcc cell


def test_crystal_slab_wraps_and_tiles_any_orthorhombic_cell() -> None:
    unit = bulk("Cu", "fcc", a=3.61, cubic=True)
    unit.positions += 3.61  # one full cell out: must be wrapped back
    slab = crystal_slab(unit, (2, 3), thickness_ang=3 * 3.61)
    assert len(slab) == 4 * 2 * 3 * 3
    frac = slab.get_scaled_positions(wrap=False)
    assert frac.min() >= 0.0 and frac.max() < 1.0


# --- rotations --------------------------------------------------------------------------


def test_rotation_matrix_is_proper_orthonormal() -> None:
    rng = np.random.default_rng(0)
    for euler in rng.uniform(-360, 360, size=(20, 3)):
        r = rotation_matrix(tuple(euler))
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-14)
        assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-14)


def test_tilt_about_y_follows_the_right_hand_rule() -> None:
    theta = 25.0
    r = rotation_matrix((0.0, theta, 0.0))
    c, s = math.cos(math.radians(theta)), math.sin(math.radians(theta))
    np.testing.assert_allclose(r @ [1, 0, 0], [c, 0, -s], atol=1e-14)  # x toward -z
    np.testing.assert_allclose(r @ [0, 0, 1], [s, 0, c], atol=1e-14)  # z toward +x
    np.testing.assert_allclose(r @ [0, 1, 0], [0, 1, 0], atol=1e-14)  # y is the axis


def test_phi_turns_x_counterclockwise_about_z() -> None:
    phi = 40.0
    c, s = math.cos(math.radians(phi)), math.sin(math.radians(phi))
    np.testing.assert_allclose(rotation_matrix((phi, 0, 0)) @ [1, 0, 0], [c, s, 0], atol=1e-14)
    np.testing.assert_allclose(rotation_matrix((0, 0, phi)) @ [1, 0, 0], [c, s, 0], atol=1e-14)


def test_euler_angles_compose_as_zyz_product() -> None:
    phi, theta, psi = 33.0, -71.0, 112.0
    product = (
        rotation_matrix((phi, 0, 0)) @ rotation_matrix((0, theta, 0)) @ rotation_matrix((0, 0, psi))
    )
    np.testing.assert_allclose(rotation_matrix((phi, theta, psi)), product, atol=1e-14)
    # The beam axis ends up at polar angle θ and azimuth φ, independent of ψ.
    zone = rotation_matrix((phi, theta, psi)) @ [0, 0, 1]
    f, t = math.radians(phi), math.radians(theta)
    expected = [math.cos(f) * math.sin(t), math.sin(f) * math.sin(t), math.cos(t)]
    np.testing.assert_allclose(zone, expected, atol=1e-14)


def test_genfire_angles_are_negated_and_reversed() -> None:
    """GENFIRE's RELION/XMIPP matrix (genfire/utility.py, fillInFourierGrid.m), written out
    entry by entry, is the transpose of ours: GENFIRE (φ, θ, ψ) = ptyscope (−ψ, −θ, −φ)."""
    phi, theta, psi = np.radians([20.0, 35.0, -50.0])
    cf, ct, cs = np.cos([phi, theta, psi])
    sf, st, ss = np.sin([phi, theta, psi])
    genfire = np.array(
        [
            [cs * ct * cf - ss * sf, cs * ct * sf + ss * cf, -cs * st],
            [-ss * ct * cf - cs * sf, -ss * ct * sf + cs * cf, ss * st],
            [st * cf, st * sf, ct],
        ]
    )
    np.testing.assert_allclose(rotation_matrix((20, 35, -50)).T, genfire, atol=1e-14)
    np.testing.assert_allclose(rotation_matrix((50, -35, -20)), genfire, atol=1e-14)


def test_rotation_matrix_is_exact_at_quarter_turns_and_validates() -> None:
    assert rotation_matrix((90, 0, 0)).tolist() == [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    assert rotation_matrix((0, -270, 0)).tolist() == [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]
    with pytest.raises(ValueError, match=r"euler_deg must be three finite numbers"):
        rotation_matrix((1.0, 2.0))
    with pytest.raises(ValueError, match=r"euler_deg must be three finite numbers"):
        rotation_matrix((1.0, math.nan, 0.0))


def test_rotate_atoms_rotates_a_copy_about_the_cell_centre() -> None:
    slab = srtio3_slab((2, 2), thickness_ang=2 * A_STO)
    before = slab.positions.copy()
    tilted = rotate_atoms(slab, (10.0, 30.0, -5.0))
    np.testing.assert_array_equal(slab.positions, before)  # input untouched
    centre = 0.5 * slab.cell.array.sum(axis=0)
    expected = (before - centre) @ rotation_matrix((10.0, 30.0, -5.0)).T + centre
    np.testing.assert_allclose(tilted.positions, expected, atol=1e-12)
    np.testing.assert_array_equal(tilted.cell.array, slab.cell.array)
    assert tilted.pbc.tolist() == [False, False, False]
    assert slab.pbc.tolist() == [True, True, False]


def test_rotate_atoms_keeps_pbc_only_for_symmetries_of_the_lattice() -> None:
    square = srtio3_slab((2, 2), thickness_ang=A_STO)
    turned = rotate_atoms(square, (90.0, 0.0, 0.0))
    assert turned.pbc.tolist() == [True, True, False]

    # The turned crystal is the same periodic crystal: same wrapped sites and species.
    def sites(atoms: Atoms) -> list[tuple[str, tuple[float, ...]]]:
        frac = np.round(atoms.get_scaled_positions(wrap=True), 9) % 1.0
        return sorted(zip(atoms.get_chemical_symbols(), map(tuple, frac), strict=True))

    assert sites(turned) == sites(square)
    oblong = srtio3_slab((3, 2), thickness_ang=A_STO)
    assert rotate_atoms(oblong, (90.0, 0.0, 0.0)).pbc.tolist() == [False, False, False]
    assert rotate_atoms(oblong, (180.0, 0.0, 0.0)).pbc.tolist() == [True, True, False]
    assert rotate_atoms(oblong, (0.0, 0.0, 0.0)).pbc.tolist() == [True, True, False]
    assert rotate_atoms(oblong, (0.0, 0.5, 0.0)).pbc.tolist() == [False, False, False]


def test_rotate_atoms_without_cell_turns_about_the_centroid() -> None:
    atoms = Atoms("CO2", positions=[[1, 2, 3], [2.2, 2, 3], [-0.2, 2, 3]])
    turned = rotate_atoms(atoms, (0.0, 90.0, 0.0))
    np.testing.assert_allclose(turned.positions.mean(axis=0), [1, 2, 3], atol=1e-12)
    np.testing.assert_allclose(turned.positions[1], [1, 2, 3 - 1.2], atol=1e-12)
    about_origin = rotate_atoms(atoms, (0.0, 90.0, 0.0), center=(0.0, 0.0, 0.0))
    np.testing.assert_allclose(about_origin.positions[0], [3, 2, -1], atol=1e-12)


# --- tilted crystals --------------------------------------------------------------------


@pytest.mark.parametrize(
    "euler_deg",
    [(0.0, 5.0, 0.0), (30.0, 5.0, -10.0), (-120.0, 2.0, 47.0), (0.0, math.degrees(0.010), 0.0)],
)
def test_tilted_crystal_zone_axis_makes_the_requested_angle(
    euler_deg: tuple[float, float, float],
) -> None:
    phi, theta, _ = euler_deg
    crystal = tilted_crystal(srtio3_unit_cell(), euler_deg, box_ang=(14.0, 14.0, 24.0))
    direction = column_direction(crystal, "Sr", A_STO)
    tilt = math.acos(direction[2])
    assert tilt == pytest.approx(math.radians(theta), abs=1e-9)
    azimuth = math.atan2(direction[1], direction[0])
    assert math.remainder(azimuth - math.radians(phi), 2 * math.pi) == pytest.approx(0, abs=1e-6)


def test_tilted_crystal_fills_the_box_at_bulk_density() -> None:
    box = np.array([30.0, 28.0, 32.0])
    crystal = tilted_crystal(srtio3_unit_cell(), (17.0, 23.0, 41.0), box_ang=tuple(box))
    expected = 5 / A_STO**3 * box.prod()
    assert len(crystal) == pytest.approx(expected, rel=0.03)
    counts = Counter(crystal.get_chemical_symbols())
    assert counts["O"] / counts["Sr"] == pytest.approx(3.0, rel=0.05)
    assert counts["Ti"] / counts["Sr"] == pytest.approx(1.0, rel=0.05)
    assert np.all(crystal.positions >= -1e-6) and np.all(crystal.positions < box)
    np.testing.assert_array_equal(crystal.cell.array, np.diag(box))
    assert not crystal.pbc.any()


def test_untilted_crystal_equals_the_slab() -> None:
    box = (3 * A_STO, 2 * A_STO, 4 * A_STO)
    crystal = tilted_crystal(srtio3_unit_cell(), (0.0, 0.0, 0.0), box_ang=box)
    slab = srtio3_slab((3, 2), thickness_ang=4 * A_STO)

    def sites(atoms: Atoms) -> list[tuple[str, tuple[float, ...]]]:
        rounded = map(tuple, np.round(atoms.positions, 9))
        return sorted(zip(atoms.get_chemical_symbols(), rounded, strict=True))

    assert sites(crystal) == sites(slab)


def test_tilted_crystal_validates_its_box() -> None:
    with pytest.raises(ValueError, match=r"box_ang must be > 0 Å, got -1\.0"):
        tilted_crystal(srtio3_unit_cell(), (0, 1, 0), box_ang=(10.0, -1.0, 10.0))
    with pytest.raises(ValueError, match="box_ang must be three finite numbers"):
        tilted_crystal(srtio3_unit_cell(), (0, 1, 0), box_ang=(10.0, 10.0))


# --- nanoparticles ----------------------------------------------------------------------


def test_fcc_cluster_geometry_and_atom_count() -> None:
    radius, vacuum = 12.0, 4.0
    cluster = fcc_cluster("Au", A_AU, radius_ang=radius, vacuum_ang=vacuum)
    side = 2 * (radius + vacuum)
    np.testing.assert_allclose(cluster.cell.array, np.eye(3) * side)
    assert not cluster.pbc.any()
    centre = np.full(3, side / 2)
    r = np.linalg.norm(cluster.positions - centre, axis=1)
    assert r.max() <= radius + 1e-9
    assert r.min() == pytest.approx(0.0, abs=1e-12)  # an atom sits at the centre
    assert cluster.positions.min() >= vacuum and cluster.positions.max() <= side - vacuum
    distances = cluster.get_all_distances()[np.triu_indices(len(cluster), k=1)]
    assert distances.min() == pytest.approx(A_AU / math.sqrt(2), abs=1e-12)
    expected = 4 / A_AU**3 * 4 / 3 * math.pi * radius**3
    assert len(cluster) == pytest.approx(expected, rel=0.15)


@pytest.mark.parametrize(("radius", "count"), [(2.8, 1), (2.9, 13), (4.1, 19), (5.0, 43)])
def test_fcc_cluster_neighbour_shells(radius: float, count: int) -> None:
    """Shells of FCC at a/√2 (12), a (6), a√(3/2) (24)."""
    assert len(fcc_cluster("Au", A_AU, radius_ang=radius)) == count


def test_l12_unit_cell_tiles_to_exact_a3b() -> None:
    a = 3.75
    cube = crystal_slab(ordered_alloy_unit_cell(("Cu", "Au"), "L1_2", a), (3, 3), 3 * a)
    assert Counter(cube.get_chemical_symbols()) == {"Cu": 81, "Au": 27}
    gold = cube.positions[np.array(cube.get_chemical_symbols()) == "Au"]
    np.testing.assert_allclose(gold / a, np.round(gold / a), atol=1e-12)  # cube corners


def test_l12_cluster_composition_and_coordination() -> None:
    a, radius = 3.75, 18.0  # the ratio swings by ~20% with shell filling below R ~ 4a
    cluster = ordered_alloy_cluster(("Cu", "Au"), "L1_2", a, radius_ang=radius)
    counts = Counter(cluster.get_chemical_symbols())
    assert counts["Cu"] / counts["Au"] == pytest.approx(3.0, rel=0.05)
    # Every Au has 12 Cu nearest neighbours; the central atom is Au (a corner site).
    centre = int(np.argmin(np.linalg.norm(cluster.positions - radius - 5.0, axis=1)))
    assert cluster[centre].symbol == "Au"
    d = cluster.get_distances(centre, range(len(cluster)))
    shell = np.abs(d - a / math.sqrt(2)) < 1e-9
    assert Counter(np.array(cluster.get_chemical_symbols())[shell]) == {"Cu": 12}


def test_l10_cluster_alternates_001_planes() -> None:
    a, radius = 3.85, 9.0
    cluster = ordered_alloy_cluster(("Fe", "Pt"), "L1_0", a, radius_ang=radius, vacuum_ang=2.0)
    plane = np.round((cluster.positions[:, 2] - (radius + 2.0)) / (a / 2)).astype(int)
    symbols = np.array(cluster.get_chemical_symbols())
    assert set(symbols[plane % 2 == 0]) == {"Fe"}
    assert set(symbols[plane % 2 == 1]) == {"Pt"}
    assert len(set(plane.tolist())) >= 8
    counts = Counter(symbols.tolist())
    assert counts["Fe"] / counts["Pt"] == pytest.approx(1.0, rel=0.15)


def test_alloy_and_cluster_errors() -> None:
    with pytest.raises(ValueError, match=r"structure must be one of \['L1_0', 'L1_2'\]"):
        ordered_alloy_cluster(("Cu", "Au"), "B2", 3.75, radius_ang=6.0)
    with pytest.raises(ValueError, match="symbols must be a chemical symbol"):
        ordered_alloy_unit_cell(("Cu", "Xx"), "L1_2", 3.75)
    with pytest.raises(ValueError, match="symbols must be two chemical symbols"):
        ordered_alloy_unit_cell("CuAu", "L1_0", 3.75)
    with pytest.raises(ValueError, match=r"radius_ang must be > 0 Å, got -2"):
        fcc_cluster("Au", A_AU, radius_ang=-2)
    with pytest.raises(ValueError, match=r"vacuum_ang must be >= 0 Å, got -1"):
        fcc_cluster("Au", A_AU, radius_ang=5.0, vacuum_ang=-1)


# --- two-domain specimens ---------------------------------------------------------------


@pytest.mark.parametrize("axis", ["x", "z"])
def test_two_domain_specimen_joins_across_the_boundary(axis: str) -> None:
    k = "xyz".index(axis)
    first = srtio3_slab((2, 2), thickness_ang=2 * A_STO)
    if axis == "x":  # a tilted grain beside it: same y and z extent
        second = tilted_crystal(srtio3_unit_cell(), (0, 4, 0), (9.0, 2 * A_STO, 2 * A_STO))
    else:  # a periodic layer below it, turned 90° about the beam: same x and y extent
        second = rotate_atoms(srtio3_slab((2, 2), thickness_ang=3 * A_STO), (90, 0, 0))
    joined = two_domain_specimen(first, second, axis=axis)  # type: ignore[arg-type]
    assert len(joined) == len(first) + len(second)
    domain = joined.arrays["domain"]
    assert (domain == 0).sum() == len(first) and (domain == 1).sum() == len(second)
    boundary = first.cell[k, k]
    assert joined.info["domain_boundary_ang"] == boundary
    assert np.all(joined.positions[domain == 0, k] < boundary)
    assert np.all(joined.positions[domain == 1, k] >= boundary)
    shift = boundary * np.eye(3)[k]
    np.testing.assert_allclose(joined.positions[domain == 1], second.positions + shift)
    assert joined.cell[k, k] == pytest.approx(first.cell[k, k] + second.cell[k, k])
    expected_pbc = [False, False, False] if axis == "x" else [True, True, False]
    assert joined.pbc.tolist() == expected_pbc


def test_two_domain_specimen_rejects_mismatched_cells() -> None:
    with pytest.raises(ValueError, match="equal cell lengths along y and z"):
        two_domain_specimen(srtio3_slab((2, 2), 8.0), srtio3_slab((2, 3), 8.0), axis="x")
    with pytest.raises(ValueError, match=r"axis must be one of \['x', 'y', 'z'\]"):
        slab = srtio3_slab((2, 2), 8.0)
        two_domain_specimen(slab, slab, axis="w")  # type: ignore[arg-type]


def test_srtio3_two_domain_has_one_zone_axis_domain_and_one_tilted() -> None:
    joined = srtio3_two_domain((3, 3), thickness_ang=6 * A_STO, euler_deg_b=(0.0, 3.0, 0.0))
    np.testing.assert_allclose(np.diag(joined.cell.array), [6 * A_STO, 3 * A_STO, 6 * A_STO])
    domain = joined.arrays["domain"]
    left = joined[domain == 0]
    np.testing.assert_array_equal(left.positions, srtio3_slab((3, 3), 6 * A_STO).positions)
    right = joined[domain == 1]
    assert np.all(right.positions[:, 0] >= 3 * A_STO)
    direction = column_direction(right, "Sr", A_STO)
    assert math.degrees(math.atan2(direction[0], direction[2])) == pytest.approx(3.0, abs=1e-9)
    assert len(right) == pytest.approx(len(left), rel=0.1)


# --- files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["slab.xyz", "slab.extxyz", "slab.traj", "slab.cif"])
def test_load_atoms_round_trip(tmp_path: Path, name: str) -> None:
    slab = srtio3_slab((2, 1), thickness_ang=A_STO)
    path = tmp_path / name
    ase.io.write(path, slab)
    loaded = load_atoms(path)
    assert loaded.get_chemical_symbols() == slab.get_chemical_symbols()
    tol = 1e-4 if name.endswith(".cif") else 1e-10  # CIF stores rounded fractions
    np.testing.assert_allclose(loaded.positions, slab.positions, atol=tol)
    np.testing.assert_allclose(loaded.cell.array, slab.cell.array, atol=tol)


def test_load_trajectory_returns_every_snapshot(tmp_path: Path) -> None:
    slab = srtio3_slab((1, 1), thickness_ang=A_STO)
    rng = np.random.default_rng(7)
    frames = []
    for _ in range(3):
        frame = slab.copy()
        frame.positions += rng.normal(scale=0.05, size=frame.positions.shape)
        frames.append(frame)
    path = tmp_path / "snapshots.traj"
    ase.io.write(path, frames)
    loaded = load_trajectory(path)
    assert len(loaded) == 3
    for got, want in zip(loaded, frames, strict=True):
        np.testing.assert_allclose(got.positions, want.positions, atol=1e-12)
    assert load_atoms(path, index=1).positions == pytest.approx(frames[1].positions)


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.cif"
    with pytest.raises(FileNotFoundError, match=r"missing\.cif"):
        load_atoms(missing)
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is not\na structure file\n")
    with pytest.raises(ValueError, match=r"could not read atoms from .*garbage\.xyz"):
        load_atoms(garbage)
    with pytest.raises(ValueError, match=r"could not read atoms from .*garbage\.xyz"):
        load_trajectory(garbage)


def test_load_trajectory_rejects_frames_of_different_specimens(tmp_path: Path) -> None:
    slab = srtio3_slab((1, 1), thickness_ang=A_STO)
    path = tmp_path / "counts.extxyz"
    ase.io.write(path, [slab, slab[:-1]])
    with pytest.raises(ValueError, match="same number of atoms; frame 0 has 5, frame 1 has 4"):
        load_trajectory(path)
    swapped = slab.copy()
    swapped.symbols[[0, 1]] = ["Ti", "Sr"]
    path = tmp_path / "order.extxyz"
    ase.io.write(path, [slab, swapped])
    with pytest.raises(ValueError, match="same species in the same order; frame 1"):
        load_trajectory(path)
