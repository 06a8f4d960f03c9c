"""Aberration function χ(k) in Krivanek notation, up to fifth order.

χ(k) = (2π/λ) Σ_{n,m} C_nm α^(n+1)/(n+1) · cos(m(φ − φ_nm)),   α = λ|k|, φ = atan2(k_y, k_x)

(Krivanek, Dellby & Lupini, Ultramicroscopy 78, 1 (1999); Kirkland 2020, Eq. 3.42.)
Magnitudes C_nm are in Å and angles φ_nm in radians. The order n runs 1..5 and the
multiplicity m takes the values 0..n+1 with n+m odd, giving 14 coefficients.

Sign convention: defocus Δf ≡ −C10, so a positive defocus is underfocus. A probe with
C10 < 0 comes to its focus a distance Δf = −C10 downstream of the entrance plane (see
:func:`ptyscope.physics.propagator.fresnel_propagator`, whose λ|k|² term equals the C10
term for Δz = C10).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch

from .grids import polar_frequencies

__all__ = [
    "ABERRATION_NAMES",
    "ALIASES",
    "aberration_function",
    "canonical_aberrations",
]

#: Valid (n, m) pairs in Krivanek notation, up to 5th order.
_ORDERS: tuple[tuple[int, int], ...] = tuple(
    (n, m) for n in range(1, 6) for m in range(n + 2) if (n + m) % 2 == 1
)
#: Canonical coefficient names: "C10", "C12", "phi12", ... (no angle for m = 0).
ABERRATION_NAMES: tuple[str, ...] = tuple(f"C{n}{m}" for n, m in _ORDERS) + tuple(
    f"phi{n}{m}" for n, m in _ORDERS if m > 0
)
#: Accepted aliases: name -> (canonical name, sign).
ALIASES: dict[str, tuple[str, float]] = {
    "defocus": ("C10", -1.0),  # Δf = −C10 [Å], positive = underfocus
    "Cs": ("C30", 1.0),  # spherical aberration [Å]
    "C5": ("C50", 1.0),  # fifth-order spherical aberration [Å]
}

Coefficient = float | torch.Tensor


def canonical_aberrations(aberrations: Mapping[str, Coefficient]) -> dict[str, Coefficient]:
    """Validate aberration names and resolve aliases.

    Parameters
    ----------
    aberrations:
        Mapping from names in :data:`ABERRATION_NAMES` or :data:`ALIASES` to values
        (magnitudes [Å], angles [rad]); values may be floats or real scalar tensors.

    Returns
    -------
    dict
        The same coefficients under canonical names (``defocus`` becomes ``-C10``).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or a coefficient given twice
        (e.g. both ``defocus`` and ``C10``).
    """
    out: dict[str, Coefficient] = {}
    for name, value in aberrations.items():
        if name in ALIASES:
            canonical, sign = ALIASES[name]
            value = -value if sign < 0 else value
        elif name in ABERRATION_NAMES:
            canonical = name
        else:
            valid = ", ".join((*ABERRATION_NAMES, *ALIASES))
            raise ValueError(f"aberrations: unknown coefficient {name!r}; valid names are {valid}")
        if canonical in out:
            raise ValueError(
                f"aberrations: {canonical} is given twice (directly and through an alias), "
                f"got {dict(aberrations)!r}"
            )
        if isinstance(value, torch.Tensor):
            if value.numel() != 1 or value.is_complex():
                raise ValueError(
                    f"aberrations[{name!r}] must be a real scalar, got a tensor of shape "
                    f"{tuple(value.shape)} and dtype {value.dtype}"
                )
            if not value.requires_grad and not bool(torch.isfinite(value)):
                raise ValueError(f"aberrations[{name!r}] must be finite, got {value.item()}")
        elif not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"aberrations[{name!r}] must be a number [Å or rad], got {value!r}")
        elif not math.isfinite(float(value)):
            raise ValueError(f"aberrations[{name!r}] must be finite, got {value!r}")
        out[canonical] = value
    return out


def aberration_function(
    ky: torch.Tensor,
    kx: torch.Tensor,
    wavelength_ang: float,
    aberrations: Mapping[str, Coefficient],
) -> torch.Tensor:
    """Aberration phase χ(k) [rad].

    Parameters
    ----------
    ky, kx:
        Real tensors of equal shape (e.g. (ny, nx)) of spatial frequencies [Å⁻¹].
    wavelength_ang:
        Electron wavelength λ [Å].
    aberrations:
        Coefficients by name (see :func:`canonical_aberrations`); missing ones are zero.
        Tensor-valued coefficients make χ differentiable with respect to them.

    Returns
    -------
    torch.Tensor
        χ with the shape and dtype of ``ky`` [rad].

    Examples
    --------
    >>> from ptyscope.physics.grids import spatial_frequencies
    >>> ky, kx = spatial_frequencies((4, 4), 0.5)
    >>> chi = aberration_function(ky, kx, 0.0197, {"defocus": 100.0})
    >>> bool(chi[0, 1] < 0)   # underfocus: χ = −πλΔf|k|² < 0
    True
    """
    coefficients = canonical_aberrations(aberrations)
    k, phi = polar_frequencies(ky, kx)
    alpha = wavelength_ang * k
    chi = torch.zeros_like(k)
    for n, m in _ORDERS:
        c = coefficients.get(f"C{n}{m}")
        if c is None:
            continue
        term = c * alpha ** (n + 1) / (n + 1)
        if m > 0:
            angle = coefficients.get(f"phi{n}{m}", 0.0)
            term = term * torch.cos(m * (phi - angle))
        chi = chi + term
    return (2.0 * math.pi / wavelength_ang) * chi
