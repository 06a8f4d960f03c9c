"""Real- and reciprocal-space sampling grids built from a detector calibration.

Conventions (see DESIGN.md): arrays are ``(..., y, x)``; pairs are ordered ``(y, x)``;
spatial frequencies follow ``fftfreq`` (zero frequency at index 0, unshifted) and are in
Å⁻¹ without the 2π factor, so a plane wave is exp(2πi k·r). Angles relate to spatial
frequency by α = λ|k| (small-angle approximation used throughout electron ptychography).

A detector of N pixels of size Δk [Å⁻¹] gives, after the Fourier transform, a real-space
pixel of 1/(N Δk) [Å] and a field of view of 1/Δk [Å]. Padding the detector with zeros to
N' > N pixels refines the real-space pixel to 1/(N' Δk) without changing the field of view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ptyscope._validation import require_int_pair, require_positive, require_positive_pair

from .constants import wavelength_ang

__all__ = [
    "Grid",
    "angle_mrad_to_inv_ang",
    "detector_grid",
    "fft_friendly_size",
    "fft_friendly_span",
    "inv_ang_to_angle_mrad",
    "polar_frequencies",
    "spatial_frequencies",
]

DetectorUnit = Literal["mrad", "inv_ang"]


def spatial_frequencies(
    shape: tuple[int, int],
    pixel_size_ang: float | tuple[float, float],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial frequencies (k_y, k_x) of an FFT grid.

    Parameters
    ----------
    shape:
        Grid shape (ny, nx) [pixels].
    pixel_size_ang:
        Real-space pixel size [Å], one number or a (dy, dx) pair.
    device, dtype:
        Device and real floating dtype of the result.

    Returns
    -------
    (ky, kx):
        Two real tensors of shape (ny, nx) [Å⁻¹], in unshifted ``fftfreq`` order.
    """
    ny, nx = require_int_pair("shape", shape)
    dy, dx = require_positive_pair("pixel_size_ang", pixel_size_ang)
    ky = torch.fft.fftfreq(ny, d=dy, device=device, dtype=dtype)
    kx = torch.fft.fftfreq(nx, d=dx, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ky, kx, indexing="ij")
    return grid_y, grid_x


