"""Per-tilt runner: executors agree bit for bit, runs resume exactly, failures stay per tilt.

The series: a 13-atom Au cluster (r = 3 Å) in a 12 Å cube at three tilts about y, 300 kV,
20 mrad, 4×4 scan at 1 Å, 36×36 detector (8 Å window, 0.15 Å sampling), 1e6 e/Å².
Each tilt: 3 slices of 4 Å, 6 iterations of batches of 8 (about a second on one core).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptyscope.config import ConfigError, ReconstructionConfig
from ptyscope.io.datafile import write_dataset, write_tilt_series
from ptyscope.reconstruction.run import run_reconstruction
from ptyscope.simulation.specimens import fcc_cluster
from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings
from ptyscope.simulation.tilt_series import TiltSeriesResult, simulate_tilt_series
from ptyscope.tomography.runner import (
    MANIFEST_NAME,
    TiltSeriesError,
    TiltSeriesRun,
    reconstruct_tilt_series,
)

EULER_DEG = [(0.0, -30.0, 0.0), (0.0, 0.0, 0.0), (0.0, 30.0, 0.0)]
TEMPLATE = """
[probe]
defocus_ang = 20.0  # Å
start = 2
[object]
slices = 3
slice_thickness_ang = 4.0  # Å
[optimization]
iterations = 6
batch_size = 8
checkpoint_every = 2
seed = 5
"""


@pytest.fixture(scope="module")
def simulated() -> TiltSeriesResult:
    cluster = fcc_cluster("Au", 4.08, radius_ang=3.0, vacuum_ang=3.0)
    return simulate_tilt_series(
        cluster,
        EULER_DEG,
        ProbeSettings(300e3, 20.0, {"defocus": 20.0}),
        ScanSettings((4, 4), (1.0, 1.0), origin_ang=(4.5, 4.5)),
        sampling_ang=0.15,
        window_ang=8.0,
        slice_thickness_ang=2.0,
        volume_voxel_ang=1.0,
        dose_e_per_ang2=1e6,
        seed=3,
    )


@pytest.fixture(scope="module")
def series(simulated: TiltSeriesResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("series") / "series.h5"
    write_tilt_series(path, simulated.datasets, simulated.euler_deg)
    return path


@pytest.fixture(scope="module")
def sequential(series: Path, tmp_path_factory: pytest.TempPathFactory) -> TiltSeriesRun:
    return reconstruct_tilt_series(
        series, TEMPLATE, tmp_path_factory.mktemp("sequential"), progress=False
    )


def _objects(run: TiltSeriesRun) -> list[np.ndarray]:
    objects = []
    for path in run.result_paths:
        with h5py.File(path, "r") as handle:
            objects.append(handle["object"][()])
    return objects


def _manifest(run: TiltSeriesRun) -> dict[str, object]:
    manifest: dict[str, object] = json.loads(run.manifest.read_text())
    return manifest


def test_each_tilt_is_the_standalone_run_of_its_data_and_seed(
    sequential: TiltSeriesRun, simulated: TiltSeriesResult, tmp_path: Path
) -> None:
    manifest = _manifest(sequential)
    tilts = manifest["tilts"]
    assert isinstance(tilts, list)
    assert [t["status"] for t in tilts] == ["done"] * 3
    assert [t["seed"] for t in tilts] == [5, 6, 7]  # template seed + tilt index
    assert [t["euler_deg"] for t in tilts] == [list(e) for e in EULER_DEG]
    assert [t["result"] for t in tilts] == ["tilt_000.h5", "tilt_001.h5", "tilt_002.h5"]
    assert not list((sequential.out_dir / "data").glob("*.h5"))  # copies removed
    # Tilt 2 equals run_reconstruction on that tilt's dataset with seed 5 + 2.
    write_dataset(tmp_path / "tilt2.h5", simulated.datasets[2])
    config = ReconstructionConfig.model_validate(
        {
            "data": {"path": str(tmp_path / "tilt2.h5")},
            "probe": {"defocus_ang": 20.0, "start": 2},
            "object": {"slices": 3, "slice_thickness_ang": 4.0},
            "optimization": {"iterations": 6, "batch_size": 8, "seed": 7},
            "output": {"path": str(tmp_path / "alone.h5")},
        }
    )
    alone = run_reconstruction(config, progress=False, write_html_report=False)
    objects = _objects(sequential)
    np.testing.assert_array_equal(objects[2], alone.setup.params.object.detach().numpy())
    # The tilts saw different data (the ±30° projections differ by far more than noise).
    assert np.abs(np.angle(objects[0]) - np.angle(objects[2])).max() > 0.1
    with h5py.File(sequential.result_paths[2], "r") as handle:
        text = handle["config"].attrs["text"]
        assert "tilt 2 of" in text and "optimization.seed = 7" in text
        assert handle.attrs["iterations"] == 6


@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_executors_give_bit_identical_tilts(
    executor: str, series: Path, sequential: TiltSeriesRun, tmp_path: Path
) -> None:
    if executor == "dask":
        pytest.importorskip("distributed")
    # Two tilts on two single-threaded workers (process start-up dominates the time).
    run = reconstruct_tilt_series(
        series,
        TEMPLATE,
        tmp_path,
        tilts=[0, 2],
        executor=executor,  # type: ignore[arg-type]
        workers=2,
        progress=False,
    )
    assert [r.status for r in run.records] == ["done", "pending", "done"]
    # Measured: bit-identical (sequential ran with torch's 2 threads, the workers with 1).
    reference = _objects(sequential)
    for ours, tilt in zip(_objects(run), [0, 2], strict=True):
        np.testing.assert_array_equal(ours, reference[tilt])


def test_resume_skips_complete_tilts_and_continues_checkpoints_exactly(
    series: Path, sequential: TiltSeriesRun, tmp_path: Path
) -> None:
    first = reconstruct_tilt_series(series, TEMPLATE, tmp_path, tilts=[0, 1], progress=False)
    assert [r.status for r in first.records] == ["done", "done", "pending"]
    stamps = [p.stat().st_mtime_ns for p in first.result_paths]
    # Tilt 2 "killed" after 3 of 6 iterations: a checkpoint and an incomplete result.
    second = reconstruct_tilt_series(series, TEMPLATE, tmp_path, stop_after=3, progress=False)
    assert [r.status for r in second.records] == ["skipped", "skipped", "interrupted"]
    assert (tmp_path / "tilt_002.ckpt.pt").is_file()
    with h5py.File(tmp_path / "tilt_002.h5", "r") as handle:  # incomplete: 3 of 6
        assert handle.attrs["iterations"] == 3
    (tmp_path / "tilt_002.h5").unlink()  # as if killed before writing any result
    third = reconstruct_tilt_series(series, TEMPLATE, tmp_path, progress=False)
    assert [r.status for r in third.records] == ["skipped", "skipped", "resumed"]
    assert third.records[2].start_iteration == 3
    assert [p.stat().st_mtime_ns for p in third.result_paths[:2]] == stamps
    manifest = _manifest(third)
    assert [t["status"] for t in manifest["tilts"]] == ["skipped", "skipped", "resumed"]  # type: ignore[index]
    for ours, reference in zip(_objects(third), _objects(sequential), strict=True):
        np.testing.assert_array_equal(ours, reference)
    # Another template on the same folder would skip stale results: refused.
    with pytest.raises(ValueError, match="different template"):
        reconstruct_tilt_series(
            series, TEMPLATE.replace("iterations = 6", "iterations = 7"), tmp_path
        )


def test_a_failing_tilt_is_reported_and_the_others_are_kept(
    simulated: TiltSeriesResult, tmp_path: Path
) -> None:
    datasets = list(simulated.datasets)
    broken = dataclasses.replace(datasets[1].calibration, detector_center_px=(14.0, 18.0))
    datasets[1] = dataclasses.replace(datasets[1], calibration=broken)
    path = tmp_path / "broken.h5"
    write_tilt_series(path, datasets, simulated.euler_deg)
    with pytest.raises(TiltSeriesError, match=r"1 of 2 tilts failed \(\[1\]\)") as caught:
        reconstruct_tilt_series(path, TEMPLATE, tmp_path / "out", tilts=[0, 1], progress=False)
    run = caught.value.run
    assert run.failed == [1]
    assert [r.status for r in run.records] == ["done", "failed", "pending"]
    assert (tmp_path / "out" / "tilt_000.h5").is_file()
    assert not (tmp_path / "out" / "tilt_001.h5").exists()
    tilts = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["tilts"]
    assert "optical axis must be at the detector's centre" in tilts[1]["message"]


def test_bad_arguments_name_the_parameter_and_value(
    series: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [
        ({"executor": "threads"}, r"executor must be one of \['sequential', .*got 'threads'"),
        ({"tilts": [0, 3]}, r"tilts must hold tilt indices in \[0, 2\].*got \[0, 3\]"),
        ({"tilts": [1, 1]}, r"tilts must not repeat an index, got \[1, 1\]"),
        ({"tilts": []}, r"tilts must name at least one tilt \(or be None for all\), got \[\]"),
        ({"workers": 0, "executor": "processes"}, r"workers must be an integer >= 1.*got 0"),
        ({"scheduler_address": "tcp://x:1"}, r"scheduler_address needs executor='dask'"),
        ({"stop_after": -1}, r"stop_after must be an integer >= 0 or None, got -1"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            reconstruct_tilt_series(series, TEMPLATE, tmp_path, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"init.result must be unset .*got 'a.h5'"):
        reconstruct_tilt_series(series, TEMPLATE + '[init]\nresult = "a.h5"\n', tmp_path)
    with pytest.raises(ValueError, match=r"data.dataset_path must be unset .*got '/x'"):
        reconstruct_tilt_series(series, '[data]\ndataset_path = "/x"\n' + TEMPLATE, tmp_path)
    with pytest.raises(ConfigError, match=r"object.slices: .*got 0"):
        reconstruct_tilt_series(series, TEMPLATE.replace("slices = 3", "slices = 0"), tmp_path)
    with pytest.raises(ValueError, match=r"series_path must be an existing tilt-series file"):
        reconstruct_tilt_series(tmp_path / "none.h5", TEMPLATE, tmp_path)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'ptyscope\[cluster\]'"):
        reconstruct_tilt_series(series, TEMPLATE, tmp_path, executor="dask")
    assert not (tmp_path / MANIFEST_NAME).exists()  # nothing was started
