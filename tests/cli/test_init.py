"""``ptyscope init`` on simulated EMPAD and Merlin files: the config it writes runs as is."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ptyscope.analysis.truth import phase_potential_agreement
from ptyscope.cli import main
from ptyscope.data.formats.empad import write_empad_raw
from ptyscope.data.formats.merlin import write_mib
from ptyscope.physics.constants import wavelength_ang
from ptyscope.reconstruction.preflight import MAX_TILT_PLANE_SPACING_ANG
from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG as A
from ptyscope.simulation.specimens import srtio3_slab
from ptyscope.simulation.stem4d import (
    ProbeSettings,
    ScanSettings,
    SimulationResult,
    simulate_4dstem,
)
from ptyscope.starter import INIT_PLANE_SPACING_ANG

ENERGY_EV = 300e3
SEMIANGLE_MRAD = 22.0
DEFOCUS_ANG = 60.0
THICKNESS_ANG = 12 * A  # 47 Å
STEP_ANG = 0.45
WINDOW_ANG = 12.8
#: The summed phase of a reconstruction that found the structure. On this 14 x 14 scan after
#: 25 iterations the preprocessed (descan-corrected) Merlin route measured r = 0.80; the
#: engine's own acceptance test reaches 0.9 on a 20 x 20 scan. A wrong detector pixel,
#: defocus or loss gives r near 0 (a diverged Poisson run on the same data: -0.03).
MIN_PEARSON = 0.75


@pytest.fixture(scope="module")
def simulation() -> SimulationResult:
    return simulate_4dstem(
        srtio3_slab((5, 5), THICKNESS_ANG),
        ProbeSettings(ENERGY_EV, SEMIANGLE_MRAD, {"defocus": DEFOCUS_ANG}),
        ScanSettings((14, 14), (STEP_ANG, STEP_ANG), origin_ang=(4.0, 4.0)),
        sampling_ang=0.1,
        slice_thickness_ang=A / 2,
        window_ang=WINDOW_ANG,
        dose_e_per_ang2=1e6,
        seed=3,
    )


def _on_128(simulation: SimulationResult, shift_px: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The patterns on a 128 x 128 detector (EMPAD, one Merlin-sized chip), optionally with
    the optical axis moved off the centre pixel (an uncorrected descan)."""
    data = np.asarray(simulation.dataset.data, dtype=np.float32)
    n = data.shape[-1]
    frames = np.zeros((*data.shape[:2], 128, 128), np.float32)
    lo = 64 - n // 2
    frames[:, :, lo : lo + n, lo : lo + n] = data
    return np.roll(frames, shift_px, axis=(2, 3))


def _init(tmp_path: Path, datafile: Path, *extra: str) -> Path:
    config = tmp_path / "run.toml"
    result = CliRunner().invoke(
        main,
        [
            "init", str(datafile), "-o", str(config),
            "--energy-ev", str(ENERGY_EV), "--semiangle-mrad", str(SEMIANGLE_MRAD),
            "--scan-step-ang", str(STEP_ANG), str(STEP_ANG),
            "--thickness-ang", str(THICKNESS_ANG), "--iterations", "25", *extra,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return config


def _reconstruct(config: Path) -> Path:
    result = CliRunner().invoke(main, ["reconstruct", str(config), "-q", "--no-report"])
    assert result.exit_code == 0, result.output
    return config.parent / "run_result.h5"


def _check_measured(config: Path, simulation: SimulationResult) -> None:
    settings = tomllib.loads(config.read_text())
    true_pixel = simulation.dataset.calibration.detector_pixel_mrad[0]
    # The disk edge of a coherent simulation sits ~1.2% outside α/λ (find_bf_disk).
    assert settings["data"]["detector_pixel_mrad"][0] == pytest.approx(true_pixel, rel=0.02)
    assert abs(settings["data"]["scan_rotation_deg"]) < 2.0
    # Parallax focus + t/2 (tests/data/test_parallax.py): within t/4 of the entrance defocus.
    assert abs(settings["probe"]["defocus_ang"] - DEFOCUS_ANG) <= THICKNESS_ANG / 4
    depth_of_field = wavelength_ang(ENERGY_EV) / (SEMIANGLE_MRAD * 1e-3) ** 2
    assert settings["object"]["slices"] == round(THICKNESS_ANG / (depth_of_field / 3))
    assert settings["propagator"]["fit_tilt"] == "global"
    # slices of 15.7 Å: two planes each, so the preflight does not warn about the tilt
    assert settings["object"]["slice_thickness_ang"] > MAX_TILT_PLANE_SPACING_ANG
    assert settings["propagator"]["plane_spacing_ang"] == INIT_PLANE_SPACING_ANG


def test_init_on_an_empad_file_writes_a_config_that_runs(
    tmp_path: Path, simulation: SimulationResult
) -> None:
    raw = tmp_path / "scan_x14_y14.raw"  # no XML: the scan shape comes from the name
    write_empad_raw(raw, _on_128(simulation))
    config = _init(tmp_path, raw)
    assert not (tmp_path / "run_preprocess.toml").exists()  # centred: read directly
    _check_measured(config, simulation)
    r = phase_potential_agreement(_reconstruct(config), simulation.ground_truth, ENERGY_EV)
    print(f"summed phase vs projected potential: r = {r:.3f}")
    assert r >= MIN_PEARSON


def test_init_on_an_off_centre_mib_file_preprocesses_first(
    tmp_path: Path, simulation: SimulationResult
) -> None:
    frames = np.round(_on_128(simulation, (3, -2)))
    assert frames.max() < 2**12
    mib = tmp_path / "scan.mib"
    write_mib(mib, frames.astype(np.uint16), counter_depth=12)
    config = _init(tmp_path, mib, "--scan-shape", "14", "14")
    preprocess = tmp_path / "run_preprocess.toml"
    assert preprocess.exists()
    assert "not on the detector's centre pixel" in preprocess.read_text()
    preprocessed = tmp_path.resolve() / "run_preprocessed.h5"
    assert tomllib.loads(config.read_text())["data"]["path"] == str(preprocessed)
    result = CliRunner().invoke(main, ["preprocess", str(preprocess)])
    assert result.exit_code == 0, result.output
    r = phase_potential_agreement(_reconstruct(config), simulation.ground_truth, ENERGY_EV)
    print(f"summed phase vs projected potential: r = {r:.3f}")
    assert r >= MIN_PEARSON


def test_init_marks_what_the_file_cannot_tell(tmp_path: Path, simulation: SimulationResult) -> None:
    raw = tmp_path / "scan_x14_y14.raw"
    write_empad_raw(raw, _on_128(simulation))
    result = CliRunner().invoke(main, ["init", str(raw), "-o", str(tmp_path / "run.toml")])
    assert result.exit_code == 0, result.output
    assert "CONFIRM energy_ev" in result.output
    assert "CONFIRM semiangle_mrad" in result.output
    assert "CONFIRM scan_step_ang" in result.output
    assert "CONFIRM thickness_ang" in result.output
    text = (tmp_path / "run.toml").read_text()
    assert text.count("# CONFIRM") == 4
    settings = tomllib.loads(text)
    assert settings["object"]["slices"] == 1  # thickness unknown
    assert settings["propagator"]["fit_tilt"] == "off"
    again = CliRunner().invoke(main, ["init", str(raw), "-o", str(tmp_path / "run.toml")])
    assert again.exit_code != 0
    assert "exists; pass --force" in again.output


def test_init_names_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["init", str(tmp_path / "nothing.raw")])
    assert result.exit_code != 0
    assert "datafile must be an existing file" in result.output
