"""Adaptive propagator (issue 7): the tilt alignment step, the map smoothing, and APP on
simulated SrTiO3 judged against the simulated tilt."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ptyscope.analysis.registration import fourier_shift_image
from ptyscope.config import ConfigError, ReconstructionConfig, load_config
from ptyscope.io.datafile import write_dataset
from ptyscope.physics.multislice import multislice_forward
from ptyscope.physics.propagator import fresnel_propagator
from ptyscope.reconstruction.constraints import Schedule
from ptyscope.reconstruction.forward import PropagatorCache, predict
from ptyscope.reconstruction.parameters import PtychoParameters
from ptyscope.reconstruction.run import run_reconstruction
from ptyscope.reconstruction.tilt import TiltAlignment, drift_slope, smooth_map
from ptyscope.simulation.specimens import srtio3_slab
from ptyscope.simulation.stem4d import ScanSettings, SimulationResult, simulate_4dstem

from ._data import PROBE, A

PIXEL = (0.15, 0.15)


def _texture(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A band-limited random phase image (features of ~0.6 Å, like atomic columns)."""
    rng = np.random.default_rng(seed)
    noise = np.fft.fft2(rng.standard_normal(shape))
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.fftfreq(shape[1])[None, :]
    image: np.ndarray = np.fft.ifft2(noise * np.exp(-((ky**2 + kx**2) / 0.12**2))).real
    return image / image.std()


def _drifting_stack(delta: tuple[float, float], dz: float, slices: int = 5) -> np.ndarray:
    """Slices of one texture, slice j displaced by (j·dz)·δ [Å]."""
    base = _texture((96, 96))
    return np.stack(
        [
            fourier_shift_image(base, (j * dz * delta[0] / PIXEL[0], j * dz * delta[1] / PIXEL[1]))
            for j in range(slices)
        ]
    )


def test_drift_slope_measures_the_displacement_per_angstrom_of_depth() -> None:
    delta = (-0.004, 0.010)  # 4 and 10 mrad: 0.064 and 0.16 Å per 16 Å slice
    stack = _drifting_stack(delta, 16.0)
    slope = drift_slope(stack, PIXEL, 16.0, max_shift_ang=0.6)
    # Registration to 1/50 px = 0.003 Å per slice pair over 4 pairs spanning 64 Å.
    np.testing.assert_allclose(slope, delta, atol=2e-4)


def test_drift_slope_ignores_a_slice_that_failed_to_register() -> None:
    delta = (0.0, 0.008)
    stack = _drifting_stack(delta, 16.0)
    # An entrance slice displaced by 0.3 Å more (as the probe's errors did on SrTiO3):
    # a line through all slices would read 0.3 Å / 32 Å ≈ 9 mrad more along y.
    stack[0] = fourier_shift_image(stack[0], (0.3 / PIXEL[0], 0.0))
    slope = drift_slope(stack, PIXEL, 16.0, max_shift_ang=0.6)
    np.testing.assert_allclose(slope, delta, atol=2e-4)


def test_smooth_map_keeps_constant_and_linear_maps_and_averages_noise() -> None:
    grid = (20, 24)
    rows, cols = np.indices(grid)
    linear = np.stack([0.5 * rows, 2.0 - 0.3 * cols], axis=-1).reshape(-1, 2)
    smoothed = smooth_map(torch.as_tensor(linear), grid, 1.5).numpy().reshape(*grid, 2)
    # Normalised convolution: exact for a ramp where the kernel (radius 5) fits in the grid.
    inner = (slice(5, 15), slice(5, 19))
    np.testing.assert_allclose(smoothed[inner], linear.reshape(*grid, 2)[inner], atol=1e-9)
    noise = np.random.default_rng(0).normal(0.0, 1.0, (200 * 200, 2))
    calm = smooth_map(torch.as_tensor(noise), (200, 200), 2.0).numpy()
    # A normalised 2-D Gaussian of σ lowers white-noise variance by 1/(4πσ²).
    assert calm.std() == pytest.approx(1 / math.sqrt(4 * math.pi * 4.0), rel=0.1)


def _params(stack: np.ndarray, tilt: np.ndarray, dz: float) -> PtychoParameters:
    phases = torch.as_tensor(stack, dtype=torch.float32)[None]
    obj = torch.polar(torch.ones_like(phases), 0.3 * phases)
    probe = torch.ones((1, 16, 16), dtype=torch.complex64)
    rows, cols = np.meshgrid(np.arange(20, 76, 4), np.arange(20, 76, 4), indexing="ij")
    positions = torch.as_tensor(np.stack([rows, cols], -1).reshape(-1, 2), dtype=torch.float32)
    return PtychoParameters(obj, probe, positions, torch.as_tensor(tilt), dz)


