"""Periodic lattice dynamics: analytic dispersions, the dense model, and the Bloch sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list

from ptyscope.simulation.lattice_dynamics import (
    ForceConstantBlocks,
    displacement_covariance,
    dynamical_matrix,
    force_constant_blocks,
    in_plane_dispersion,
    phonon_dispersion,
    q_path,
    sample_supercell,
)
from ptyscope.simulation.phonons import (
    _THZ_PER_SQRT_EV_ANG2_AMU,
    BOLTZMANN_EV_PER_K,
    spring_model,
)

A_CU = 3.61  # Å, fcc Cu
A_SC = 2.5  # Å, a simple-cubic toy lattice
A_STO = 3.905  # Å, cubic SrTiO3
STO_SHELLS = [(2.0, 10.0), (2.8, 2.0)]  # Ti–O at 1.95 Å; Sr–O and O–O at 2.76 Å
FCC_SHELLS = [(0.5 * A_CU * math.sqrt(2) + 0.05, 1.5)]  # nearest neighbours at a/√2


def thz(omega2_ev_per_ang2_amu: float) -> float:
    """ν = ω/2π [THz] from ω² in eV/(Å²·amu), converted through SI independently."""
    omega2_si = omega2_ev_per_ang2_amu * 1.602176634e-19 / (1e-20 * 1.66053906660e-27)
    return math.sqrt(omega2_si) / (2 * math.pi * 1e12)


def srtio3() -> Atoms:
    return Atoms(
        "SrTiO3",
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        cell=[A_STO] * 3,
        pbc=True,
    )


def commensurate_q(blocks: ForceConstantBlocks, repeat: tuple[int, int, int]) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n) / n for n in repeat], indexing="ij")
    reduced = np.stack(grid, axis=-1).reshape(-1, 3)
    q: np.ndarray = reduced @ np.linalg.inv(blocks.cell_ang).T
    return q


def test_simple_cubic_100_branches_match_the_analytic_dispersion() -> None:
    """Simple cubic, springs k1 to the 6 first and k2 to the 12 second neighbours.
    D(q) = (1/m) Σ_R k_R (1 − cos 2πq·R) e_R⊗e_R. For q = (ξ/a) x̂ only neighbours with
    R_x ≠ 0 contribute: the 2 along ±x give 2k1(1 − cos 2πξ) to xx; the 8 face diagonals
    with R_x = ±a have e_x² = e_y² (or e_z²) = 1/2, giving 4k2(1 − cos) to xx and 2k2(1 − cos)
    to yy and zz; the xy terms cancel in ± pairs. With 1 − cos 2πξ = 2 sin² πξ:
    ω_L = 2 sqrt((k1 + 2k2)/m)|sin πξ|, ω_T = 2 sqrt(k2/m)|sin πξ| (twice).
    (With k2 = 0 the transverse branches vanish: NN central springs leave SC floppy.)"""
    k1, k2 = 1.3, 0.4
    sc = Atoms("Cu", cell=[A_SC] * 3, pbc=True)
    blocks = force_constant_blocks(sc, [(A_SC + 0.1, k1), (A_SC * math.sqrt(2) + 0.1, k2)])
    xi = np.linspace(0.0, 1.5, 31)  # past the zone boundary: the dispersion is periodic
    nu = phonon_dispersion(blocks, xi[:, None] * np.array([1.0, 0.0, 0.0]) / A_SC)
    mass = float(sc.get_masses()[0])
    sin = np.abs(np.sin(np.pi * xi))
    transverse = 2 * thz(k2 / mass) * sin
    longitudinal = 2 * thz((k1 + 2 * k2) / mass) * sin
    expected = np.stack([transverse, transverse, longitudinal], axis=1)
    np.testing.assert_allclose(nu, expected, rtol=0, atol=1e-10 * float(expected.max()))


def test_fcc_nearest_neighbour_zone_boundary_and_sum_rule() -> None:
    """FCC, central springs k to the 12 neighbours (a/2)(±1, ±1, 0) and permutations.
    At X = (1/a) x̂ (cycles; 2π/a in angular units) 2πq·R = ±π for the 8 neighbours with
    R_x = ±a/2, so 1 − cos = 2, and 0 for the 4 in the yz plane. xx: 8·2·(1/2)k = 8k;
    yy: only the 4 in the xy plane have e_y² = 1/2: 4·2·(1/2)k = 4k; zz likewise; off-
    diagonal terms cancel in ± pairs. Hence ω_L² = 8k/m and ω_T² = 4k/m (twice)."""
    cu = bulk("Cu", "fcc", a=A_CU)  # primitive: one atom, cell edges a/√2 < cutoff
    blocks = force_constant_blocks(cu, FCC_SHELLS)
    k, mass = FCC_SHELLS[0][1], float(cu.get_masses()[0])
    nu_x = phonon_dispersion(blocks, np.array([1.0, 0.0, 0.0]) / A_CU)
    expected = [thz(4 * k / mass), thz(4 * k / mass), thz(8 * k / mass)]
    np.testing.assert_allclose(nu_x, expected, rtol=1e-10)
    # Acoustic sum rule: all three branches vanish at Γ and grow linearly near it.
    assert phonon_dispersion(blocks, np.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    small = phonon_dispersion(blocks, np.array([[1e-4, 0, 0], [2e-4, 0, 0]]) / A_CU)
    np.testing.assert_allclose(small[1] / small[0], 2.0, rtol=1e-6)


def test_conventional_fcc_cell_folds_the_primitive_bands() -> None:
    """The 4-atom cubic cell's 12 branches at q are the primitive cell's 3 at q + G for the
    four cosets G ∈ {0, x̂/a, ŷ/a, ẑ/a} of the cubic reciprocal lattice modulo the fcc one:
    a check of the Cartesian q convention and the bond-vector phases with a basis."""
    primitive = force_constant_blocks(bulk("Cu", "fcc", a=A_CU), FCC_SHELLS)
    cubic = force_constant_blocks(bulk("Cu", "fcc", a=A_CU, cubic=True), FCC_SHELLS)
    q = np.random.default_rng(7).uniform(-0.3, 0.3, size=(5, 3))
    cosets = np.vstack([np.zeros(3), np.eye(3)]) / A_CU
    folded = phonon_dispersion(primitive, q[:, None, :] + cosets[None]).reshape(5, 12)
    np.testing.assert_allclose(
        phonon_dispersion(cubic, q), np.sort(folded, axis=1), rtol=1e-10, atol=1e-10
    )


def test_dynamical_matrix_is_hermitian_and_even_in_q() -> None:
    blocks = force_constant_blocks(srtio3(), STO_SHELLS)
    q = np.random.default_rng(1).normal(scale=0.3, size=(6, 3))
    d = dynamical_matrix(blocks, q)
    assert d.shape == (6, 15, 15) and d.dtype == np.complex128
    scale = float(np.abs(d).max())
    np.testing.assert_allclose(d, d.conj().swapaxes(-1, -2), rtol=0, atol=1e-14 * scale)
    np.testing.assert_allclose(dynamical_matrix(blocks, -q), d.conj(), rtol=0, atol=1e-14 * scale)
    # Frequencies are periodic in the reciprocal lattice (D itself is not, in this gauge).
    b1 = np.linalg.inv(blocks.cell_ang).T[0]
    np.testing.assert_allclose(
        phonon_dispersion(blocks, q + b1), phonon_dispersion(blocks, q), rtol=1e-10
    )


def test_dynamical_matrix_phase_convention_on_a_polar_bond() -> None:
    """Diamond Si, atom 1 at (a/4)(1, 1, 1) bonded to atom 0 by the four vectors
    d ∈ (a/4){(1,1,1), (1,−1,−1), (−1,1,−1), (−1,−1,1)}: with NN springs k,
    D_01(q) = −(k/m) Σ_d exp(+2πi q·d) d̂⊗d̂, complex along [111] (no inversion at a bond)."""
    a, k = 5.43, 2.0
    si = bulk("Si", "diamond", a=a)
    blocks = force_constant_blocks(si, [(a * math.sqrt(3) / 4 + 0.1, k)])
    bonds = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) * a / 4
    assert np.allclose(si.positions[1] - si.positions[0], bonds[0])
    q = np.array([0.3, 0.3, 0.3]) / a
    unit = bonds / np.linalg.norm(bonds, axis=1)[:, None]
    phases = np.exp(2j * np.pi * bonds @ q)
    expected = -k / float(si.get_masses()[0]) * np.einsum("d,da,db->ab", phases, unit, unit)
    assert float(np.abs(expected.imag).max()) > 0.1 * float(np.abs(expected).max())
    np.testing.assert_allclose(dynamical_matrix(blocks, q)[0:3, 3:6], expected, atol=1e-14)


def _shifted_srtio3() -> Atoms:
    atoms = srtio3()
    atoms.positions[3] += atoms.cell[0] - atoms.cell[2]  # an O outside the cell: R ≠ shift
    return atoms


@pytest.mark.parametrize(
    ("atoms", "shells", "repeat"),
    [
        (srtio3(), STO_SHELLS, (2, 2, 2)),
        (_shifted_srtio3(), STO_SHELLS, (3, 2, 1)),
        (bulk("Cu", "fcc", a=A_CU, cubic=True), FCC_SHELLS, (2, 3, 1)),
        (bulk("Cu", "fcc", a=A_CU), FCC_SHELLS, (3, 2, 2)),
    ],
    ids=["SrTiO3-222", "SrTiO3-unwrapped-321", "Cu-cubic-231", "Cu-primitive-322"],
)
def test_bloch_decomposition_equals_the_dense_supercell_model(
    atoms: Atoms, shells: list[tuple[float, float]], repeat: tuple[int, int, int]
) -> None:
    """Frequencies at all commensurate q are the dense model's modes; the covariance is
    k_BT Φ⁺ of ``spring_model(atoms.repeat(repeat))`` (unequal masses included: the rigid
    translations are removed in the same, unweighted metric), in ase's repeat order."""
    blocks = force_constant_blocks(atoms, shells)
    dense = spring_model(atoms.repeat(repeat), shells)
    nu = np.sort(phonon_dispersion(blocks, commensurate_q(blocks, repeat)).ravel())
    nu_dense = dense.mode_frequencies_thz()
    np.testing.assert_allclose(nu, nu_dense, rtol=1e-8, atol=1e-8 * float(nu_dense.max()))
    exact = dense.covariance(300.0)
    covariance = displacement_covariance(blocks, repeat, 300.0)
    assert covariance.shape == exact.shape
    np.testing.assert_allclose(covariance, exact, rtol=0, atol=1e-8 * float(np.abs(exact).max()))


