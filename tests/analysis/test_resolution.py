"""Diffractogram information limit and Fourier ring correlation (known answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptyscope.analysis.resolution import (
    FRC_CRITERIA,
    azimuthal_average,
    diffractogram,
    fourier_ring_correlation,
    frc_resolution,
    information_limit,
)

A_ANG = 3.905  # does not fit the 25.6 Å window: every reflection falls between pixels
PIXEL_ANG = 0.1
N = 256
DK = 1.0 / (N * PIXEL_ANG)  # reciprocal pixel [Å⁻¹]


def _reflections(max_hk2: int, max_gy: float = np.inf) -> np.ndarray:
    """(h, k) of a square lattice with h² + k² <= max_hk2 and |g_y| <= max_gy, one of each
    Friedel pair, as g = (h, k)/a (y, x) [Å⁻¹]."""
    hk = [
        (h, k)
        for h in range(-10, 11)
        for k in range(0, 11)
        if (k > 0 or h > 0) and h * h + k * k <= max_hk2 and abs(h) / A_ANG <= max_gy
    ]
    return np.array(hk, dtype=float) / A_ANG


def _lattice_image(g: np.ndarray, rng: np.random.Generator, noise: float = 0.5) -> np.ndarray:
    """Σ 2A(g)cos(2πg·r + φ) with A = exp(−(|g|/1 Å⁻¹)²) and random φ, plus white noise."""
    y = np.arange(N)[:, None] * PIXEL_ANG
    x = np.arange(N)[None, :] * PIXEL_ANG
    image = rng.normal(scale=noise, size=(N, N))
    for gy, gx in g:
        amplitude = math.exp(-((math.hypot(gy, gx) / 1.0) ** 2))
        image += 2 * amplitude * np.cos(2 * np.pi * (gy * y + gx * x) + rng.uniform(0, 2 * np.pi))
    return image


def _match(peaks: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Distance [Å⁻¹] from each detected peak to the nearest present reflection (±g)."""
    both = np.vstack([g, -g])
    distance = np.hypot(*(peaks[:, None, :] - both[None, :, :]).transpose(2, 0, 1))
    nearest: np.ndarray = distance.min(axis=1)
    return nearest


def test_diffractogram_places_a_cosine_and_normalises_white_noise() -> None:
    y = np.arange(64)[:, None] * 0.05
    x = np.arange(80)[None, :] * 0.08
    power, ky, kx = diffractogram(np.cos(2 * np.pi * (2.5 * y - 1.25 * x)), (0.05, 0.08))
    assert power.shape == (64, 80) and ky[32] == 0.0 and kx[40] == 0.0
    row, col = np.unravel_index(np.argmax(power), power.shape)
    assert {(ky[row], kx[col]), (-ky[row], -kx[col])} == {(2.5, -1.25), (-2.5, 1.25)}
    noise = np.random.default_rng(0).normal(scale=2.0, size=(128, 128))
    power, ky, kx = diffractogram(noise, 0.1)
    k, average = azimuthal_average(power, ky, kx, bins=8)
    assert np.all(np.abs(average / 4.0 - 1) < 0.15)  # σ² = 4 at every frequency
    assert k[0] > 0 and np.all(np.diff(k) > 0)


@pytest.mark.parametrize(
    ("max_hk2", "d_expected_ang"), [(50, A_ANG / math.sqrt(50)), (25, A_ANG / 5)]
)
def test_information_limit_is_the_highest_present_reflection(
    max_hk2: int, d_expected_ang: float
) -> None:
    g = _reflections(max_hk2)
    result = information_limit(_lattice_image(g, np.random.default_rng(max_hk2)), PIXEL_ANG)
    # The next shell out (h² + k² = 52 or 26) would lie 0.9 or 1.3 reciprocal pixels out.
    assert result.k_max_inv_ang == pytest.approx(1 / d_expected_ang, abs=0.25 * DK)
    assert result.d_min_ang == pytest.approx(d_expected_ang, rel=0.01)
    # Every reflection is found, both Friedel mates, and nothing else (no side lobes),
    # each to a fraction of a pixel.
    assert len(result.peaks_inv_ang) == 2 * len(g)
    assert _match(result.peaks_inv_ang, g).max() < 0.25 * DK
    assert np.all(result.peak_snr > 20)


