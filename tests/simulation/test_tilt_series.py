"""Tilt series: rotation bookkeeping, per-tilt physics, the ground-truth volume, file I/O."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from ptyscope.io.datafile import read_ground_truth, read_tilt_series, write_tilt_series
from ptyscope.physics.potential import POTENTIAL_PREFACTOR_V_ANG2, electron_scattering_factor
from ptyscope.simulation.potential import slice_potential, specimen_grid
from ptyscope.simulation.specimens import (
    fcc_cluster,
    rotate_atoms,
    rotation_matrix,
    srtio3_slab,
)
from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings, simulate_4dstem
from ptyscope.simulation.tilt_series import (
    TiltSeriesResult,
    potential_volume,
    projected_potential_series,
    simulate_tilt_series,
)

A_AU = 4.08  # Å
PROBE = ProbeSettings(300e3, 20.0, {"defocus": 10.0})
SCAN = ScanSettings((2, 2), (1.0, 1.0), origin_ang=(7.5, 7.5))
SETTINGS = {"sampling_ang": 0.15, "slice_thickness_ang": 2.0}
EULER_DEG = np.array([[0.0, 0.0, 0.0], [0.0, 90.0, 0.0], [30.0, 20.0, -10.0]])


def _cluster() -> Atoms:
    """18 Au atoms in a 16 Å cube: a 19-atom fcc cluster without its atom at +a ẑ, so that
    the specimen tells x from z and +z from -z."""
    cluster = fcc_cluster("Au", A_AU, radius_ang=4.1, vacuum_ang=3.9)
    offsets = cluster.positions - 0.5 * cluster.cell.lengths()
    del cluster[int(np.argmin(np.linalg.norm(offsets - [0.0, 0.0, A_AU], axis=1)))]
    return cluster


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.fixture(scope="module")
def series() -> TiltSeriesResult:
    return simulate_tilt_series(
        _cluster(), EULER_DEG, PROBE, SCAN, volume_voxel_ang=0.15, **SETTINGS
    )


def test_rotated_positions_follow_the_rotation_matrix(series: TiltSeriesResult) -> None:
    truth = series.ground_truth
    r = truth["atoms"]["positions_ang"]
    np.testing.assert_array_equal(r, _cluster().positions)
    np.testing.assert_array_equal(truth["rotation_center_ang"], [8.0, 8.0, 8.0])
    assert truth["rotated_positions_ang"].shape == (3, 18, 3)
    for t, angles in enumerate(EULER_DEG):
        expected = (r - 8.0) @ rotation_matrix(angles).T + 8.0
        np.testing.assert_allclose(truth["rotated_positions_ang"][t], expected, atol=1e-12)
    np.testing.assert_array_equal(truth["rotated_positions_ang"][0], r)  # identity: bit-exact
    np.testing.assert_array_equal(series.euler_deg, EULER_DEG)


def test_rotation_about_a_given_center() -> None:
    cluster = fcc_cluster("Au", A_AU, radius_ang=3.0, vacuum_ang=3.0)  # 13 atoms, 12 Å cube
    center = np.array([6.5, 5.5, 6.2])
    euler = [(40.0, 25.0, 0.0)]
    scan = ScanSettings((1, 1), (1.0, 1.0))
    result = simulate_tilt_series(
        cluster, euler, PROBE, scan, center_ang=center, sampling_ang=0.4, volume_voxel_ang=0.8
    )
    expected = (cluster.positions - center) @ rotation_matrix(euler[0]).T + center
    np.testing.assert_allclose(result.ground_truth["rotated_positions_ang"][0], expected)
    assert result.ground_truth["potential_volume"]["potential_v"].shape == (15, 15, 15)


def test_each_tilt_is_simulate_4dstem_of_the_rotated_specimen(series: TiltSeriesResult) -> None:
    cluster = _cluster()
    untilted = simulate_4dstem(cluster, PROBE, SCAN, **SETTINGS).dataset.data
    np.testing.assert_array_equal(series.datasets[0].data, untilted)  # exact
    tilted = rotate_atoms(cluster, EULER_DEG[1])
    np.testing.assert_array_equal(
        series.datasets[1].data, simulate_4dstem(tilted, PROBE, SCAN, **SETTINGS).dataset.data
    )
    # The tilts really differ (the bright-field disk sees different columns).
    assert np.abs(series.datasets[1].data - untilted).max() > 1e-3 * untilted.max()


def test_identity_tilts_keep_the_specimen_bit_exact() -> None:
    # (r - c) + c != r in floating point for these positions (1.3 - 6 + 6 = 1.2999999...).
    atoms = Atoms("Au2", positions=[(1.3, 1.7, 6.0), (6.0, 6.0, 1.1)], cell=[12.0] * 3)
    scan = ScanSettings((1, 1), (1.0, 1.0), origin_ang=(1.5, 1.5))
    euler = [(0.0, 0.0, 0.0), (90.0, 0.0, -90.0)]  # both exactly R = I
    result = simulate_tilt_series(atoms, euler, PROBE, scan, sampling_ang=0.4)
    for t in range(2):
        np.testing.assert_array_equal(
            result.ground_truth["rotated_positions_ang"][t], atoms.positions
        )
    single = simulate_4dstem(atoms, PROBE, scan, sampling_ang=0.4).dataset.data
    np.testing.assert_array_equal(result.datasets[1].data, single)


def test_projection_after_a_90_degree_tilt_is_the_volume_projected_along_x(
    series: TiltSeriesResult,
) -> None:
    # R = Ry(90°) maps r - c = (x, y, z) to (z, y, -x): the rotated specimen's x' is the
    # original z, y' = y, and the beam direction z' is -x. Its projection along z'
    # (Σ over slices) is therefore the original potential integrated along x, as a map
    # over (y, z) -> (y', x'): V[z, y, x].sum(x)·dx transposed. With c = cell centre and
    # a cubic cell, x' = z exactly, and the voxel grid equals the slices' lateral grid.
    truth = series.ground_truth
    rotated = _cluster()
    rotated.positions = truth["rotated_positions_ang"][1]
    slices = slice_potential(rotated, specimen_grid(rotated, 0.15), 2.0, dtype=torch.float64)
    projected = slices.slices_vang.sum(dim=0).numpy()  # (y', x') [V·Å]
    volume = truth["potential_volume"]
    dz, dy, dx = volume["voxel_size_ang"]
    along_x = volume["potential_v"].sum(axis=2, dtype=np.float64).T * dx  # (y, z) [V·Å]
    assert projected.shape == along_x.shape == (108, 108)
    # Point samples vs voxel averages: they agree to sampling accuracy ...
    assert _ncc(projected, along_x) > 0.98
    # ... and exactly once the projection is averaged over the voxel's (dy, dz) box.
    qy = np.fft.fftfreq(108, dy)[:, None]
    qx = np.fft.fftfreq(108, dz)[None, :]
    box = np.sinc(qy * dy) * np.sinc(qx * dz)
    averaged = np.fft.ifft2(np.fft.fft2(projected) * box).real
    scale = np.abs(along_x).max()
    assert np.abs(averaged - along_x).max() < 1e-5 * scale
    # Wrong axis mappings (no transpose; z' = +x, i.e. a mirrored map) are far off.
    assert np.abs(averaged - along_x.T).max() > 0.05 * scale
    assert np.abs(averaged - along_x[:, ::-1]).max() > 0.05 * scale


def test_ground_truth_volume_integrates_to_the_atoms(series: TiltSeriesResult) -> None:
    volume = series.ground_truth["potential_volume"]
    data = volume["potential_v"]
    assert data.dtype == np.float32 and data.shape == (108, 108, 108)
    np.testing.assert_allclose(volume["voxel_size_ang"], [16.0 / 108] * 3, rtol=1e-12)
    assert volume["axis_order"] == "(z, y, x)"
    f0 = float(electron_scattering_factor("Au", torch.zeros((), dtype=torch.float64)))
    expected = 18 * POTENTIAL_PREFACTOR_V_ANG2 * f0  # [V·Å³]
    integral = data.sum(dtype=np.float64) * np.prod(volume["voxel_size_ang"])
    assert abs(integral / expected - 1) < 1e-6


def test_volume_axes_of_a_rectangular_cell() -> None:
    atoms = Atoms("OAu", positions=[(3.0, 4.0, 5.0), (9.0, 6.0, 2.5)], cell=[12.0, 10.0, 8.0])
    volume = potential_volume(atoms, 0.5)
    data = volume["potential_v"]
    assert data.shape == (16, 20, 24)  # (z, y, x)
    np.testing.assert_allclose(volume["voxel_size_ang"], [0.5, 0.5, 0.5])
    # The Au peak sits in the voxel centred on it: (z, y, x) = (2.5, 6, 9) Å.
    assert np.unravel_index(int(data.argmax()), data.shape) == (5, 12, 18)
    f0 = sum(
        float(electron_scattering_factor(s, torch.zeros((), dtype=torch.float64)))
        for s in ("O", "Au")
    )
    integral = data.sum(dtype=np.float64) * 0.5**3
    assert abs(integral / (POTENTIAL_PREFACTOR_V_ANG2 * f0) - 1) < 1e-6


def test_round_trip_through_the_data_file(series: TiltSeriesResult, tmp_path: Path) -> None:
    path = tmp_path / "tilts.h5"
    write_tilt_series(path, series.datasets, series.euler_deg, series.ground_truth)
    datasets, euler = read_tilt_series(path)
    np.testing.assert_array_equal(euler, EULER_DEG)
    for read, written in zip(datasets, series.datasets, strict=True):
        np.testing.assert_array_equal(read.data, written.data)
        assert read.calibration == written.calibration
    truth = read_ground_truth(path)
    volume = truth["potential_volume"]
    np.testing.assert_array_equal(
        volume["potential_v"], series.ground_truth["potential_volume"]["potential_v"]
    )
    np.testing.assert_array_equal(volume["voxel_size_ang"], [16.0 / 108] * 3)
    assert volume["axis_order"] == "(z, y, x)"
    np.testing.assert_array_equal(
        truth["rotated_positions_ang"], series.ground_truth["rotated_positions_ang"]
    )
    np.testing.assert_array_equal(truth["atoms"]["numbers"], np.full(18, 79))
    assert truth["euler_convention"].startswith("intrinsic ZYZ")
    assert truth["thickness_ang"] == 16.0


def test_displacements_rotate_with_the_specimen() -> None:
    cluster = fcc_cluster("Au", A_AU, radius_ang=3.0, vacuum_ang=3.0)
    shift = np.random.default_rng(3).normal(0.0, 0.1, size=(1, len(cluster), 3))
    euler = [(0.0, 90.0, 0.0)]
    scan = ScanSettings((1, 2), (1.0, 1.0), origin_ang=(5.5, 5.5))
    moved = simulate_tilt_series(
        cluster, euler, PROBE, scan, displacements_ang=shift, sampling_ang=0.3
    )
    displaced = cluster.copy()
    displaced.positions += shift[0]  # R (r + d - c) + c: the displaced static specimen
    static = simulate_tilt_series(displaced, euler, PROBE, scan, sampling_ang=0.3)
    np.testing.assert_allclose(moved.datasets[0].data, static.datasets[0].data, atol=1e-6)
    np.testing.assert_array_equal(moved.ground_truth["displacements_ang"], shift)


def test_noise_differs_between_tilts() -> None:
    cluster = fcc_cluster("Au", A_AU, radius_ang=3.0, vacuum_ang=3.0)
    scan = ScanSettings((1, 1), (1.0, 1.0), origin_ang=(6.0, 6.0))
    kwargs = {"sampling_ang": 0.4, "dose_e_per_ang2": 1e4, "seed": 5}
    result = simulate_tilt_series(cluster, np.zeros((2, 3)), PROBE, scan, **kwargs)
    single = simulate_4dstem(cluster, PROBE, scan, **kwargs).dataset.data
    np.testing.assert_array_equal(result.datasets[0].data, single)  # tilt 0 keeps the seed
    assert not np.array_equal(result.datasets[1].data, single)


def test_atoms_leaving_the_cell_are_refused() -> None:
    # A quarter turn about y around c = (3, 8, 8), 5 Å off the cluster's centre, maps
    # x' = 3 + (z - 8): the atom at -a ẑ (z = 3.92 Å) goes to x' = -1.08 Å.
    expected = (
        r"euler_deg\[1\] = \[0\.0, 90\.0, 0\.0\] deg moves atoms to x in \[-1\.080, 5\.040\] Å; "
        r"every atom must stay >= 1\.0 Å inside the cell \[0, 16\.000\] Å\. Add vacuum"
    )
    with pytest.raises(ValueError, match=expected):
        simulate_tilt_series(
            _cluster(), [(0, 0, 0), (0, 90, 0)], PROBE, SCAN, center_ang=(3.0, 8.0, 8.0)
        )


def test_periodic_slab_rules() -> None:
    slab = srtio3_slab((2, 2), thickness_ang=4.0)  # pbc (True, True, False)
    with pytest.raises(ValueError, match=r"euler_deg\[1\] = \[0\.0, 5\.0, 0\.0\].*periodic"):
        simulate_tilt_series(slab, [(0, 0, 0), (0, 5, 0)], PROBE, SCAN)
    # Half a turn about y maps the lateral lattice onto itself, but θ != 0 is refused.
    with pytest.raises(ValueError, match=r"euler_deg\[0\] = \[0\.0, 180\.0, 0\.0\].*θ = 0"):
        simulate_tilt_series(slab, [(0, 180, 0)], PROBE, SCAN)
    with pytest.raises(ValueError, match=r"breaks its periodicity.*fcc_cluster"):
        simulate_tilt_series(slab, [(30, 0, 0)], PROBE, SCAN)  # not a lattice symmetry
    # A quarter turn about z around a Sr column maps the crystal onto itself: allowed,
    # and the patterns are those of the untilted slab.
    scan = ScanSettings((1, 2), (0.7, 0.9), origin_ang=(2.0, 3.0))
    result = simulate_tilt_series(
        slab, [(0, 0, 0), (90, 0, 0)], PROBE, scan, sampling_ang=0.3, volume_voxel_ang=1.0
    )
    np.testing.assert_allclose(result.datasets[1].data, result.datasets[0].data, atol=1e-5)


@pytest.mark.parametrize(
    ("euler", "message"),
    [
        (np.zeros(3), r"euler_deg must have shape \(tilts, 3\).*got shape \(3,\)"),
        (np.zeros((2, 2)), r"euler_deg must have shape \(tilts, 3\).*got shape \(2, 2\)"),
        (np.zeros((0, 3)), r"at least one tilt, got shape \(0, 3\)"),
        ([(0.0, np.nan, 0.0)], r"euler_deg must be finite"),
    ],
)
def test_bad_euler_angles_are_refused(euler: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate_tilt_series(_cluster(), euler, PROBE, SCAN)  # type: ignore[arg-type]


def test_bad_center_and_voxel_are_refused() -> None:
    with pytest.raises(ValueError, match=r"center_ang must be three finite numbers.*\(1, 2\)"):
        simulate_tilt_series(_cluster(), [(0, 0, 0)], PROBE, SCAN, center_ang=(1, 2))
    with pytest.raises(ValueError, match=r"volume_voxel_ang must be > 0 Å, got -0\.5"):
        simulate_tilt_series(_cluster(), [(0, 0, 0)], PROBE, SCAN, volume_voxel_ang=-0.5)


def test_projected_potential_series_turns_the_atoms_and_keeps_their_integral() -> None:
    # One Au atom 2 Å right of the centre: a 90° turn about y moves it to the centre in
    # projection (it is now in front of the centre); the integral over the image is the
    # atom's 47.878 f_e(0) V·Å³ whatever the tilt, the shift and the blur.
    atoms = Atoms("Au", positions=[(12.0, 10.0, 10.0)], cell=[20.0] * 3)
    images = projected_potential_series(
        atoms,
        [(0.0, 0.0, 0.0), (0.0, 90.0, 0.0), (0.0, 0.0, 0.0)],
        (50, 50),
        0.4,
        center_ang=(10.0, 10.0, 10.0),
        shifts_ang=[(0.0, 0.0), (0.0, 0.0), (0.8, -1.2)],
        blur_ang=0.3,
    )
    peaks = [divmod(int(np.argmax(image)), 50) for image in images]
    assert peaks == [(25, 30), (25, 25), (27, 27)]
    integral = float(POTENTIAL_PREFACTOR_V_ANG2 * electron_scattering_factor("Au", torch.zeros(())))
    np.testing.assert_allclose(images.sum(axis=(1, 2)) * 0.4**2, integral, rtol=1e-3)
    with pytest.raises(ValueError, match=r"blur_ang must be a finite number >= 0 Å, got -0.1"):
        projected_potential_series(
            atoms, [(0, 0, 0)], (8, 8), 0.4, center_ang=(0, 0, 0), blur_ang=-0.1
        )
    with pytest.raises(ValueError, match=r"shifts_ang must be finite with shape \(1, 2\)"):
        projected_potential_series(
            atoms, [(0, 0, 0)], (8, 8), 0.4, center_ang=(0, 0, 0), shifts_ang=[1.0]
        )
