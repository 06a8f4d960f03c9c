"""``analyze_vibrations`` on a synthetic mixed-object result with known displacements.

The result (``_vibration_data.py``) holds 20 object states of a harmonic checkerboard
crystal (heavy bright O, light dim C), two slices with one atom per column each. Its
correlations and phonons are scored, as CAVIAR scores a reconstruction, against the
snapshots that made the data, through the same functions and the same columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from ptyscope.analysis.dispersion import branch_averages, kong_dispersion, reduced_path
from ptyscope.analysis.vibration_command import (
    POINTS_PER_SEGMENT,
    VibrationReport,
    analyze_vibrations,
)
from ptyscope.analysis.vibrations import (
    correlation_pairs,
    debye_waller,
    displacements,
    greens_tensor,
    pair_blocks,
    similarity,
)

from ._vibration_data import MASSES, TEMPERATURE_K, A, VibrationData, vibration_result, write_object

#: Masses per basis atom, brightest first: O (heavy, bright), then C.
ORDERED_MASSES = (MASSES["O"], MASSES["C"])


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> tuple[VibrationData, VibrationReport]:
    data = vibration_result()
    out = tmp_path_factory.mktemp("vibrations")
    report = analyze_vibrations(
        data.path, out, temperature_k=TEMPERATURE_K, masses_amu=ORDERED_MASSES
    )
    return data, report


def _table(report: VibrationReport) -> np.ndarray:
    return np.genfromtxt(report.vibrations_csv, delimiter=",", names=True)


def _true_displacements(data: VibrationData, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The truth's (states, slices, K, 2) displacements in the report's column order, and
    the index of each found column among the true ones."""
    found = np.column_stack([table["y_ang"], table["x_ang"]])
    distance, index = cKDTree(data.columns_ang).query(found)
    assert distance.max() < 0.05  # mean positions within 5 pm of the undisplaced ones
    return data.displacements_ang[:, :, index], index


def test_lattice_and_basis_are_found(analysed: tuple[VibrationData, VibrationReport]) -> None:
    data, report = analysed
    # Not the nearest-neighbour diagonals (2.83 Å, C onto O) but the 4 Å cell of two atoms.
    lattice = report.lattice
    assert np.hypot(*lattice.a_ang) == pytest.approx(A, abs=0.01)
    assert np.hypot(*lattice.b_ang) == pytest.approx(A, abs=0.01)
    assert report.angle_deg == pytest.approx(90.0, abs=0.3)
    assert not report.hexagonal
    assert report.path_labels == ("Γ", "X", "M", "Γ")
    assert len(report.basis) == 2
    bright, dim = report.basis
    assert bright.mean_phase_rad > dim.mean_phase_rad
    assert (bright.mass_amu, dim.mass_amu) == ORDERED_MASSES
    delta = np.subtract(dim.fractional, bright.fractional)
    assert np.allclose(np.abs(delta) % 1.0, 0.5, atol=0.01)  # (½, ½)
    table = _table(report)
    _, index = _true_displacements(data, table)
    species = np.array(data.species)[index]
    assert np.all(species[table["basis"] == 0] == "O") and np.all(
        species[table["basis"] == 1] == "C"
    )
    assert report.columns == len(data.columns_ang) == 128
    assert report.states == 20 and report.slices == (0, 1)


def test_correlations_and_debye_waller_match_the_snapshots(
    analysed: tuple[VibrationData, VibrationReport],
) -> None:
    data, report = analysed
    table = _table(report)
    u_true, _ = _true_displacements(data, table)
    truth = greens_tensor(displacements(u_true)).mean(axis=0)
    greens = np.load(report.greens_npy)
    positions = np.column_stack([table["y_ang"], table["x_ang"]])
    pairs = correlation_pairs(positions, 1.2 * A / np.sqrt(2))  # self + 4 nearest
    score = similarity(pair_blocks(greens, pairs), pair_blocks(truth, pairs))
    # Measured: CSM 0.9999, LSM 0.9997 (noise of 1 % of the peak per slice).
    assert score.csm >= 0.95
    assert 0.85 <= score.lsm <= 1.15
    b_true = debye_waller(truth)
    assert np.allclose(table["b_ang2"], b_true, rtol=0.1)  # measured: at most 1.9 % off
    for atom in report.basis:
        mine = table["basis"] == atom.index
        assert atom.mean_b_ang2 == pytest.approx(b_true[mine].mean(), rel=0.02)


def test_branch_averages_match_kong_on_the_true_displacements(
    analysed: tuple[VibrationData, VibrationReport],
) -> None:
    data, report = analysed
    table = _table(report)
    u_true, _ = _true_displacements(data, table)
    cells = np.column_stack([table["cell_i"], table["cell_j"]]).astype(int)
    basis = table["basis"].astype(int)
    path = [("Γ", (0, 0)), ("X", (0.5, 0)), ("M", (0.5, 0.5)), ("Γ", (0, 0))]
    q, _, _ = reduced_path(path, POINTS_PER_SEGMENT)
    u = displacements(u_true)
    per_slice = [
        kong_dispersion(u[:, z], cells, basis, ORDERED_MASSES, TEMPERATURE_K, q)
        for z in range(u.shape[1])
    ]
    frequencies = np.mean([d.frequencies_thz for d in per_slice], axis=0)
    truth = branch_averages(per_slice[0]._replace(frequencies_thz=frequencies))
    ratio = np.array(report.branch_averages_thz) / truth
    assert np.all(np.abs(ratio - 1) < 0.1), ratio  # measured: within 0.2 %
    assert report.cells == per_slice[0].num_cells == 49  # 7 × 7 complete cells


