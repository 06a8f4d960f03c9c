"""Diagnostics: every failure sign fires on a spoilt copy of a real result, none on the result.

The good case is a short real reconstruction (8×8 scan of 2-cell SrTiO3 at 1e6 e/Å², two
probe modes, fitted positions and tilt); each bad case edits a copy of its result file.
"""

from __future__ import annotations

import math
import re
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ptyscope.config import ReconstructionConfig
from ptyscope.io.datafile import write_dataset
from ptyscope.reconstruction.engine import Engine, EngineSettings, History
from ptyscope.reconstruction.forward import PropagatorCache, predict
from ptyscope.reconstruction.parameters import GroupSettings, PtychoParameters
from ptyscope.reconstruction.run import run_reconstruction
from ptyscope.report import diagnostics as diag
from ptyscope.report.diagnostics import Finding, diagnose, format_findings
from ptyscope.report.reconstruction_report import write_report
from tests.reconstruction._data import SCAN, A, srtio3

ITERATIONS = 24
SLICES = 2
MAX_STEP_MRAD = 10.0
CONFIG = f"""
[data]
path = "data.h5"

[probe]
defocus_ang = 60.0
modes = 2
start = 1

[object]
slices = {SLICES}
slice_thickness_ang = {A}

[propagator]
fit_tilt = "global"
tilt_start = 2
align_every = 2
align_max_step_mrad = {MAX_STEP_MRAD}

[positions]
fit = true
start = 2

[optimization]
iterations = {ITERATIONS}
batch_size = 16
checkpoint_every = {ITERATIONS}
device = "cpu"

[output]
path = "rec.h5"
"""


@dataclass(frozen=True)
class Good:
    result: Path
    measured: np.ndarray


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Good:
    folder = tmp_path_factory.mktemp("diagnostics")
    write_dataset(folder / "data.h5", srtio3(2, scan_shape=8).dataset)
    config = ReconstructionConfig.model_validate(tomllib.loads(CONFIG))
    run = run_reconstruction(
        config, config_text=CONFIG, base_dir=folder, progress=False, write_html_report=False
    )
    return Good(run.result_path, run.setup.measured.numpy())


def spoil(good: Good, folder: Path, edit: Callable[[h5py.File], None]) -> Path:
    """A copy of the good result with ``edit`` applied to it."""
    path = folder / "spoilt.h5"
    shutil.copy(good.result, path)
    with h5py.File(path, "r+") as handle:
        edit(handle)
    return path


def replace(handle: h5py.File, name: str, data: np.ndarray) -> None:
    del handle[name]
    handle.create_dataset(name, data=data)


def warnings(findings: list[Finding]) -> dict[str, Finding]:
    return {f.code: f for f in findings if f.severity == "warning"}


def infos(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings if f.severity == "info"}


def test_the_good_result_shows_no_failure_sign_and_every_check_ran(good: Good) -> None:
    for measured in (good.measured, None):
        findings = diagnose(good.result, measured=measured)
        assert warnings(findings) == {}, format_findings(findings)
        # Every check judged the run (none skipped for lack of history or size).
        assert not infos(findings) & {
            "probe_modes_unrecorded",
            "grid_unjudged",
            "tilt_unjudged",
            "loss_unjudged",
        }
    assert format_findings(diagnose(good.result)).startswith("diagnostics: no failure signs")


def test_the_mode_power_history_is_the_final_probe_s_occupation(good: Good) -> None:
    with h5py.File(good.result, "r") as handle:
        power = handle["history/probe_mode_power"][()]
        probe = handle["probe"][()]
    assert power.shape == (ITERATIONS, 2)
    assert np.all(power[:, 0] >= power[:, 1])
    fractions = power[-1] / power[-1].sum()
    assert np.allclose(fractions, diag.mode_fractions(probe), atol=1e-5)


def _two_modes(probe: np.ndarray, fractions: tuple[float, float]) -> np.ndarray:
    """Orthogonal modes spanning ``probe``'s, with the given shares of its power."""
    flat = probe.reshape(2, -1).astype(np.complex128)
    basis = np.linalg.svd(flat, full_matrices=False)[2]  # orthonormal rows
    total = float((np.abs(flat) ** 2).sum())
    modes = np.sqrt(np.asarray(fractions) * total)[:, None] * basis
    return modes.reshape(probe.shape).astype(np.complex64)


