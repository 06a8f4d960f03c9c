"""``ptyscope preprocess`` end to end: a MIB file with a rotated scan, descan and bad pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ptyscope.cli import main
from ptyscope.config import PreprocessConfig, load_config
from ptyscope.data.descan import shift_patterns
from ptyscope.data.formats.merlin import write_mib
from ptyscope.io.datafile import read_dataset

from ._simulated import SEMIANGLE_MRAD, A, srtio3

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "preprocess.toml"
ROTATION_DEG = 30.0
STEP_ANG = (0.3, 0.36)


def _measured_file(folder: Path) -> tuple[Path, float]:
    """A 12-bit MIB file of a 30°-rotated scan with descan, hot and dead pixels."""
    # Window 8a binned 2x2: a disk of ~16 px radius integrated over pixels, like a detector.
    truth = srtio3(
        (16, 16), STEP_ANG, rotation_deg=ROTATION_DEG, window_ang=8 * A, binning=2
    ).dataset
    clean = np.asarray(truth.data, dtype=np.float64)
    ny, nx = clean.shape[2:]
    i, j = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    descan = np.stack([1.5 + 0.20 * i - 0.05 * j, -2.0 + 0.10 * i + 0.15 * j], axis=-1)
    shifted = shift_patterns(clean.reshape(-1, ny, nx), descan.reshape(-1, 2)).reshape(clean.shape)
    rng = np.random.default_rng(11)
    counts = rng.poisson(np.clip(shifted, 0, None) * 3e4)  # 3e4 e per pattern: 2.8e5 e/Å²
    counts[..., 5, 7] = 4000  # hot
    counts[..., ny // 2 + 3, nx // 2 - 2] = 0  # dead, inside the bright-field disk
    path = folder / "scan.mib"
    write_mib(path, counts.reshape(-1, ny, nx), counter_depth=12)
    return path, truth.calibration.detector_pixel_mrad[0]


def _preprocess_config(folder: Path, output: Path | str, extra: str = "") -> Path:
    """``folder/pre.toml`` for the 16 × 16 scan.mib of :func:`_measured_file`."""
    config = folder / "pre.toml"
    config.write_text(
        f"""
output = "{output}"
[input]
path = "scan.mib"
scan_shape = [16, 16]
energy_ev = 300e3
scan_step_ang = [{STEP_ANG[0]}, {STEP_ANG[1]}]
semiangle_mrad = {SEMIANGLE_MRAD}
{extra}"""
    )
    return config


def test_example_config_validates() -> None:
    config = load_config(EXAMPLE, PreprocessConfig)
    assert config.input.scan_shape == (256, 256)
    assert config.steps.find_scan_rotation


def test_preprocess_recovers_calibration_rotation_and_removes_descan(tmp_path: Path) -> None:
    mib, pixel_mrad = _measured_file(tmp_path)
    config = _preprocess_config(tmp_path, tmp_path / "out.h5")
    result = CliRunner().invoke(main, ["preprocess", str(config)])
    assert result.exit_code == 0, result.output
    assert "scan rotation" in result.output
    out = read_dataset(tmp_path / "out.h5")
    cal = out.calibration
    assert abs(cal.scan_rotation_deg - ROTATION_DEG) < 1.0
    assert cal.scan_transpose is False
    assert cal.detector_pixel_mrad[0] == pytest.approx(pixel_mrad, rel=0.01)
    # Descan removed: the smooth (plane) part of the disk motion over the scan equals the
    # specimen's own, measured on the simulation before descan and noise were added. The
    # per-pattern centres also carry the specimen's DPC signal (up to ~1.1 px here).
    from ptyscope.data.descan import measure_descan

    truth = srtio3((16, 16), STEP_ANG, rotation_deg=ROTATION_DEG, window_ang=8 * A, binning=2)
    remaining = measure_descan(out).centres_px((16, 16))
    intrinsic = measure_descan(truth.dataset).centres_px((16, 16))
    drift = (remaining - remaining.mean(axis=(0, 1))) - (intrinsic - intrinsic.mean(axis=(0, 1)))
    assert np.abs(drift).max() < 0.1, f"descan left {np.abs(drift).max():.3f} px"
    np.testing.assert_allclose(remaining.mean(axis=(0, 1)), out.detector_center_px, atol=0.1)
    # Bad pixels repaired: the hot pixel no longer stands out of the mean pattern.
    mean = out.mean_pattern()
    assert mean[5, 7] < 10 * np.median(mean[:12, :12]) + 1
    png = (tmp_path / "out.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert mib.exists()


def test_preprocess_outputs_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As data.path and output.path of a reconstruction config: a config written beside
    # its data works from any working directory, and a reconstruction config in the same
    # folder finds the preprocessed file by the same relative name.
    folder = tmp_path / "session"
    folder.mkdir()
    _measured_file(folder)
    config = _preprocess_config(
        folder, "calibrated/out.h5", "[steps]\ncorrect_descan = false\nfind_scan_rotation = false\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(main, ["preprocess", str(config)])
    assert result.exit_code == 0, result.output
    assert read_dataset(folder / "calibrated" / "out.h5").scan_shape == (16, 16)
    assert (folder / "calibrated" / "out.png").read_bytes().startswith(b"\x89PNG")
    assert list(elsewhere.iterdir()) == []
    assert str(folder / "calibrated" / "out.h5") in result.output


def test_preprocess_errors_are_clear(tmp_path: Path) -> None:
    config = tmp_path / "pre.toml"
    config.write_text('[input]\npath = "missing.mib"\nscan_shape = [2, 2]\n')
    result = CliRunner().invoke(main, ["preprocess", str(config)])
    assert result.exit_code != 0
    assert "missing.mib" in result.output
    assert "Traceback" not in result.output


def test_info_reads_detector_files_with_or_without_calibration(tmp_path: Path) -> None:
    counts = np.random.default_rng(3).poisson(0.2, size=(6, 16, 16)).astype(np.uint16)
    write_mib(tmp_path / "f.mib", counts, counter_depth=12)
    runner = CliRunner()
    bare = runner.invoke(main, ["info", str(tmp_path / "f.mib"), "--scan-shape", "2", "3"])
    assert bare.exit_code == 0, bare.output
    assert "scan 2 x 3, detector 16 x 16" in bare.output
    assert "energy unknown" in bare.output
    assert "dose:" not in bare.output
    full = runner.invoke(
        main,
        [
            "info",
            str(tmp_path / "f.mib"),
            "--scan-shape",
            "2",
            "3",
            "--scan-step-ang",
            "0.5",
            "0.5",
            "--energy-ev",
            "300e3",
        ],
    )
    assert full.exit_code == 0, full.output
    assert "pixel size not calibrated" in full.output
    expected_dose = counts.sum(axis=(1, 2)).mean() / 0.25
    assert f"dose:     {expected_dose:.4g} e/Å²" in full.output
    wrong = runner.invoke(main, ["info", str(tmp_path / "f.mib"), "--scan-shape", "4", "4"])
    assert wrong.exit_code != 0
    assert "f.mib" in wrong.output
    assert "16" in wrong.output
