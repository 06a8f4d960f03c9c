"""``ptyscope tomo`` end to end on a tiny simulated tilt series, and its resumption.

The series: a 13-atom Au cluster (r = 3 Å) in a 14 Å cube, 13 tilts about y over ±60° (10° steps),
300 kV, 20 mrad, 20 Å defocus, 12×12 scan at 1 Å (the cluster and a vacuum border),
1e6 e/Å². Each tilt
is reconstructed with 3 slices of 4 Å for 40 iterations; the tomography runs at 0.5 Å
voxels.
"""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import h5py
import pytest
from click.testing import CliRunner

from ptyscope.cli import main
from ptyscope.io.datafile import write_tilt_series
from ptyscope.simulation.specimens import fcc_cluster
from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings
from ptyscope.simulation.tilt_series import simulate_tilt_series

TILTS_DEG = tuple(float(t) for t in range(-60, 61, 10))

TEMPLATE = """
[probe]
defocus_ang = 20.0
start = 3

[object]
slices = 3
slice_thickness_ang = 4.0

[optimization]
iterations = 40
batch_size = 16
seed = 1
"""

CONFIG = """
output = "tomo"

[series]
path = "series.h5"

[reconstruction]
template = "tilt.toml"

[projections]
voxel_ang = 0.5
shape = [28, 28]
origin_ang = [0.0, 0.0]
denoise = "none"

[alignment]
refine = false  # known angles here; validation/tomography.py refines them

[volume]
iterations = 40

[atoms]
min_distance_ang = 2.0
symbols = ["Au"]
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tomo")
    cluster = fcc_cluster("Au", 4.08, radius_ang=3.0, vacuum_ang=4.0)
    series = simulate_tilt_series(
        cluster,
        [(0.0, t, 0.0) for t in TILTS_DEG],
        ProbeSettings(300e3, 20.0, {"defocus": 20.0}),
        ScanSettings((12, 12), (1.0, 1.0), origin_ang=(1.0, 1.0)),
        sampling_ang=0.15,
        window_ang=8.0,
        slice_thickness_ang=2.0,
        volume_voxel_ang=1.0,
        dose_e_per_ang2=1e6,
        seed=3,
    )
    write_tilt_series(
        folder / "series.h5", series.datasets, series.euler_deg, ground_truth=series.ground_truth
    )
    (folder / "tilt.toml").write_text(TEMPLATE)
    (folder / "tomo.toml").write_text(CONFIG)
    return folder


@pytest.fixture(scope="module")
def first_run(workdir: Path):
    return CliRunner().invoke(main, ["tomo", str(workdir / "tomo.toml"), "--quiet"])


def test_tomo_writes_volume_atoms_and_figures(workdir: Path, first_run) -> None:
    assert first_run.exit_code == 0, first_run.output
    out = workdir / "tomo"
    with h5py.File(out / "tomography.h5", "r") as handle:
        assert handle.attrs["format"] == "ptyscope-tomography"
        volume = handle["volume"][()]
        assert volume.shape == (28, 28, 28)
        assert volume.min() >= 0.0  # positivity
        assert handle["euler_deg"].shape == (len(TILTS_DEG), 3)
        metrics = json.loads(handle.attrs["metrics"])
    for name in ("orthoslices", "projections", "axis_spectra", "fsc", "atoms"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    atoms = ase.io.read(out / "atoms.xyz")
    assert set(atoms.get_chemical_symbols()) == {"Au"}
    truth = metrics["ground_truth"]
    # 13 well-separated Au atoms (2.9 Å apart) from thirteen 40-iteration ptychographies,
    # within a voxel. The tracing threshold lets 1-8 weak peaks through (missing-wedge
    # ghosts above and below the cluster); the non-atom class drops them all. Measured
    # with the tilts' seed 1 / 2 / 3: torch 1 / 1 / 3 dropped, FFTW 8 / 5 / 2, and recall
    # and precision 1.0 in all six runs (without the class the precision was 0.62-0.93).
    assert metrics["non_atoms"] == metrics["peaks_traced"] - truth["atoms_found"]
    assert truth["recall"] >= 12 / 13, truth
    assert truth["precision"] == 1.0, truth
    assert truth["rmsd_ang"] < 0.5, truth
    assert "non-atoms dropped" in first_run.output
    assert "resolution per axis" in first_run.output


def test_tomo_resumes_without_redoing_tilts(workdir: Path, first_run) -> None:
    assert first_run.exit_code == 0, first_run.output
    manifest = workdir / "tomo" / "tilts" / "tilt_series.json"
    stamps = [p.stat().st_mtime_ns for p in sorted((workdir / "tomo" / "tilts").glob("tilt_*.h5"))]
    again = CliRunner().invoke(main, ["tomo", str(workdir / "tomo.toml"), "--quiet"])
    assert again.exit_code == 0, again.output
    statuses = [t["status"] for t in json.loads(manifest.read_text())["tilts"]]
    assert statuses == ["skipped"] * len(TILTS_DEG)
    assert stamps == [
        p.stat().st_mtime_ns for p in sorted((workdir / "tomo" / "tilts").glob("tilt_*.h5"))
    ]


def test_tomo_bad_config_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        '[series]\npath = "s.h5"\n[reconstruction]\ntemplate = "t.toml"\n[volume]\nmethod = "art"\n'
    )
    result = CliRunner().invoke(main, ["tomo", str(tmp_path / "bad.toml")])
    assert result.exit_code != 0
    assert "volume.method" in result.output