@pytest.mark.parametrize(
    ("atoms", "shells", "repeat"),
    [(bulk("Cu", "fcc", a=A_CU), FCC_SHELLS, (3, 2, 2)), (srtio3(), STO_SHELLS, (3, 1, 1))],
    ids=["Cu-primitive-322", "SrTiO3-311"],
)
def test_sampled_snapshots_have_the_dense_model_covariance(
    atoms: Atoms, shells: list[tuple[float, float]], repeat: tuple[int, int, int]
) -> None:
    blocks = force_constant_blocks(atoms, shells)
    samples = 20_000
    u = sample_supercell(blocks, repeat, 300.0, samples, np.random.default_rng(2025))
    assert u.shape == (samples, len(atoms) * math.prod(repeat), 3) and u.dtype == np.float64
    # Zero net displacement per snapshot and direction (the centre of mass for equal masses).
    assert float(np.abs(u.sum(axis=1)).max()) < 1e-12 * float(np.abs(u).max())
    flat = u.reshape(samples, -1)
    exact = spring_model(atoms.repeat(repeat), shells).covariance(300.0)
    # Entries of a sample covariance scatter by sqrt((C_ii C_jj + C_ij²) / M); allow 5.
    var = np.diag(exact)
    stderr = np.sqrt((var[:, None] * var[None, :] + exact**2) / samples)
    assert float(np.max(np.abs(flat.T @ flat / samples - exact) / stderr)) < 5.0


