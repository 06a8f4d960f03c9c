"""The ptyscope HDF5 data file: round trips, scan geometry, clear errors, atomic writes."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptyscope.data.dataset import Calibration, Dataset4D, scan_grid_positions
from ptyscope.io.datafile import (
    read_dataset,
    read_ground_truth,
    read_tilt_series,
    write_dataset,
    write_tilt_series,
)


def _dataset(seed: int = 0) -> Dataset4D:
    data = np.random.default_rng(seed).random((3, 4, 6, 5)).astype(np.float32)
    calibration = Calibration(
        energy_ev=300e3,
        scan_step_ang=(0.4, 0.5),
        detector_pixel_inv_ang=(0.05, 0.06),
        scan_rotation_deg=12.0,
        semiangle_mrad=21.4,
        defocus_ang=-30.0,
        detector_center_px=(3.0, 2.5),
    )
    return Dataset4D(data, calibration, metadata={"instrument": "sim", "frames": 12})


def test_round_trip_keeps_data_calibration_and_ground_truth(tmp_path: Path) -> None:
    dataset = _dataset()
    truth = {
        "atoms": {"positions_ang": np.arange(9.0).reshape(3, 3), "numbers": np.array([8, 22, 38])},
        "tilt_mrad": np.array([1.5, -2.0]),
        "thickness_ang": 78.1,
        "probe": {"wave": np.exp(1j * np.arange(4.0)).reshape(2, 2), "note": "unit intensity"},
    }
    path = tmp_path / "sim.h5"
    write_dataset(path, dataset, truth, config_text="[probe]\nenergy_ev = 300e3\n")
    back = read_dataset(path)
    np.testing.assert_array_equal(back.data, dataset.data)
    assert back.calibration == dataset.calibration
    assert back.metadata == dataset.metadata
    got = read_ground_truth(path)
    np.testing.assert_array_equal(got["atoms"]["positions_ang"], truth["atoms"]["positions_ang"])
    np.testing.assert_array_equal(got["tilt_mrad"], truth["tilt_mrad"])
    assert got["thickness_ang"] == pytest.approx(78.1)
    np.testing.assert_allclose(got["probe"]["wave"], truth["probe"]["wave"])
    assert got["probe"]["note"] == "unit intensity"
    with h5py.File(path) as handle:
        assert handle["config"].attrs["text"].startswith("[probe]")
        assert handle["dataset/data"].chunks == (1, 4, 6, 5)


def test_tilt_series_round_trip(tmp_path: Path) -> None:
    datasets = [_dataset(i) for i in range(3)]
    angles = np.array([[0.0, -30.0, 0.0], [0.0, 0.0, 0.0], [0.0, 30.0, 0.0]])
    write_tilt_series(tmp_path / "ts.h5", datasets, angles, {"volume": np.ones((2, 2, 2))})
    back, back_angles = read_tilt_series(tmp_path / "ts.h5")
    np.testing.assert_array_equal(back_angles, angles)
    for original, read in zip(datasets, back, strict=True):
        np.testing.assert_array_equal(read.data, original.data)
    with pytest.raises(ValueError, match="holds kind 'tilt_series', expected '4dstem'"):
        read_dataset(tmp_path / "ts.h5")
    with pytest.raises(ValueError, match="euler_deg must have shape"):
        write_tilt_series(tmp_path / "bad.h5", datasets, angles[:2])


def test_scan_rotation_turns_the_fast_axis_towards_plus_y() -> None:
    positions = scan_grid_positions((2, 3), (1.0, 2.0), 90.0, (5.0, 7.0))
    np.testing.assert_allclose(positions[0, 0], (5.0, 7.0))
    np.testing.assert_allclose(positions[0, 1], (7.0, 7.0), atol=1e-12)  # fast axis -> +y
    np.testing.assert_allclose(positions[1, 0], (5.0, 6.0), atol=1e-12)  # slow axis -> −x
    rotated = scan_grid_positions((4, 4), (0.5, 0.5), 30.0)
    steps = np.linalg.norm(np.diff(rotated, axis=1), axis=-1)
    np.testing.assert_allclose(steps, 0.5)
    angle = math.degrees(math.atan2(*(rotated[0, 1] - rotated[0, 0])))
    assert angle == pytest.approx(30.0)
    ds = _dataset()
    np.testing.assert_allclose(ds.positions_ang(), scan_grid_positions((3, 4), (0.4, 0.5), 12.0))


def test_detector_pixel_in_mrad_uses_the_wavelength() -> None:
    cal = _dataset().calibration
    assert cal.detector_pixel_mrad[0] == pytest.approx(0.05 * 0.0196875 * 1e3, rel=1e-4)


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data must have shape"):
        Dataset4D(np.zeros((3, 4, 5)), _dataset().calibration)
    with pytest.raises(ValueError, match="scan_step_ang"):
        Calibration(300e3, (0.0, 0.4), (0.1, 0.1))
    with pytest.raises(ValueError, match="energy_ev must be > 0"):
        Calibration(-1.0, (0.4, 0.4), (0.1, 0.1))
    with pytest.raises(ValueError, match="scan_positions_ang must have shape"):
        Dataset4D(np.zeros((2, 2, 4, 4)), _dataset().calibration, np.zeros((2, 3, 2)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_dataset(tmp_path / "missing.h5")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x"] = 1
    with pytest.raises(ValueError, match="is not a ptyscope data file"):
        read_dataset(foreign)


def test_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "keep.h5"
    write_dataset(path, _dataset(1))
    with pytest.raises(TypeError):
        write_dataset(path, _dataset(2), {"bad": object()})
    np.testing.assert_array_equal(read_dataset(path).data, _dataset(1).data)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.h5"]


def test_ground_truth_reader_checks_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_ground_truth(tmp_path / "none.h5")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as handle:
        handle.create_group("ground_truth")
    with pytest.raises(ValueError, match="is not a ptyscope data file"):
        read_ground_truth(foreign)
    write_dataset(tmp_path / "plain.h5", _dataset())
    assert read_ground_truth(tmp_path / "plain.h5") == {}
