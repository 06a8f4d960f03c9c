"""Grids, calibration conversions and detector padding."""

from __future__ import annotations

import pytest
import torch

from ptyscope.physics import (
    Grid,
    angle_mrad_to_inv_ang,
    detector_grid,
    fft_friendly_size,
    fft_friendly_span,
    inv_ang_to_angle_mrad,
    spatial_frequencies,
    wavelength_ang,
)


def test_frequencies_follow_fftfreq_with_anisotropic_pixels() -> None:
    ky, kx = spatial_frequencies((6, 8), (0.5, 0.25), dtype=torch.float64)
    assert ky.shape == kx.shape == (6, 8)
    assert float(ky[1, 0]) == pytest.approx(1 / (6 * 0.5))
    assert float(kx[0, 1]) == pytest.approx(1 / (8 * 0.25))
    assert float(ky[0, 3]) == 0.0  # ky constant along x
    assert float(kx[-1, -1]) == pytest.approx(-1 / (8 * 0.25))


def test_grid_properties() -> None:
    g = Grid((100, 50), (0.1, 0.2))
    assert g.extent_ang == pytest.approx((10.0, 10.0))
    assert g.reciprocal_pixel_inv_ang == pytest.approx((0.1, 0.1))
    assert g.nyquist_inv_ang == pytest.approx((5.0, 2.5))
    y, x = g.coordinates(dtype=torch.float64)
    assert float(y[3, 0]) == pytest.approx(0.3)
    assert float(x[0, 3]) == pytest.approx(0.6)


def test_mrad_and_inverse_angstrom_round_trip() -> None:
    # Sha et al. 2022: 1.1 mrad per detector pixel at 300 kV is about 0.055 Å⁻¹.
    k = angle_mrad_to_inv_ang(1.1, 300e3)
    assert k == pytest.approx(1.1e-3 / wavelength_ang(300e3))
    assert k == pytest.approx(0.055, abs=0.001)
    assert inv_ang_to_angle_mrad(k, 300e3) == pytest.approx(1.1)


def test_detector_grid_native_and_padded() -> None:
    native = detector_grid((128, 128), 1.1, unit="mrad", energy_ev=300e3)
    dk = angle_mrad_to_inv_ang(1.1, 300e3)
    assert native.shape == (128, 128)
    assert native.pixel_size_ang[0] == pytest.approx(1 / (128 * dk))
    padded = detector_grid((128, 128), 1.1, unit="mrad", energy_ev=300e3, target_pixel_ang=0.1)
    assert padded.pixel_size_ang[0] <= 0.1
    # Smallest FFT-friendly size giving a pixel <= 0.1 Å: ceil(1/(0.1 dk)) = 179 -> 180.
    assert padded.shape == (180, 180)
    assert padded.extent_ang[0] == pytest.approx(native.extent_ang[0])  # same field of view


def test_detector_grid_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="target_pixel_ang must be <="):
        detector_grid((128, 128), 0.055, unit="inv_ang", target_pixel_ang=1.0)
    with pytest.raises(ValueError, match="energy_ev is required"):
        detector_grid((128, 128), 1.1, unit="mrad")
    with pytest.raises(ValueError, match="unit must be one of"):
        detector_grid((128, 128), 1.1, unit="degrees")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="detector_pixel must be > 0"):
        detector_grid((128, 128), -0.05, unit="inv_ang")


@pytest.mark.parametrize(("n", "expected"), [(1, 1), (97, 98), (128, 128), (131, 135), (179, 180)])
def test_fft_friendly_size(n: int, expected: int) -> None:
    assert fft_friendly_size(n) == expected


@pytest.mark.parametrize(("n", "expected"), [(1, 2), (2, 2), (75, 80), (131, 140), (97, 98)])
def test_even_fft_friendly_size(n: int, expected: int) -> None:
    assert fft_friendly_size(n, even=True) == expected


@pytest.mark.parametrize(
    ("length", "pixel", "even", "expected"),
    [
        (9.6, 0.12, False, 80),
        (8.4, 0.7, False, 12),  # 8.4 / 0.7 = 12.000000000000002 in floating point
        (9.0, 0.12, False, 75),
        (9.61, 0.12, False, 81),
        (9.61, 0.12, True, 84),
        (11.05, 0.1, False, 112),  # 111 = 3 * 37 is not FFT-friendly
    ],
)
def test_fft_friendly_span_counts_whole_pixels_exactly(
    length: float, pixel: float, even: bool, expected: int
) -> None:
    n = fft_friendly_span(length, pixel, even=even)
    assert n == expected
    assert length / n <= pixel * (1 + 1e-9)  # no pixel larger than asked


@pytest.mark.parametrize("name", ["length_ang", "pixel_ang"])
def test_fft_friendly_span_rejects_a_non_positive_length(name: str) -> None:
    args = {"length_ang": 9.6, "pixel_ang": 0.12, name: 0.0}
    with pytest.raises(ValueError, match=name):
        fft_friendly_span(**args)