def test_tables_and_figures_are_written(analysed: tuple[VibrationData, VibrationReport]) -> None:
    _, report = analysed
    assert report.vibrations_csv.read_text().startswith(
        "column,basis,cell_i,cell_j,y_ang,x_ang,uyy_pm2,uxx_pm2,uyx_pm2,b_ang2"
    )
    pairs = np.genfromtxt(report.pairs_csv, delimiter=",", names=True)
    # Per basis atom: itself and its 4 diagonal neighbours of the other species.
    assert len(pairs) == 10
    self_rows = (pairs["offset_i"] == 0) & (pairs["offset_j"] == 0)
    self_rows &= pairs["basis_ref"] == pairs["basis_neighbour"]
    assert np.all(pairs["count"][self_rows] == 64)
    assert np.all(pairs["g_yy_pm2"][self_rows] > 10)  # ⟨u_y²⟩ of tens of pm²
    dispersion = np.genfromtxt(report.dispersion_csv, delimiter=",", names=True, dtype=None)
    assert len(dispersion) == 3 * POINTS_PER_SEGMENT + 1
    assert dispersion.dtype.names[-4:] == ("nu_0_thz", "nu_1_thz", "nu_2_thz", "nu_3_thz")
    greens = np.load(report.greens_npy)
    assert greens.shape == (256, 256) and np.allclose(greens, greens.T)
    for figure in (
        report.correlation_png,
        report.averaged_png,
        report.greens_png,
        report.dispersion_png,
    ):
        assert figure.stat().st_size > 10_000, figure


def test_wrong_number_of_masses_names_the_basis_found(tmp_path: Path) -> None:
    data = vibration_result()
    with pytest.raises(ValueError, match=r"masses_amu must give one mass per basis atom") as err:
        analyze_vibrations(data.path, tmp_path, temperature_k=300.0, masses_amu=[12.0])
    assert "found 2 basis atoms" in str(err.value) and "got 1 masses" in str(err.value)
    assert not (tmp_path / "vibrations.csv").exists()


def test_invalid_inputs_are_clear_errors(tmp_path: Path) -> None:
    data = vibration_result()
    with pytest.raises(ValueError, match="temperature_k must be > 0 K"):
        analyze_vibrations(data.path, tmp_path, temperature_k=0.0, masses_amu=ORDERED_MASSES)
    with pytest.raises(ValueError, match="masses_amu must be > 0"):
        analyze_vibrations(data.path, tmp_path, temperature_k=300.0, masses_amu=[12.0, -1.0])
    with pytest.raises(ValueError, match=r"slice indices must lie in \[0, 1\]"):
        analyze_vibrations(
            data.path, tmp_path, temperature_k=300.0, masses_amu=ORDERED_MASSES, slices=[2]
        )
    with pytest.raises(ValueError, match="radius_ang must be at most half the nearest"):
        analyze_vibrations(
            data.path, tmp_path, temperature_k=300.0, masses_amu=ORDERED_MASSES, radius_ang=1.6
        )
    single = tmp_path / "single.h5"
    write_object(single, np.ones((1, 1, 64, 64), dtype=np.complex64), 0.1)
    with pytest.raises(ValueError, match=r"at least 2 object states.*has 1"):
        analyze_vibrations(single, tmp_path, temperature_k=300.0, masses_amu=[12.0])
    with pytest.raises(FileNotFoundError, match="result file not found"):
        analyze_vibrations(tmp_path / "none.h5", tmp_path, temperature_k=300.0, masses_amu=[1.0])


def test_projected_analysis_measures_the_column_average(
    analysed: tuple[VibrationData, VibrationReport], tmp_path: Path
) -> None:
    data, _ = analysed
    report = analyze_vibrations(
        data.path,
        tmp_path,
        temperature_k=TEMPERATURE_K,
        masses_amu=ORDERED_MASSES,
        projected=True,
    )
    assert report.slices == (0, 1)
    table = _table(report)
    u_true, _ = _true_displacements(data, table)
    # The summed phase of two equal columns is centred on their mean position.
    truth = greens_tensor(displacements(u_true.mean(axis=1)))
    positions = np.column_stack([table["y_ang"], table["x_ang"]])
    pairs = correlation_pairs(positions, 1.2 * A / np.sqrt(2))
    score = similarity(pair_blocks(np.load(report.greens_npy), pairs), pair_blocks(truth, pairs))
    assert score.csm >= 0.95
    assert 0.85 <= score.lsm <= 1.15
