"""The tutorials in docs/tutorials run end to end and their numbers meet the physics.

Each tutorial is a script that simulates its own data, runs a method and writes
``summary.json``. The tests run every script into a temporary folder and hold its numbers
to tolerances set by the physics of the case (not by what one run happened to give). The
same checks apply to the ``summary.json`` checked in beside each tutorial's figures: the
numbers a page quotes must pass them too. Three tutorials run in CI (about 2 minutes
together on 2 CPU cores); the mixed-state one, the heaviest (75 s), carries the ``slow``
marker and runs with ``make test-all`` (see docs/tutorials/index.md).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TUTORIALS = Path(__file__).resolve().parents[2] / "docs" / "tutorials"
NAMES = (
    "app_mistilted_crystal",
    "mixed_state_vibrations",
    "tilt_series_tomography",
    "reading_detector_formats",
)
#: Largest checked-in figure [bytes].
MAX_FIGURE_BYTES = 300_000

Summary = dict[str, Any]


def _run(name: str, folder: Path, timeout_s: float) -> Summary:
    """Run docs/tutorials/<name>.py into ``folder`` on the CPU; return its summary."""
    command = [sys.executable, str(TUTORIALS / f"{name}.py"), str(folder)]
    if name != "reading_detector_formats":
        command += ["--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary: Summary = json.loads((folder / "summary.json").read_text())
    return summary


# ------------------------------------------------------------------ checks per tutorial
def check_app_mistilted_crystal(s: Summary) -> None:
    truth = s["true_tilt_mrad"]
    assert math.hypot(*truth) == pytest.approx(8.0, abs=0.01)  # the case: 8 mrad diagonal
    # Sha et al. 2022: APP recovers the mistilt from a zero start. The drift it measures is
    # Δz·tanθ per slice (0.13 Å at 8 mrad); registration to ~0.03 Å over 66 Å of depth
    # bounds the error near 0.5 mrad.
    assert s["app_error_mrad"] < 0.5, s
    # FPP's slices take the tilt up as a drift; post-aligned, they give a poorer estimate.
    assert s["app_error_mrad"] < s["fpp_error_mrad"], s
    # APP's own slices are lined up: what is left is below the accuracy above.
    assert math.hypot(*s["app_residual_tilt_mrad"]) < 0.5, s


def check_mixed_state_vibrations(s: Summary) -> None:
    b_true = s["b_mean_ang2"]["truth"]
    # The snapshots: 300 K, springs of 0.6 eV/Å² -> B of order 1 Å² (0.9 Å² in
    # validation/mixed_object.py); the heavier Sr vibrates less than Ti.
    assert 0.4 < b_true["Sr"] < b_true["Ti"] < 2.0, s
    # The states start within 0.02 rad of each other (about 1 pm apart): they must spread
    # to the crystal's vibrations, not stay collapsed on the single-object solution
    # (below half), and not invent disorder the data do not hold (above 1.5 times).
    # Not tested, because it is not met yet: the heavier Sr coming out stiffer than Ti
    # (docs/tutorials/mixed_state_vibrations.md).
    assert 0.5 < s["b_ratio_reconstruction_to_truth"] < 1.5, s
    rms = s["rms_displacement_per_axis_ang"]
    assert 0.5 < rms["reconstruction"] / rms["truth"] < 1.5, s
    # analyze vibrations found the two basis atoms of the checkerboard by itself.
    assert len(s["b_per_basis_atom_from_analyze_vibrations_ang2"]) == 2, s


def check_tilt_series_tomography(s: Summary) -> None:
    truth = s["ground_truth"]
    assert truth["atoms_true"] == 19, truth
    # As tests/cli/test_cli_tomo.py asks of its 13-tilt series: most atoms found, none
    # invented, within about a voxel (0.4 Å). The particle has 19 atoms: one invented
    # atom is a precision of 0.95.
    assert truth["recall"] >= 0.75, truth
    assert truth["precision"] >= 0.9, truth
    assert truth["rmsd_ang"] < 0.5, truth
    # Cu and Au differ by 50 in Z: the species must be told apart.
    assert truth["species_accuracy"] >= 0.8, truth
    # The resolution per axis: finer than the 2.65 Å between neighbours along each axis,
    # and no finer than the 0.8 Å Nyquist limit of 0.4 Å voxels.
    resolution = s["resolution_ang"]
    for axis, value in resolution.items():
        assert 0.8 <= value < 2.65, (axis, resolution)
    # The missing wedge of a ±60° series stretches the volume along the beam (z):
    # Radermacher's elongation is 1.55 for ±60°.
    assert resolution["z"] > 1.1 * max(resolution["x"], resolution["y"]), resolution


def check_reading_detector_formats(s: Summary) -> None:
    # The readers give back every count written, lazily, and the EMPAD file written again
    # from what was read is the same byte for byte.
    assert s["empad_counts_identical"] and s["merlin_counts_identical"], s
    assert s["empad_file_rewritten_identical"], s
    assert s["empad_lazy"] and s["merlin_lazy"], s
    # The bright-field disk (radius ~21 px) calibrates the detector to better than 2 %.
    assert abs(s["detector_pixel_relative_error"]) < 0.02, s
    assert abs(s["scan_rotation_deg_found"] - s["scan_rotation_deg_true"]) < 1.0, s
    assert s["scan_transpose_found"] is False, s
    # Descan of up to a few pixels removed to a tenth of a pixel.
    assert s["descan_applied_max_px"] > 1.0 and s["descan_left_max_px"] < 0.1, s
    # Counted electrons: what was sent less what scattered beyond the detector's 64 mrad
    # (0.1 % for 7.8 Å of SrTiO3); never more than was sent beyond the Poisson noise of
    # 1.7e7 electrons (0.02 %).
    ratio = s["dose_e_per_ang2_found"] / s["dose_e_per_ang2_true"]
    assert 0.95 < ratio < 1.001, s


CHECKS: dict[str, Callable[[Summary], None]] = {
    "app_mistilted_crystal": check_app_mistilted_crystal,
    "mixed_state_vibrations": check_mixed_state_vibrations,
    "tilt_series_tomography": check_tilt_series_tomography,
    "reading_detector_formats": check_reading_detector_formats,
}


# ---------------------------------------------------------------------------- runs
def test_reading_detector_formats_runs(tmp_path: Path) -> None:  # about 25 s
    check_reading_detector_formats(_run("reading_detector_formats", tmp_path, 900))
    for name in ("preprocess_panel.png", "raw_and_descan.png"):
        assert (tmp_path / "figures" / name).read_bytes().startswith(b"\x89PNG")


def test_app_mistilted_crystal_runs(tmp_path: Path) -> None:  # about 50 s
    check_app_mistilted_crystal(_run("app_mistilted_crystal", tmp_path, 1200))


def test_tilt_series_tomography_runs(tmp_path: Path) -> None:  # about 50 s
    check_tilt_series_tomography(_run("tilt_series_tomography", tmp_path, 1200))


@pytest.mark.slow
def test_mixed_state_vibrations_runs(tmp_path: Path) -> None:  # about 75 s, the heaviest
    check_mixed_state_vibrations(_run("mixed_state_vibrations", tmp_path, 1800))


# ------------------------------------------------------------------ what the pages show
@pytest.mark.parametrize("name", NAMES)
def test_published_numbers_meet_the_same_checks(name: str) -> None:
    summary = json.loads((TUTORIALS / "figures" / name / "summary.json").read_text())
    CHECKS[name](summary)


_FIGURE = re.compile(r"^```\{figure\}\s+(\S+)", re.M)
_INCLUDE = re.compile(r"^```\{literalinclude\}\s+(\S+)((?:\n:[^\n]*)*)", re.M)
_OPTION = re.compile(r"^:(start-after|start-at|end-before|end-at):\s*(.+)$", re.M)


@pytest.mark.parametrize("name", NAMES)
def test_pages_include_files_that_exist(name: str) -> None:
    page = (TUTORIALS / f"{name}.md").read_text()
    figures = _FIGURE.findall(page)
    assert figures, f"{name}.md shows no figure"
    for figure in figures:
        path = TUTORIALS / figure
        assert path.is_file(), figure
        assert path.stat().st_size < MAX_FIGURE_BYTES, (figure, path.stat().st_size)
    includes = _INCLUDE.findall(page)
    assert any(target == f"{name}.py" for target, _ in includes), f"{name}.md shows no code"
    for target, options in includes:
        text = (TUTORIALS / target).read_text()
        for _, marker in _OPTION.findall(options):
            assert marker.strip().strip('"') in text, (target, marker)