def test_large_supercell_snapshot_obeys_equipartition() -> None:
    """20×20×4 SrTiO3 (8000 atoms, 24000 DOF; beyond the dense solver). The spring energy
    E = ½ Σ_bonds k (e·(u_j − u_i))², summed over ase bonds of the repeated cell, satisfies
    2E/k_BT ~ χ²(3N − 3): mean 3N − 3, std sqrt(2(3N − 3)). Wrong atom order breaks it."""
    atoms = srtio3()
    repeat = (20, 20, 4)
    blocks = force_constant_blocks(atoms, STO_SHELLS)
    u = sample_supercell(blocks, repeat, 300.0, 2, np.random.default_rng(4))
    supercell = atoms.repeat(repeat)
    assert u.shape == (2, len(supercell), 3)
    assert float(np.abs(u.sum(axis=1)).max()) < 1e-10
    i, j, vectors = neighbor_list("ijD", supercell, STO_SHELLS[-1][0])
    lengths = np.linalg.norm(vectors, axis=1)
    springs = np.where(lengths <= STO_SHELLS[0][0], STO_SHELLS[0][1], STO_SHELLS[1][1])
    stretch = np.einsum("bx,mbx->mb", vectors / lengths[:, None], u[:, j] - u[:, i])
    energy = 0.25 * (springs * stretch**2).sum(axis=1)  # each bond is listed twice
    dof = 3 * len(supercell) - 3
    z = (2 * energy / (BOLTZMANN_EV_PER_K * 300.0) - dof) / math.sqrt(2 * dof)
    assert float(np.abs(z).max()) < 5.0