def test_probe_power_drifting_into_one_mode(good: Good, tmp_path: Path) -> None:
    def collapse(handle: h5py.File) -> None:
        replace(handle, "probe", _two_modes(handle["probe"][()], (0.995, 0.005)))
        first = handle["history/probe_mode_power"][0]
        drift = np.linspace(first / first.sum(), [0.995, 0.005], ITERATIONS)
        replace(handle, "history/probe_mode_power", drift)

    found = warnings(diagnose(spoil(good, tmp_path, collapse)))
    finding = found.pop("probe_modes_collapsed")
    assert finding.measured["dominant_fraction"] == pytest.approx(0.995, abs=1e-4)
    assert finding.measured["dominant_fraction"] > diag.DOMINANT_MODE_FRACTION
    assert finding.measured["dominant_fraction_first"] < diag.DOMINANT_MODE_FRACTION
    assert "probe.modes" in finding.suggestion
    assert found == {}


def test_a_secondary_mode_collapsing_among_three() -> None:
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.standard_normal((64, 3)) + 1j * rng.standard_normal((64, 3)))[0]
    shares = np.array([0.85, 0.145, 0.005])
    probe = (np.sqrt(shares)[:, None] * basis.T).reshape(3, 8, 8)
    start = np.array([0.8, 0.14, 0.06])  # mode 2 held 6 %, now 0.5 %: below 1/10 of it
    history = np.linspace(start, shares, 20)
    assert shares[2] < diag.MODE_COLLAPSE_FACTOR * start[2]
    found = warnings(diag.check_probe_mode_collapse(probe, history))
    assert found["probe_modes_collapsed"].measured["mode"] == 2
    steady = np.repeat(shares[None], 20, axis=0)
    assert diag.check_probe_mode_collapse(probe, steady) == []


def test_probe_power_spread_evenly(good: Good, tmp_path: Path) -> None:
    def spread(handle: h5py.File) -> None:
        replace(handle, "probe", _two_modes(handle["probe"][()], (0.5, 0.5)))

    found = warnings(diagnose(spoil(good, tmp_path, spread)))
    finding = found.pop("probe_modes_spread")
    assert finding.measured["dominant_fraction"] < diag.EVEN_SPREAD_RATIO / 2
    assert found == {}


def test_an_old_result_without_the_mode_power_record_is_still_diagnosed(
    good: Good, tmp_path: Path
) -> None:
    def forget(handle: h5py.File) -> None:
        del handle["history/probe_mode_power"]

    findings = diagnose(spoil(good, tmp_path, forget))
    assert "probe_modes_unrecorded" in infos(findings)
    assert warnings(findings) == {}


@pytest.mark.parametrize(
    ("amplitude", "code"), [(0.3, "object_absorbs"), (1.5, "object_gain"), (1.0, "object_clipped")]
)
def test_object_transmission(good: Good, tmp_path: Path, amplitude: float, code: str) -> None:
    def set_amplitude(handle: h5py.File) -> None:
        obj = handle["object"][()]
        handle["object"][...] = amplitude * np.exp(1j * np.angle(obj))

    found = warnings(diagnose(spoil(good, tmp_path, set_amplitude)))
    finding = found.pop(code)
    transmission = amplitude ** (2 * SLICES)  # |Π_k O_k|² over the slices
    assert finding.measured["mean_transmission"] == pytest.approx(transmission, rel=1e-5)
    if code == "object_absorbs":
        assert transmission < diag.MIN_TRANSMISSION
    if code == "object_gain":
        assert transmission > diag.MAX_TRANSMISSION
    if code == "object_clipped":
        assert finding.measured["clipped_fraction"] > diag.CLIPPED_FRACTION
    assert ("probe.fit" if code == "object_clipped" else "object.lr") in finding.suggestion
    assert found == {}


def test_an_amplitude_at_one_is_not_clipping_without_the_limit() -> None:
    amplitude = np.ones((32, 32))
    assert diag.check_object_transmission(amplitude, (0, 32, 0, 32), amplitude_limit=False) == []
    assert diag.check_object_transmission(amplitude, (0, 32, 0, 32))[0].code == "object_clipped"


def test_grid_at_the_scan_period(good: Good, tmp_path: Path) -> None:
    grid_rad = 0.1

    def imprint(handle: h5py.File) -> None:
        obj = handle["object"][()]
        pixel = handle["object"].attrs["pixel_size_ang"]
        rows, cols = np.indices(obj.shape[-2:])
        period = np.asarray(SCAN.step_ang) / pixel  # [px]
        grid = np.cos(2 * np.pi * rows / period[0]) + np.cos(2 * np.pi * cols / period[1])
        obj[:, 0] *= np.exp(1j * grid_rad * grid)
        handle["object"][...] = obj

    found = warnings(diagnose(spoil(good, tmp_path, imprint)))
    finding = found.pop("grid_artefact")
    assert finding.measured["peak_to_background"] > diag.GRID_PEAK_RATIO
    assert finding.measured["amplitude_rad"] == pytest.approx(grid_rad, rel=0.2)
    assert finding.measured["period_ang"] == pytest.approx(SCAN.step_ang[0], rel=0.02)
    assert "positions.fit" in finding.suggestion
    assert found == {}


