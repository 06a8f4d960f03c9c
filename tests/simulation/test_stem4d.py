"""4D-STEM simulator: known answers for vacuum, a single slice, positions, tilt, detector."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from ptyscope.physics.constants import wavelength_ang
from ptyscope.physics.grids import Grid
from ptyscope.physics.probe import build_probe
from ptyscope.physics.transmission import transmission_function
from ptyscope.reconstruction.forward import predict
from ptyscope.reconstruction.setup import prepare
from ptyscope.simulation.acquisition import apply_source_size
from ptyscope.simulation.potential import slice_potential, specimen_grid
from ptyscope.simulation.stem4d import (
    DetectorSettings,
    ProbeSettings,
    ScanSettings,
    band_limit_mask,
    simulate_4dstem,
)

A_STO = 3.905
PROBE = ProbeSettings(300e3, 22.0, {"defocus": 20.0})


def _sto(repeat: tuple[int, int, int]) -> Atoms:
    cell = Atoms(
        "SrTiO3",
        scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
        cell=[A_STO] * 3,
        pbc=True,
    )
    return cell.repeat(repeat)


def test_vacuum_patterns_are_the_aperture_disk() -> None:
    vacuum = Atoms(cell=[12.0, 10.0, 6.0], pbc=True)
    result = simulate_4dstem(
        vacuum, PROBE, ScanSettings((2, 3), (1.3, 0.7)), sampling_ang=0.1, antialias_fraction=None
    )
    data = result.dataset.data
    np.testing.assert_allclose(data.sum(axis=(2, 3)), 1.0, atol=2e-5)
    # Bright-field disk radius: α/λ in Å⁻¹, compared to the intensity-weighted radius.
    cal = result.dataset.calibration
    dk_y, dk_x = cal.detector_pixel_inv_ang
    cy, cx = cal.detector_center_px
    ny, nx = data.shape[2:]
    ky = (np.arange(ny) - cy)[:, None] * dk_y
    kx = (np.arange(nx) - cx)[None, :] * dk_x
    inside = np.hypot(ky, kx) <= 22e-3 / wavelength_ang(300e3) * 1.02
    assert data[0, 0][inside].sum() > 0.999
    # No specimen: every scan position sees the same pattern.
    np.testing.assert_allclose(data[1, 2], data[0, 0], atol=1e-6)


def test_single_slice_matches_the_direct_calculation() -> None:
    specimen = _sto((2, 2, 1))
    specimen.set_cell([2 * A_STO, 2 * A_STO, A_STO / 2 - 0.01])  # one slice: z = 0 atoms
    specimen = specimen[specimen.positions[:, 2] < 0.1]
    scan = ScanSettings((1, 1), (1.0, 1.0), origin_ang=(1.2, 2.9))
    result = simulate_4dstem(
        specimen, PROBE, scan, sampling_ang=0.08, slice_thickness_ang=1.0, antialias_fraction=None
    )
    grid = specimen_grid(specimen, 0.08)
    potential = slice_potential(specimen, grid, 1.0).slices_vang[0]
    trans = transmission_function(potential, 300e3)
    probe = build_probe(grid, 300e3, 22.0, {"defocus": 20.0})[0]
    # Place the probe centre at (1.2, 2.9) Å with an exact Fourier shift.
    ky, kx = grid.frequencies(dtype=torch.float64)
    cy, cx = grid.shape[0] // 2, grid.shape[1] // 2
    dy = 1.2 - cy * grid.pixel_size_ang[0]
    dx = 2.9 - cx * grid.pixel_size_ang[1]
    ramp = torch.exp(-2j * math.pi * (ky * dy + kx * dx))
    shifted = torch.fft.ifft2(torch.fft.fft2(probe.to(torch.complex128)) * ramp)
    expected = torch.fft.fftshift(torch.fft.fft2(shifted * trans, norm="ortho").abs() ** 2)
    got = result.dataset.data[0, 0]
    rows = slice(grid.shape[0] // 2 - got.shape[0] // 2, grid.shape[0] // 2 + got.shape[0] // 2)
    cols = slice(grid.shape[1] // 2 - got.shape[1] // 2, grid.shape[1] // 2 + got.shape[1] // 2)
    np.testing.assert_allclose(got, expected[rows, cols].numpy(), atol=2e-6, rtol=2e-3)


def test_dark_field_signal_peaks_on_the_column_at_its_y_x_position() -> None:
    column = Atoms("Au3", positions=[(2.0, 4.5, 0.5), (2.0, 4.5, 2.5), (2.0, 4.5, 4.5)])
    column.set_cell([8.0, 9.0, 6.0])
    column.pbc = True
    scan = ScanSettings((19, 17), (0.5, 0.5))  # (y, x) grid over the cell
    result = simulate_4dstem(column, PROBE, scan, sampling_ang=0.1, slice_thickness_ang=2.0)
    data = result.dataset.data
    cal = result.dataset.calibration
    cy, cx = cal.detector_center_px
    ny, nx = data.shape[2:]
    k = np.hypot(
        (np.arange(ny) - cy)[:, None] * cal.detector_pixel_inv_ang[0],
        (np.arange(nx) - cx)[None, :] * cal.detector_pixel_inv_ang[1],
    )
    dark = data[..., k > 2 * 22e-3 / wavelength_ang(300e3)].sum(axis=-1)
    row, col = np.unravel_index(np.argmax(dark), dark.shape)
    assert (row * 0.5, col * 0.5) == (4.5, 2.0)  # (y, x) = (ase y, ase x)


def test_tilt_map_equals_global_tilt_position_by_position() -> None:
    specimen = _sto((1, 1, 4))
    scan = ScanSettings((1, 3), (0.6, 0.6), origin_ang=(0.5, 0.5))
    tilts = [(0.0, 0.0), (4.0, -3.0), (-8.0, 6.0)]
    tilt_map = np.array(tilts)[None]
    common = {"sampling_ang": 0.1, "slice_thickness_ang": A_STO / 2}
    mapped = simulate_4dstem(specimen, PROBE, scan, tilt_mrad=tilt_map, **common).dataset.data
    for j, tilt in enumerate(tilts):
        single = simulate_4dstem(specimen, PROBE, scan, tilt_mrad=tilt, **common).dataset.data
        np.testing.assert_allclose(mapped[0, j], single[0, j], atol=1e-6)
    # The tilt matters: 10 mrad through 16 Å moves the wave by 0.16 Å, well resolved here.
    assert np.abs(mapped[0, 2] - mapped[0, 0]).max() > 1e-3


def test_frozen_phonon_average_and_batching() -> None:
    specimen = _sto((1, 1, 2))
    scan = ScanSettings((2, 2), (0.9, 0.9))
    configs = np.random.default_rng(7).normal(0.0, 0.08, size=(3, len(specimen), 3))
    common = {"sampling_ang": 0.1, "slice_thickness_ang": A_STO / 2}
    averaged = simulate_4dstem(specimen, PROBE, scan, displacements_ang=configs, **common)
    singles = [
        simulate_4dstem(specimen, PROBE, scan, displacements_ang=c[None], **common).dataset.data
        for c in configs
    ]
    np.testing.assert_allclose(averaged.dataset.data, np.mean(singles, axis=0), atol=1e-6)
    assert averaged.ground_truth["displacements_ang"].shape == (3, len(specimen), 3)
    tiny_batches = simulate_4dstem(
        specimen, PROBE, scan, displacements_ang=configs, memory_limit_gb=1e-6, **common
    )
    np.testing.assert_allclose(tiny_batches.dataset.data, averaged.dataset.data, atol=1e-6)


def test_band_limit_detector_crop_and_binning() -> None:
    specimen = _sto((1, 1, 2))
    scan = ScanSettings((1, 2), (0.9, 0.9))
    common = {"sampling_ang": 0.1, "slice_thickness_ang": A_STO / 2}
    full = simulate_4dstem(specimen, PROBE, scan, antialias_fraction=None, **common).dataset
    limited = simulate_4dstem(specimen, PROBE, scan, **common).dataset
    grid = specimen_grid(specimen, 0.1)
    cutoff = 2 / 3 * min(grid.nyquist_inv_ang)
    cal = limited.calibration
    ny, nx = limited.detector_shape
    k = np.hypot(
        (np.arange(ny) - cal.detector_center_px[0])[:, None] * cal.detector_pixel_inv_ang[0],
        (np.arange(nx) - cal.detector_center_px[1])[None, :] * cal.detector_pixel_inv_ang[1],
    )
    assert k.max() <= cutoff * math.sqrt(2) + 1e-9  # square crop around the band limit
    assert limited.data[..., k > cutoff * 1.0001].max() < 1e-12
    assert full.detector_shape[0] > limited.detector_shape[0]
    binned = simulate_4dstem(
        specimen, PROBE, scan, detector=DetectorSettings(binning=2), **common
    ).dataset
    # Binning keeps whole bins on each side of the centre: compare with the same crop.
    b, (h, w) = 2, (2 * n for n in binned.detector_shape)
    oy, ox = (limited.detector_shape[0] - h) // 2, (limited.detector_shape[1] - w) // 2
    same_crop = limited.data[..., oy : oy + h, ox : ox + w]
    blocks = same_crop.reshape(1, 2, h // b, b, w // b, b).sum(axis=(3, 5))
    np.testing.assert_allclose(binned.data, blocks, rtol=1e-5, atol=1e-9)
    assert binned.calibration.detector_pixel_inv_ang[0] == pytest.approx(
        2 * cal.detector_pixel_inv_ang[0]
    )
    # The optical axis stays at the same physical place after binning.
    assert (binned.calibration.detector_center_px[0] + 0.5) * 2 == pytest.approx(
        cal.detector_center_px[0] - oy + 0.5
    )
    cropped = simulate_4dstem(
        specimen, PROBE, scan, detector=DetectorSettings(max_angle_mrad=30.0), **common
    ).dataset
    half_angle = cropped.detector_shape[0] / 2 * cropped.calibration.detector_pixel_mrad[0]
    assert 30.0 - cropped.calibration.detector_pixel_mrad[0] < half_angle <= 30.0 + 1e-9


def test_source_patterns_are_the_average_over_shifted_probes() -> None:
    """A Gaussian source of σ: each pattern is the average of coherent patterns over probe
    shifts s weighted by g(s), here by 10 × 10-point Gauss-Hermite quadrature over scans
    whose origin is shifted by s (independent of the simulator's probe modes)."""
    specimen = _sto((1, 1, 1))
    common = {"sampling_ang": 0.12, "slice_thickness_ang": A_STO / 2}
    sigma, tolerance = 0.2, 1e-4
    scan = ScanSettings((3, 3), (0.5, 0.5))
    source = simulate_4dstem(
        specimen, PROBE, scan, source_sigma_ang=sigma, source_tolerance=tolerance, **common
    ).dataset
    assert 0 < source.metadata["source_power_dropped"] <= tolerance
    nodes, weights = np.polynomial.hermite_e.hermegauss(10)
    weights = weights / weights.sum()
    reference = np.zeros(source.data.shape)
    for sy, wy in zip(nodes * sigma, weights, strict=True):
        for sx, wx in zip(nodes * sigma, weights, strict=True):
            shifted = ScanSettings(scan.shape, scan.step_ang, origin_ang=(sy, sx))
            reference += wy * wx * simulate_4dstem(specimen, PROBE, shifted, **common).dataset.data
    coherent = simulate_4dstem(specimen, PROBE, scan, **common).dataset.data
    change = np.abs(reference - coherent).sum(axis=(2, 3))
    error = np.abs(source.data - reference).sum(axis=(2, 3))
    assert change.max() > 0.05  # the source matters
    # Dropped modes of power d change a pattern of total <= 1 by at most 2d (L1); float32
    # patterns of ~1000 pixels add ~1e-5.
    assert error.max() < 2 * source.metadata["source_power_dropped"] + 2e-5, error.max()
    assert source.metadata["source_modes"] > 1


def test_periodic_scan_average_is_a_probe_shifted_by_whole_steps() -> None:
    """The paper's scan average (apply_source_size) over a scan that covers one period is
    the pattern of a probe shifted by whole scan steps with sampled Gaussian weights, at
    every position; with replicated edges the edge rows are not."""
    specimen = _sto((1, 1, 1))
    common = {"sampling_ang": 0.12, "slice_thickness_ang": A_STO / 2}
    step, sigma = A_STO / 5, 0.3
    scan = ScanSettings((5, 5), (step, step))
    data = torch.from_numpy(simulate_4dstem(specimen, PROBE, scan, **common).dataset.data)
    offsets = np.arange(-2, 3)  # the kernel reaches ceil(4σ/step) = 2 steps
    weights = np.exp(-0.5 * (offsets * step / sigma) ** 2)
    weights /= weights.sum()
    reference = np.zeros(data.shape)
    for a, wa in zip(offsets, weights, strict=True):
        for b, wb in zip(offsets, weights, strict=True):
            shifted = ScanSettings(scan.shape, scan.step_ang, origin_ang=(a * step, b * step))
            reference += wa * wb * simulate_4dstem(specimen, PROBE, shifted, **common).dataset.data
    periodic = apply_source_size(data, step, sigma, periodic=True).numpy()
    np.testing.assert_allclose(periodic, reference, rtol=0, atol=2e-6)
    edges = apply_source_size(data, step, sigma).numpy()
    assert np.abs(edges - reference)[0].max() > 100 * np.abs(periodic - reference).max()
    with pytest.raises(
        ValueError,
        match="reaching 2 steps either side needs at least 2 scan points per axis, got 1",
    ):
        apply_source_size(data[:1, :1], step, sigma, periodic=True)


def test_dose_acts_on_the_scan() -> None:
    specimen = _sto((1, 1, 1))
    scan = ScanSettings((4, 4), (0.5, 0.5))
    common = {"sampling_ang": 0.12, "slice_thickness_ang": A_STO / 2}
    clean = simulate_4dstem(specimen, PROBE, scan, **common).dataset
    same = simulate_4dstem(specimen, PROBE, scan, source_sigma_ang=0.0, **common).dataset
    np.testing.assert_array_equal(same.data, clean.data)
    dose = 2e4  # e/Å² -> 5000 e per pattern on 0.5 Å steps
    noisy = simulate_4dstem(specimen, PROBE, scan, dose_e_per_ang2=dose, seed=3, **common)
    counts = noisy.dataset.data.sum(axis=(2, 3))
    expected = dose * 0.25 * clean.data.sum(axis=(2, 3))
    # Poisson: the 16 totals scatter by sqrt(5000) ≈ 71 counts each.
    assert np.abs(counts - expected).max() < 5 * math.sqrt(expected.max())
    assert np.all(noisy.dataset.data == np.round(noisy.dataset.data))


def test_bad_inputs_are_named() -> None:
    specimen = _sto((1, 1, 1))
    scan = ScanSettings((2, 2), (0.5, 0.5))
    with pytest.raises(ValueError, match="tilt_mrad must be"):
        simulate_4dstem(specimen, PROBE, scan, tilt_mrad=np.zeros((3, 3, 2)))
    with pytest.raises(ValueError, match="displacements_ang must have shape"):
        simulate_4dstem(specimen, PROBE, scan, displacements_ang=np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="binning must be an integer"):
        simulate_4dstem(specimen, PROBE, scan, detector=DetectorSettings(binning=0))
    with pytest.raises(ValueError, match="antialias_fraction"):
        simulate_4dstem(specimen, PROBE, scan, antialias_fraction=1.5)
    with pytest.raises(ValueError, match=r"source_tolerance must lie in \(0.0, 1.0\), got 0.0"):
        simulate_4dstem(specimen, PROBE, scan, source_sigma_ang=0.2, source_tolerance=0.0)
    with pytest.raises(ValueError, match=r"source_sigma_ang must be finite and >= 0 Å, got -0\.2"):
        simulate_4dstem(specimen, PROBE, scan, source_sigma_ang=-0.2)
    with pytest.raises(ValueError, match="full 3D cell"):
        simulate_4dstem(Atoms("Au", positions=[(0, 0, 0)]), PROBE, scan)
    tilted_cell = specimen.copy()
    tilted_cell.set_cell([[A_STO, 0.5, 0], [0, A_STO, 0], [0, 0, A_STO]])
    with pytest.raises(ValueError, match="orthorhombic"):
        simulate_4dstem(tilted_cell, PROBE, scan)


def test_band_limit_mask_radius_and_taper() -> None:
    grid = Grid((80, 80), (0.1, 0.1))  # Δk = 0.125 Å⁻¹, Nyquist 5 Å⁻¹, k_c = 2.5 Å⁻¹
    hard = band_limit_mask(grid, 0.5, torch.device("cpu"), taper_fraction=0.0)
    assert float(hard.sum()) == pytest.approx(math.pi * 20**2, rel=0.03)
    soft = band_limit_mask(grid, 0.5, torch.device("cpu"), taper_fraction=0.2)
    ky, kx = grid.frequencies()
    k = torch.sqrt(ky**2 + kx**2)
    inside, edge, outside = k <= 1.5, (k > 1.5) & (k < 2.5), k > 2.5  # Nyquist 5 Å⁻¹
    assert bool((soft[inside] == 1).all())
    assert bool((soft[outside] == 0).all())
    assert bool(((soft[edge] > 0) & (soft[edge] < 1)).all())
    # Half-way down the roll-off (|k| = k_c − τ/2 = 2.0 Å⁻¹) the mask is 1/2.
    assert float(soft[0, 16]) == pytest.approx(0.5, abs=1e-6)


def test_probe_window_over_a_larger_crystal_equals_the_whole_unit_cell() -> None:
    # A window of one unit-cell period over a 2x2 supercell sees the same periodic crystal
    # as the whole-cell simulation of one cell: the gather path must reproduce it.
    scan = ScanSettings((2, 2), (0.7, 0.9), origin_ang=(0.3, 5.1))
    common = {"sampling_ang": 0.1, "slice_thickness_ang": A_STO / 2, "tilt_mrad": (3.0, -2.0)}
    small = simulate_4dstem(_sto((1, 1, 2)), PROBE, scan, **common).dataset
    windowed = simulate_4dstem(_sto((2, 2, 2)), PROBE, scan, window_ang=A_STO, **common).dataset
    assert windowed.detector_shape == small.detector_shape
    np.testing.assert_allclose(windowed.data, small.data, atol=2e-6)


def test_without_a_band_limit_the_reconstruction_model_reproduces_the_data() -> None:
    # 8.9 Å of 0.1195 Å pixels is 75 px, the detector's centred crop of which kept 74: the
    # reconstruction's pixel (window / detector pixels) then missed the simulation's by
    # 1.4 % and the true object did not fit the data (docs/mixed_object_log.md). Even grids
    # keep every pixel, and the true transmission functions reproduce the patterns.
    specimen = _sto((3, 3, 1))
    scan = ScanSettings((2, 2), (0.5, 0.7), origin_ang=(0.0, 0.0))
    slice_ang = A_STO / 2
    data = simulate_4dstem(
        specimen,
        PROBE,
        scan,
        sampling_ang=0.12,
        slice_thickness_ang=slice_ang,
        window_ang=8.9,
        antialias_fraction=None,
    ).dataset
    grid = specimen_grid(specimen, 0.12, even=True)
    assert grid.shape == (98, 98)
    assert data.detector_shape == (80, 80)  # the whole window, 75 px rounded up to even
    setup = prepare(data, num_slices=2, slice_thickness_ang=slice_ang, defocus_ang=20.0)
    assert setup.pixel_size_ang == pytest.approx(grid.pixel_size_ang, rel=1e-12)
    offset = np.asarray(setup.origin_ang) / np.asarray(grid.pixel_size_ang)
    np.testing.assert_allclose(offset, np.round(offset), atol=1e-9)  # a whole-pixel offset
    trans = transmission_function(slice_potential(specimen, grid, slice_ang).slices_vang, 300e3)
    ny, nx = setup.params.object.shape[-2:]
    rows = torch.as_tensor((round(offset[0]) + np.arange(ny)) % grid.shape[0])
    cols = torch.as_tensor((round(offset[1]) + np.arange(nx)) % grid.shape[1])
    with torch.no_grad():
        setup.params.object.copy_(trans[:, rows][:, :, cols][None])
        predicted = predict(setup.params, torch.arange(4), setup.cache, 1.0).numpy()
    measured = np.asarray(data.data).reshape(predicted.shape)
    # float32 round-off of patterns that sum to 1 (peak 3e-3); a 74-px model misses by
    # the high-angle row and column it cannot hold.
    np.testing.assert_allclose(predicted, measured, atol=1e-7, rtol=0)
    whole_cell = simulate_4dstem(  # no window: the cell's own grid, 33 px -> 36
        _sto((1, 1, 1)), PROBE, scan, sampling_ang=0.12, antialias_fraction=None
    ).dataset
    assert whole_cell.detector_shape == (36, 36)


@pytest.mark.gpu
def test_cuda_simulation_matches_cpu() -> None:
    specimen = _sto((1, 1, 3))
    scan = ScanSettings((2, 2), (0.9, 0.9))
    configs = np.random.default_rng(2).normal(0.0, 0.05, size=(2, len(specimen), 3))
    tilt_map = np.array([[[0.0, 2.0], [1.0, -1.0]], [[3.0, 0.0], [-2.0, 2.0]]])
    common = {
        "sampling_ang": 0.1,
        "slice_thickness_ang": A_STO / 2,
        "tilt_mrad": tilt_map,
        "displacements_ang": configs,
        "detector": DetectorSettings(binning=2),
    }
    cpu = simulate_4dstem(specimen, PROBE, scan, device="cpu", **common)
    gpu = simulate_4dstem(specimen, PROBE, scan, device="cuda", **common)
    np.testing.assert_allclose(gpu.dataset.data, cpu.dataset.data, atol=2e-6, rtol=1e-4)
    np.testing.assert_allclose(
        gpu.ground_truth["potential"]["slices_vang"],
        cpu.ground_truth["potential"]["slices_vang"],
        rtol=1e-4,
        atol=1e-2,
    )
