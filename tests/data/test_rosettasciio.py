"""The RosettaSciIO reader against the real package (optional extra; skips without it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptyscope.data.readers import read_4dstem


def test_hspy_file_round_trip_with_calibration(tmp_path: Path) -> None:
    hspy = pytest.importorskip("rsciio.hspy")
    data = np.random.default_rng(0).poisson(2, (3, 4, 8, 8)).astype(np.uint16)
    axes = [
        {"name": "y", "size": 3, "scale": 0.05, "offset": 0, "units": "nm", "navigate": True},
        {"name": "x", "size": 4, "scale": 0.06, "offset": 0, "units": "nm", "navigate": True},
        {"name": "ky", "size": 8, "scale": 0.5, "offset": -2, "units": "1/nm", "navigate": False},
        {"name": "kx", "size": 8, "scale": 0.5, "offset": -2, "units": "1/nm", "navigate": False},
    ]
    signal = {
        "data": data,
        "axes": axes,
        "metadata": {
            "General": {"title": "scan"},
            "Signal": {"signal_type": ""},
            "Acquisition_instrument": {"TEM": {"beam_energy": 300.0, "convergence_angle": 21.0}},
        },
        "original_metadata": {},
        "tmp_parameters": {},
        "attributes": {"_lazy": False},
        "learning_results": {},
        "models": {},
        "package_info": {"name": "ptyscope-test", "version": "0"},
    }
    hspy.file_writer(str(tmp_path / "scan.hspy"), signal)
    ds = read_4dstem(tmp_path / "scan.hspy")
    assert ds.is_lazy
    cal = ds.calibration
    assert cal.energy_ev == pytest.approx(300e3)
    assert cal.scan_step_ang == pytest.approx((0.5, 0.6))  # nm -> Å
    assert cal.detector_pixel_inv_ang == pytest.approx((0.05, 0.05))  # 1/nm -> 1/Å
    assert cal.semiangle_mrad == pytest.approx(21.0)
    loaded = ds.to_memory().data
    np.testing.assert_array_equal(np.asarray(loaded), data)