def test_information_limit_per_direction_measures_anisotropy() -> None:
    """Reflections reach 1.81 Å⁻¹ along k_x but only |g_y| <= 1 Å⁻¹ (cf. Sha 2022, Fig. 3B)."""
    g = _reflections(50, max_gy=1.0)
    image = _lattice_image(g, np.random.default_rng(3))
    result = information_limit(image, PIXEL_ANG, directions_deg=[0.0, 90.0])
    assert result.directions_deg is not None and result.sector_k_max_inv_ang is not None
    k_x, k_y = result.sector_k_max_inv_ang
    assert k_x == pytest.approx(math.sqrt(50) / A_ANG, abs=0.5 * DK)  # (1, 7)
    assert k_y == pytest.approx(math.sqrt(18) / A_ANG, abs=0.5 * DK)  # (3, 3) at 45°
    assert result.isotropy == pytest.approx(math.sqrt(18 / 50), abs=0.02)
    narrow = information_limit(image, PIXEL_ANG, directions_deg=[90.0], sector_half_width_deg=5)
    assert narrow.sector_k_max_inv_ang == pytest.approx([3 / A_ANG], abs=0.5 * DK)  # (3, 0)


@pytest.mark.parametrize("window", ["hann", "none"])
def test_side_lobes_of_strong_reflections_are_not_reflections(window: str) -> None:
    """Two reflections between pixels, 10⁹-10¹⁰ above the noise: the window's side lobes
    along the rows and columns through them stand far above the noise too."""
    g = np.array([[0.81, 1.33], [1.71, -0.42]])
    y = np.arange(N)[:, None] * PIXEL_ANG
    x = np.arange(N)[None, :] * PIXEL_ANG
    image = np.random.default_rng(0).normal(scale=1e-3, size=(N, N))
    for (gy, gx), amplitude in zip(g, [1.0, 0.3], strict=True):
        image += 2 * amplitude * np.cos(2 * np.pi * (gy * y + gx * x) + 1.0)
    result = information_limit(image, PIXEL_ANG, window=window)
    assert len(result.peaks_inv_ang) == 4
    assert _match(result.peaks_inv_ang, g).max() < 0.5 * DK
    assert result.k_max_inv_ang == pytest.approx(math.hypot(1.71, 0.42), abs=0.5 * DK)


def test_information_limit_of_noise_finds_nothing() -> None:
    result = information_limit(np.random.default_rng(9).normal(size=(512, 512)), PIXEL_ANG)
    assert math.isnan(result.k_max_inv_ang) and len(result.peaks_inv_ang) == 0


def test_frc_of_identical_images_is_one() -> None:
    image = np.random.default_rng(1).normal(size=(96, 128))
    for window in ("hann", "none"):
        k, frc, n = fourier_ring_correlation(image, image, (0.1, 0.08), window=window)
        np.testing.assert_allclose(frc, 1.0, atol=1e-6)
        assert k[-1] <= 1 / (2 * 0.1) and np.all(n > 0)


def test_frc_of_independent_noise_is_zero_within_its_statistics() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, N, N))
    _, frc, n = fourier_ring_correlation(a, b, PIXEL_ANG, window="none")
    z = frc * np.sqrt(n)  # each ring ~ N(0, 1) for white noise
    assert np.abs(z).max() < 4.5
    assert abs(z.mean()) * math.sqrt(len(z)) < 3.0
    assert abs(np.average(frc, weights=n)) < 3 / math.sqrt(n.sum())


