"""``ptyscope estimate``: the memory terms, the measured activations, the refusal to start,
and the predicted peak against a measured one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ptyscope.cli import main
from ptyscope.config import ReconstructionConfig, load_config
from ptyscope.data.dataset import Calibration, Dataset4D
from ptyscope.data.readers import read_4dstem
from ptyscope.reconstruction import activations, estimate
from ptyscope.reconstruction.activations import measure_chunk
from ptyscope.reconstruction.estimate import (
    Available,
    MemoryLimitError,
    RunShape,
    estimate_run,
    memory_moments,
    run_shape,
)
from ptyscope.reconstruction.run import run_reconstruction
from ptyscope.reconstruction.setup import prepare
from tests.reliability._runs import write_case

MIB = 2**20


def _shape(**changes: object) -> RunShape:
    values: dict[str, object] = {
        "patterns": 100,
        "scan_patterns": 100,
        "window": (32, 40),
        "object_shape": (2, 3, 70, 90),
        "modes": 3,
        "stored_itemsize": 2,
        "stored_float32": False,
        "batch": 100,
        "chunk": 25,
        "updates": 1,
        "optimizer": "adam",
        "loss": "amplitude",
    }
    values.update(changes)
    return RunShape(**values)  # type: ignore[arg-type]


def _terms(moment: estimate.Moment) -> dict[str, int]:
    return {term.name.split(" (")[0]: term.nbytes for term in moment.terms}


def test_memory_terms_are_the_arrays_the_run_holds() -> None:
    shape = _shape()
    chunk = measure_chunk(shape.window, slices=3, modes=3, states=2)
    _, moments = memory_moments(shape, chunk, torch.device("cpu"))
    reading, passing, stepping = (_terms(m) for m in moments[1:])
    obj = 2 * 3 * 70 * 90 * 8  # states × slices × Ny × Nx complex64
    probe = 3 * 32 * 40 * 8
    small = 2 * 100 * 8 + 8 + 4 + 2 * 4  # positions + nominal, tilt, thickness, weights
    assert passing["object"] == obj
    assert passing["probe"] == probe
    assert passing["measured data"] == 100 * 32 * 40 * 4
    assert passing["optimiser state"] == 2 * (obj + probe)  # Adam: two moments
    assert passing["guard snapshot"] == obj + probe + small + 2 * (obj + probe)
    assert passing["activations saved for backward"] == chunk.saved(25)
    assert stepping["object gradient"] == obj
    assert stepping["optimiser step temporaries"] == 2 * obj  # √v and √v / c, CPU
    # 4 chunks per update: a later chunk finds the earlier chunks' gradients.
    assert "object gradient" in passing
    assert reading["data as stored in the file"] == 100 * 32 * 40 * 2
    assert reading["data converted to float32"] == 100 * 32 * 40 * 4
    sgd = _terms(memory_moments(_shape(optimizer="sgd"), chunk, torch.device("cpu"))[1][2])
    assert sgd["optimiser state"] == obj + probe


def test_one_chunk_per_update_has_no_earlier_gradients_and_cuda_keeps_data_on_host() -> None:
    shape = _shape(batch=25)
    chunk = measure_chunk(shape.window, slices=3, modes=3, states=2)
    cuda = torch.device("cuda")
    _, moments = memory_moments(shape, chunk, cuda)
    passing = moments[2]
    assert "object gradient" not in _terms(passing)
    assert not any(t.name == estimate.HEAP_TERM for t in passing.terms)  # CPU only
    data = next(t for t in passing.terms if t.name.startswith("measured data"))
    assert data.where == "host"
    host = sum(t.nbytes for t in passing.terms if t.where == "host")
    assert host == data.nbytes + estimate.CPU_RUNTIME_BYTES + estimate.DYNAMO_BYTES
    assert passing.total("device") == passing.total() - host


def test_run_shape_matches_the_object_prepare_builds() -> None:
    rng = np.random.default_rng(0)
    data = rng.random((5, 6, 24, 24)).astype(np.float32)
    calibration = Calibration(300e3, (0.5, 0.4), (0.1, 0.1), semiangle_mrad=20.0)
    dataset = Dataset4D(data, calibration)
    config = ReconstructionConfig.model_validate(
        {
            "data": {"path": "x.h5", "scan_half": "even"},
            "object": {"slices": 3},
            "optimization": {"batch_size": 7, "chunk_size": 4},
        }
    )
    shape = run_shape(config, dataset)
    setup = prepare(dataset, num_slices=3, slice_thickness_ang=2.0, scan_half="even")
    assert shape.object_shape == tuple(setup.params.object.shape)
    assert shape.patterns == setup.measured.shape[0] == 15
    assert (shape.batch, shape.chunk, shape.updates, shape.chunks_per_update) == (7, 4, 3, 2)
    assert shape.stored_float32 and shape.stored_itemsize == 4
    assert run_shape(config, dataset, processes=3).batch == 3  # ⌈7 / 3⌉ per process
    assert not shape.exit_ramp and setup.cache.exit_ramp is None
    # An optical axis between pixels (binned data): the model gains the exit ramp, and
    # so does the estimate.
    binned = Calibration(
        300e3, (0.5, 0.4), (0.1, 0.1), semiangle_mrad=20.0, detector_center_px=(11.67, 12.0)
    )
    off_axis = Dataset4D(data, binned)
    assert run_shape(config, off_axis).exit_ramp
    assert prepare(off_axis, num_slices=3, slice_thickness_ang=2.0).cache.exit_ramp is not None


def test_a_plane_spacing_reaches_the_estimate_and_the_engine(tmp_path: Path) -> None:
    """10 Å slices with planes at most 4 Å apart: 3 planes per slice, in the estimate and
    in the propagator the engine builds (Δz / 3 per sub-step)."""
    from ptyscope.reconstruction.run import build_run

    write_case(tmp_path)
    dataset = read_4dstem(tmp_path / "data.h5")
    config = ReconstructionConfig.model_validate(
        {
            "data": {"path": str(tmp_path / "data.h5")},
            "probe": {"defocus_ang": 60.0},
            "object": {"slices": 2, "slice_thickness_ang": 10.0},
            "propagator": {"plane_spacing_ang": 4.0},
            "output": {"path": str(tmp_path / "r.h5")},
        }
    )
    assert run_shape(config, dataset).planes == 6
    assert build_run(config).setup.cache.substeps == 3


def test_substeps_multiply_the_planes_of_the_measured_pass() -> None:
    """propagator.substeps = 3 makes each of 2 slices 3 planes: the pass is measured over
    6 planes, so the FFTs per position follow modes·(1 + states·(2·planes − 1))."""
    rng = np.random.default_rng(0)
    calibration = Calibration(300e3, (0.5, 0.4), (0.1, 0.1), semiangle_mrad=20.0)
    dataset = Dataset4D(rng.random((4, 4, 24, 24)).astype(np.float32), calibration)

    def ffts(substeps: int) -> float:
        config = ReconstructionConfig.model_validate(
            {
                "data": {"path": "x.h5"},
                "object": {"slices": 2},
                "propagator": {"substeps": substeps},
                "optimization": {"batch_size": 8, "chunk_size": 8},
            }
        )
        run = estimate_run(config, dataset, "cpu", timing=False)
        assert run.shape.planes == 2 * substeps
        return run.chunk.ffts_per_position

    plain, sliced = ffts(1), ffts(3)
    assert plain >= 1 + (2 * 2 - 1)
    assert sliced >= 1 + (2 * 6 - 1)
    assert sliced / plain > 2.5  # (2·6 − 1) / (2·2 − 1) = 3.7 for the multislice part


def _measure_directly(
    positions: int,
    window: tuple[int, int],
    slices: int,
    modes: int,
    states: int,
    exit_ramp: bool = False,
) -> activations._Pass:
    """The pass of ``positions`` measured at full size (no extrapolation, no scaling)."""
    return activations._measure(
        positions,
        window,
        slices,
        modes,
        states,
        loss="amplitude",
        tilt_map=False,
        propagator_trainable=False,
        gradients_exist=False,
        exit_ramp=exit_ramp,
    )


def test_saved_activations_scale_linearly_and_extrapolate_exactly() -> None:
    window, slices, modes, states = (20, 24), 3, 2, 2
    chunk = measure_chunk(window, slices, modes, states)
    direct = _measure_directly(5, window, slices, modes, states)
    saved, events, object_bytes = direct.saved, direct.events, direct.object_bytes
    assert chunk.saved(5) == saved  # measured at 2 and 3 positions, exact at 5
    assert chunk.peak(5, object_bytes) == max(live + n * object_bytes for live, n in events)
    assert chunk.ffts(5) == pytest.approx(direct.ffts)
    assert chunk.written(5) == pytest.approx(direct.written)
    # Multislice must keep each slice's wave for the backward, and needs at least
    # M (1 + S (2L - 1)) transforms per position in the forward pass alone.
    wave = states * modes * window[0] * window[1] * 8
    assert chunk.saved_per_position >= slices * wave
    assert chunk.ffts_per_position >= modes * (1 + states * (2 * slices - 1))
    # The gather's backward makes at least one object-sized buffer (the scattered
    # gradient); with earlier chunks' gradients there, it is added to them in place.
    big = 10**9
    assert chunk.peak(5, big) > big
    later = measure_chunk(window, slices, modes, states, gradients_exist=True)
    assert big < later.peak(5, big) <= chunk.peak(5, big)


def test_the_exit_ramp_is_measured_with_the_pass() -> None:
    """Data centred between pixels add one multiply of the exit waves: the estimate
    follows it exactly and counts at least one more wave written per position."""
    window, slices, modes, states = (20, 24), 3, 2, 2
    plain = measure_chunk(window, slices, modes, states)
    ramped = measure_chunk(window, slices, modes, states, exit_ramp=True)
    direct = _measure_directly(5, window, slices, modes, states, exit_ramp=True)
    peak = max(live + n * direct.object_bytes for live, n in direct.events)
    assert ramped.saved(5) == direct.saved
    assert ramped.peak(5, direct.object_bytes) == peak
    assert ramped.written(5) == pytest.approx(direct.written)
    wave = states * modes * window[0] * window[1] * 8
    assert ramped.written_per_position - plain.written_per_position >= wave


def test_a_large_window_is_measured_small_and_scaled() -> None:
    window, slices, modes, states = (64, 80), 3, 2, 1
    assert max(window) > activations.MEASURED_WINDOW
    chunk = measure_chunk(window, slices, modes, states)
    direct = _measure_directly(4, window, slices, modes, states)
    assert chunk.saved(4) == pytest.approx(direct.saved, rel=0.01)
    peak = max(live + n * direct.object_bytes for live, n in direct.events)
    assert chunk.peak(4, direct.object_bytes) == pytest.approx(peak, rel=0.01)
    assert chunk.ffts(4) == pytest.approx(direct.ffts)


def _case(tmp_path: Path, **optimization: str) -> Path:
    """The reliability tests' run (64 patterns of 54 × 54, 2 slices) with these
    [optimization] keys set (TOML values)."""
    config = write_case(tmp_path, iterations=1)
    lines = [
        line for line in config.read_text().splitlines() if line.split(" = ")[0] not in optimization
    ]
    added = [f"{key} = {value}" for key, value in optimization.items()]
    index = lines.index("[optimization]") + 1
    config.write_text("\n".join([*lines[:index], *added, *lines[index:]]) + "\n")
    return config


def test_reconstruct_refuses_before_reading_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path = _case(tmp_path)
    monkeypatch.setattr(estimate, "available_memory", lambda device: Available(MIB, "test"))

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was read before the memory check")

    monkeypatch.setattr(Dataset4D, "iter_scan_rows", no_reading)
    monkeypatch.setattr(Dataset4D, "to_memory", no_reading)
    config = load_config(config_path, ReconstructionConfig)
    with pytest.raises(MemoryLimitError) as error:
        run_reconstruction(config, base_dir=tmp_path, progress=False, write_html_report=False)
    message = str(error.value)
    assert "predicted peak memory on cpu is" in message
    assert "more than the 1.0 MiB available (test)" in message
    assert "optimization.chunk_size (now 16)" in message
    assert "memory_check = false" in message
    result = CliRunner().invoke(main, ["reconstruct", str(config_path), "-q", "--no-report"])
    assert result.exit_code == 1 and "predicted peak memory" in result.output


def test_the_check_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(estimate, "available_memory", lambda device: Available(MIB, "test"))
    config_path = _case(tmp_path, memory_check="false")
    config = load_config(config_path, ReconstructionConfig)
    run = run_reconstruction(config, base_dir=tmp_path, progress=False, write_html_report=False)
    assert run.engine.iteration == 1
    config_path = _case(tmp_path / "flag")
    result = CliRunner().invoke(
        main, ["reconstruct", str(config_path), "-q", "--no-report", "--skip-memory-check"]
    )
    assert result.exit_code == 0, result.output
    bad = _case(tmp_path / "typo", memory_chek="false")
    with pytest.raises(ValueError, match=r"memory_chek.*did you mean 'memory_check'"):
        load_config(bad, ReconstructionConfig)


def test_estimate_command_prints_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_path = _case(tmp_path)
    result = CliRunner().invoke(main, ["estimate", str(config_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for text in ("object (1 × 2 ×", "optimiser state (adam", "guard snapshot", "MemAvailable"):
        assert text in result.output
    assert "FFTs per iteration" in result.output and "s on cpu" in result.output
    monkeypatch.setattr(estimate, "available_memory", lambda device: Available(MIB, "test"))
    result = CliRunner().invoke(main, ["estimate", str(config_path)])
    assert result.exit_code == 1 and "DOES NOT FIT" in result.output


_CHILD = """
import gc, json, sys
from pathlib import Path
from ptyscope.config import ReconstructionConfig, load_config
from ptyscope.data.readers import read_4dstem
from ptyscope.reconstruction.estimate import estimate_run
from ptyscope.reconstruction.run import build_run

