"""Losses, constraints and engine mechanics, each against a known answer."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ptyscope.config import ReconstructionConfig, load_config
from ptyscope.reconstruction.constraints import (
    AmplitudeLimit,
    BandLimit,
    PositionLimit,
    ProbeOrthogonalization,
    ProbePower,
    Schedule,
    SliceSmoothing,
)
from ptyscope.reconstruction.engine import Engine, EngineSettings
from ptyscope.reconstruction.forward import PropagatorCache, predict
from ptyscope.reconstruction.losses import get_loss
from ptyscope.reconstruction.parameters import GroupSettings, PtychoParameters
from ptyscope.reconstruction.run import run_reconstruction
from ptyscope.report.reconstruction_report import write_report
from tests.reliability._runs import write_case

from ._data import A, srtio3


def _params(states: int = 1, modes: int = 3, slices: int = 2, n: int = 6) -> PtychoParameters:
    generator = torch.Generator().manual_seed(0)
    obj = torch.polar(
        torch.ones(states, slices, 24, 24),
        0.3 * torch.randn(states, slices, 24, 24, generator=generator),
    )
    probe = torch.randn(modes, 8, 8, dtype=torch.complex64, generator=generator)
    positions = torch.rand(n, 2, generator=generator) * 6 + 8
    return PtychoParameters(obj, probe, positions, torch.zeros(2), 5.0)


@pytest.mark.parametrize("name", ["amplitude", "poisson", "intensity"])
def test_losses_are_minimal_at_the_measurement(name: str) -> None:
    measured = torch.tensor([[[4.0, 9.0], [1.0, 16.0]]], dtype=torch.float64)
    loss = get_loss(name)
    predicted = measured.clone().requires_grad_(True)
    value = loss(predicted, measured)
    (gradient,) = torch.autograd.grad(value, predicted)
    assert float(gradient.abs().max()) < 1e-5  # stationary at I = J
    for factor in (0.8, 1.25):
        assert float(loss(measured * factor, measured)) > float(value.detach())
    if name == "amplitude":
        assert float(loss(measured * 4, measured)) == pytest.approx(float(measured.sum()), rel=1e-6)
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss("chi2")


def test_schedule() -> None:
    schedule = Schedule(start=2, stop=9, every=3)
    assert [i for i in range(12) if schedule.due(i)] == [2, 5, 8]


def test_probe_orthogonalization_keeps_power_and_orders_modes() -> None:
    params = _params()
    before = float((params.probe.data.abs() ** 2).sum())
    ProbeOrthogonalization().apply(params, 0)
    modes = params.probe.data.reshape(3, -1)
    overlap = modes.conj() @ modes.T
    off = overlap - torch.diag(torch.diagonal(overlap))
    assert float(off.abs().max()) < 1e-4 * float(overlap.abs().max())
    powers = torch.diagonal(overlap).real
    assert bool((powers[:-1] >= powers[1:]).all())
    assert float(powers.sum()) == pytest.approx(before, rel=1e-5)


def test_probe_power_amplitude_band_and_slice_constraints() -> None:
    params = _params()
    ProbePower(power=2.5).apply(params, 0)
    assert float((params.probe.data.abs() ** 2).sum()) == pytest.approx(2.5, rel=1e-5)
    params.object.data.mul_(1.5)
    phase = params.object.data.angle().clone()
    AmplitudeLimit().apply(params, 0)
    assert float(params.object.data.abs().max()) <= 1.0 + 1e-6
    torch.testing.assert_close(params.object.data.angle(), phase, atol=1e-5, rtol=0)
    AmplitudeLimit(positive_phase=True).apply(params, 0)
    assert float(params.object.data.angle().min()) >= -1e-6
    # Band limit: a frequency inside 2/3 of Nyquist survives, one beyond it is removed.
    grid = torch.arange(24.0)
    low = torch.cos(2 * math.pi * 3 * grid / 24)[None, :].expand(24, 24)
    high = torch.cos(2 * math.pi * 11 * grid / 24)[None, :].expand(24, 24)
    params.object.data[0, 0] = (low + high).to(torch.complex64)
    BandLimit().apply(params, 0)
    torch.testing.assert_close(params.object.data[0, 0].real, low, atol=1e-5, rtol=0)
    # Slice smoothing: a uniform stack is unchanged; a phase in one slice spreads.
    stack = _params(slices=4)
    stack.object.data.fill_(1.0)
    stack.object.data[0, 1] = torch.polar(torch.ones(24, 24), torch.full((24, 24), 0.4))
    SliceSmoothing(strength=0.5).apply(stack, 0)
    phases = stack.object.data[0, :, 0, 0].angle()
    assert phases.tolist() == pytest.approx([0.2, 0.2, 0.1, 0.0], abs=1e-5)


def test_position_limit_removes_the_affine_part_only() -> None:
    params = _params(n=30)
    nominal = params.nominal_positions_px
    generator = torch.Generator().manual_seed(3)
    local = 0.2 * torch.randn(30, 2, generator=generator)
    design = torch.cat((torch.ones(30, 1), nominal - nominal.mean(dim=0)), dim=1)
    local -= design @ torch.linalg.lstsq(design, local).solution  # purely non-affine
    affine = torch.tensor([0.5, -0.3]) + (nominal - nominal.mean(dim=0)) @ torch.tensor(
        [[0.01, 0.02], [-0.03, 0.01]]
    )
    params.positions.data.copy_(local + affine)
    PositionLimit(max_px=5.0).apply(params, 0)
    torch.testing.assert_close(params.positions.data, local, atol=1e-5, rtol=0)
    params.positions.data.fill_(9.0)
    PositionLimit(max_px=2.0, remove_affine=False).apply(params, 0)
    assert float(params.positions.data.max()) == 2.0


def _small_engine(**settings: object) -> Engine:
    from ptyscope.reconstruction.setup import prepare

    sim = srtio3(2, scan_shape=8)
    setup = prepare(sim.dataset, num_slices=1, slice_thickness_ang=2 * A, defocus_ang=60.0)
    defaults: dict[str, object] = {"iterations": 4, "groups": {"object": GroupSettings(lr=1e-2)}}
    defaults.update(settings)
    return Engine(
        setup.params, setup.measured, setup.cache, EngineSettings(**defaults), setup.grid_shape
    )


def test_compact_batches_cover_every_position_once() -> None:
    engine = _small_engine(batch_size=9, batching="compact")
    batches = engine._order(0)
    assert sorted(torch.cat(batches).tolist()) == list(range(64))
    for batch in batches:  # tiles of 3x3 scan points: rows and columns within 2 steps
        rows, cols = batch // 8, batch % 8
        assert int(rows.max() - rows.min()) <= 2
        assert int(cols.max() - cols.min()) <= 2
    assert [b.tolist() for b in engine._order(5)] != [b.tolist() for b in engine._order(6)]


def test_chunked_full_batch_gradient_equals_one_pass() -> None:
    gradients = []
    for chunk in (64, 7):
        engine = _small_engine(chunk_size=chunk)
        engine.params.zero_grad()
        engine._loss_and_backward(torch.arange(64), 0, 64)
        assert engine.params.object.grad is not None
        gradients.append(engine.params.object.grad.clone())
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-4, atol=1e-7)


def test_a_chunk_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"chunk_size must be >= 1 or None \(auto\), got 0"):
        _small_engine(chunk_size=0)


def test_a_group_is_fitted_from_its_start_until_its_stop() -> None:
    probe = GroupSettings(lr=1e-2, start=2, stop=4)
    engine = _small_engine(groups={"object": GroupSettings(lr=1e-2), "probe": probe})
    moved = []
    for _ in range(6):
        before = engine.params.probe.detach().clone()
        engine.step()
        moved.append(not torch.equal(engine.params.probe.detach(), before))
    assert moved == [False, False, True, True, False, False]


def test_a_warmup_scales_the_first_steps_and_then_gives_the_full_step() -> None:
    # Adam's first step is lr·g/(|g| + eps) per element, so on the same gradient a
    # warm-up of 3 makes the first update exactly a quarter of the full one.
    def probe_steps(warmup: int) -> list[torch.Tensor]:
        probe = GroupSettings(lr=1e-2, start=1, warmup=warmup)
        engine = _small_engine(groups={"probe": probe})  # the object is frozen
        lrs = [group["lr"] for group in engine.optimizer.param_groups]
        steps = []
        for _ in range(3):
            before = engine.params.probe.detach().clone()
            engine.step()
            steps.append(torch.view_as_real(engine.params.probe.detach() - before))
            assert [group["lr"] for group in engine.optimizer.param_groups] == lrs
        return steps

    full, eased = probe_steps(0), probe_steps(3)
    assert not full[0].any() and not eased[0].any()  # iteration 0 is before the start
    torch.testing.assert_close(eased[1], full[1] / 4, rtol=1e-5, atol=0.0)
    peak = float(_small_engine().params.probe.detach().abs().max())
    assert float(full[1].abs().max()) == pytest.approx(1e-2 * peak, rel=1e-3)
    # The second update is half the full step in size: about 1/2 of Adam's unit step.
    assert float(eased[2].abs().max()) == pytest.approx(0.5e-2 * peak, rel=0.05)
    assert GroupSettings(start=4, warmup=3).warmup_factor(3) == 0.25  # before the start
    factors = [GroupSettings(start=4, warmup=3).warmup_factor(i) for i in range(4, 9)]
    assert factors == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_lbfgs_and_adam_both_reduce_the_loss() -> None:
    for optimizer in ("lbfgs", "adam"):
        engine = _small_engine(optimizer=optimizer, iterations=3)
        history = engine.run()
        losses = history.loss
        assert all(b < a for a, b in itertools.pairwise(losses)), (optimizer, losses)
        assert losses[-1] < 0.9 * losses[0], (optimizer, losses)


def test_lbfgs_takes_the_same_steps_whatever_the_units_of_the_loss(tmp_path: Path) -> None:
    # The loss is a mean per pattern of patterns summing to ~1: small, and smaller near
    # convergence. torch's L-BFGS caps its first step at lr · g, so a loss in small units
    # moved pixels by ~1e-8 and never left its start (here: not at all for the loss ×
    # 1e-12). Scaled by its first value, the L-BFGS objective has no units.
    amplitude = get_loss("amplitude")
    start = _small_engine().params.object.detach()
    losses, moved = {}, {}
    for factor in (1.0, 1e-12):

        def loss(p: torch.Tensor, m: torch.Tensor, f: float = factor) -> torch.Tensor:
            return f * amplitude(p, m)

        engine = _small_engine(optimizer="lbfgs", iterations=3, loss=loss)
        losses[factor] = np.array(engine.run().loss) / factor
        moved[factor] = float((engine.params.object.detach() - start).abs().max())
    assert losses[1.0][-1] < 0.5 * losses[1.0][0]  # it does descend
    # The same iterates up to float32 round-off, which the line searches may amplify.
    np.testing.assert_allclose(losses[1e-12], losses[1.0], rtol=1e-3)
    assert moved[1e-12] == pytest.approx(moved[1.0], rel=0.1)
    # The scale is part of the state: a resumed run goes on with the same objective.
    engine = _small_engine(optimizer="lbfgs", iterations=2)
    engine.settings.checkpoint_path = tmp_path / "run.ckpt.pt"
    engine.run(stop_after=1)
    engine.save_checkpoint(engine.settings.checkpoint_path)
    resumed = _small_engine(optimizer="lbfgs", iterations=2)
    resumed.load_checkpoint(engine.settings.checkpoint_path)
    assert resumed._lbfgs_scale == engine._lbfgs_scale is not None
    engine.run()
    resumed.run()
    assert resumed.history.loss == engine.history.loss


def test_two_object_states_fit_with_weights() -> None:
    params = _params(states=2, modes=1, n=4)
    cache = PropagatorCache(
        *torch.meshgrid(torch.fft.fftfreq(8), torch.fft.fftfreq(8), indexing="ij"), 0.0197
    )
    measured = predict(params, torch.arange(4), cache, 100.0).detach()
    params.state_weights.data = torch.tensor([1.0, -1.0])  # start from unequal weights
    settings = EngineSettings(
        iterations=100,
        groups={"state_weights": GroupSettings(lr=0.1)},  # object and probe frozen
    )
    Engine(params, measured, cache, settings).run()
    torch.testing.assert_close(params.weights(), torch.tensor([0.5, 0.5]), atol=0.03, rtol=0)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="optimizer must be one of"):
        EngineSettings(optimizer="rmsprop")
    with pytest.raises(ValueError, match="batching must be"):
        EngineSettings(batching="spiral")
    with pytest.raises(ValueError, match="groups must be among"):
        EngineSettings(groups={"detector": GroupSettings()})
    with pytest.raises(ValueError, match="loss must be one of"):
        EngineSettings(loss="l1")


def test_adam_beta2_reaches_the_optimiser() -> None:
    assert all(g["betas"] == (0.9, 0.999) for g in _small_engine().optimizer.param_groups)
    engine = _small_engine(adam_beta2=0.99)
    assert all(g["betas"] == (0.9, 0.99) for g in engine.optimizer.param_groups)
    with pytest.raises(ValueError, match=r"adam_beta2 must lie in \(0, 1\), got 1.0"):
        EngineSettings(adam_beta2=1.0)


def test_probe_from_the_mean_pattern_matches_the_aperture_probe() -> None:
    from ptyscope.reconstruction.setup import prepare

    sim = srtio3(2, scan_shape=8)
    kwargs = {"num_slices": 1, "slice_thickness_ang": 2 * A, "defocus_ang": 60.0}
    built = prepare(sim.dataset, **kwargs).params.probe.detach()[0]
    measured = prepare(sim.dataset, probe_from="mean_pattern", **kwargs).params.probe.detach()
    # A thin specimen barely changes the bright-field disk: the two probes nearly coincide.
    overlap = abs(complex((built.conj() * measured[0]).sum()))
    assert overlap > 0.97
    modes = prepare(sim.dataset, probe_from="mean_pattern", num_modes=3, **kwargs).params.probe
    assert float((modes.detach().abs() ** 2).sum()) == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="probe_from must be"):
        prepare(sim.dataset, probe_from="guess", **kwargs)


def test_probe_modes_start_as_the_source_modes() -> None:
    from ptyscope.physics import Grid
    from ptyscope.physics.probe import source_modes
    from ptyscope.reconstruction.setup import prepare

    sim = srtio3(2, scan_shape=8)
    kwargs = {"num_slices": 1, "slice_thickness_ang": 2 * A, "defocus_ang": 60.0}
    single = prepare(sim.dataset, **kwargs)
    coherent = single.params.probe.detach()[0]
    probe = prepare(sim.dataset, num_modes=3, source_sigma_ang=0.2, **kwargs).params.probe
    probe = probe.detach()
    grid = Grid((coherent.shape[0], coherent.shape[1]), single.pixel_size_ang)
    expected, _ = source_modes(coherent, grid, 0.2, tolerance=1e-9)
    expected = expected[:3] / torch.sqrt((expected[:3].abs() ** 2).sum())
    torch.testing.assert_close(probe, expected, rtol=0, atol=1e-5)
    powers = (probe.abs() ** 2).sum(dim=(-2, -1))
    # 22 mrad, σ = 0.2 Å: the coherent mode and the degenerate x/y pair of the source.
    assert float(powers[1]) == pytest.approx(float(powers[2]), rel=1e-3)
    assert 0.5 < float(powers[0]) < 0.8
    with pytest.raises(ValueError, match=r"source_sigma_ang=0.001 Å gives only \d+ probe modes"):
        prepare(sim.dataset, num_modes=12, source_sigma_ang=0.001, **kwargs)
    with pytest.raises(ValueError, match="source_sigma_ang must be finite and >= 0 Å, got -1"):
        prepare(sim.dataset, num_modes=2, source_sigma_ang=-1.0, **kwargs)


def test_the_model_puts_its_patterns_on_an_optical_axis_between_pixels() -> None:
    """Binning by 3 puts the axis 1/3 px off the centre pixel; the model must follow it.

    Ignored, the offset is a beam tilt of dk·λ/3 (0.5 mrad here) that a fitted specimen
    tilt absorbs (abTEM's binned data gave a 12 mrad diagonal tilt 0.8 mrad off).
    """
    from ptyscope.physics.multislice import detector_offset_ramp
    from ptyscope.reconstruction.setup import prepare
    from ptyscope.simulation.stem4d import DetectorSettings, ScanSettings, simulate_4dstem

    from ._data import PROBE, srtio3_slab

    sim = simulate_4dstem(
        srtio3_slab((5, 5), A),
        PROBE,
        ScanSettings((4, 4), (0.45, 0.45), origin_ang=(8.0, 8.0)),
        sampling_ang=0.1,
        slice_thickness_ang=A / 2,
        window_ang=16.0,
        detector=DetectorSettings(binning=3),
    )
    ny, nx = sim.dataset.detector_shape
    cy, cx = sim.dataset.detector_center_px
    offset = (cy - ny // 2, cx - nx // 2)
    assert min(abs(offset[0]), abs(offset[1])) > 0.3  # the case: a third of a pixel off
    kwargs = {"num_slices": 1, "slice_thickness_ang": A, "defocus_ang": 60.0}
    for probe_from in ("aperture", "mean_pattern"):
        setup = prepare(sim.dataset, probe_from=probe_from, **kwargs)
        vacuum = setup.params.object.detach().clone().fill_(1.0)
        setup.params.object.data.copy_(vacuum)
        indices = torch.arange(1)
        pattern = predict(setup.params, indices, setup.cache, 1.0)[0].detach()
        rows = torch.arange(ny, dtype=torch.float64)[:, None]
        cols = torch.arange(nx, dtype=torch.float64)[None, :]
        total = float(pattern.sum())
        centroid = (float((pattern * rows).sum()) / total, float((pattern * cols).sum()) / total)
        # The shift theorem is exact; the disk is far from the window's edge.
        assert centroid == pytest.approx((cy, cx), abs=0.01), probe_from
    # The ramp itself: an integer offset is exactly a roll of the far field.
    wave = torch.randn((1, 1, 1, 16, 16), dtype=torch.complex64)
    moved = torch.fft.fft2(wave * detector_offset_ramp((16, 16), (2.0, -3.0)))
    torch.testing.assert_close(
        moved.abs(), torch.roll(torch.fft.fft2(wave), (2, -3), (-2, -1)).abs(), atol=1e-4, rtol=0
    )


def test_interleaved_scan_halves_share_the_object_grid() -> None:
    from ptyscope.reconstruction.setup import prepare

    sim = srtio3(2, scan_shape=8)
    kwargs = {"num_slices": 1, "slice_thickness_ang": 2 * A}
    whole = prepare(sim.dataset, **kwargs)
    even = prepare(sim.dataset, scan_half="even", **kwargs)
    odd = prepare(sim.dataset, scan_half="odd", **kwargs)
    assert even.params.num_positions == odd.params.num_positions == 32
    assert even.params.object.shape == whole.params.object.shape
    assert even.origin_ang == whole.origin_ang
    both = torch.cat((even.params.nominal_positions_px, odd.params.nominal_positions_px))
    assert sorted(map(tuple, both.tolist())) == sorted(
        map(tuple, whole.params.nominal_positions_px.tolist())
    )
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    checkerboard = ((rows + cols) % 2 == 0).flatten()
    torch.testing.assert_close(even.measured, whole.measured[checkerboard])
    with pytest.raises(ValueError, match="scan_half must be"):
        prepare(sim.dataset, scan_half="left", **kwargs)


def _overshooting_engine(**settings: object) -> Engine:
    """Full-batch Adam with a step so large that the loss passes its minimum and rises."""
    chosen: dict[str, object] = {"keep_best": True, **settings}
    return _small_engine(groups={"object": GroupSettings(lr=0.3)}, iterations=10, **chosen)


def _full_loss(engine: Engine) -> float:
    n = engine.params.num_positions
    engine.params.zero_grad()
    return engine._loss_and_backward(torch.arange(n), 0, n)


def test_keep_best_lends_the_parameters_of_the_lowest_loss() -> None:
    engine = _overshooting_engine()
    losses = engine.run().loss
    lowest = min(range(len(losses)), key=losses.__getitem__)
    assert 0 < lowest < len(losses) - 1 and losses[-1] > 1.5 * losses[lowest], losses
    last = engine.params.object.detach().clone()
    assert engine.best is not None and engine.best.iteration == lowest
    with engine.best_parameters() as kept:
        assert kept == lowest
        # the loss of the lent parameters is the one that iteration measured
        assert _full_loss(engine) == pytest.approx(losses[lowest], rel=1e-6)
        assert not torch.equal(engine.params.object, last)
    assert torch.equal(engine.params.object.detach(), last)  # the run's own state is back
    assert engine.iteration == len(losses)


def test_without_keep_best_the_last_parameters_are_lent() -> None:
    engine = _overshooting_engine(keep_best=False)
    engine.run()
    last = engine.params.object.detach().clone()
    assert engine.best is None
    with engine.best_parameters() as kept:
        assert kept == engine.iteration == 10
        assert torch.equal(engine.params.object.detach(), last)


def test_keep_best_survives_a_checkpoint(tmp_path: Path) -> None:
    whole = _overshooting_engine()
    whole.run()
    first = _overshooting_engine()
    first.run(stop_after=6)
    first.save_checkpoint(tmp_path / "run.ckpt.pt")
    resumed = _overshooting_engine()
    resumed.load_checkpoint(tmp_path / "run.ckpt.pt")
    resumed.run()
    assert whole.best is not None and resumed.best is not None
    assert (resumed.best.iteration, resumed.best.loss) == (whole.best.iteration, whole.best.loss)
    for key, value in whole.best.params.items():
        assert torch.equal(resumed.best.params[key], value), key


def test_a_run_with_keep_best_writes_the_parameters_of_its_lowest_loss(tmp_path: Path) -> None:
    config_path = write_case(tmp_path, iterations=6, batch_size='"full"', checkpoint_every=100)
    text = config_path.read_text().replace("[optimization]\n", "[optimization]\nkeep_best = true\n")
    config_path.write_text(text.replace("[object]\n", "[object]\nlr = 0.3\n"))
    config = load_config(config_path, ReconstructionConfig)
    run = run_reconstruction(config, base_dir=tmp_path, progress=False, write_html_report=False)
    with h5py.File(run.result_path) as handle:
        losses = handle["history/loss"][()]
        kept = int(handle.attrs["kept_iteration"])
        written = handle["object"][()]
        assert int(handle.attrs["iterations"]) == 6
    assert run.engine.best is not None
    assert kept == int(np.argmin(losses)) == run.engine.best.iteration
    assert np.array_equal(written, run.engine.best.params["object"].numpy())
    assert not np.array_equal(written, run.engine.params.object.detach().numpy())
    page = write_report(run.result_path, tmp_path / "report").read_text()
    assert f"after {kept} iterations, the lowest loss ({losses[kept]:.4g})" in page