def polar_frequencies(ky: torch.Tensor, kx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Modulus |k| [Å⁻¹] and azimuth φ [rad] of spatial frequencies.

    φ = atan2(k_y, k_x): measured from +x towards +y (with y pointing down the rows of an
    image, this is clockwise as displayed). Aberration angles φ_nm use the same reference.
    """
    return torch.sqrt(ky * ky + kx * kx), torch.atan2(ky, kx)


def angle_mrad_to_inv_ang(angle_mrad: float, energy_ev: float) -> float:
    """Convert a scattering angle [mrad] to a spatial frequency [Å⁻¹]: k = α / λ."""
    return float(angle_mrad) * 1e-3 / wavelength_ang(energy_ev)


def inv_ang_to_angle_mrad(k_inv_ang: float, energy_ev: float) -> float:
    """Convert a spatial frequency [Å⁻¹] to a scattering angle [mrad]: α = λ k."""
    return float(k_inv_ang) * wavelength_ang(energy_ev) * 1e3


def fft_friendly_size(n: int, *, even: bool = False) -> int:
    """Smallest integer >= ``n`` whose prime factors are all in {2, 3, 5, 7}.

    FFT libraries (pocketfft on CPU, cuFFT on GPU) are fastest for such sizes.
    ``even=True``: the smallest such even integer (a centred crop of an even size can keep
    every pixel).

    Examples
    --------
    >>> fft_friendly_size(97), fft_friendly_size(128), fft_friendly_size(131)
    (98, 128, 135)
    >>> fft_friendly_size(131, even=True)
    140
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    candidate = n + (n % 2 if even else 0)
    step = 2 if even else 1
    while True:
        rest = candidate
        for p in (2, 3, 5, 7):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return candidate
        candidate += step


def fft_friendly_span(length_ang: float, pixel_ang: float, *, even: bool = False) -> int:
    """Fewest FFT-friendly pixels of at most ``pixel_ang`` that span ``length_ang``.

    A length that is a whole number of pixels (to 1e-9 of a pixel, against rounding in
    ``length / pixel``) takes exactly that number before the FFT-friendly round-up: a
    9.6 Å window of 0.12 Å pixels is 80 pixels, not 81. The simulator's specimen grid, its
    probe window and its tilt-series depth all size themselves with this rule, so a window
    and a cell of the same length get the same pixels.

    Examples
    --------
    >>> fft_friendly_span(9.6, 0.12), fft_friendly_span(9.61, 0.12)
    (80, 81)
    >>> fft_friendly_span(9.61, 0.12, even=True)
    84
    """
    require_positive("length_ang", length_ang, "Å")
    require_positive("pixel_ang", pixel_ang, "Å")
    return fft_friendly_size(math.ceil(length_ang / pixel_ang - 1e-9), even=even)


@dataclass(frozen=True)
class Grid:
    """A real-space sampling grid and its reciprocal space.

    Attributes
    ----------
    shape:
        (ny, nx) [pixels].
    pixel_size_ang:
        (dy, dx) real-space pixel size [Å].
    """

    shape: tuple[int, int]
    pixel_size_ang: tuple[float, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", require_int_pair("shape", self.shape))
        object.__setattr__(
            self, "pixel_size_ang", require_positive_pair("pixel_size_ang", self.pixel_size_ang)
        )

    @property
    def extent_ang(self) -> tuple[float, float]:
        """Field of view (ny·dy, nx·dx) [Å]."""
        return self.shape[0] * self.pixel_size_ang[0], self.shape[1] * self.pixel_size_ang[1]

    @property
    def reciprocal_pixel_inv_ang(self) -> tuple[float, float]:
        """Reciprocal-space pixel (1/(ny·dy), 1/(nx·dx)) [Å⁻¹]."""
        ey, ex = self.extent_ang
        return 1.0 / ey, 1.0 / ex

    @property
    def nyquist_inv_ang(self) -> tuple[float, float]:
        """Largest representable frequency (1/(2dy), 1/(2dx)) [Å⁻¹]."""
        return 0.5 / self.pixel_size_ang[0], 0.5 / self.pixel_size_ang[1]

    def frequencies(
        self, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ky, kx), each of shape (ny, nx) [Å⁻¹]; see :func:`spatial_frequencies`."""
        return spatial_frequencies(self.shape, self.pixel_size_ang, device=device, dtype=dtype)

    def coordinates(
        self, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Real-space coordinates (y, x), each of shape (ny, nx) [Å], origin at pixel (0, 0)."""
        ny, nx = self.shape
        dy, dx = self.pixel_size_ang
        y = torch.arange(ny, device=device, dtype=dtype) * dy
        x = torch.arange(nx, device=device, dtype=dtype) * dx
        grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
        return grid_y, grid_x


def detector_grid(
    detector_shape: tuple[int, int],
    detector_pixel: float | tuple[float, float],
    *,
    unit: DetectorUnit,
    energy_ev: float | None = None,
    target_pixel_ang: float | None = None,
    fft_friendly: bool = True,
) -> Grid:
    """Real-space grid of the probe window implied by a detector calibration.

    Parameters
    ----------
    detector_shape:
        Detector shape (det_y, det_x) [pixels].
    detector_pixel:
        Detector pixel size, one number or a (y, x) pair, in ``unit``.
    unit:
        ``"mrad"`` (needs ``energy_ev``) or ``"inv_ang"`` [Å⁻¹].
    energy_ev:
        Beam energy [eV]; required when ``unit="mrad"``.
    target_pixel_ang:
        If given, the detector is (virtually) zero-padded to the smallest size whose
        real-space pixel is <= this value [Å]. Padding cannot coarsen the pixel: a target
        larger than the native pixel 1/(N Δk) is an error (crop or bin the detector instead).
    fft_friendly:
        Round padded sizes up to a product of 2, 3, 5 and 7 (only when padding).

    Returns
    -------
    Grid
        Shape (the padded detector shape) and the real-space pixel 1/(N' Δk) [Å].

    Examples
    --------
    >>> g = detector_grid((128, 128), 0.055, unit="inv_ang")
    >>> round(g.pixel_size_ang[0], 4)
    0.142
    """
    det = require_int_pair("detector_shape", detector_shape)
    pixel = require_positive_pair("detector_pixel", detector_pixel)
    if unit == "mrad":
        if energy_ev is None:
            raise ValueError("energy_ev is required when the detector pixel is in mrad, got None")
        dk = (
            angle_mrad_to_inv_ang(pixel[0], energy_ev),
            angle_mrad_to_inv_ang(pixel[1], energy_ev),
        )
    elif unit == "inv_ang":
        dk = pixel
    else:
        raise ValueError(f"unit must be one of 'mrad', 'inv_ang', got {unit!r}")

    shape = det
    if target_pixel_ang is not None:
        require_positive("target_pixel_ang", target_pixel_ang, "Å")
        native = tuple(1.0 / (n * k) for n, k in zip(det, dk, strict=True))
        if target_pixel_ang > max(native) * (1 + 1e-9):
            raise ValueError(
                f"target_pixel_ang must be <= the native real-space pixel "
                f"{max(native):.4g} Å (padding can only refine it; crop or bin the "
                f"detector to coarsen it), got {target_pixel_ang}"
            )
        padded = []
        for n, k in zip(det, dk, strict=True):
            m = max(n, math.ceil(1.0 / (target_pixel_ang * k) - 1e-9))
            padded.append(fft_friendly_size(m) if fft_friendly else m)
        shape = (padded[0], padded[1])
    return Grid(shape, (1.0 / (shape[0] * dk[0]), 1.0 / (shape[1] * dk[1])))
