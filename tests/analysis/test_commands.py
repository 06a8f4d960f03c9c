"""``ptyscope analyze`` on reconstructions of simulated cubic SrTiO3 (issue 6)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from ptyscope.analysis.commands import analyze_columns, analyze_resolution
from ptyscope.cli import main
from ptyscope.config import ReconstructionConfig
from ptyscope.io.datafile import write_dataset
from ptyscope.reconstruction.run import run_reconstruction
from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG, srtio3_slab
from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings, simulate_4dstem

A = SRTIO3_LATTICE_CONSTANT_ANG


@functools.cache
def _reconstructions() -> Path:
    """Cubic SrTiO3 [001], 23 Å, 32x32 positions at 0.5 Å; full scan and both halves."""
    folder = Path(tempfile.mkdtemp(prefix="ptyscope-analyze-"))
    simulation = simulate_4dstem(
        srtio3_slab((6, 6), 6 * A),
        ProbeSettings(300e3, 22.0, {"defocus": 60.0}),
        ScanSettings((32, 32), (0.5, 0.5), origin_ang=(4.0, 4.0)),
        sampling_ang=0.1,
        slice_thickness_ang=A / 2,
        window_ang=8.0,
        dose_e_per_ang2=1e6,
        seed=1,
    )
    write_dataset(folder / "data.h5", simulation.dataset)
    for half in (None, "even", "odd"):
        config = {
            "data": {"path": str(folder / "data.h5"), "scan_half": half},
            "probe": {"defocus_ang": 60.0, "start": 10, "lr": 3e-3},
            "object": {"slices": 2, "slice_thickness_ang": 3 * A},
            "optimization": {
                "iterations": 20,
                "batch_size": 32,
                "lr_decay": 0.97,
                "checkpoint_every": None,
            },
            "output": {"path": str(folder / f"rec_{half or 'all'}.h5")},
        }
        run_reconstruction(
            ReconstructionConfig.model_validate(config), progress=False, write_html_report=False
        )
    return folder


@pytest.mark.parametrize("method", ["gaussian", "com"])
def test_cubic_srtio3_has_no_polar_displacement(method: str, tmp_path: Path) -> None:
    report = analyze_columns(_reconstructions() / "rec_all.h5", tmp_path, method=method)
    assert report.columns >= 40
    for name, (mean_y, mean_x, _, _) in (("Sr", report.d_sr_tio_pm), ("O", report.d_o_tio_pm)):
        assert abs(mean_y) < 1.0 and abs(mean_x) < 1.0, (name, report)  # cubic: zero
    assert report.lattice_a_ang == pytest.approx((A, A), rel=2e-3)
    assert report.table.read_text().startswith("label,y_ang,x_ang")


def test_frc_of_scan_halves_agrees_with_the_diffractogram(tmp_path: Path) -> None:
    folder = _reconstructions()
    report = analyze_resolution(folder / "rec_even.h5", tmp_path, other_path=folder / "rec_odd.h5")
    assert report.frc_resolution_ang is not None
    # Both estimate the same reconstruction's resolution; measured 0.34 Å and 0.31 Å.
    assert report.frc_resolution_ang == pytest.approx(report.information_limit_ang, rel=0.3)
    assert 0.2 < report.information_limit_ang < 0.6
    assert report.table is not None
    assert report.table.read_text().startswith("k_inv_ang,frc,pixels")


def test_analyze_cli(tmp_path: Path) -> None:
    folder = _reconstructions()
    runner = CliRunner()
    columns = runner.invoke(
        main, ["analyze", "columns", str(folder / "rec_all.h5"), "--out", str(tmp_path / "c")]
    )
    assert columns.exit_code == 0, columns.output
    assert "d_Sr-TiO" in columns.output
    assert (tmp_path / "c" / "columns.png").exists()
    resolution = runner.invoke(
        main,
        [
            *("analyze", "resolution", str(folder / "rec_even.h5")),
            *("--other", str(folder / "rec_odd.h5"), "--out", str(tmp_path / "r")),
        ],
    )
    assert resolution.exit_code == 0, resolution.output
    assert "FRC resolution" in resolution.output
    align = runner.invoke(main, ["analyze", "align", str(folder / "rec_all.h5")])
    assert align.exit_code == 0, align.output
    assert "apparent tilt" in align.output
    assert (folder / "rec_all_report" / "analysis" / "alignment.csv").exists()  # default
    missing = runner.invoke(main, ["analyze", "columns", str(tmp_path / "none.h5")])
    assert missing.exit_code != 0
    assert "not found" in missing.output
    mismatched = runner.invoke(
        main,
        [
            *("analyze", "resolution", str(folder / "rec_all.h5")),
            *("--other", str(folder / "data.h5"), "--out", str(tmp_path / "x")),
        ],
    )
    assert mismatched.exit_code != 0
    assert "Traceback" not in mismatched.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("kind", ["columns", "resolution", "align"])
def test_an_unreadable_result_leaves_no_folder_behind(kind: str, tmp_path: Path) -> None:
    damaged = tmp_path / "rec.h5"
    damaged.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    outcome = CliRunner().invoke(main, ["analyze", kind, str(damaged)])
    assert outcome.exit_code != 0
    assert "Traceback" not in outcome.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.h5"]


def test_post_alignment_of_a_fixed_propagator_run_reveals_the_mistilt(tmp_path: Path) -> None:
    # Sha et al. 2022, Fig. 1C: reconstructed with an untilted propagator, the slices of a
    # 10 mrad-mistilted crystal are displaced by z·tanθ; aligning them measures θ. With the
    # true tilt in the propagator, little is left.
    from ptyscope.analysis.commands import analyze_alignment

    simulation = simulate_4dstem(
        srtio3_slab((6, 6), 12 * A),
        ProbeSettings(300e3, 22.0, {"defocus": 60.0}),
        ScanSettings((24, 24), (0.5, 0.5), origin_ang=(4.0, 4.0)),
        sampling_ang=0.1,
        slice_thickness_ang=A / 2,
        window_ang=8.0,
        tilt_mrad=(0.0, 10.0),
        dose_e_per_ang2=1e6,
        seed=1,
    )
    write_dataset(tmp_path / "data.h5", simulation.dataset)
    apparent = {}
    for tilt in (0.0, 10.0):
        config = {
            "data": {"path": str(tmp_path / "data.h5")},
            "probe": {"defocus_ang": 60.0, "start": 10, "lr": 3e-3},
            "object": {"slices": 4, "slice_thickness_ang": 3 * A},
            "propagator": {"tilt_x_mrad": tilt},
            "optimization": {"iterations": 20, "batch_size": 32, "lr_decay": 0.97},
            "output": {"path": str(tmp_path / f"rec_{tilt}.h5")},
        }
        run_reconstruction(
            ReconstructionConfig.model_validate(config), progress=False, write_html_report=False
        )
        report = analyze_alignment(tmp_path / f"rec_{tilt}.h5", tmp_path / f"align_{tilt}")
        apparent[tilt] = report.apparent_tilt_mrad
    # Measured: (−0.10, 11.0) mrad with the fixed propagator; (0.0, 0.95) with the true tilt.
    assert apparent[0.0][1] == pytest.approx(10.0, abs=2.0)
    assert abs(apparent[0.0][0]) < 1.0
    assert abs(apparent[10.0][1]) < 2.0


def test_measurements_are_linked_into_the_report(tmp_path: Path) -> None:
    from ptyscope.analysis.commands import link_into_report

    report = tmp_path / "rec_report"
    (report / "analysis").mkdir(parents=True)
    (report / "index.html").write_text("<html><body><h1>run</h1></body></html>")
    (report / "analysis" / "columns.png").write_bytes(b"\x89PNG")
    (report / "analysis" / "columns.csv").write_text("label\n")
    link_into_report(report / "analysis")
    link_into_report(report / "analysis")  # idempotent
    html = (report / "index.html").read_text()
    assert html.count("<h2>Measurements</h2>") == 1
    assert 'src="analysis/columns.png"' in html
    assert 'href="analysis/columns.csv"' in html
    assert html.endswith("</body></html>")


def test_sr_anchor_fixes_the_sublattice_labels(tmp_path: Path) -> None:
    import csv

    import numpy as np

    result = _reconstructions() / "rec_all.h5"
    for anchor, expected in (((7.805, 7.805), "Sr"), ((9.7575, 9.7575), "Sr")):
        report = analyze_columns(result, tmp_path / f"{anchor[0]}", sr_position_ang=anchor)
        rows = list(csv.DictReader(report.table.open()))
        positions = np.array([[float(r["y_ang"]), float(r["x_ang"])] for r in rows])
        nearest = rows[int(np.argmin(np.hypot(*(positions - np.asarray(anchor)).T)))]
        assert nearest["label"] == expected  # the marked column is labelled Sr