def test_in_plane_branches_are_the_full_dispersion_less_the_z_branch() -> None:
    # Tetragonal two-atom cell with atoms at z = 0: mirror z -> -z decouples u_z at q_z = 0.
    cell = Atoms("CO", positions=[(0, 0, 0), (2, 2, 0)], cell=[4, 4, 3], pbc=True)
    cell.set_masses([12.0, 40.0])
    blocks = force_constant_blocks(cell, [(3.1, 4.0), (4.2, 1.5)])
    q_xy = np.array([[0.05, 0.0], [0.125, 0.0625], [0.1, 0.1]])
    full = phonon_dispersion(blocks, np.column_stack([q_xy, np.zeros(3)]))
    in_plane = in_plane_dispersion(blocks, q_xy)
    assert in_plane.shape == (3, 4)
    d = dynamical_matrix(blocks, np.column_stack([q_xy, np.zeros(3)]))
    z = [2, 5]
    out_of_plane = np.sqrt(np.linalg.eigvalsh(d[:, z][:, :, z]).clip(0)) * _THZ_PER_SQRT_EV_ANG2_AMU
    np.testing.assert_allclose(
        np.sort(np.concatenate([in_plane, out_of_plane], axis=1), axis=1), full, rtol=1e-6
    )


def test_q_path_through_cubic_and_fcc_special_points() -> None:
    a = 4.0
    points = [("G", (0, 0, 0)), ("X", (0.5, 0, 0)), ("M", (0.5, 0.5, 0)), ("G", (0, 0, 0))]
    q, distance, ticks, labels = q_path(np.eye(3) * a, [*points, ("R", (0.5, 0.5, 0.5))], 10)
    assert q.shape == (41, 3) and distance.shape == (41,) and labels == ["G", "X", "M", "G", "R"]
    np.testing.assert_allclose(q[10], [1 / (2 * a), 0, 0], atol=1e-15)
    np.testing.assert_allclose(q[-1], [1 / (2 * a)] * 3, atol=1e-15)
    half = 1 / (2 * a)
    expected_ticks = np.cumsum([0, half, half, half * math.sqrt(2), half * math.sqrt(3)])
    np.testing.assert_allclose(ticks, expected_ticks, rtol=1e-14)
    np.testing.assert_allclose(np.diff(distance[:11]), half / 10, rtol=1e-12)
    # Reduced coordinates use b_i with a_i·b_j = δ_ij: ase's fcc X = (1/2, 0, 1/2) is at 1/a.
    cu = bulk("Cu", "fcc", a=A_CU)
    special = cu.cell.bandpath().special_points
    q_fcc, *_ = q_path(cu, [("G", special["G"]), ("X", special["X"])], 4)
    assert float(np.linalg.norm(q_fcc[-1])) == pytest.approx(1 / A_CU, rel=1e-14)


def test_invalid_input_gives_messages_naming_the_parameter() -> None:
    slab = srtio3()
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match=r"cell_atoms\.pbc must be True on all three axes"):
        force_constant_blocks(slab, STO_SHELLS)
    with pytest.raises(ValueError, match="shells must increase in distance"):
        force_constant_blocks(srtio3(), [(2.8, 1.0), (2.0, 1.0)])
    blocks = force_constant_blocks(srtio3(), STO_SHELLS)
    rng = np.random.default_rng(0)
    for bad in [(2, 0, 1), (2, 2), (2.0, 2, 2)]:
        with pytest.raises(ValueError, match=r"repeat must be three integers >= 1"):
            sample_supercell(blocks, bad, 300.0, 1, rng)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"temperature_k must be > 0 K, got -5\.0"):
        sample_supercell(blocks, (2, 2, 2), -5.0, 1, rng)
    with pytest.raises(ValueError, match=r"temperature_k must be > 0 K, got 0\.0"):
        displacement_covariance(blocks, (1, 1, 1), 0.0)
    with pytest.raises(ValueError, match="num_snapshots must be an integer >= 1, got 0"):
        sample_supercell(blocks, (2, 2, 2), 300.0, 0, rng)
    with pytest.raises(TypeError, match=r"generator must be a numpy\.random\.Generator"):
        sample_supercell(blocks, (2, 2, 2), 300.0, 1, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"q_inv_ang must have shape \(\.\.\., 3\)"):
        phonon_dispersion(blocks, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at most 12000 degrees of freedom"):
        displacement_covariance(blocks, (10, 10, 10), 300.0)
    with pytest.raises(ValueError, match="num_per_segment must be an integer >= 1, got 0"):
        q_path(np.eye(3), [("G", (0, 0, 0)), ("X", (0.5, 0, 0))], 0)
    # Nearest-neighbour central springs leave simple cubic floppy (zero shear modes).
    floppy = force_constant_blocks(Atoms("Cu", cell=[A_SC] * 3, pbc=True), [(A_SC + 0.1, 1.0)])
    with pytest.raises(ValueError, match="not mechanically stable"):
        sample_supercell(floppy, (2, 2, 2), 300.0, 1, rng)
