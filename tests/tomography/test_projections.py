"""Summed phases, the common grid, denoising, mass normalisation and substrate masks."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.optimize import curve_fit

from ptyscope.reconstruction.results import RESULT_FORMAT
from ptyscope.tomography.projections import (
    PhaseProjection,
    apply_mask,
    denoise,
    noise_sigma,
    normalize_mass,
    projection_stack,
    substrate_mask,
    summed_phase,
)


def _write_result(
    path: Path,
    obj: np.ndarray,
    pixel_ang: tuple[float, float],
    origin_ang: tuple[float, float],
    *,
    weights: np.ndarray | None = None,
    positions_ang: np.ndarray | None = None,
) -> Path:
    """A result file with the layout of ptyscope.reconstruction.results."""
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = RESULT_FORMAT
        data = handle.create_dataset("object", data=obj.astype(np.complex64))
        data.attrs["pixel_size_ang"] = np.asarray(pixel_ang)
        data.attrs["origin_ang"] = np.asarray(origin_ang)
        if weights is not None:
            handle.create_dataset("state_weights", data=weights)
        if positions_ang is not None:
            handle.create_dataset("positions_ang", data=positions_ang)
    return path


def _blob(y: np.ndarray, x: np.ndarray, centre: tuple[float, float], sigma: float) -> np.ndarray:
    return np.exp(-((y[:, None] - centre[0]) ** 2 + (x[None, :] - centre[1]) ** 2) / (2 * sigma**2))


def _centroid(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(image.shape)
    weight = np.where(np.isfinite(image), image, 0.0)
    return float((weight * rows).sum() / weight.sum()), float((weight * cols).sum() / weight.sum())


def _gaussian_peak(image: np.ndarray, near: tuple[float, float]) -> tuple[float, float]:
    """(row, col) of a least-squares 2D Gaussian + background within ±6 px of ``near``."""
    r0, c0 = round(near[0]) - 6, round(near[1]) - 6
    rows, cols = np.mgrid[r0 : r0 + 13, c0 : c0 + 13].astype(float)

    def model(_: object, a: float, y0: float, x0: float, s: float, b: float) -> np.ndarray:
        return (a * np.exp(-((rows - y0) ** 2 + (cols - x0) ** 2) / (2 * s * s)) + b).ravel()

    window = image[r0 : r0 + 13, c0 : c0 + 13].ravel()
    start = (float(window.max()), near[0], near[1], 2.0, 0.0)
    (_, y0, x0, _, _), _ = curve_fit(model, None, window, p0=start)
    return float(y0), float(x0)


def test_summed_phase_sums_slices_weights_states_and_removes_the_vacuum(tmp_path: Path) -> None:
    pixel, origin = (0.1, 0.12), (1.0, -0.5)  # Å
    y = origin[0] + np.arange(60) * pixel[0]
    x = origin[1] + np.arange(70) * pixel[1]
    blob = _blob(y, x, (4.0, 3.5), 0.3)  # below 1e-9 over most of the field's border ring
    # Each slice: a constant phase of 2 rad (the arbitrary ptychographic offset) plus
    # 0.5 rad (state 0) or 0.9 rad (state 1) on the blob, below π per slice; the sum,
    # 3 × 2 + 3 × 0.9 = 8.7 rad, would wrap as the angle of the product of the slices.
    amplitude = np.array([0.5, 0.9])
    phases = 2.0 + amplitude[:, None, None, None] * blob[None, None]
    phases = np.broadcast_to(phases, (2, 3, 60, 70))
    positions = np.stack(np.meshgrid([2.0, 4.0, 6.0], [1.0, 3.5, 6.0], indexing="ij"), -1)
    path = _write_result(
        tmp_path / "r.h5",
        np.exp(1j * phases),
        pixel,
        origin,
        weights=np.array([0.5, 1.5]),  # normalised to (0.25, 0.75)
        positions_ang=positions.reshape(-1, 2),
    )
    mean = summed_phase(path)
    assert mean.field_ang == (2.0, 6.0, 1.0, 6.0)
    assert mean.vacuum_rad == pytest.approx(6.0, abs=1e-5)  # 3 slices × 2 rad
    expected = 3 * (0.25 * 0.5 + 0.75 * 0.9) * blob  # float32 angles: ~1e-7 rad per slice
    np.testing.assert_allclose(mean.phase, expected, atol=2e-6)
    assert mean.phase.dtype == np.float64 and mean.pixel_size_ang == pixel
    np.testing.assert_allclose(summed_phase(path, state=1).phase, 2.7 * blob, atol=2e-6)
    raw = summed_phase(path, state=0, vacuum=None).phase
    np.testing.assert_allclose(raw, 6.0 + 1.5 * blob, atol=2e-6)
    low = summed_phase(path, vacuum="percentile", vacuum_percentile=1.0)
    assert low.vacuum_rad == pytest.approx(6.0, abs=1e-5)  # most of the field is vacuum
    assert summed_phase(path, vacuum=5.0).vacuum_rad == 5.0
    # One slice of 4 rad on the blob wraps; unwrap=True recovers it (vacuum removes 2πk).
    strong = np.exp(1j * np.stack([4.0 * blob, 0.5 * blob]))[None]
    wrapped = _write_result(tmp_path / "w.h5", strong, pixel, origin)
    assert summed_phase(wrapped).phase.max() < 4.5 - 1.0  # wrapped by 2π at the centre
    np.testing.assert_allclose(summed_phase(wrapped, unwrap=True).phase, 4.5 * blob, atol=1e-5)


def test_projection_stack_puts_a_feature_at_its_specimen_coordinates(tmp_path: Path) -> None:
    feature = (5.37, 6.81)  # (y, x) [Å] in the specimen frame
    sources = []
    for pixel, origin in (((0.1, 0.1), (0.33, -0.71)), ((0.13, 0.09), (-1.2, 0.45))):
        y = origin[0] + np.arange(110) * pixel[0]
        x = origin[1] + np.arange(130) * pixel[1]
        obj = np.exp(1j * 0.8 * _blob(y, x, feature, 0.5))[None, None]
        positions = np.array([[1.0, 2.0], [9.5, 11.0]])  # field: y 1-9.5, x 2-11 Å
        path = _write_result(tmp_path / f"{len(sources)}.h5", obj, pixel, origin)
        with h5py.File(path, "a") as handle:
            handle.create_dataset("positions_ang", data=positions)
        sources.append(path)
    stack = projection_stack(sources, pixel_ang=0.25, shape=(48, 52))
    assert stack.images.shape == (2, 48, 52) and stack.origin_ang == (0.0, 0.0)
    rows = np.arange(48) * 0.25
    cols = np.arange(52) * 0.25
    inside = ((rows >= 1.0) & (rows <= 9.5))[:, None] & ((cols >= 2.0) & (cols <= 11.0))[None]
    for t in range(2):
        np.testing.assert_array_equal(stack.valid[t], inside)
        assert np.isnan(stack.images[t][~inside]).all()
        window = stack.images[t, 14:30, 19:36]  # ±8 px (±4σ) around the feature
        cy, cx = _centroid(window)
        # Bilinear resampling of a 0.5 Å Gaussian sampled at 0.1 Å does not move it.
        assert abs(cy + 14 - feature[0] / 0.25) < 0.05, cy + 14
        assert abs(cx + 19 - feature[1] / 0.25) < 0.05, cx + 19
        # Bilinear error <= (h_y² + h_x²)/8 · max|φ''| = (0.13² + 0.1²) Å²/8 · 0.8 rad/(0.5 Å)²
        # = 0.0108 rad for the coarser result (measured 0.0067).
        truth = 0.8 * _blob(rows, cols, feature, 0.5)
        np.testing.assert_allclose(stack.images[t][inside], truth[inside], atol=0.011)
    # A shifted common grid moves the feature's pixel, not its specimen coordinates.
    shifted = projection_stack(
        sources[:1], pixel_ang=(0.25, 0.25), shape=(48, 52), origin_ang=(1.0, -0.5)
    )
    cy, cx = _centroid(np.nan_to_num(shifted.images[0, 10:26, 21:38]))
    assert abs(1.0 + (cy + 10) * 0.25 - feature[0]) < 0.05 * 0.25
    assert abs(-0.5 + (cx + 21) * 0.25 - feature[1]) < 0.05 * 0.25
    # PhaseProjection objects are taken as they are.
    direct = PhaseProjection(np.ones((4, 4)), (1.0, 1.0), (0.0, 0.0), (0.0, 3.0, 0.0, 3.0))
    assert projection_stack([direct], pixel_ang=1.0, shape=(5, 5)).valid[0].sum() == 16


def test_normalize_mass_restores_equal_integrals_and_flags_a_bad_tilt() -> None:
    from ptyscope.tomography.projector import project

    # A particle projected at 5 tilts: mass conservation makes the integrals equal.
    z, y, x = np.meshgrid(*(np.arange(24) * 0.5,) * 3, indexing="ij")
    volume = np.exp(-((x - 5.0) ** 2 + (y - 6.5) ** 2 + (z - 6.0) ** 2) / (2 * 1.2**2))
    euler = torch.tensor([[0.0, t, 0.0] for t in (-60.0, -30.0, 0.0, 30.0, 60.0)])
    clean = project(torch.as_tensor(volume, dtype=torch.float32), euler, 0.5).double().numpy()
    integrals = clean.sum(axis=(1, 2))
    np.testing.assert_allclose(integrals, integrals[2], rtol=2e-3)  # trilinear sampling
    # Dose/thickness errors of the separate reconstructions scale each projection.
    scales = np.array([1.0, 0.9, 1.15, 1.05, 0.95])
    normalized, factors = normalize_mass(clean * scales[:, None, None])
    np.testing.assert_allclose(factors * scales, np.median(scales), rtol=3e-3)
    np.testing.assert_allclose(
        normalized.sum(axis=(1, 2)), np.median(integrals * scales), rtol=1e-12
    )
    # A failed tilt at a third of the mass: a factor of ~3, outside [0.5, 2].
    scales[3] = 0.3
    with pytest.warns(RuntimeWarning, match=r"tilts \[3\] need mass factors \[3\.\d+\] outside"):
        normalize_mass(clean * scales[:, None, None])
    with pytest.raises(ValueError, match=r"tilts \[3\]"):
        normalize_mass(clean * scales[:, None, None], on_outlier="raise")
    # NaN pixels and a mask leave those pixels out of the integral.
    holes = clean.copy()
    holes[:, :2] = np.nan
    _, factors = normalize_mass(holes, mask=np.ones((24, 24), dtype=bool))
    np.testing.assert_allclose(factors, 1.0, rtol=3e-3)


def test_denoise_reduces_noise_and_keeps_blob_positions() -> None:
    rng = np.random.default_rng(0)
    rows = np.arange(64.0)
    centres = [(15.3, 20.7), (40.2, 45.6), (48.8, 14.1), (20.5, 48.4)]
    clean = sum(_blob(rows, rows, c, 2.5) for c in centres)
    noisy = clean + rng.normal(0.0, 0.03, clean.shape)  # peak SNR 33
    assert noise_sigma(noisy) == pytest.approx(0.03, rel=0.05)
    # Measured noise-RMS reduction (seed 0): tv 2.72, nlm 2.91, gaussian 1.81.
    for method, least in (("tv", 2.4), ("nlm", 2.5), ("gaussian", 1.6)):
        smooth = denoise(noisy, method)
        ratio = 0.03 / np.sqrt(np.mean((smooth - clean) ** 2))
        assert ratio > least, (method, ratio)
        # Noise-limited: the fit is off by at most 0.048 px in the noisy image itself and
        # 0.045 (tv), 0.056 (nlm), 0.050 (gaussian) px after denoising (seed 0).
        for centre in centres:
            found = _gaussian_peak(smooth, centre)
            assert math.hypot(found[0] - centre[0], found[1] - centre[1]) < 0.1, (method, found)
    # A stack with NaN outside a field: each image denoised alone, NaN kept.
    stack = np.stack([noisy, noisy])
    stack[1, :, :5] = np.nan
    out = denoise(stack, "gaussian", 1.0)
    assert np.isnan(out[1, :, :5]).all() and np.isfinite(out[1, :, 5:]).all()
    np.testing.assert_allclose(out[1, 20:40, 20:40], out[0, 20:40, 20:40])
    # A function is a method too.
    np.testing.assert_array_equal(denoise(noisy, lambda image, s: image * s, 2.0), 2 * noisy)


def test_bm3d_is_optional_and_says_its_licence() -> None:
    noisy = np.random.default_rng(1).normal(size=(16, 16))
    try:
        import bm3d  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="non-commercial use only"):
            denoise(noisy, "bm3d")
    else:
        assert denoise(noisy, "bm3d").std() < noisy.std()


def test_substrate_mask_projects_the_dilated_support_at_every_tilt() -> None:
    voxel, n, radius, offset = 0.5, 32, 2.0, 3.0  # Å, voxels, Å, Å along +x
    z, y, x = np.meshgrid(*(np.arange(n) * voxel,) * 3, indexing="ij")
    centre = n * voxel / 2  # the projector's rotation centre, 8 Å
    inside = (x - centre - offset) ** 2 + (y - centre) ** 2 + (z - centre) ** 2 <= radius**2
    volume = np.where(inside, 1.0, 0.05)  # a ball on a faint substrate below threshold
    euler = [(0.0, 0.0, 0.0), (0.0, 60.0, 0.0), (40.0, 30.0, 0.0)]
    masks = substrate_mask(volume, voxel, euler, threshold=0.5, dilate_ang=1.0)
    assert masks.shape == (3, n, n) and masks.dtype == bool
    for t, (phi, theta, _) in enumerate(euler):
        # R = Rz(φ) Ry(θ) moves the ball's centre offset (d, 0, 0) to
        # (d cosθ cosφ, d cosθ sinφ) laterally.
        expect_x = centre + offset * math.cos(math.radians(theta)) * math.cos(math.radians(phi))
        expect_y = centre + offset * math.cos(math.radians(theta)) * math.sin(math.radians(phi))
        cy, cx = _centroid(masks[t].astype(float))
        assert abs(cy * voxel - expect_y) < 0.5 * voxel and abs(cx * voxel - expect_x) < 0.5 * voxel
        # A disk of radius r + dilation = 3 Å: area within one perimeter × voxel/2.
        area = masks[t].sum() * voxel**2
        assert abs(area - math.pi * 3.0**2) < 2 * math.pi * 3.0 * voxel / 2, area
    # On a 2× finer grid (path lengths resampled) the mask is the same disk.
    fine = substrate_mask(volume, voxel, euler[:1], threshold=0.5, pixel_ang=0.25, shape=(64, 64))
    area = fine.sum() * 0.25**2
    assert abs(area - math.pi * 3.0**2) < 2 * math.pi * 3.0 * voxel / 2, area
    cy, cx = _centroid(fine[0].astype(float))
    assert abs(cx * 0.25 - (centre + offset)) < 0.25 and abs(cy * 0.25 - centre) < 0.25


def test_apply_mask_fills_outside() -> None:
    images = np.arange(2 * 4 * 4, dtype=float).reshape(2, 4, 4)
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True
    zero = apply_mask(images, mask)
    assert (zero[:, ~mask] == 0).all()
    np.testing.assert_array_equal(zero[:, mask], images[:, mask])
    median = apply_mask(images, np.stack([mask, mask]), fill="median_outside")
    np.testing.assert_array_equal(median[1][~mask], np.median(images[1][~mask]))


def test_bad_inputs_name_the_parameter_rule_and_value(tmp_path: Path) -> None:
    good = _write_result(tmp_path / "r.h5", np.ones((1, 1, 8, 8)), (0.1, 0.1), (0.0, 0.0))
    image = np.zeros((8, 8))
    scanned = _write_result(
        tmp_path / "s.h5",
        np.ones((1, 1, 8, 8)),
        (0.1, 0.1),
        (0.0, 0.0),
        positions_ang=np.array([[0.2, 0.2], [0.5, 0.5]]),
    )
    cases = [
        (
            lambda: summed_phase(scanned, margin_ang=-1.0),
            r"margin_ang must leave pixels in the reconstructed field, got -1.0 Å",
        ),
        (
            lambda: summed_phase(good, state=2),
            r"state must be 'mean' or an integer in \[0, 0\], got 2",
        ),
        (lambda: summed_phase(good, vacuum="mode"), r"vacuum must be 'border', .*got 'mode'"),
        (lambda: summed_phase(good, border_ang=-1.0), r"border_ang must be > 0 Å, got -1.0"),
        (lambda: summed_phase(tmp_path / "x.h5"), r"result_path must be an existing result file"),
        (
            lambda: projection_stack([good], pixel_ang=0.0, shape=(4, 4)),
            r"pixel_ang must be > 0 Å, got 0.0",
        ),
        (lambda: projection_stack([], pixel_ang=1.0, shape=(4, 4)), r"sources must be a non-empty"),
        (lambda: denoise(image, "median"), r"method must be one of \['bm3d', .*got 'median'"),
        (lambda: denoise(image, "tv", -1.0), r"strength must be > 0, got -1.0"),
        (
            lambda: denoise(np.zeros(5), "tv"),
            r"images must be an image \(ny, nx\) .*got shape \(5,\)",
        ),
        (
            lambda: normalize_mass(np.ones((2, 4, 4)), limits=(2.0, 3.0)),
            r"limits must be .*got \(2.0, 3.0\)",
        ),
        (lambda: normalize_mass(-np.ones((2, 4, 4))), r"must be > 0 rad·px².*tilts \[0, 1\]"),
        (
            lambda: normalize_mass(np.ones((2, 4, 4)), mask=np.ones((3, 3), bool)),
            r"mask must be a bool array",
        ),
        (
            lambda: substrate_mask(np.ones((4, 4)), 1.0, [(0, 0, 0)]),
            r"low_res_volume must be .*got shape \(4, 4\)",
        ),
        (
            lambda: substrate_mask(np.ones((4, 4, 4)), 1.0, [(0, 0, 0)], threshold=1.5),
            r"threshold must lie in \(0.0, 1.0\), got 1.5",
        ),
        (
            lambda: substrate_mask(np.ones((4, 4, 4)), 1.0, [(0, 0, 0)], shape=(8, 8)),
            r"pixel_ang and shape must be given together",
        ),
        (
            lambda: apply_mask(np.ones((2, 4, 4)), np.ones((4, 4)), fill="zero"),
            r"masks must be a bool array",
        ),
        (
            lambda: apply_mask(np.ones((4, 4)), np.ones((4, 4), bool), fill="mean"),
            r"fill must be 'zero' or 'median_outside', got 'mean'",
        ),  # type: ignore[arg-type]
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            call()