def test_alignment_step_moves_the_drift_into_the_tilt_and_lines_the_slices_up() -> None:
    dz = 16.0
    delta = (0.006, -0.009)
    params = _params(_drifting_stack(delta, dz), np.array([1.0, 2.0]), dz)
    step = TiltAlignment(Schedule(), region_px=(4, 92, 4, 92), pixel_size_ang=PIXEL)
    step.apply(params, 0)
    expected = [
        1e3 * math.atan(math.tan(t * 1e-3) + d) for t, d in zip((1.0, 2.0), delta, strict=True)
    ]
    np.testing.assert_allclose(params.tilt.detach().numpy(), expected, atol=0.05)
    # The slices were shifted back: what remains is below the registration precision.
    phases = torch.angle(params.object.detach()[0]).numpy()[:, 4:92, 4:92]
    np.testing.assert_allclose(drift_slope(phases, PIXEL, dz, 0.6), 0.0, atol=2e-4)
    # The middle slice (the reference depth z̄) does not move.
    middle = torch.angle(params.object.detach()[0, 2]).numpy()
    np.testing.assert_allclose(middle, 0.3 * _drifting_stack(delta, dz)[2], atol=1e-4)
    assert step.corrections_mrad[0] == pytest.approx(
        tuple(e - t for e, t in zip(expected, (1.0, 2.0), strict=True)), abs=0.05
    )


def test_alignment_step_limits_a_failed_measurement() -> None:
    dz = 16.0
    params = _params(_drifting_stack((0.0, 0.02), dz), np.zeros(2), dz)
    TiltAlignment(
        Schedule(), region_px=(4, 92, 4, 92), pixel_size_ang=PIXEL, max_step_mrad=5.0
    ).apply(params, 0)
    assert float(params.tilt.detach()[1]) == pytest.approx(5.0, abs=1e-3)


def test_map_alignment_finds_a_uniform_drift_at_every_position() -> None:
    dz = 16.0
    delta = (0.0, 0.008)
    params = _params(_drifting_stack(delta, dz), np.zeros((196, 2)), dz)
    TiltAlignment(
        Schedule(),
        region_px=(4, 92, 4, 92),
        pixel_size_ang=PIXEL,
        window_px=48,
        grid_shape=(14, 14),
        map_sigma_px=1.0,
    ).apply(params, 0)
    tilt = params.tilt.detach().numpy()
    np.testing.assert_allclose(tilt[:, 1], 1e3 * math.atan(0.008), atol=0.1)
    np.testing.assert_allclose(tilt[:, 0], 0.0, atol=0.1)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('[propagator]\nfit_tilt = "global"\n[object]\nslices = 1', "object.slices >= 2"),
        ('[propagator]\nfit_tilt = "yes"', "propagator.fit_tilt"),
        ("[propagator]\nalign_every = 0", "propagator.align_every"),
        ("[propagator]\nsubsteps = 0", "propagator.substeps"),
        ("[propagator]\nsubsteps = 2.5", "propagator.substeps"),
        ("[propagator]\nsubsteps = 2\nplane_spacing_ang = 8.0", "not both"),
        ("[propagator]\nplane_spacing_ang = 0.0", "propagator.plane_spacing_ang"),
        (
            "[propagator]\nplane_spacing_ang = 1.0\n[object]\nslice_thickness_ang = 20.0",
            "gives 20 planes per slice of 20.0 Å; at most 16",
        ),
    ],
)
def test_bad_propagator_settings_name_the_key(tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(f'[data]\npath = "data.h5"\n{section}\n')
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(path, ReconstructionConfig)


@pytest.mark.parametrize(("slices", "planes"), [(3, 4), (5, 2), (10, 1), (20, 1)])
def test_a_plane_spacing_gives_every_slice_count_the_planes_it_needs(
    slices: int, planes: int
) -> None:
    """82 Å in 3, 5, 10, 20 slices with planes at most 82/10 Å apart: a slice of exactly
    two or one spacings gets 2 or 1 planes, whatever the rounding of Δz / spacing."""
    config = ReconstructionConfig.model_validate(
        {
            "data": {"path": "data.h5"},
            "object": {"slices": slices, "slice_thickness_ang": 21 * A / slices},
            "propagator": {"plane_spacing_ang": 21 * A / 10},
        }
    )
    assert config.propagator.planes_per_slice(config.object.slice_thickness_ang) == planes
    assert config.propagator.substeps == 1


def test_predict_with_substeps_is_the_pass_through_root_planes() -> None:
    """The engine's forward model with propagator.substeps = n equals the plain pass
    through every slice's n-th root repeated n times with the propagator of Δz/n."""
    generator = torch.Generator().manual_seed(0)
    shape = (2, 3, 40, 40)
    phase = torch.rand(shape, generator=generator)
    obj = torch.polar(1.0 - 0.1 * torch.rand(shape, generator=generator), phase)
    probe = torch.polar(torch.ones(1, 16, 16), torch.rand(1, 16, 16, generator=generator))
    positions = torch.tensor([[15.0, 15.0], [20.3, 18.6], [24.0, 22.5]])
    params = PtychoParameters(obj, probe, positions, torch.tensor([2.0, -7.0]), 9.0)
    ky = torch.fft.fftfreq(16, 0.2)[:, None].expand(16, 16)
    kx = torch.fft.fftfreq(16, 0.2)[None, :].expand(16, 16)
    cache = PropagatorCache(ky, kx, 0.0197, substeps=3)
    indices = torch.arange(3)
    found = predict(params, indices, cache, 1.0)
    root = torch.polar(obj.abs() ** (1 / 3), obj.angle() / 3).repeat_interleave(3, dim=1)
    expected = multislice_forward(
        probe, root, positions, fresnel_propagator(ky, kx, 0.0197, 3.0, (2.0, -7.0))
    )
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-7)


