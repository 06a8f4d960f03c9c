"""Probe builder: aperture, aberrations, normalisation and orthogonal probe modes.

The probe in reciprocal space is ψ(k) = A(k)·exp(−iχ(k)) (DESIGN.md; Kirkland 2020,
Eq. 3.41), with A a soft-edged disk of radius α_max/λ and χ the aberration function. In
real space the probe is centred on the array centre (ny//2, nx//2) and normalised to unit
total intensity Σ_r |ψ(r)|² = 1 (a sum over pixels, not an integral), so that with the
orthonormal FFT used for the far field the diffraction pattern also sums to 1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch

from ptyscope._validation import require_positive

from .aberrations import Coefficient, aberration_function
from .constants import wavelength_ang
from .grids import Grid, angle_mrad_to_inv_ang

__all__ = [
    "aperture",
    "build_probe",
    "orthogonal_modes",
    "probe_from_fourier",
    "source_modes",
]

#: Largest number of Fourier pixels that carry the probe for :func:`source_modes` (its
#: coherence matrix is that size squared: 8192² complex128 numbers are 1 GiB).
_MAX_SOURCE_PIXELS = 8192


def aperture(
    ky: torch.Tensor,
    kx: torch.Tensor,
    cutoff_inv_ang: float,
    edge_width_inv_ang: float,
) -> torch.Tensor:
    """Soft-edged circular aperture.

    A(k) = clip((k_max − |k|) / w + 1/2, 0, 1): 1 inside, 0 for |k| >= k_max + w/2, and a
    linear ramp of width w across the edge, so the aperture's area equals πk_max² to first
    order and its sampled edge does not alias.

    Parameters
    ----------
    ky, kx:
        Real tensors of equal shape of spatial frequencies [Å⁻¹].
    cutoff_inv_ang:
        Aperture radius k_max = α_max/λ [Å⁻¹].
    edge_width_inv_ang:
        Edge width w [Å⁻¹]; 0 gives a hard edge (A = 1 for |k| <= k_max).

    Returns
    -------
    torch.Tensor
        Real tensor with the shape and dtype of ``ky``, values in [0, 1].
    """
    require_positive("cutoff_inv_ang", cutoff_inv_ang, "Å⁻¹")
    if edge_width_inv_ang < 0:
        raise ValueError(f"edge_width_inv_ang must be >= 0 Å⁻¹, got {edge_width_inv_ang}")
    k = torch.sqrt(ky * ky + kx * kx)
    if edge_width_inv_ang == 0:
        return (k <= cutoff_inv_ang).to(ky.dtype)
    return torch.clamp((cutoff_inv_ang - k) / edge_width_inv_ang + 0.5, 0.0, 1.0)


def probe_from_fourier(probe_k: torch.Tensor) -> torch.Tensor:
    """Real-space probe from its unshifted Fourier representation.

    Centres the probe on the array centre (ny//2, nx//2) and normalises each mode to unit
    total intensity.

    Parameters
    ----------
    probe_k:
        Complex tensor of shape (..., ny, nx) in unshifted FFT order.

    Returns
    -------
    torch.Tensor
        Complex tensor of the same shape: ψ(r) with Σ_r |ψ|² = 1 per leading index.
    """
    psi: torch.Tensor = torch.fft.fftshift(torch.fft.ifft2(probe_k), dim=(-2, -1))
    power = (psi.abs() ** 2).sum(dim=(-2, -1), keepdim=True)
    if bool((power == 0).any()):
        raise ValueError("probe_k must have non-zero intensity, got an all-zero probe")
    return psi / torch.sqrt(power)


def orthogonal_modes(
    probe: torch.Tensor,
    num_modes: int,
    *,
    mode_powers: Sequence[float] | None = None,
    support: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mutually orthogonal probe modes grown from a single probe.

    Mode 0 is ``probe`` itself; higher modes are the probe multiplied by low-order
    polynomials in (y, x) about the probe's intensity centroid (y, x, y², xy, x², ...),
    then orthogonalised by Gram-Schmidt against the earlier modes. This is the usual way to
    start a mixed-state (partially coherent) reconstruction (Thibault & Menzel, Nature 494,
    68 (2013)); the modes only need to be distinct and orthogonal for the optimiser.

    Parameters
    ----------
    probe:
        Complex tensor of shape (ny, nx), any normalisation.
    num_modes:
        Number of modes M >= 1.
    mode_powers:
        Fraction of the total intensity in each mode (M non-negative numbers summing to 1).
        Default: powers proportional to 1, 0.1, 0.1/2, 0.1/3, ... — a dominant coherent
        mode with weak incoherent companions.
    support:
        Optional real tensor (ny, nx) in unshifted FFT order: a Fourier-space mask (e.g. the
        aperture support) that modes 1.. are confined to before orthogonalisation.

    Returns
    -------
    torch.Tensor
        Complex tensor of shape (M, ny, nx); ⟨P_i, P_j⟩ = 0 for i ≠ j and
        Σ_m Σ_r |P_m|² = 1.
    """
    if not isinstance(num_modes, int) or isinstance(num_modes, bool) or num_modes < 1:
        raise ValueError(f"num_modes must be an integer >= 1, got {num_modes!r}")
    if probe.ndim != 2:
        raise ValueError(f"probe must have shape (ny, nx), got {tuple(probe.shape)}")
    if mode_powers is None:
        raw = [1.0] + [0.1 / m for m in range(1, num_modes)]
        raw_total = sum(raw)
        powers = [p / raw_total for p in raw]
    else:
        powers = [float(p) for p in mode_powers]
        if len(powers) != num_modes:
            raise ValueError(
                f"mode_powers must have num_modes={num_modes} entries, got {len(powers)}"
            )
        if (
            not all(math.isfinite(p) for p in powers)
            or min(powers) < 0
            or (abs(sum(powers) - 1.0) > 1e-6)
        ):
            raise ValueError(f"mode_powers must be >= 0 and sum to 1, got {powers}")

    ny, nx = probe.shape
    real = probe.real.dtype
    intensity = probe.abs() ** 2
    total = intensity.sum()
    y = torch.arange(ny, device=probe.device, dtype=real)[:, None]
    x = torch.arange(nx, device=probe.device, dtype=real)[None, :]
    cy = (intensity * y).sum() / total
    cx = (intensity * x).sum() / total
    radius = torch.sqrt((intensity * ((y - cy) ** 2 + (x - cx) ** 2)).sum() / total).clamp_min(1.0)
    yy = ((y - cy) / radius).expand(ny, nx)
    xx = ((x - cx) / radius).expand(ny, nx)

    # Polynomial multipliers by increasing total degree: 1, y, x, y², xy, x², y³, ...
    multipliers: list[torch.Tensor] = []
    degree = 0
    while len(multipliers) < num_modes:
        for py in range(degree, -1, -1):
            multipliers.append(yy**py * xx ** (degree - py))
        degree += 1

    modes: list[torch.Tensor] = []
    for index, multiplier in enumerate(multipliers[:num_modes]):
        candidate = probe * multiplier
        if support is not None and index > 0:
            # Keep every mode inside the aperture: the polynomial factors (and their jump
            # where the window wraps) would otherwise spread intensity outside the disk.
            candidate = torch.fft.ifft2(torch.fft.fft2(candidate) * support)
        for previous in modes:
            candidate = candidate - torch.vdot(previous.flatten(), candidate.flatten()) * previous
        norm = torch.linalg.vector_norm(candidate)
        if not bool(norm > 1e-6 * torch.linalg.vector_norm(probe)):
            raise ValueError(
                f"num_modes={num_modes}: mode {index} is linearly dependent on the earlier "
                "modes (the probe is too small or too structured to grow that many "
                "orthogonal modes); use fewer modes or a wider probe"
            )
        modes.append(candidate / norm)
    stacked = torch.stack(modes)
    weights = torch.tensor(powers, dtype=real, device=probe.device).sqrt()
    return stacked * weights[:, None, None]


def source_modes(
    probe: torch.Tensor,
    grid: Grid,
    source_sigma_ang: float,
    *,
    tolerance: float = 1e-3,
) -> tuple[torch.Tensor, float]:
    """Probe modes of a finite incoherent source (partial spatial coherence), exactly.

    The demagnified image of an incoherent Gaussian source of standard deviation σ shifts
    the probe by s with weight g(s) = exp(−|s|²/2σ²)/(2πσ²), so the beam is the mixed state
    ρ(r₁, r₂) = ∫ g(s) P(r₁ − s) P*(r₂ − s) d²s. A shift is a phase ramp in Fourier space,
    so the integral is exact there:

        ρ(k₁, k₂) = ψ(k₁) ψ*(k₂) exp(−2π² σ² |k₁ − k₂|²),

    with ψ the probe's Fourier transform (Thibault & Menzel, Nature 494, 68 (2013), model
    partial coherence by such modes; Gladyshev et al. 2023 and 2025 reconstruct them). Its
    eigenvectors are orthogonal probe modes and its eigenvalues their powers; a pattern is
    the incoherent sum of the modes' patterns. The modes are kept, strongest first, until
    they hold 1 − ``tolerance`` of the power (a degenerate pair is not split), and scaled
    to the probe's total power.

    Parameters
    ----------
    probe:
        Complex tensor (ny, nx): the coherent probe on ``grid``, any normalisation.
    grid:
        The probe's real-space grid (shape (ny, nx), pixel [Å]).
    source_sigma_ang:
        σ of the demagnified source [Å] (FWHM = 2.355 σ); 0 returns the probe itself.
    tolerance:
        Fraction of the power the dropped modes may hold, in (0, 1).

    Returns
    -------
    modes:
        Complex tensor (M, ny, nx), the probe's dtype and device: ⟨P_i, P_j⟩ = 0 for i ≠ j,
        strongest first, Σ_m Σ_r |P_m|² = Σ_r |probe|².
    dropped:
        Fraction of the power in the modes left out (≤ ``tolerance``).

    Examples
    --------
    >>> p = build_probe(Grid((48, 48), 0.15), 300e3, 20.0)[0]
    >>> modes, dropped = source_modes(p, Grid((48, 48), 0.15), 0.1)
    >>> modes.shape[0], round(float((modes[0].abs() ** 2).sum()), 2)
    (6, 0.84)
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a ptyscope.physics.Grid, got {type(grid).__name__}")
    if probe.ndim != 2 or tuple(probe.shape) != grid.shape or not probe.is_complex():
        raise ValueError(
            f"probe must be a complex tensor of the grid's shape {grid.shape}, got "
            f"{probe.dtype} of shape {tuple(probe.shape)}"
        )
    if not math.isfinite(source_sigma_ang) or source_sigma_ang < 0:
        raise ValueError(f"source_sigma_ang must be finite and >= 0 Å, got {source_sigma_ang}")
    if not (math.isfinite(tolerance) and 0 < tolerance < 1):
        raise ValueError(f"tolerance must lie in (0, 1), got {tolerance}")
    if source_sigma_ang == 0:
        return probe[None].clone(), 0.0
    psi = torch.fft.fft2(probe.to(torch.complex128), norm="ortho")
    power = psi.abs() ** 2
    carried = power > 1e-12 * power.max()
    count = int(carried.sum())
    if count > _MAX_SOURCE_PIXELS:
        raise ValueError(
            f"probe carries power in {count} Fourier pixels; source_modes handles at most "
            f"{_MAX_SOURCE_PIXELS} (its coherence matrix grows as their square): use a "
            "smaller probe window or a coarser detector"
        )
    ky, kx = grid.frequencies(device=probe.device, dtype=torch.float64)
    k = torch.stack([ky.expand(grid.shape)[carried], kx.expand(grid.shape)[carried]], dim=1)
    values = psi[carried]
    distance2 = torch.cdist(k, k) ** 2
    coherence = values[:, None] * values.conj()[None, :]
    coherence = coherence * torch.exp(-2.0 * math.pi**2 * source_sigma_ang**2 * distance2)
    eigenvalues, eigenvectors = torch.linalg.eigh(coherence)
    eigenvalues = eigenvalues.flip(0).clamp_min(0.0)
    eigenvectors = eigenvectors.flip(1)
    total = float(eigenvalues.sum())
    cumulative = torch.cumsum(eigenvalues, 0) / total
    kept = int((cumulative < 1.0 - tolerance).sum()) + 1
    while kept < count and bool(eigenvalues[kept] > (1.0 - 1e-6) * eigenvalues[kept - 1]):
        kept += 1  # a degenerate partner (x and y of a symmetric probe) stays with its pair
    dropped = 1.0 - float(cumulative[kept - 1])
    spectra = torch.zeros((kept, *grid.shape), dtype=torch.complex128, device=probe.device)
    scale = torch.sqrt(eigenvalues[:kept] / cumulative[kept - 1])  # kept powers sum to total
    spectra[:, carried] = (eigenvectors[:, :kept] * scale).T
    modes = torch.fft.ifft2(spectra, norm="ortho")
    return modes.to(probe.dtype), max(dropped, 0.0)


def build_probe(
    grid: Grid,
    energy_ev: float,
    semiangle_mrad: float,
    aberrations: Mapping[str, Coefficient] | None = None,
    *,
    num_modes: int = 1,
    mode_powers: Sequence[float] | None = None,
    edge_width_inv_ang: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """Build a (possibly multi-mode) STEM probe in real space.

    ψ(k) = A(k)·exp(−iχ(k)), transformed to real space, centred on (ny//2, nx//2) and
    normalised to unit total intensity (DESIGN.md "Probe").

    Parameters
    ----------
    grid:
        Real-space grid of the probe window (shape (ny, nx), pixel [Å]).
    energy_ev:
        Beam energy [eV].
    semiangle_mrad:
        Convergence semiangle α_max [mrad].
    aberrations:
        Aberration coefficients by name (C_nm [Å], phi_nm [rad], or ``defocus`` [Å],
        positive = underfocus); see :mod:`ptyscope.physics.aberrations`.
    num_modes:
        Number of orthogonal probe modes (see :func:`orthogonal_modes`).
    mode_powers:
        Intensity fraction per mode (sums to 1); default: one dominant mode.
    edge_width_inv_ang:
        Width of the aperture's soft edge [Å⁻¹]; default one reciprocal pixel.
    device, dtype:
        Device and complex dtype of the result (complex64 by default).

    Returns
    -------
    torch.Tensor
        Complex tensor of shape (num_modes, ny, nx) with Σ_m Σ_r |ψ_m(r)|² = 1.

    Examples
    --------
    >>> from ptyscope.physics.grids import Grid
    >>> p = build_probe(Grid((64, 64), 0.2), 300e3, 20.0, {"defocus": 50.0})
    >>> tuple(p.shape), round(float((p.abs() ** 2).sum()), 5)
    ((1, 64, 64), 1.0)
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a ptyscope.physics.Grid, got {type(grid).__name__}")
    require_positive("semiangle_mrad", semiangle_mrad, "mrad")
    if not dtype.is_complex:
        raise ValueError(f"dtype must be a complex dtype, got {dtype}")
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    lam = wavelength_ang(energy_ev)
    cutoff = angle_mrad_to_inv_ang(semiangle_mrad, energy_ev)
    dk = min(grid.reciprocal_pixel_inv_ang)
    nyquist = min(grid.nyquist_inv_ang)
    width = dk if edge_width_inv_ang is None else edge_width_inv_ang
    if cutoff + width / 2 >= nyquist:
        raise ValueError(
            f"semiangle_mrad={semiangle_mrad} mrad ({cutoff:.4g} Å⁻¹) must lie inside the "
            f"grid's Nyquist frequency {nyquist:.4g} Å⁻¹; use a smaller pixel_size_ang"
        )
    if cutoff < 2 * dk:
        raise ValueError(
            f"semiangle_mrad={semiangle_mrad} mrad spans fewer than 2 reciprocal pixels "
            f"({dk:.4g} Å⁻¹ each); enlarge the grid"
        )
    ky, kx = grid.frequencies(device=device, dtype=real)
    amplitude = aperture(ky, kx, cutoff, width)
    chi = aberration_function(ky, kx, lam, aberrations or {})
    probe_k = torch.polar(amplitude, -chi).to(dtype)
    psi = probe_from_fourier(probe_k)
    _warn_if_wrapped(psi, grid)
    support = (amplitude > 0).to(real)
    return orthogonal_modes(psi, num_modes, mode_powers=mode_powers, support=support)


def _warn_if_wrapped(psi: torch.Tensor, grid: Grid, frame_px: int = 2) -> None:
    """Warn when the probe reaches the window's edge, where it wraps around (aliasing)."""
    intensity = psi.abs() ** 2
    inner = intensity[frame_px:-frame_px, frame_px:-frame_px].sum()
    edge_fraction = float(1 - inner / intensity.sum())
    if edge_fraction > 0.02:  # Airy tails of a focused probe stay well below this
        warnings.warn(
            f"the probe puts {edge_fraction:.1%} of its intensity within {frame_px} pixels "
            f"of the edge of its {grid.extent_ang[0]:.3g} × {grid.extent_ang[1]:.3g} Å window, "
            "so it wraps around; enlarge the window (smaller detector pixel) or reduce the "
            "defocus",
            UserWarning,
            stacklevel=3,
        )
