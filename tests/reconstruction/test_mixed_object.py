"""Mixed-object workflow: state low-pass, equal weights, and the two-stage start."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ptyscope.config import ReconstructionConfig
from ptyscope.io.datafile import write_dataset
from ptyscope.reconstruction.constraints import AmplitudeLimit, StateLowPass
from ptyscope.reconstruction.parameters import PtychoParameters
from ptyscope.reconstruction.run import build_run, run_reconstruction

from ._data import A, srtio3


def test_state_lowpass_keeps_the_mean_and_smooth_differences() -> None:
    _, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    smooth = 0.2 * torch.cos(2 * torch.pi * x / 16)  # period 16 px: passes a σ = 1 px filter
    generator = torch.Generator().manual_seed(0)
    noise = 0.05 * torch.randn(2, 1, 64, 64, generator=generator)
    phases = torch.stack([smooth, -smooth])[:, None] + noise - noise.mean(0)
    params = PtychoParameters(
        torch.polar(torch.ones_like(phases), phases),
        torch.ones(1, 8, 8, dtype=torch.complex64),
        torch.zeros(1, 2),
        torch.zeros(2),
        5.0,
    )
    mean_before = params.object.data.mean(0).clone()
    StateLowPass(sigma_px=(1.0, 1.0)).apply(params, 0)
    after = params.object.data
    torch.testing.assert_close(after.mean(0), mean_before, rtol=1e-5, atol=1e-6)
    # The period-16 difference keeps exp(−2π²σ²/16²) = 93% of its amplitude; white pixel
    # noise keeps Σ g² over the spectrum: 1/(4πσ²) = 8% of its power, i.e. 28% of its rms
    # (the noise of each state, ±(n0 − n1)/2, has rms 0.05/√2).
    difference = (after[0, 0] * after[1, 0].conj()).angle() / 2
    kept = float((difference * torch.cos(2 * torch.pi * x / 16)).mean() * 2 / 0.2)
    assert kept == pytest.approx(np.exp(-2 * np.pi**2 / 256), abs=0.03)
    residual = difference - kept * 0.2 * torch.cos(2 * torch.pi * x / 16)
    assert float(residual.std()) == pytest.approx(0.05 / np.sqrt(2) * 0.28, rel=0.15)


def _config(tmp_path: Path, name: str, **sections: dict[str, object]) -> ReconstructionConfig:
    raw: dict[str, dict[str, object]] = {
        "data": {"path": str(tmp_path / "data.h5")},
        "probe": {"defocus_ang": 60.0, "start": 1},
        "object": {"slices": 2, "slice_thickness_ang": A},
        "optimization": {"iterations": 4, "batch_size": None, "checkpoint_every": None},
        "output": {"path": str(tmp_path / f"{name}.h5")},
    }
    for key, values in sections.items():
        raw[key] = {**raw.get(key, {}), **values}
    return ReconstructionConfig.model_validate(raw)


def test_two_stage_start_takes_object_probe_and_positions(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data.h5", srtio3(2, scan_shape=8).dataset)
    stage1 = run_reconstruction(
        _config(tmp_path, "stage1", probe={"modes": 2}, positions={"fit": True, "start": 1}),
        progress=False,
        write_html_report=False,
    )
    config2 = _config(
        tmp_path,
        "stage2",
        probe={"modes": 2, "fit": False},
        object={"states": 3, "state_weights": "equal", "state_noise_rad": 0.02},
        init={"result": str(stage1.result_path)},
    )
    run = build_run(config2)
    params = run.setup.params
    with h5py.File(stage1.result_path) as handle:
        obj, probe = handle["object"][()], handle["probe"][()]
        fitted = handle["positions_ang"][()] - handle["nominal_positions_ang"][()]
    assert params.object.shape[0] == 3
    ratio = params.object.detach().numpy() / obj  # exp(i φ_s), |.| = 1
    np.testing.assert_allclose(np.abs(ratio), 1.0, atol=1e-4)
    spread = np.angle(ratio).std(axis=(1, 2, 3))
    np.testing.assert_allclose(spread, 0.02, rtol=0.05)  # each state its own phases
    assert not np.allclose(np.angle(ratio[0]), np.angle(ratio[1]))
    np.testing.assert_allclose(params.probe.detach().numpy(), probe, atol=1e-6)
    pixel = np.asarray(run.setup.pixel_size_ang)
    np.testing.assert_allclose(params.positions.detach().numpy() * pixel, fitted, atol=1e-5)
    assert np.abs(fitted).max() > 1e-4  # stage 1 moved them
    assert "state_weights" not in run.engine.settings.groups  # equal weights stay 1/N
    assert "probe" in run.engine.settings.groups and not run.engine.settings.groups["probe"].fit


def test_positive_phase_clips_every_slice_and_leaves_the_amplitude(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data.h5", srtio3(2, scan_shape=8).dataset)
    phases = {}
    for clip in (False, True):
        config = _config(
            tmp_path,
            f"clip{clip}",
            object={"states": 2, "state_weights": "equal", "positive_phase": clip},
        )
        run = run_reconstruction(config, progress=False, write_html_report=False)
        with h5py.File(run.result_path) as handle:
            phases[clip] = np.angle(handle["object"][()])
        limits = [c for c in run.engine.settings.constraints if isinstance(c, AmplitudeLimit)]
        assert [(c.maximum, c.positive_phase) for c in limits] == [(1.0, clip)]
    # Unclipped, the states' random start phases and the fit leave negative phase.
    assert phases[False].min() < -0.01
    assert phases[True].min() >= 0.0
    only_phase = _config(tmp_path, "p", object={"amplitude_limit": False, "positive_phase": True})
    constraints = build_run(only_phase).engine.settings.constraints
    assert [c for c in constraints if isinstance(c, AmplitudeLimit)] == [
        AmplitudeLimit(maximum=float("inf"), positive_phase=True)
    ]


def test_two_stage_start_rejects_mismatched_results(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data.h5", srtio3(2, scan_shape=8).dataset)
    stage1 = run_reconstruction(
        _config(tmp_path, "stage1", optimization={"iterations": 1}),
        progress=False,
        write_html_report=False,
    )
    wrong_modes = _config(
        tmp_path,
        "x",
        probe={"modes": 3},
        object={"states": 2},
        init={"result": str(stage1.result_path)},
    )
    with pytest.raises(ValueError, match=r"set probe.modes = 1"):
        build_run(wrong_modes)
    wrong_slices = _config(
        tmp_path, "x", object={"slices": 3, "states": 2}, init={"result": str(stage1.result_path)}
    )
    with pytest.raises(ValueError, match=r"object\.slices"):
        build_run(wrong_slices)
    missing = _config(tmp_path, "x", init={"result": str(tmp_path / "nothing.h5")})
    with pytest.raises(ValueError, match=r"init\.result: cannot read"):
        build_run(missing)


def test_init_states_keep_goes_on_from_the_states_as_they_are(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data.h5", srtio3(2, scan_shape=8).dataset)
    mixed = {"states": 3, "state_weights": "fitted"}
    first = run_reconstruction(
        _config(tmp_path, "a", object=mixed, optimization={"iterations": 2}),
        progress=False,
        write_html_report=False,
    )
    with h5py.File(first.result_path) as handle:
        states, weights = handle["object"][()], handle["state_weights"][()]
    assert np.ptp(weights) > 1e-4  # fitted: not equal, so taking them over is seen
    init = {"result": str(first.result_path), "states": "keep"}
    kept = build_run(_config(tmp_path, "b", object=mixed, init=init)).setup.params
    np.testing.assert_array_equal(kept.object.detach().numpy(), states)
    np.testing.assert_allclose(kept.weights().detach().numpy(), weights, rtol=1e-5)
    # The default starts every state from their mean, each with its own phases.
    fresh = build_run(
        _config(tmp_path, "c", object=mixed, init={"result": str(first.result_path)})
    ).setup.params.object.detach()
    assert not np.allclose(fresh.numpy(), states, atol=1e-3)
    wrong = _config(tmp_path, "d", object={"states": 2}, init=init)
    with pytest.raises(ValueError, match=r"takes its 3 object states .* object\.states = 2"):
        build_run(wrong)


@pytest.mark.parametrize("stage", [1, 2])
def test_two_stage_example_configs_are_valid(stage: int) -> None:
    from ptyscope.config import load_config

    root = Path(__file__).parents[2] / "examples"
    config = load_config(root / f"mixed_object_stage{stage}.toml", ReconstructionConfig)
    assert config.optimization.batch_size is None  # mixed objects need full batch
    if stage == 2:
        assert config.object.states >= 10 and config.init.result is not None
        assert config.probe.modes == 4
        # The probe is fitted again only once the states have moved apart, and the run
        # keeps its last parameters: the correlations improve past the loss's minimum.
        assert config.probe.fit and config.probe.start >= 100 and config.probe.hold_defocus
        # With several modes the refit ends: the modes would take the scattering back.
        assert config.probe.stop is not None and config.probe.stop < config.optimization.iterations
        assert not config.optimization.keep_best


def _load_toml(tmp_path: Path, sections: str) -> ReconstructionConfig:
    """A reconstruction config read from TOML: ``[data]`` plus ``sections``."""
    from ptyscope.config import load_config

    path = tmp_path / "run.toml"
    path.write_text('[data]\npath = "d.h5"\n' + sections)
    return load_config(path, ReconstructionConfig)


def test_full_batch_is_spelled_full_in_toml(tmp_path: Path) -> None:
    from ptyscope.config import ConfigError

    with pytest.raises(
        ConfigError, match=r'object\.states > 1 needs full-batch(.|\n)*batch_size = "full"'
    ):
        _load_toml(tmp_path, "[object]\nstates = 3\n")
    config = _load_toml(tmp_path, '[object]\nstates = 3\n[optimization]\nbatch_size = "full"\n')
    assert config.optimization.batch_size is None


def test_probe_stop_must_come_after_its_start(tmp_path: Path) -> None:
    from ptyscope.config import ConfigError

    with pytest.raises(
        ConfigError, match=r"probe\.stop must be greater than probe\.start \(150\)(.|\n)*got 150"
    ):
        _load_toml(tmp_path, "[probe]\nstart = 150\nstop = 150\n")
    assert _load_toml(tmp_path, "[probe]\nstart = 150\nstop = 250\n").probe.stop == 250


def test_probe_warmup_and_adam_beta2_are_checked_and_reach_the_engine(tmp_path: Path) -> None:
    from ptyscope.config import ConfigError

    with pytest.raises(ConfigError, match=r"probe\.warmup") as caught:
        _load_toml(tmp_path, "[probe]\nwarmup = -2\n")
    assert "-2" in str(caught.value)
    with pytest.raises(ConfigError, match=r"optimization\.adam_beta2") as caught:
        _load_toml(tmp_path, "[optimization]\nadam_beta2 = 1.5\n")
    assert "1.5" in str(caught.value)
    assert _load_toml(tmp_path, "[probe]\nwarmup = 20\n").probe.warmup == 20
    write_dataset(tmp_path / "data.h5", srtio3(2, scan_shape=8).dataset)
    probe = {"start": 150, "stop": 200, "warmup": 20}
    run = build_run(_config(tmp_path, "opts", probe=probe, optimization={"adam_beta2": 0.99}))
    group = run.engine.settings.groups["probe"]
    assert (group.start, group.stop, group.warmup) == (150, 200, 20)
    assert run.engine.optimizer.param_groups[0]["betas"] == (0.9, 0.99)


def test_a_checkpoint_that_predates_a_setting_resumes_at_its_default(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data.h5", srtio3(2, scan_shape=8).dataset)
    run = build_run(_config(tmp_path, "old"))
    run.engine.run(stop_after=1)
    path = tmp_path / "old.ckpt.pt"
    run.engine.save_checkpoint(path)
    state = torch.load(path, weights_only=False)
    for key in ("probe.warmup", "optimization.adam_beta2"):  # as written before they existed
        del state["fingerprint"][key]
    torch.save(state, path)
    build_run(_config(tmp_path, "old")).engine.load_checkpoint(path)  # defaults: accepted
    changed = build_run(_config(tmp_path, "old", probe={"warmup": 3}))
    with pytest.raises(ValueError, match=r"probe\.warmup: checkpoint 0, config 3"):
        changed.engine.load_checkpoint(path)


def test_no_checkpoints_is_spelled_never_in_toml(tmp_path: Path) -> None:
    from ptyscope.config import ConfigError

    config = _load_toml(tmp_path, '[optimization]\ncheckpoint_every = "never"\n')
    assert config.optimization.checkpoint_every is None
    with pytest.raises(ConfigError, match=r"optimization\.checkpoint_every") as caught:
        _load_toml(tmp_path, '[optimization]\ncheckpoint_every = "sometimes"\n')
    assert "sometimes" in str(caught.value)
