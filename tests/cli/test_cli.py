"""The command line: help, version, info and the demo's measured physics."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ptyscope import __version__
from ptyscope.cli import main


def test_help_and_version() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("info", "demo"):
        assert command in result.output
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_info_prints_shape_dtype_and_calibration(tmp_path: Path) -> None:
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        f.attrs["energy_ev"] = 200e3
        f.create_dataset("data", data=np.zeros((2, 3, 8, 8), dtype=np.float32))
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "energy_ev = 200000.0" in result.output
    assert "data: shape (2, 3, 8, 8) float32" in result.output


def test_info_on_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["info", str(tmp_path / "nope.npy")])
    assert result.exit_code != 0
    assert "path must be an existing file" in result.output
    assert "Traceback" not in result.output


def test_demo_cuda_request_without_cuda_is_clear(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = CliRunner().invoke(main, ["demo", "-o", str(tmp_path), "--device", "cuda"])
    assert result.exit_code != 0
    assert "no CUDA device is available" in result.output


def test_demo_measures_the_physics_it_claims(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    measured = {m["name"]: m for m in summary["measurements"]}
    # Focus found on a 1 Å depth grid exactly at the defocus.
    assert measured["focus depth"]["measured"] == pytest.approx(200.0, abs=1.0)
    # Band-limited interpolation resolves the Airy FWHM to well under 1%.
    assert measured["probe FWHM at focus"]["relative_error"] < 0.01
    # Depth of field from a 1 Å grid: a few tenths of an Å on ~56 Å.
    assert measured["depth of field (FWHM)"]["relative_error"] < 0.01
    # Disk radius from an area count on 1.1 mrad pixels: about half a pixel of slack.
    assert measured["bright-field disk radius"]["measured"] == pytest.approx(25.0, abs=0.55)
    # Tilt drift from a linear centroid in a periodic window: within 1%.
    assert measured["tilt drift along x"]["relative_error"] < 0.01
    assert summary["max_mode_overlap"] < 1e-5
    assert sum(summary["mode_powers"]) == pytest.approx(1.0, abs=1e-5)
    with h5py.File(out / "probe.h5") as f:
        assert f["probe"].shape == (3, 128, 128)
        assert f.attrs["energy_ev"] == 300e3
    assert (out / "probe.png").stat().st_size > 10_000
    # Part 2: simulated, reconstructed, scored and reported.
    line = next(x for x in result.output.splitlines() if "Pearson r =" in x)
    r = float(line.split("Pearson r =")[1].split()[0])
    assert r > 0.7, line  # measured 0.82 (2 mrad tilt held at its true value, 25 iterations)
    with h5py.File(out / "reconstruction.h5") as f:
        assert f["object"].shape[:2] == (1, 6)
        assert f.attrs["tilt_x_mrad"] == pytest.approx(2.0)
    assert (out / "reconstruction_report" / "index.html").exists()
