"""CAVIAR analysis on ensembles with known answers: harmonic snapshots and synthetic images.

The harmonic model is a tetragonal crystal (a = 4 Å, c = 3 Å) with two atoms per cell,
C at (0, 0, 0) and a heavier "O" (40 amu) at (a/2, a/2, 0), and central springs to the
first two shells; viewed along z it is a checkerboard of columns. Its snapshots are exact
draws of u ~ N(0, k_BT Φ⁺) of the periodic supercell, so the in-plane dispersion at q_z = 0
(column mass = atoms per column × atomic mass) is known exactly.
"""

from __future__ import annotations

import ase
import numpy as np
import pytest

from ptyscope.analysis.columns import Lattice, assign_sites
from ptyscope.analysis.dispersion import (
    branch_averages,
    complete_cells,
    kong_dispersion,
    reduced_path,
)
from ptyscope.analysis.truth import column_displacements
from ptyscope.analysis.vibrations import (
    average_equivalent_pairs,
    correlation_pairs,
    debye_waller,
    displacements,
    greens_tensor,
    pair_blocks,
    pair_cosines,
    similarity,
    state_positions,
)
from ptyscope.simulation.lattice_dynamics import (
    displacement_covariance,
    force_constant_blocks,
    in_plane_dispersion,
    sample_supercell,
)
from ptyscope.simulation.phonons import _THZ_PER_SQRT_EV_ANG2_AMU

from ._synthetic import gaussian_columns

A, C, LAYERS, CELLS = 4.0, 3.0, 2, 8
MASSES = (12.0, 40.0)


@pytest.fixture(scope="module")
def model() -> tuple[ase.Atoms, object]:
    cell = ase.Atoms("CO", positions=[(0, 0, 0), (A / 2, A / 2, 0)], cell=[A, A, C], pbc=True)
    cell.set_masses(MASSES)
    return cell, force_constant_blocks(cell, [(3.1, 4.0), (4.2, 1.5)])