def status():
    fields = dict(l.split(":", 1) for l in Path("/proc/self/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}

config_path = Path(sys.argv[1])
config = load_config(config_path, ReconstructionConfig)
dataset = read_4dstem(config_path.parent / config.data.path)
prediction = estimate_run(config, dataset, "cpu", timing=False)  # loads the libraries too
predicted = prediction.peak(allowance=False)
del dataset, prediction
gc.collect()
baseline = status()["VmRSS"]
Path("/proc/self/clear_refs").write_text("5")
run = build_run(config, base_dir=config_path.parent)
run.engine.run()
print(json.dumps([predicted, status()["VmHWM"] - baseline]))
"""


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists() or sys.platform != "linux",
    reason="needs Linux's resettable peak resident set",
)
def test_predicted_peak_matches_a_measured_run(tmp_path: Path) -> None:
    """A fresh process predicts, then runs: the growth of its peak resident set, with glibc
    returning freed memory at once (so that it follows the tensors), is within 25 % of
    the predicted peak without the heap allowance."""
    config_path = _case(tmp_path, batch_size='"full"', chunk_size="64", checkpoint_every="100")
    text = config_path.read_text().replace("slices = 2", "slices = 6")
    config_path.write_text(text.replace("[probe]\n", "[probe]\nmodes = 3\n"))
    config = load_config(config_path, ReconstructionConfig)
    here = estimate_run(config, read_4dstem(tmp_path / "data.h5"), "cpu", timing=False)
    moment = here.peak_moment(allowance=False)
    tensors = sum(t.nbytes for t in moment.terms if t.where == "device")
    assert tensors > 30 * MIB  # the tensors are a large part, beside 78 MiB of libraries
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    predicted, measured = json.loads(child.stdout.strip().splitlines()[-1])
    assert 0.75 < predicted / measured < 1.25, (predicted / MIB, measured / MIB)