def _tilted_srtio3(
    cells_xy: tuple[int, int], scan: ScanSettings, tilt_mrad: tuple[float, float] | np.ndarray
) -> SimulationResult:
    """SrTiO3 [001], 82 Å (21 cells), 300 kV, 22 mrad, 60 Å underfocus, 1e6 e/Å²."""
    return simulate_4dstem(
        srtio3_slab(cells_xy, 21 * A),
        PROBE,
        scan,
        sampling_ang=0.1,
        slice_thickness_ang=A / 2,
        window_ang=8.0,
        tilt_mrad=tilt_mrad,
        dose_e_per_ang2=1e6,
        seed=1,
    )


def _reconstruct(
    tmp_path: Path, sim: SimulationResult, propagator: dict[str, object], iterations: int
) -> Path:
    write_dataset(tmp_path / "data.h5", sim.dataset)
    config = ReconstructionConfig.model_validate(
        {
            "data": {"path": str(tmp_path / "data.h5")},
            "probe": {"defocus_ang": 60.0, "start": 10, "lr": 3e-3},
            "object": {"slices": 5, "slice_thickness_ang": 21 * A / 5, "lr": 2e-2},
            "propagator": propagator,
            "optimization": {
                "iterations": iterations,
                "batch_size": 32,
                "checkpoint_every": None,
                "lr_decay": 0.98,  # the slices settle in depth (validation/adaptive_propagator.py)
            },
            "output": {"path": str(tmp_path / "rec.h5")},
        }
    )
    return run_reconstruction(config, progress=False, write_html_report=False).result_path


def test_app_finds_a_12_mrad_diagonal_mistilt_from_zero(tmp_path: Path) -> None:
    truth = (-12 / math.sqrt(2), 12 / math.sqrt(2))
    sim = _tilted_srtio3((5, 5), ScanSettings((24, 24), (0.45, 0.45), (4.0, 4.0)), truth)
    result = _reconstruct(tmp_path, sim, {"fit_tilt": "global"}, 60)
    with h5py.File(result, "r") as handle:
        found = (handle.attrs["tilt_y_mrad"], handle.attrs["tilt_x_mrad"])
        history_x = np.asarray(handle["history/tilt_x_mrad"])
    # Sha et al. 2022: APP recovers the mistilt; criterion of issue 7: within 0.3 mrad.
    assert math.dist(found, truth) < 0.3, f"found {found}, truth {truth}"
    assert history_x[0] == 0.0 and len(history_x) == 60  # started at zero, recorded


def test_tilt_map_separates_two_domains_of_opposite_tilt(tmp_path: Path) -> None:
    ny, nx, step = 12, 60, 0.45
    xs = np.arange(nx) * step
    truth = np.zeros((ny, nx, 2))
    truth[..., 1] = np.where(xs < xs.mean(), 6.0, -6.0)[None, :]
    sim = _tilted_srtio3((9, 3), ScanSettings((ny, nx), (step, step), (3.0, 4.0)), truth)
    result = _reconstruct(tmp_path, sim, {"fit_tilt": "map", "map_start": 30}, 50)
    with h5py.File(result, "r") as handle:
        found = np.asarray(handle["tilt_map_mrad"])
    away = np.abs(xs - xs.mean()) > 10.0  # more than 1 nm from the boundary
    rms = float(np.sqrt(((found - truth)[:, away] ** 2).sum(axis=-1).mean()))
    assert rms < 1.0, f"RMS tilt error away from the boundary {rms:.2f} mrad"