def test_scan_steps_and_grid_of_a_rotated_scan() -> None:
    angle = math.radians(23.0)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    steps = np.array([[4.0, 0.0], [0.0, 5.0]]) @ rotation.T  # rows: the two steps [px]
    index = np.stack(np.meshgrid(np.arange(14), np.arange(12), indexing="ij"), -1).reshape(-1, 2)
    positions = 20.0 + index @ steps
    found = diag.scan_steps_px(positions)
    assert found is not None
    for step in steps:  # each step recovered up to its sign
        assert (
            min(np.abs(found - step).max(axis=1).min(), np.abs(found + step).max(axis=1).min())
            < 1e-9
        )
    rng = np.random.default_rng(0)
    phase = 0.3 * rng.standard_normal((110, 110))
    region = (20, 90, 20, 90)
    assert diag.check_grid_artefact(phase, region, positions, (0.1, 0.1)) == []
    frequency = np.linalg.inv(steps).T[0]  # b1 [cycles/px]
    rows, cols = np.indices(phase.shape)
    grid = 0.1 * np.cos(2 * np.pi * (frequency[0] * rows + frequency[1] * cols))
    (finding,) = diag.check_grid_artefact(phase + grid, region, positions, (0.1, 0.1))
    assert finding.measured["period_ang"] == pytest.approx(0.1 * 4.0, rel=0.05)


def _tilt_edit(tilt_x_mrad: np.ndarray) -> Callable[[h5py.File], None]:
    def edit(handle: h5py.File) -> None:
        replace(handle, "history/tilt_x_mrad", tilt_x_mrad)
        replace(handle, "history/tilt_y_mrad", np.zeros(ITERATIONS))

    return edit


def test_a_runaway_tilt(good: Good, tmp_path: Path) -> None:
    rate = 3 * diag.TILT_DRIFT_MRAD_PER_10 / 10  # [mrad per iteration], steadily
    tilt = np.clip(np.arange(ITERATIONS) - 1, 0, None) * rate
    found = warnings(diagnose(spoil(good, tmp_path, _tilt_edit(tilt))))
    finding = found.pop("tilt_runaway")
    assert finding.measured["drift_mrad_per_10_iterations"] == pytest.approx(10 * rate)
    assert "propagator.tilt_start" in finding.suggestion
    assert found == {}


def test_a_large_tilt_and_steps_pinned_at_the_limit(good: Good, tmp_path: Path) -> None:
    steps = np.zeros(ITERATIONS)
    steps[2:12:2] = MAX_STEP_MRAD  # five alignment steps at align_max_step_mrad
    tilt = np.cumsum(steps)
    assert tilt[-1] > diag.TILT_LARGE_MRAD
    found = warnings(diagnose(spoil(good, tmp_path, _tilt_edit(tilt))))
    assert found.pop("tilt_large").measured["tilt_mrad"] == pytest.approx(tilt[-1])
    pinned = found.pop("tilt_pinned")
    assert pinned.measured == {"pinned_steps": 5, "first_pinned_iteration": 2}
    assert "propagator.align_max_step_mrad" in pinned.suggestion
    assert found == {}  # settled after its last step: not running away


def _loss_edit(loss: np.ndarray) -> Callable[[h5py.File], None]:
    return lambda handle: replace(handle, "history/loss", loss)


def test_a_flat_loss_far_above_the_noise_floor(good: Good, tmp_path: Path) -> None:
    with h5py.File(good.result, "r") as handle:
        first = float(handle["history/loss"][0])
    path = spoil(good, tmp_path, _loss_edit(np.full(ITERATIONS, first)))
    for measured in (good.measured, None):  # the floor estimate, or its bound
        found = warnings(diagnose(path, measured=measured))
        finding = found.pop("loss_plateau")
        assert finding.measured["window_progress"] < diag.LOSS_PLATEAU_FRACTION
        assert first > diag.LOSS_FLOOR_FACTOR * finding.measured["noise_floor"]
        assert "optimization.lr_decay" in finding.suggestion
        assert found == {}


def test_a_loss_flat_at_the_noise_floor(good: Good, tmp_path: Path) -> None:
    pixels = good.measured.shape[-1] * good.measured.shape[-2]
    floor = diag.loss_floor("amplitude", pixels, good.measured)
    assert floor is not None and floor.kind == "estimate"
    path = spoil(good, tmp_path, _loss_edit(np.full(ITERATIONS, 1.2 * floor.value)))
    assert warnings(diagnose(path, measured=good.measured)) == {}  # converged
    # Without the data the floor is unknown: a run flat since its start is flagged.
    assert set(warnings(diagnose(path))) == {"loss_early_plateau"}


