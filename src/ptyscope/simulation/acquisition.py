"""What acquisition does to ideal 4D-STEM data: electron dose, and the scan-grid source
average of Gladyshev et al. (2025).

The dose acts on intensities of shape (scan_y, scan_x, det_y, det_x) in which each pattern
is the far field of a unit-intensity probe (sums to 1 in vacuum; see
ptyscope.physics.multislice). A dose D [e/Å²] on a scan of step (Δy, Δx) puts D·Δy·Δx
electrons per pattern on average; the detector counts are Poisson distributed.

A finite source (partial spatial coherence) makes the probe a mixed state, which the
simulator builds exactly as probe modes (:func:`ptyscope.physics.probe.source_modes`).
:func:`apply_source_size` keeps the scan-grid average of Gladyshev et al. (2025), which the
simulator used for it until 2026-11-25: a much more coherent beam than a Gaussian source of
the same σ when σ is below the scan step (docs/mixed_object_log.md, "The source size was
an average over the scan").
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional

from ptyscope._validation import require_positive, require_positive_pair

__all__ = ["apply_dose", "apply_source_size", "electrons_per_pattern"]


def _require_real_4d(data: torch.Tensor) -> None:
    if data.ndim != 4:
        raise ValueError(
            f"data must have shape (scan_y, scan_x, det_y, det_x), got {tuple(data.shape)}"
        )
    if data.is_complex():
        raise ValueError(f"data must be real intensities, got dtype {data.dtype}")


def _gaussian_kernel(sigma_px: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(4 * sigma_px))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (x / sigma_px) ** 2)
    return kernel / kernel.sum()


def _blur_axis(data: torch.Tensor, sigma_px: float, axis: int, periodic: bool) -> torch.Tensor:
    """Gaussian blur along scan axis 0 or 1, the edges wrapped or replicated."""
    if sigma_px == 0:
        return data
    kernel = _gaussian_kernel(sigma_px, data.dtype, data.device)
    radius = kernel.numel() // 2
    moved = data.movedim(axis, -1)  # (..., n)
    shape = moved.shape
    if periodic and radius > shape[-1]:
        raise ValueError(
            f"a periodic scan average reaching {radius} steps either side needs at least "
            f"{radius} scan points per axis, got {shape[-1]}"
        )
    rows = moved.reshape(-1, 1, shape[-1])
    padded = functional.pad(rows, (radius, radius), mode="circular" if periodic else "replicate")
    blurred = functional.conv1d(padded, kernel.view(1, 1, -1))
    return blurred.reshape(shape).movedim(-1, axis)


def apply_source_size(
    data: torch.Tensor,
    scan_step_ang: float | tuple[float, float],
    source_sigma_ang: float,
    *,
    periodic: bool = False,
) -> torch.Tensor:
    """Average neighbouring patterns with Gaussian weights over the scan grid.

    This is how Gladyshev et al. (2025) simulated partial spatial coherence: each pattern
    becomes the average of the recorded ones around it, weighted by a Gaussian of σ =
    ``source_sigma_ang`` sampled at the scan positions. It is the exact pattern of a
    source that shifts the probe only by whole scan steps; for a Gaussian source it is an
    approximation that holds only when σ spans several steps and the patterns change
    little over one step. With σ = 0.4 steps (their 47 pm FWHM on 50 pm steps) the
    weights are 0.92 / 0.04 per axis: a mixed state whose first mode holds ~85 % of the
    power, where the Gaussian source of the same σ holds ~45 % (300 kV, 25 mrad). For the
    source itself use ``simulate_4dstem(..., source_sigma_ang=...)``, which builds its
    exact probe modes (:func:`ptyscope.physics.probe.source_modes`).

    Parameters
    ----------
    data:
        Real tensor (scan_y, scan_x, det_y, det_x) of ideal intensities.
    scan_step_ang:
        Scan step [Å], one number or a (y, x) pair.
    source_sigma_ang:
        Standard deviation of the demagnified source [Å] (FWHM = 2.355 σ); 0 leaves the data
        unchanged.
    periodic:
        The scan covers exactly one period of a periodic specimen: the neighbours beyond
        an edge are the patterns at the opposite edge. Otherwise the edge patterns stand
        in for them, so the edge rows are not the pattern of any shifted probe.

    Returns
    -------
    torch.Tensor
        Tensor of the same shape, dtype and device. The total intensity of every pattern is
        preserved (the blur averages patterns).
    """
    _require_real_4d(data)
    steps = require_positive_pair("scan_step_ang", scan_step_ang, "Å")
    if not math.isfinite(source_sigma_ang) or source_sigma_ang < 0:
        raise ValueError(f"source_sigma_ang must be finite and >= 0 Å, got {source_sigma_ang}")
    if source_sigma_ang == 0:
        return data
    out = _blur_axis(data, source_sigma_ang / steps[0], 0, periodic)
    return _blur_axis(out, source_sigma_ang / steps[1], 1, periodic)


def electrons_per_pattern(
    dose_e_per_ang2: float, scan_step_ang: float | tuple[float, float]
) -> float:
    """Mean number of electrons per diffraction pattern: D·Δy·Δx."""
    require_positive("dose_e_per_ang2", dose_e_per_ang2, "e/Å²")
    steps = require_positive_pair("scan_step_ang", scan_step_ang, "Å")
    return float(dose_e_per_ang2) * steps[0] * steps[1]


def apply_dose(
    data: torch.Tensor,
    dose_e_per_ang2: float,
    scan_step_ang: float | tuple[float, float],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Poisson counts for a given dose.

    Parameters
    ----------
    data:
        Real non-negative tensor (scan_y, scan_x, det_y, det_x): patterns of a
        unit-intensity probe (the fraction of the beam reaching each detector pixel).
    dose_e_per_ang2:
        Electron dose [e/Å²].
    scan_step_ang:
        Scan step [Å], one number or a (y, x) pair.
    generator:
        Random generator on the data's device (no global seed is used); None draws from
        torch's default generator.

    Returns
    -------
    torch.Tensor
        Counts (same shape, dtype and device), each pixel ~ Poisson(D·Δy·Δx · data).
    """
    _require_real_4d(data)
    if not bool(torch.isfinite(data).all()) or bool((data < 0).any()):
        raise ValueError("data must be finite and >= 0 to draw Poisson counts")
    rate = data * electrons_per_pattern(dose_e_per_ang2, scan_step_ang)
    return torch.poisson(rate, generator=generator)