@pytest.mark.parametrize("window", ["hann", "none"])
@pytest.mark.parametrize("criterion", ["half-bit", "1/7"])
def test_frc_resolution_is_where_the_known_signal_to_noise_crosses_the_threshold(
    window: str, criterion: str
) -> None:
    """Two copies of one band-limited signal with independent unit noise: the expected FRC
    is S/(S + 1) with S(k) = 100·exp(−(k/1.5 Å⁻¹)⁴), crossing the half-bit threshold near
    S = 0.26 (k ≈ 2.32 Å⁻¹) and the 1/7 threshold at S = 1/6 (k ≈ 2.39 Å⁻¹)."""
    rng = np.random.default_rng(6)
    q = np.hypot(*np.meshgrid(np.fft.fftfreq(N, PIXEL_ANG), np.fft.fftfreq(N, PIXEL_ANG)))
    spectrum = 100 * np.exp(-((q / 1.5) ** 4))
    signal = np.fft.ifft2(np.fft.fft2(rng.normal(size=(N, N))) * np.sqrt(spectrum)).real
    a, b = signal + rng.normal(size=(2, N, N))
    k, frc, n = fourier_ring_correlation(a, b, PIXEL_ANG, window=window)
    s = 100 * np.exp(-((k / 1.5) ** 4))
    margin = s / (s + 1) - FRC_CRITERIA[criterion](n)
    i = int(np.flatnonzero(margin < 0)[0])
    expected = k[i - 1] + (k[i] - k[i - 1]) * margin[i - 1] / (margin[i - 1] - margin[i])
    measured = 1 / frc_resolution(k, frc, n, criterion)
    assert measured == pytest.approx(expected, abs=2 * DK)


def test_frc_resolution_edge_cases_and_thresholds() -> None:
    # van Heel & Schatz (2005): the half-bit curve starts at 1 and tends to 0.2071/1.2071.
    half_bit = FRC_CRITERIA["half-bit"](np.array([1.0, 1e12]))
    np.testing.assert_allclose(half_bit, [1.0, 0.2071 / 1.2071], rtol=1e-4)
    k = np.array([1.0, 2.0, 3.0])
    crossing = np.array([0.9, 1 / 7 + 0.1, 1 / 7 - 0.1])  # halfway between rings 2 and 3
    assert frc_resolution(k, crossing, np.full(3, 1e6), "1/7") == pytest.approx(1 / 2.5)
    assert frc_resolution(k, np.array([0.0, 0.0, 0.0]), np.full(3, 1e6)) == math.inf
    with pytest.warns(RuntimeWarning, match="limited by the sampling"):
        assert frc_resolution(k, np.array([0.9, 0.9, 0.9]), np.full(3, 1e6)) == 1 / 3.0


def test_resolution_errors_name_the_parameter() -> None:
    image = np.zeros((16, 16))
    with pytest.raises(ValueError, match="window must be one of"):
        diffractogram(image, 0.1, window="hamming")
    with pytest.raises(ValueError, match="pixel_size_ang must be > 0"):
        diffractogram(image, (0.1, 0.0))
    with pytest.raises(ValueError, match=r"image must be a real 2D image"):
        diffractogram(np.zeros((2, 16, 16)), 0.1)
    with pytest.raises(ValueError, match="image_a and image_b must have the same shape"):
        fourier_ring_correlation(image, np.zeros((16, 18)), 0.1)
    with pytest.raises(ValueError, match="criterion must be one of"):
        frc_resolution(np.ones(2), np.ones(2), np.ones(2), "3-sigma")
    with pytest.raises(ValueError, match="snr_threshold must be > 0"):
        information_limit(image, 0.1, snr_threshold=0.0)
    with pytest.raises(ValueError, match="directions_deg must be finite"):
        information_limit(image, 0.1, directions_deg=[math.nan])
    with pytest.raises(ValueError, match="bins must be >= 1"):
        azimuthal_average(image, np.arange(16.0), np.arange(16.0), bins=0)