def test_a_loss_rising_at_the_end(good: Good, tmp_path: Path) -> None:
    with h5py.File(good.result, "r") as handle:
        loss = handle["history/loss"][()]
    assert np.all(np.diff(loss[-6:]) < 0)  # still falling at the end: its best is the last
    loss[-4:] = loss[-5] * (1 + 2 * diag.LOSS_RISE_FRACTION)
    found = warnings(diagnose(spoil(good, tmp_path, _loss_edit(loss))))
    assert found.pop("loss_rising").measured["best_iteration"] == ITERATIONS - 5
    assert found == {}


def test_the_amplitude_noise_floor_per_pixel() -> None:
    # Known limits: 2λ for λ → 0, 1/4 for λ → ∞, at most MAX_AMPLITUDE_ERROR (λ ≈ 1.1).
    values = diag.poisson_amplitude_error([1e-3, 1.1, 1e4])
    assert values[0] == pytest.approx(2e-3 - 2 * 1e-3**1.5, rel=1e-3)  # 2λ − 2λ^(3/2) + ...
    assert values[1] == pytest.approx(diag.MAX_AMPLITUDE_ERROR, abs=1e-4)
    assert values[2] == pytest.approx(0.25, abs=1e-4)
    rng = np.random.default_rng(1)  # against a Monte-Carlo draw
    draws = rng.poisson(3.0, 400_000)
    assert diag.poisson_amplitude_error(3.0) == pytest.approx(
        np.mean((np.sqrt(draws) - math.sqrt(3.0)) ** 2), rel=0.01
    )
    assert diag.loss_floor("amplitude", 100, np.full((4, 10, 10), 0.5)) is None  # not counts
    assert diag.check_loss(np.full(20, -5.0), None, loss="poisson")[0].severity == "info"


def test_the_report_opens_with_the_diagnostics(good: Good, tmp_path: Path) -> None:
    def imprint_and_flatten(handle: h5py.File) -> None:
        replace(handle, "history/loss", np.full(ITERATIONS, handle["history/loss"][0]))

    page = write_report(spoil(good, tmp_path, imprint_and_flatten), tmp_path / "report")
    text = page.read_text(encoding="utf-8")
    assert text.index("<h2>Diagnostics</h2>") < text.index("<h2>Run</h2>")
    assert "the loss fell by" in text and "Try: " in text
    assert "No failure signs found" not in text
    clean = write_report(good.result, tmp_path / "clean").read_text(encoding="utf-8")
    assert "No failure signs found" in clean


def test_format_findings_lists_warnings_first_with_what_to_try() -> None:
    findings = [
        Finding("loss_unjudged", "info", message="too few"),
        Finding("grid_artefact", "warning", message="a grid", suggestion="fit positions"),
    ]
    assert format_findings(findings).splitlines() == [
        "diagnostics: 1 failure sign found",
        "  warning [grid_artefact] a grid",
        "    try: fit positions",
        "  note [loss_unjudged] too few",
    ]


def test_mode_power_is_checkpointed_and_old_checkpoints_load(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    obj = torch.polar(
        torch.ones(1, 1, 24, 24), 0.3 * torch.randn(1, 1, 24, 24, generator=generator)
    )
    probe = torch.randn(2, 8, 8, dtype=torch.complex64, generator=generator)
    params = PtychoParameters(
        obj, probe, torch.rand(6, 2, generator=generator) * 6 + 8, torch.zeros(2), 5.0
    )
    frequencies = torch.meshgrid(torch.fft.fftfreq(8), torch.fft.fftfreq(8), indexing="ij")
    cache = PropagatorCache(*frequencies, 0.0197)
    measured = predict(params, torch.arange(6), cache, 100.0).detach()
    settings = EngineSettings(iterations=2, groups={"probe": GroupSettings(lr=1e-2)})
    engine = Engine(params, measured, cache, settings)
    engine.run()
    assert len(engine.history.probe_mode_power) == 2
    engine.save_checkpoint(tmp_path / "ckpt.pt")
    again = Engine(params, measured, cache, settings)
    again.load_checkpoint(tmp_path / "ckpt.pt")
    assert again.history == engine.history
    state = engine.state_dict()
    del state["history"]["probe_mode_power"]  # a checkpoint written before the record
    again.load_state_dict(state)
    assert again.history == History(**{**state["history"], "probe_mode_power": []})


def test_every_suggestion_names_real_config_keys() -> None:
    sections = ReconstructionConfig.model_fields
    for code, text in diag.SUGGESTIONS.items():
        keys = re.findall(r"\b(probe|object|propagator|positions|optimization)\.(\w+)", text)
        assert keys, code
        for section, key in keys:
            model = sections[section].annotation
            assert isinstance(model, type) and key in model.model_fields, (code, section, key)
