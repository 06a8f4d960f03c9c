"""Reconstructions of simulated SrTiO3 judged against the known truth (issue 5)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ptyscope.analysis.truth import phase_potential_agreement
from ptyscope.config import ReconstructionConfig
from ptyscope.io.datafile import write_dataset
from ptyscope.reconstruction.constraints import (
    AmplitudeLimit,
    PositionLimit,
    ProbeOrthogonalization,
    ProbePower,
)
from ptyscope.reconstruction.engine import Engine, EngineSettings
from ptyscope.reconstruction.parameters import GroupSettings
from ptyscope.reconstruction.run import run_reconstruction
from ptyscope.reconstruction.setup import prepare
from ptyscope.simulation.stem4d import ScanSettings

from ._data import SCAN, A, srtio3


def test_summed_phase_of_8nm_srtio3_matches_the_projected_potential(tmp_path: Path) -> None:
    sim = srtio3(21)  # 82 Å
    write_dataset(tmp_path / "data.h5", sim.dataset)
    config = ReconstructionConfig.model_validate(
        {
            "data": {"path": str(tmp_path / "data.h5")},
            "probe": {"defocus_ang": 60.0, "start": 10, "lr": 3e-3},
            "object": {"slices": 5, "slice_thickness_ang": 21 * A / 5},
            "optimization": {"iterations": 20, "batch_size": 32, "checkpoint_every": None},
            "output": {"path": str(tmp_path / "rec.h5")},
        }
    )
    run = run_reconstruction(config, progress=False)
    # Compared at the reconstruction's resolution: the truth is blurred by a 0.2 Å
    # Gaussian (22 mrad at 300 kV cannot resolve the nuclear cusps), 1 Å from the edges.
    r = phase_potential_agreement(run.result_path, sim.ground_truth, 300e3)
    assert r >= 0.9, f"Pearson r = {r:.3f}"
    assert run.engine.history.loss[-1] < 0.5 * run.engine.history.loss[0]


def test_position_correction_recovers_0p3_angstrom_errors() -> None:
    sim = srtio3(2)  # thin: one slice
    true_positions = SCAN.positions_ang()
    rng = np.random.default_rng(5)
    errors = rng.normal(0.0, 0.3 / np.sqrt(2), true_positions.shape)  # 0.3 Å RMS
    dataset = replace(sim.dataset, scan_positions_ang=true_positions + errors)
    setup = prepare(dataset, num_slices=1, slice_thickness_ang=2 * A, defocus_ang=60.0)
    settings = EngineSettings(
        iterations=60,
        batch_size=32,
        groups={"object": GroupSettings(lr=1e-2), "positions": GroupSettings(lr=3e-2, start=10)},
        constraints=[ProbePower(), AmplitudeLimit(), PositionLimit(max_px=12.0)],
    )
    Engine(setup.params, setup.measured, setup.cache, settings, setup.grid_shape).run()
    found = setup.positions_ang()
    residual = (found - true_positions.reshape(-1, 2)).reshape(-1, 2)
    # A global shift and linear distortion of all positions is absorbed by the object.
    design = np.c_[np.ones(len(residual)), true_positions.reshape(-1, 2) - true_positions.mean()]
    residual -= design @ np.linalg.lstsq(design, residual, rcond=None)[0]
    before = np.sqrt((errors**2).sum(axis=-1).mean())
    after = np.sqrt((residual**2).sum(axis=-1).mean())
    assert before == pytest.approx(0.3, rel=0.1)
    assert after < 0.05, f"RMS position error {after:.4f} Å (from {before:.3f} Å)"


def test_probe_modes_fit_partially_coherent_data_better() -> None:
    # A 0.4 Å source makes the probe a mixed state (42 modes hold all but 1e-3 of it);
    # extra probe modes can represent part of that incoherence, and more of it when they
    # start as the source's own modes (probe.source_sigma_ang) than as the probe times
    # polynomials.
    sim = srtio3(2, source_sigma_ang=0.4, scan_shape=16)
    losses = {}
    for modes, source in ((1, 0.0), (4, 0.0), (4, 0.4)):
        setup = prepare(
            sim.dataset,
            num_slices=1,
            slice_thickness_ang=2 * A,
            num_modes=modes,
            defocus_ang=60.0,
            source_sigma_ang=source,
        )
        settings = EngineSettings(
            iterations=60,
            batch_size=32,
            groups={"object": GroupSettings(lr=1e-2), "probe": GroupSettings(lr=3e-3, start=3)},
            constraints=[ProbePower(), AmplitudeLimit(), ProbeOrthogonalization()],
            lr_decay=0.97,
        )
        engine = Engine(setup.params, setup.measured, setup.cache, settings, setup.grid_shape)
        losses[modes, source] = engine.run().loss[-1]
    # Measured (60 iterations, 2026-11-25): 510 (1 mode), 496 (4 polynomial modes), 489
    # (4 source modes); coherent data reach 431 with 1 mode, so the modes recover 18 % and
    # 24 % of the excess in 60 iterations. The runs are deterministic (seeded), so "lower"
    # is exact; the margins guard against ties.
    assert losses[4, 0.0] < 0.99 * losses[1, 0.0], losses
    assert losses[4, 0.4] < 0.995 * losses[4, 0.0], losses


def test_resume_continues_exactly(tmp_path: Path) -> None:
    sim = srtio3(2, scan_shape=8)
    write_dataset(tmp_path / "data.h5", sim.dataset)

    def config(name: str) -> ReconstructionConfig:
        return ReconstructionConfig.model_validate(
            {
                "data": {"path": str(tmp_path / "data.h5")},
                "probe": {"defocus_ang": 60.0, "start": 1},
                "object": {"slices": 2, "slice_thickness_ang": A},
                "positions": {"fit": True, "start": 2},
                "optimization": {"iterations": 6, "batch_size": 16, "checkpoint_every": 2},
                "output": {"path": str(tmp_path / f"{name}.h5")},
            }
        )

    whole = run_reconstruction(config("whole"), progress=False)
    run_reconstruction(config("parts"), progress=False, stop_after=3)  # interrupted at k=3
    resumed = run_reconstruction(config("parts"), progress=False, resume=True)
    assert resumed.engine.iteration == 6
    for name in ("object", "probe", "positions"):  # bit for bit (CPU)
        assert torch.equal(resumed.setup.params.group(name), whole.setup.params.group(name))
    assert resumed.engine.history.loss == whole.engine.history.loss


def test_example_config_and_cli(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ptyscope.cli import main
    from ptyscope.config import load_config

    example = Path(__file__).resolve().parents[2] / "examples" / "reconstruct.toml"
    config = load_config(example, ReconstructionConfig)
    assert config.object.slices == 5 and config.propagator.fit_tilt == "global"
    sim = srtio3(2, scan_shape=8)
    write_dataset(tmp_path / "data.h5", sim.dataset)
    text = example.read_text().replace('"srtio3_4dstem.h5"', f'"{tmp_path / "data.h5"}"')
    text = text.replace("iterations = 50", "iterations = 3")
    text = text.replace('"srtio3_reconstruction.h5"', f'"{tmp_path / "rec.h5"}"')
    (tmp_path / "run.toml").write_text(text)
    result = CliRunner().invoke(main, ["reconstruct", str(tmp_path / "run.toml"), "-q"])
    assert result.exit_code == 0, result.output
    assert "reconstruct on cpu" in result.output
    with h5py.File(tmp_path / "rec.h5") as handle:
        assert handle["object"].shape[:2] == (1, 5)
        assert handle.attrs["tilt_x_mrad"] == 0.0  # first alignment step at iteration 15
        assert handle.attrs["total_thickness_ang"] == pytest.approx(5 * 16.4, rel=1e-6)
        assert len(handle["history/loss"]) == 3
        assert "[propagator]" in handle["config"].attrs["text"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\npath = "x.h5"\n[object]\nslice = 3\n')
    result = CliRunner().invoke(main, ["reconstruct", str(bad)])
    assert result.exit_code != 0
    assert "object.slice" in result.output


@pytest.mark.abtem
def test_reconstruction_of_abtem_data_matches_the_projected_potential(tmp_path: Path) -> None:
    pytest.importorskip("abtem")
    from ptyscope.simulation.abtem_bridge import simulate_4dstem_abtem
    from ptyscope.simulation.specimens import srtio3_slab
    from ptyscope.simulation.stem4d import simulate_4dstem

    from ._data import PROBE

    specimen = srtio3_slab((4, 4), 21 * A)  # 82 Å
    common = {"sampling_ang": 0.1, "slice_thickness_ang": A / 2}
    reference = simulate_4dstem_abtem(specimen, PROBE, SCAN, **common)
    counts = np.random.default_rng(2).poisson(reference.dataset.data * 2e5).astype(np.float32)
    write_dataset(tmp_path / "abtem.h5", replace(reference.dataset, data=counts))
    # The truth potential comes from ptyscope's own simulation of the same specimen.
    truth = simulate_4dstem(specimen, PROBE, ScanSettings((1, 1), (1.0, 1.0)), **common)
    config = ReconstructionConfig.model_validate(
        {
            "data": {"path": str(tmp_path / "abtem.h5")},
            "probe": {"defocus_ang": 60.0, "start": 10, "lr": 3e-3},
            "object": {"slices": 5, "slice_thickness_ang": 21 * A / 5},
            "optimization": {"iterations": 20, "batch_size": 32, "checkpoint_every": None},
            "output": {"path": str(tmp_path / "rec.h5")},
        }
    )
    run = run_reconstruction(config, progress=False, write_html_report=False)
    r = phase_potential_agreement(run.result_path, truth.ground_truth, 300e3)
    assert r >= 0.9, f"Pearson r = {r:.3f}"
