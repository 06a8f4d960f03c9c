"""Post-alignment of fixed-propagator slices and the apparent tilt (Sha et al. 2022, Fig. 1C)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptyscope.analysis.alignment import align_slices, apparent_tilt_mrad
from ptyscope.analysis.registration import fourier_shift_image
from ptyscope.physics import Grid, fresnel_propagator, multislice_exit_waves, wavelength_ang

PIXEL = (0.1, 0.12)  # anisotropic, so that a y/x mix-up shows


def _texture(shape: tuple[int, int], rng: np.random.Generator, width: float = 0.08) -> np.ndarray:
    """Smooth periodic random phase [rad], standard deviation 0.5."""
    q = np.hypot(np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :])
    image = np.fft.ifft2(np.fft.fft2(rng.standard_normal(shape)) * np.exp(-((q / width) ** 2))).real
    texture: np.ndarray = 0.5 * image / image.std()
    return texture


def _crystal(shape: tuple[int, int]) -> np.ndarray:
    """Gaussian columns on a 3.905 Å square lattice that does not fit the window."""
    y = np.arange(shape[0])[:, None] * PIXEL[0]
    x = np.arange(shape[1])[None, :] * PIXEL[1]
    centres = np.arange(-1.0, max(shape) * 0.12 + 1.0, 3.905)
    image = np.zeros(shape)
    for cy in centres:
        for cx in centres:
            image += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 0.3**2))
    return image


STEP_PX = 0.37 * np.array([math.sin(math.radians(30)), math.cos(math.radians(30))])


@pytest.mark.parametrize("reference", ["previous", "first"])
@pytest.mark.parametrize("kind", ["texture", "crystal"])
def test_known_sub_pixel_shifts_are_recovered(reference: str, kind: str) -> None:
    rng = np.random.default_rng(4)
    base = _texture((96, 96), rng) if kind == "texture" else _crystal((96, 96))
    num_slices = 8
    true = np.arange(num_slices)[:, None] * STEP_PX  # 0.37 px per slice, 30° from +x
    stack = np.stack([fourier_shift_image(base, (s[0], s[1])) for s in true])
    stack += rng.normal(scale=0.02 * base.std(), size=stack.shape)
    result = align_slices(stack, PIXEL, reference=reference, max_shift_px=15.0)
    np.testing.assert_allclose(result.shifts_px, true, atol=0.05)
    np.testing.assert_allclose(result.shifts_ang, result.shifts_px * np.array(PIXEL))
    # The aligned slices coincide with slice 0 away from the periodic wrap at the edges.
    inner = (slice(None), slice(12, -12), slice(12, -12))
    spread = result.aligned[inner].std(axis=0).max()
    assert spread < 0.1 * base.std()
    tilt = apparent_tilt_mrad(result.shifts_ang, 20.0)
    expected = [1e3 * math.atan(STEP_PX[i] * PIXEL[i] / 20.0) for i in (0, 1)]
    np.testing.assert_allclose(tilt, expected, rtol=0.05)


def test_apparent_tilt_of_a_tilted_specimen_matches_the_tilted_propagator() -> None:
    """Pins the sign against physics: with a tilted propagator, identical slices (projected
    along the zone axis) give the same exit wave, up to an overall shift, as the untilted
    propagator with slice j displaced by +z_j·tanθ (what a fixed-propagator reconstruction
    recovers). Aligning those slices returns that θ."""
    grid = Grid((64, 80), PIXEL)
    dz, num_slices, step = 20.0, 5, (1, -2)  # whole pixels per slice: exact rolls
    theta = (1e3 * math.atan(step[0] * PIXEL[0] / dz), 1e3 * math.atan(step[1] * PIXEL[1] / dz))
    phase = _texture(grid.shape, np.random.default_rng(0), width=0.1)
    beam_frame = np.stack(
        [np.roll(phase, (j * step[0], j * step[1]), axis=(0, 1)) for j in range(num_slices)]
    )
    ky, kx = grid.frequencies(dtype=torch.float64)
    plane_wave = torch.ones((1, *grid.shape), dtype=torch.complex128)

    def exit_wave(phases: np.ndarray, tilt: tuple[float, float]) -> np.ndarray:
        slices = torch.from_numpy(np.exp(1j * phases))[None, None]
        p = fresnel_propagator(ky, kx, wavelength_ang(300e3), dz, tilt)
        wave: np.ndarray = multislice_exit_waves(plane_wave, slices, p)[0, 0, 0].numpy()
        return wave

    tilted = exit_wave(np.stack([phase] * num_slices), theta)
    fixed = exit_wave(beam_frame, (0.0, 0.0))
    last = (num_slices - 1) * np.array(step)
    np.testing.assert_allclose(fixed, np.roll(tilted, tuple(last), axis=(0, 1)), atol=1e-12)
    assert np.abs(fixed - np.roll(tilted, tuple(-last), axis=(0, 1))).max() > 1.0  # sign matters

    result = align_slices(beam_frame, PIXEL)
    np.testing.assert_allclose(result.shifts_px, np.outer(np.arange(num_slices), step), atol=0.02)
    np.testing.assert_allclose(apparent_tilt_mrad(result.shifts_ang, dz), theta, rtol=1e-2)


def test_apparent_tilt_is_a_least_squares_line_through_the_shifts() -> None:
    z = np.arange(6) * 12.5
    shifts = np.column_stack([0.6 + z * math.tan(-4e-3), 0.1 + z * math.tan(7e-3)])
    shifts += np.array([1, -1, 1, -1, 1, -1])[:, None] * 1e-3  # the offsets do not matter
    theta_y, theta_x = apparent_tilt_mrad(shifts, 12.5)
    assert theta_y == pytest.approx(-4.0, abs=0.02)
    assert theta_x == pytest.approx(7.0, abs=0.02)


def test_alignment_errors_name_the_parameter() -> None:
    stack = np.zeros((3, 16, 16))
    with pytest.raises(ValueError, match=r"phases must be a real \(L, ny, nx\) stack"):
        align_slices(np.zeros((16, 16)), 0.1)
    with pytest.raises(ValueError, match=r"take np\.angle"):
        align_slices(stack.astype(complex), 0.1)
    with pytest.raises(ValueError, match="reference must be one of"):
        align_slices(stack, 0.1, reference="last")
    with pytest.raises(ValueError, match="upsample must be an integer >= 1"):
        align_slices(stack, 0.1, upsample=0)
    with pytest.raises(ValueError, match="pixel_size_ang must be > 0"):
        align_slices(stack, -0.1)
    with pytest.raises(ValueError, match="max_shift_px must be > 0"):
        align_slices(stack, 0.1, max_shift_px=0.0)
    with pytest.raises(ValueError, match=r"shifts_ang must have shape \(L >= 2, 2\)"):
        apparent_tilt_mrad(np.zeros((1, 2)), 10.0)
    with pytest.raises(ValueError, match="slice_thickness_ang must be > 0 Å"):
        apparent_tilt_mrad(np.zeros((3, 2)), 0.0)
