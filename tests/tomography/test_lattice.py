"""Lattice registration of FePt L1_0, Cu3Au L1_2 and Au nanoparticles.

The FePt specimen, its volume and the tolerances' rationale are those of
``test_atoms.py`` (radius 8 Å, 141 atoms, random orientation, 0.4 Å voxels, σ = 0.3 Å blur);
registration goes through :func:`trace_atoms` and :func:`classify_species` where a test
starts from a volume.
"""

from __future__ import annotations

import math

import ase
import numpy as np
import pytest
from scipy.spatial import cKDTree

from ptyscope.simulation.specimens import (
    fcc_cluster,
    ordered_alloy_cluster,
    rotate_atoms,
    rotation_matrix,
)
from ptyscope.tomography.atoms import classify_species, match_atoms, trace_atoms
from ptyscope.tomography.lattice import register_to_lattice

from .test_atoms import (
    A_FEPT,
    EULER,
    MATCH,
    MIN_DISTANCE,
    NOISE,
    VOXEL,
    _fept,
    _labels,
    _random_euler,
    _volume,
)

GOOD_POSITIONS = np.array(
    [[0.0, 0.0, 0.0], [1.9, 1.9, 0.0], [1.9, 0.0, 1.9], [0.0, 1.9, 1.9], [1.9, 1.9, 3.8]]
)


@pytest.fixture(scope="module")
def fept() -> ase.Atoms:
    return _fept()


def _is_cube_symmetry(matrix: np.ndarray) -> bool:
    """Whether ``matrix`` is one of the 24 rotations of a cube (a signed permutation)."""
    rounded = np.round(matrix)
    return bool(
        np.allclose(matrix, rounded, atol=2e-3)
        and np.all(np.abs(rounded).sum(axis=0) == 1)
        and np.all(np.abs(rounded).sum(axis=1) == 1)
        and round(np.linalg.det(rounded)) == 1
    )


def test_register_ideal_particle(fept: ase.Atoms) -> None:
    result = register_to_lattice(
        fept.positions,
        _labels(fept),
        lattice_constant_ang=A_FEPT,
        structure="L1_0",
        max_distance_ang=MATCH,
    )
    assert result.rms_displacement_ang < 1e-9 and result.mean_displacement_ang < 1e-9
    assert result.unassigned.size == 0 and result.missing_sites_ang.shape == (0, 3)
    assert result.num_interior_sites > 50
    assert result.species_match_fraction == 1.0 and result.order_parameter == 1.0
    # The crystal axes are found up to the cube's symmetry, and the c axis exactly.
    truth = rotation_matrix(EULER)
    assert _is_cube_symmetry(result.rotation.T @ truth)
    assert result.variant is not None and result.variant_fractions is not None
    fractions = sorted(result.variant_fractions.values())
    assert fractions[-1] == 1.0 and fractions[-2] < 0.6  # unambiguous
    c_axis = result.rotation[:, "xyz".index(result.variant.split("crystal ")[1][0])]
    assert abs(abs(float(c_axis @ truth[:, 2])) - 1.0) < 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_register_finds_any_orientation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    euler = _random_euler(rng)
    atoms = rotate_atoms(fcc_cluster("Au", 4.08, radius_ang=9.0), euler)
    positions = atoms.positions + rng.normal(0.0, 0.05, atoms.positions.shape)
    result = register_to_lattice(positions, lattice_constant_ang=4.08, max_distance_ang=0.7)
    assert _is_cube_symmetry(result.rotation.T @ rotation_matrix(euler))
    assert result.unassigned.size == 0 and result.missing_sites_ang.shape == (0, 3)
    # 3D Gaussian scatter of σ = 0.05 Å per axis: RMS |d| = √3 σ less the rigid fit.
    assert result.rms_displacement_ang == pytest.approx(math.sqrt(3) * 0.05, rel=0.15)
    assert result.species_match_fraction is None


def test_register_reports_exactly_the_removed_atoms(fept: ase.Atoms) -> None:
    rng = np.random.default_rng(3)
    centre = 0.5 * fept.cell.lengths()
    interior = np.flatnonzero(np.linalg.norm(fept.positions - centre, axis=1) < 5.0)
    removed = rng.choice(interior, 3, replace=False)
    atoms = fept.copy()
    del atoms[removed.tolist()]
    volume = _volume(atoms, NOISE, seed=1)
    traced = trace_atoms(volume, VOXEL, min_distance_ang=MIN_DISTANCE)
    species = classify_species(volume, VOXEL, traced.positions_ang, radius_ang=1.0)
    result = register_to_lattice(
        traced.positions_ang,
        species.labels,
        lattice_constant_ang=A_FEPT,
        structure="L1_0",
        max_distance_ang=MATCH,
    )
    assert result.missing_sites_ang.shape == (3, 3)
    distance, nearest = cKDTree(fept.positions[removed]).query(result.missing_sites_ang)
    assert sorted(nearest.tolist()) == [0, 1, 2]
    assert distance.max() < 0.05  # the lattice fit of 138 atoms, each within ~0.03 Å
    assert result.unassigned.size == 0 and result.species_match_fraction == 1.0


