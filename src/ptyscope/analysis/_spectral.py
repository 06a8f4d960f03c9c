"""Fourier helpers shared by the resolution measures: apodisation, spectra and rings.

Images are real (ny, nx) arrays; frequencies are in Å⁻¹ without 2π, zero at the centre.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
from scipy.signal import windows

__all__ = [
    "WINDOWS",
    "above_side_lobes",
    "apodisation",
    "centred_spectrum",
    "centroid_frequencies",
    "frequency_axes",
    "real_image",
    "ring_background",
    "ring_edges",
    "ring_sums",
    "side_lobe_envelope",
]

#: Apodisation windows by name (periodic, length n → (n,) weights).
WINDOWS: dict[str, Callable[[int], np.ndarray]] = {
    "hann": lambda n: windows.hann(n, sym=False),
    "blackman-harris": lambda n: windows.blackmanharris(n, sym=False),
    "none": np.ones,
}

#: A peak must outshine the window's side lobes of every brighter peak by this factor.
LEAKAGE_MARGIN = 10.0


def real_image(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` as float64 after checking that it is a finite, real (ny, nx) array."""
    array = np.asarray(image)
    if array.ndim != 2 or min(array.shape) < 4 or np.iscomplexobj(array):
        raise ValueError(
            f"{name} must be a real 2D image (ny, nx >= 4), got {array.dtype} {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array.astype(np.float64)


def apodisation(name: str, shape: tuple[int, int]) -> np.ndarray:
    """(ny, nx) separable window ``WINDOWS[name]`` ⊗ ``WINDOWS[name]``."""
    if name not in WINDOWS:
        raise ValueError(f"window must be one of {sorted(WINDOWS)}, got {name!r}")
    return np.outer(WINDOWS[name](shape[0]), WINDOWS[name](shape[1]))


def centred_spectrum(image: np.ndarray, window: str) -> np.ndarray:
    """FFT of the mean-removed, apodised image, zero frequency centred."""
    spectrum: np.ndarray = np.fft.fftshift(
        np.fft.fft2((image - image.mean()) * apodisation(window, image.shape))
    )
    return spectrum


def frequency_axes(
    shape: tuple[int, ...], pixel: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """fftshifted frequency axes ky (ny,), kx (nx,) [Å⁻¹] for pixel (dy, dx) [Å]."""
    ky = np.fft.fftshift(np.fft.fftfreq(shape[0], d=pixel[0]))
    kx = np.fft.fftshift(np.fft.fftfreq(shape[1], d=pixel[1]))
    return ky, kx


def ring_edges(ky: np.ndarray, kx: np.ndarray, bins: int | np.ndarray | None) -> np.ndarray:
    """Ring edges [Å⁻¹]: by default one reciprocal pixel wide, centred on i·dk, i >= 1."""
    dk = max(abs(float(ky[1] - ky[0])), abs(float(kx[1] - kx[0])))
    nyquist = min(float(np.abs(ky).max()), float(np.abs(kx).max()))
    if bins is None:
        return (np.arange(math.floor(nyquist / dk - 0.5) + 1) + 0.5) * dk
    if isinstance(bins, int | np.integer) and not isinstance(bins, bool):
        if bins < 1:
            raise ValueError(f"bins must be >= 1 or an array of edges [Å⁻¹], got {bins}")
        return np.linspace(0.0, nyquist, int(bins) + 1)
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins edges must be increasing, >= 2 of them [Å⁻¹], got {bins!r}")
    return edges


def ring_sums(
    values: np.ndarray, ky: np.ndarray, kx: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per ring: mean |k| [Å⁻¹], sum of ``values`` and pixel count (zero frequency left out)."""
    k = np.hypot(ky[:, None], kx[None, :])
    ring = np.digitize(k, edges) - 1
    inside = (ring >= 0) & (ring < len(edges) - 1) & (k > 0)
    ring, k, values = ring[inside], k[inside], values[inside]
    size = len(edges) - 1
    count = np.bincount(ring, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_k = np.bincount(ring, weights=k, minlength=size) / count
    return mean_k, np.bincount(ring, weights=values, minlength=size), count


def ring_background(power: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Mean speckle power μ per ring, from its lower quartile: Q₀.₂₅ = μ·ln(4/3) for an
    exponential distribution; the quartile ignores Bragg peaks and their side lobes as long
    as they cover less than three quarters of the ring."""
    order = np.argsort(ring, axis=None, kind="stable")
    starts = np.searchsorted(ring.ravel()[order], np.arange(ring.max() + 2))
    values = power.ravel()[order]
    quartile = [
        np.quantile(values[a:b], 0.25) if b > a else np.nan for a, b in itertools.pairwise(starts)
    ]
    return np.asarray(quartile) / math.log(4.0 / 3.0)


def side_lobe_envelope(window: str, n: int, oversample: int = 32) -> np.ndarray:
    """(n,): the largest power a peak leaks m pixels away along one axis, relative to the
    power of its own brightest pixel, over all sub-pixel offsets of the true frequency."""
    spectrum = np.abs(np.fft.fft(WINDOWS[window](n), n * oversample)) ** 2
    d = np.arange(-(oversample // 2), oversample // 2 + 1)
    m = np.minimum(np.arange(n), n - np.arange(n))
    ratio = (
        spectrum[(m[:, None] * oversample + d[None, :]) % len(spectrum)]
        / spectrum[d % len(spectrum)]
    )
    envelope: np.ndarray = ratio.max(axis=1)
    return envelope


def above_side_lobes(
    power: np.ndarray, candidates: np.ndarray, window: str
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the candidate pixels brighter than ``LEAKAGE_MARGIN`` × the side
    lobes of every brighter kept one (the 2D window is separable: leakage is the product of
    the axes' envelopes)."""
    rows, cols = np.nonzero(candidates)
    order = np.argsort(-power[rows, cols], kind="stable")
    rows, cols = rows[order], cols[order]
    values = power[rows, cols]
    leak_y, leak_x = (side_lobe_envelope(window, n) for n in power.shape)
    alive = np.ones(len(rows), dtype=bool)
    for i in range(len(rows)):
        if alive[i]:
            dy = np.abs(rows[i + 1 :] - rows[i])
            dx = np.abs(cols[i + 1 :] - cols[i])
            leak = LEAKAGE_MARGIN * values[i] * leak_y[dy] * leak_x[dx]
            alive[i + 1 :] &= values[i + 1 :] > leak
    return rows[alive], cols[alive]


def centroid_frequencies(
    power: np.ndarray, rows: np.ndarray, cols: np.ndarray, ky: np.ndarray, kx: np.ndarray
) -> np.ndarray:
    """(P, 2) (k_y, k_x) [Å⁻¹]: power centroid of the 3×3 pixels around each peak."""
    offsets = np.arange(-1, 2)
    patch = power[
        (rows[:, None, None] + offsets[None, :, None]) % power.shape[0],
        (cols[:, None, None] + offsets[None, None, :]) % power.shape[1],
    ]
    total = patch.sum(axis=(1, 2))
    return np.column_stack(
        [
            ky[rows] + (ky[1] - ky[0]) * (patch.sum(axis=2) @ offsets) / total,
            kx[cols] + (kx[1] - kx[0]) * (patch.sum(axis=1) @ offsets) / total,
        ]
    ).reshape(-1, 2)
