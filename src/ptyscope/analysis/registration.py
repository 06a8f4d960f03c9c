"""Comparing images: sub-pixel registration, Pearson correlation, truth on a new grid.

* :func:`register_translation`: the shift that best aligns two images, by apodised
  cross-correlation refined with a local upsampled DFT around the peak (Guizar-Sicairos,
  Thurman & Fienup, Opt. Lett. 33, 156 (2008)).
* :func:`fourier_shift_image`: exact band-limited (periodic) sub-pixel shift.
* :func:`sample_periodic`: a periodic image (e.g. a simulated projected potential) sampled
  on another regular grid through its Fourier series (band-limited interpolation).
* :func:`pearson`: correlation coefficient.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fourier_shift_image", "pearson", "register_translation", "sample_periodic"]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation coefficient of two equally shaped arrays."""
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    x = np.asarray(a, dtype=np.float64).ravel() - np.mean(a)
    y = np.asarray(b, dtype=np.float64).ravel() - np.mean(b)
    return float((x @ y) / np.sqrt((x @ x) * (y @ y)))


def fourier_shift_image(image: np.ndarray, shift_px: tuple[float, float]) -> np.ndarray:
    """Shift a real 2D image by (dy, dx) pixels (content moves towards +y, +x)."""
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1])[None, :]
    ramp = np.exp(-2j * np.pi * (ky * shift_px[0] + kx * shift_px[1]))
    shifted: np.ndarray = np.fft.ifft2(np.fft.fft2(image) * ramp).real
    return shifted


def register_translation(
    reference: np.ndarray,
    moving: np.ndarray,
    upsample: int = 20,
    max_shift_px: float | None = None,
) -> tuple[float, float]:
    """(dy, dx) such that ``fourier_shift_image(moving, (dy, dx))`` aligns with ``reference``.

    Cross-correlation of the mean-removed, Hann-apodised images (the apodisation keeps
    the crop's edges from dominating), searched within ``max_shift_px`` of zero when given
    (needed for periodic crystals, whose correlation repeats every lattice vector), then
    refined to 1/``upsample`` pixel by a local upsampled DFT.
    """
    if reference.shape != moving.shape or reference.ndim != 2:
        raise ValueError(
            f"reference and moving must be 2D of equal shape, got {reference.shape}, {moving.shape}"
        )
    ny, nx = reference.shape
    window = np.outer(np.hanning(ny), np.hanning(nx))
    a = np.fft.fft2((reference - reference.mean()) * window)
    b = np.fft.fft2((moving - moving.mean()) * window)
    product = a * b.conj()
    correlation = np.fft.ifft2(product).real
    dy = np.fft.fftfreq(ny) * ny
    dx = np.fft.fftfreq(nx) * nx
    if max_shift_px is not None:
        allowed = dy[:, None] ** 2 + dx[None, :] ** 2 <= max_shift_px**2
        correlation = np.where(allowed, correlation, -np.inf)
    peak = np.unravel_index(np.argmax(correlation), correlation.shape)
    coarse = np.array([dy[peak[0]], dx[peak[1]]])
    # Upsampled DFT in a 3x3-pixel neighbourhood of the coarse peak.
    size = 3 * upsample
    offsets = (np.arange(size) - size // 2) / upsample
    ky = np.fft.fftfreq(ny)
    kx = np.fft.fftfreq(nx)
    rows = np.exp(2j * np.pi * np.outer(coarse[0] + offsets, ky))
    cols = np.exp(2j * np.pi * np.outer(kx, coarse[1] + offsets))
    local = (rows @ product @ cols).real
    fine = np.unravel_index(np.argmax(local), local.shape)
    return float(coarse[0] + offsets[fine[0]]), float(coarse[1] + offsets[fine[1]])


def sample_periodic(
    image: np.ndarray,
    pixel_size_ang: tuple[float, float],
    origin_ang: tuple[float, float],
    shape: tuple[int, int],
    new_pixel_ang: tuple[float, float],
) -> np.ndarray:
    """Sample a periodic image (pixel (0, 0) at (0, 0) Å) on a regular grid.

    The new grid's pixel (i, j) is at ``origin_ang + (i·dy', j·dx')``. Evaluated exactly
    from the image's Fourier series (band-limited interpolation), separably.
    """
    ly, lx = image.shape
    coefficients = np.fft.fft2(image) / (ly * lx)
    qy = np.fft.fftfreq(ly, d=pixel_size_ang[0])
    qx = np.fft.fftfreq(lx, d=pixel_size_ang[1])
    y = origin_ang[0] + np.arange(shape[0]) * new_pixel_ang[0]
    x = origin_ang[1] + np.arange(shape[1]) * new_pixel_ang[1]
    rows = np.exp(2j * np.pi * np.outer(y, qy))
    cols = np.exp(2j * np.pi * np.outer(qx, x))
    sampled: np.ndarray = (rows @ coefficients @ cols).real
    return sampled