def _columns(
    cell: ase.Atoms, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    supercell = cell.repeat((CELLS, CELLS, LAYERS))
    columns, u_col = column_displacements(supercell.positions, u)
    lattice = Lattice((0.0, 0.0), (0.0, A), (A, 0.0), (("C", (0.0, 0.0)), ("O", (0.5, 0.5))))
    cells, basis, _ = assign_sites(columns, lattice)
    return columns, u_col, cells, basis


def _exact_in_plane(blocks: object, q_reduced: np.ndarray) -> np.ndarray:
    """Exact in-plane frequencies at q_z = 0 [THz]; f_a along x (lattice a), f_b along y."""
    return in_plane_dispersion(blocks, np.asarray(q_reduced) / A)


#: Commensurate with the 8 × 8 supercell: Γ-X-M-Γ without Γ itself.
Q_PATH = reduced_path([("G", (0, 0)), ("X", (0.5, 0)), ("M", (0.5, 0.5)), ("G", (0, 0))], 4)[0][
    1:-1
]


def test_kong_reproduces_exact_dispersion_of_harmonic_snapshots(model) -> None:
    cell, blocks = model
    u = sample_supercell(blocks, (CELLS, CELLS, LAYERS), 300.0, 2000, np.random.default_rng(3))
    _, u_col, cells, basis = _columns(cell, u)
    assert complete_cells(cells, basis, 2).shape == (CELLS * CELLS, 2)
    masses = np.array(MASSES) * LAYERS  # a column moves as one body
    result = kong_dispersion(displacements(u_col), cells, basis, masses, 300.0, Q_PATH)
    exact = _exact_in_plane(blocks, Q_PATH)
    ratio = result.frequencies_thz / exact
    # ω² from a covariance of M = 2000 states scatters by ~√(2/M) = 3%: ω by ~1.6% per mode.
    assert np.all(np.abs(ratio - 1) < 0.07), np.round(ratio, 3)
    branch = branch_averages(result) / exact.mean(axis=0)
    assert np.all(np.abs(branch - 1) < 0.025), branch


def test_bias_correction_removes_the_few_states_bias(model) -> None:
    cell, blocks = model
    generator = np.random.default_rng(11)
    states, repeats, q = 12, 600, Q_PATH[[1, 3, 7]]  # (1/4, 0), X, M
    exact2 = _exact_in_plane(blocks, q) ** 2
    raw, corrected = [], []
    masses = np.array(MASSES) * LAYERS
    for _ in range(repeats):
        u = sample_supercell(blocks, (CELLS, CELLS, LAYERS), 300.0, states, generator)
        _, u_col, cells, basis = _columns(cell, u)
        du = displacements(u_col)
        for correct, store in ((False, raw), (True, corrected)):
            f = kong_dispersion(du, cells, basis, masses, 300.0, q, correct_bias=correct)
            store.append(f.dynamical)
    # Compare mean D(q) (linear in the inverse covariance) with the exact one. Over 600
    # ensembles the mean scatters by ~2% (measured: 1.713, 1.975, 1.997 over 2000).
    exact_trace = exact2.sum(axis=1) / _THZ_PER_SQRT_EV_ANG2_AMU**2
    raw_trace = np.trace(np.mean(raw, axis=0), axis1=1, axis2=2).real
    corrected_trace = np.trace(np.mean(corrected, axis=0), axis1=1, axis2=2).real
    # Wishart with M − 1 = 11 dof, p = 4: E[S⁻¹] = 12/(12 − 1 − 4) Σ⁻¹ for complex ũ; X and M
    # are their own conjugates (real ũ): 12/(12 − 2 − 4).
    expected_raw = np.array([12 / 7, 12 / 6, 12 / 6])
    assert np.allclose(raw_trace / exact_trace, expected_raw, rtol=0.08)
    assert np.allclose(corrected_trace / exact_trace, 1.0, atol=0.06)


def test_greens_tensor_matches_exact_covariance(model) -> None:
    _, blocks = model
    u = sample_supercell(blocks, (4, 4, 1), 300.0, 4000, np.random.default_rng(5))
    g = greens_tensor(displacements(u[..., [1, 0]]))  # in-plane (y, x) of every atom
    in_plane = np.stack([np.arange(u.shape[1]) * 3 + 1, np.arange(u.shape[1]) * 3], 1).ravel()
    exact = displacement_covariance(blocks, (4, 4, 1), 300.0)[np.ix_(in_plane, in_plane)]
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
    # Each entry of a sample covariance scatters by ≤ √(2/M)·(its scale): 2.2% at M = 4000.
    assert np.max(np.abs(g - exact) / scale) < 0.1
    assert np.median(np.abs(g - exact) / scale) < 0.025


def test_similarity_scores_strength_and_direction(model) -> None:
    cell, blocks = model
    u = sample_supercell(blocks, (CELLS, CELLS, LAYERS), 300.0, 400, np.random.default_rng(7))
    columns, u_col, _, _ = _columns(cell, u)
    g = greens_tensor(displacements(u_col))
    pairs = correlation_pairs(columns, 2.9)  # self + the 4 nearest neighbours (2.83 Å)
    truth = pair_blocks(g, pairs)
    assert similarity(truth, truth) == pytest.approx((1.0, 1.0, len(pairs)))
    half = similarity(0.5 * truth, truth)
    assert half.lsm == pytest.approx(0.5) and half.csm == pytest.approx(1.0)
    # Uncorrelated (Einstein) columns with the same self-correlations: the neighbour blocks
    # fall to the 1/√M noise floor, well below the self-correlations.
    rng = np.random.default_rng(8)
    rms = np.sqrt(np.mean(u_col**2, axis=0))
    einstein = greens_tensor(displacements(rng.standard_normal(u_col.shape) * rms))
    blocks_e = pair_blocks(einstein, pairs)
    self_pair = pairs[:, 0] == pairs[:, 1]
    neighbour = np.linalg.norm(blocks_e[~self_pair], axis=(1, 2)).mean()
    self_norm = np.linalg.norm(blocks_e[self_pair], axis=(1, 2)).mean()
    assert neighbour / self_norm < 0.2
    true_ratio = (
        np.linalg.norm(truth[~self_pair], axis=(1, 2)).mean()
        / np.linalg.norm(truth[self_pair], axis=(1, 2)).mean()
    )
    assert true_ratio > 0.25  # the springs correlate neighbours far above the noise floor
    # Debye-Waller: B = 8π²(⟨u_x²⟩ + ⟨u_y²⟩) per column.
    b = debye_waller(g)
    assert np.allclose(b, 8 * np.pi**2 * np.sum(np.mean(displacements(u_col) ** 2, axis=0), -1))


def test_pair_cosines_separate_sampling_noise_of_neighbours_from_self(model) -> None:
    """Two independent ensembles of the same harmonic model: with M states a neighbour
    block's sample estimate scatters by ~1/√M of the self-correlations, so its cosine to
    another ensemble's falls with M while the self blocks stay aligned."""
    cell, blocks = model
    draw = np.random.default_rng(11)
    pairs = None
    cosines = {}
    for states in (12, 400):
        estimates = []
        for _ in range(2):
            u = sample_supercell(blocks, (CELLS, CELLS, LAYERS), 300.0, states, draw)
            columns, u_col, _, _ = _columns(cell, u)
            pairs = correlation_pairs(columns, 2.9)
            estimates.append(pair_blocks(greens_tensor(displacements(u_col)), pairs))
        cosines[states] = pair_cosines(*estimates)
        assert np.mean(cosines[states]) == pytest.approx(similarity(*estimates).csm)
    assert pairs is not None
    self_pair = pairs[:, 0] == pairs[:, 1]
    assert cosines[400][self_pair].mean() > 0.98
    assert cosines[400][~self_pair].mean() > 0.95
    assert cosines[12][self_pair].mean() > 0.8
    assert cosines[12][~self_pair].mean() < cosines[400][~self_pair].mean() - 0.2
    block = np.array([[[1.0, 0.2], [0.2, 0.5]]])
    assert pair_cosines(-block, block) == pytest.approx([-1.0])
    assert pair_cosines(np.zeros_like(block), block) == pytest.approx([0.0])
    with pytest.raises(ValueError, match=r"both be \(P, 2, 2\)"):
        pair_cosines(block, block[0])


def test_average_equivalent_pairs_groups_by_basis_and_cell_offset(model) -> None:
    cell, blocks = model
    u = sample_supercell(blocks, (CELLS, CELLS, LAYERS), 300.0, 300, np.random.default_rng(9))
    columns, u_col, cells, basis = _columns(cell, u)
    g = greens_tensor(displacements(u_col))
    pairs = correlation_pairs(columns, 2.9)
    average = average_equivalent_pairs(g, pairs, cells, basis)
    # The checkerboard's C-C self pair, C-O pairs and so on: every group is a symmetry class.
    assert average.counts.sum() == len(pairs)
    self_c = np.all(average.basis_pairs == [0, 0], axis=1) & np.all(average.cell_offsets == 0, 1)
    assert average.counts[self_c].tolist() == [CELLS * CELLS]
    exact = displacement_covariance(blocks, (CELLS, CELLS, LAYERS), 300.0)

    # A C column holds atom 0 (cell (0, 0, 0)) and atom 2 (cell (0, 0, 1)): its self block
    # is ⟨(u0 + u2)/2 ⊗ (u0 + u2)/2⟩ in-plane, the same for all 64 columns by symmetry.
    def yx(atom: int) -> list[int]:
        return [3 * atom + 1, 3 * atom]

    block = sum(exact[np.ix_(yx(i), yx(j))] for i in (0, 2) for j in (0, 2)) / 4
    # 64 columns × 300 states: the mean scatters by ~1% of the self-correlation.
    assert np.allclose(average.blocks[self_c][0], block, atol=0.05 * block[0, 0])


def test_state_positions_recover_displacements_from_phase_images() -> None:
    rng = np.random.default_rng(2)
    states, spacing, pixel = 6, 2.0, 0.1
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1).reshape(-1, 2)
    mean = 2.0 + spacing * grid.astype(float)
    shifts = rng.normal(0, 0.05, (states, 2, len(mean), 2))  # (states, slices, K, 2)
    images = np.array(
        [
            [
                gaussian_columns(mean + shift, 1.0, (100, 100), (pixel, pixel), 0.3)
                for shift in shifts[s]
            ]
            for s in range(states)
        ]
    )
    found = state_positions(images, mean + 0.05, pixel, 0.8)
    assert found.shape == (states, 2, len(mean), 2)
    # Neighbours 2 Å away pull by their tails (refine.py notes): sub-pm here.
    error = displacements(found) - displacements(mean + shifts)
    assert np.sqrt(np.mean(error**2)) < 0.003


def test_invalid_inputs_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="at least 2 states"):
        displacements(np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match="masses_amu must be > 0"):
        kong_dispersion(np.zeros((20, 2, 2)), np.zeros((2, 2)), np.zeros(2), [0.0], 300, [[0.1, 0]])
    with pytest.raises(ValueError, match="correct_bias needs more than 4"):
        u = np.random.default_rng(0).normal(size=(4, 4, 2))
        cells = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
        kong_dispersion(u, cells, np.zeros(4, int), [12.0], 300, [[0.25, 0]])
    with pytest.raises(ValueError, match="no unit cell holds all 2 basis atoms"):
        complete_cells(np.zeros((3, 2)), np.zeros(3, int), 2)