def test_register_measures_a_displacement_field(fept: ase.Atoms) -> None:
    rng = np.random.default_rng(11)
    field = rng.normal(0.0, 0.1, fept.positions.shape)  # Å, σ = 0.1 Å per axis
    atoms = fept.copy()
    atoms.positions = fept.positions + field
    applied_rms = float(np.sqrt(np.mean(np.sum(field**2, axis=1))))  # ≈ √3 · 0.1 Å

    direct = register_to_lattice(
        atoms.positions, lattice_constant_ang=A_FEPT, max_distance_ang=MATCH
    )
    assert direct.rms_displacement_ang == pytest.approx(applied_rms, rel=0.05)

    # Through the volume: tracing adds ~0.03 Å in quadrature, still well within 20 %.
    traced = trace_atoms(_volume(atoms, NOISE, seed=2), VOXEL, min_distance_ang=MIN_DISTANCE)
    result = register_to_lattice(
        traced.positions_ang, lattice_constant_ang=A_FEPT, max_distance_ang=MATCH
    )
    assert result.rms_displacement_ang == pytest.approx(applied_rms, rel=0.2)
    assert result.missing_sites_ang.shape == (0, 3) and result.unassigned.size == 0
    # Per atom, the measured vectors follow the applied ones (less the rigid-body part).
    match = match_atoms(traced.positions_ang, atoms.positions, max_distance_ang=MATCH)
    measured = result.displacements_ang[match.pairs[:, 0]]
    applied = field[match.pairs[:, 1]]
    applied = applied - applied.mean(axis=0)
    error = np.sqrt(np.mean(np.sum((measured - applied) ** 2, axis=1)))
    assert error < 0.06


def test_register_l12_and_a_disordered_alloy() -> None:
    atoms = rotate_atoms(ordered_alloy_cluster(["Cu", "Au"], "L1_2", 3.75, 8.0), (10, 50, 80))
    labels = (np.asarray(atoms.get_chemical_symbols()) == "Au").astype(np.int64)
    ordered = register_to_lattice(
        atoms.positions, labels, lattice_constant_ang=3.75, structure="L1_2", max_distance_ang=0.6
    )
    assert ordered.species_match_fraction == 1.0 and ordered.order_parameter == 1.0
    assert ordered.variant is not None and "label 1 on the corners" in ordered.variant
    # Shuffled species: no assignment fits well, and the order parameter is near 0.
    shuffled = np.random.default_rng(5).permutation(labels)
    random = register_to_lattice(
        atoms.positions, shuffled, lattice_constant_ang=3.75, structure="L1_2", max_distance_ang=0.6
    )
    assert random.species_match_fraction is not None and random.order_parameter is not None
    assert random.species_match_fraction < 0.85 and abs(random.order_parameter) < 0.25


# ---------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (
            lambda: register_to_lattice(
                GOOD_POSITIONS[:3], lattice_constant_ang=3.8, max_distance_ang=0.5
            ),
            "positions",
        ),
        (
            lambda: register_to_lattice(
                GOOD_POSITIONS, lattice_constant_ang=0.0, max_distance_ang=0.5
            ),
            "lattice_constant_ang",
        ),
        (
            lambda: register_to_lattice(
                GOOD_POSITIONS, lattice_constant_ang=3.8, max_distance_ang=-1.0
            ),
            "max_distance_ang",
        ),
        (
            lambda: register_to_lattice(
                GOOD_POSITIONS, lattice_constant_ang=3.8, max_distance_ang=0.5, structure="bcc"
            ),
            "structure",
        ),
        (
            lambda: register_to_lattice(
                GOOD_POSITIONS, [0, 1], lattice_constant_ang=3.8, max_distance_ang=0.5
            ),
            "labels",
        ),
        (
            lambda: register_to_lattice(
                GOOD_POSITIONS,
                [0, 1, 2, 0, 1],
                lattice_constant_ang=3.8,
                max_distance_ang=0.5,
                structure="L1_0",
            ),
            "labels",
        ),
        (
            lambda: register_to_lattice(
                GOOD_POSITIONS, lattice_constant_ang=3.8, max_distance_ang=0.5, hull_margin_ang=-1.0
            ),
            "hull_margin_ang",
        ),
        (
            lambda: register_to_lattice(
                GOOD_POSITIONS, lattice_constant_ang=9.0, max_distance_ang=0.5
            ),
            "lattice_constant_ang",
        ),
    ],
)
def test_bad_input_names_the_parameter(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()
