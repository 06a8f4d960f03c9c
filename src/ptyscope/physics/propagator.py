"""The tilted Fresnel propagator (Sha, Cui & Yu, Sci. Adv. 8, eabn2275 (2022), Eq. 3).

    p(k; Δz, θ) = exp[−iπΔz(λ|k|² − 2 k_x tanθ_x − 2 k_y tanθ_y)]

applied as ψ_{j+1} = F⁻¹[p · F[ψ_j · O_j]] with the numpy/torch FFT sign convention.

Meaning of θ (pinned by ``tests/physics/test_propagator.py``): the slices of the object are
projected along the crystal's zone axis, which is tilted by θ = (θ_y, θ_x) from the beam.
In the beam's frame a column that enters the specimen at (y₀, x₀) lies at
(y₀ + z·tanθ_y, x₀ + z·tanθ_x) at depth z. Equivalently, each application of p moves the
wave by −Δz·tanθ relative to the object arrays, so a feature of slice j is seen displaced
by +z_j·tanθ (z_j = jΔz) relative to the same feature in slice 0.

abTEM's ``tilt`` argument uses the opposite sign and calls array axis 0 "x"; the mapping
between the two lives in the abTEM adapter only.

Tilt vectors are ordered (θ_y, θ_x) like every other vector in ptyscope and are in mrad.
"""

from __future__ import annotations

import math

import torch

from ptyscope._validation import require_finite, require_positive

__all__ = ["fresnel_propagator", "propagate"]


def fresnel_propagator(
    ky: torch.Tensor,
    kx: torch.Tensor,
    wavelength_ang: float,
    slice_thickness_ang: float | torch.Tensor,
    tilt_mrad: torch.Tensor | tuple[float, float] = (0.0, 0.0),
) -> torch.Tensor:
    """Tilted Fresnel propagator p(k; Δz, θ) (Sha et al. 2022, Eq. 3).

    Parameters
    ----------
    ky, kx:
        Real tensors of shape (ny, nx): spatial frequencies [Å⁻¹] in unshifted FFT order.
    wavelength_ang:
        Electron wavelength λ [Å].
    slice_thickness_ang:
        Propagation distance Δz [Å]: a float, or a real tensor of shape ``batch``
        (e.g. ``()``), differentiable.
    tilt_mrad:
        Specimen tilt (θ_y, θ_x) [mrad]: a pair, or a real tensor of shape ``batch + (2,)``
        (e.g. (2,) for a global tilt or (B, 2) for one tilt per scan position),
        differentiable.

    Returns
    -------
    torch.Tensor
        Complex tensor of shape ``broadcast(batch of Δz, batch of θ) + (ny, nx)``, complex64
        for float32 frequencies and complex128 for float64.

    Examples
    --------
    >>> from ptyscope.physics.grids import spatial_frequencies
    >>> ky, kx = spatial_frequencies((8, 8), 0.1)
    >>> p = fresnel_propagator(ky, kx, 0.0197, 10.0, (0.0, 5.0))
    >>> tuple(p.shape), bool(torch.allclose(p.abs(), torch.ones(8, 8)))
    ((8, 8), True)
    """
    require_positive("wavelength_ang", wavelength_ang, "Å")
    if wavelength_ang > 1.0:
        raise ValueError(
            f"wavelength_ang must be an electron wavelength in Å (< 1 Å for beams above "
            f"150 eV), got {wavelength_ang}; did you pass the energy?"
        )
    real = ky.dtype
    dz = torch.as_tensor(slice_thickness_ang, dtype=real, device=ky.device)
    if isinstance(tilt_mrad, tuple | list) and any(isinstance(t, torch.Tensor) for t in tilt_mrad):
        tilt = torch.stack([torch.as_tensor(t, dtype=real, device=ky.device) for t in tilt_mrad])
        tilt = tilt.movedim(0, -1)  # a (θ_y, θ_x) pair of tensors keeps its graph
    else:
        tilt = torch.as_tensor(tilt_mrad, dtype=real, device=ky.device)
    if tilt.ndim == 0 or tilt.shape[-1] != 2:
        raise ValueError(
            f"tilt_mrad must have shape (..., 2) ordered (theta_y, theta_x), "
            f"got {tuple(tilt.shape)}"
        )
    if not dz.requires_grad and not tilt.requires_grad:
        # Parameters being fitted are checked by the engine's numerical guards instead, so
        # that the hot path of a reconstruction does not synchronise with the device.
        require_finite("slice_thickness_ang", dz)
        require_finite("tilt_mrad", tilt)
        if bool((tilt.abs() >= 1000 * math.pi / 2).any()):
            raise ValueError(
                f"tilt_mrad must lie within ±{1000 * math.pi / 2:.1f} mrad (±90°), "
                f"got max |θ| = {float(tilt.abs().max()):.4g} mrad"
            )
    tan_y = torch.tan(tilt[..., 0] * 1e-3)[..., None, None]
    tan_x = torch.tan(tilt[..., 1] * 1e-3)[..., None, None]
    dz = dz[..., None, None]
    phase = -math.pi * dz * (wavelength_ang * (ky * ky + kx * kx) - 2.0 * (kx * tan_x + ky * tan_y))
    return torch.polar(torch.ones_like(phase), phase)


def propagate(wave: torch.Tensor, propagator: torch.Tensor) -> torch.Tensor:
    """Apply a propagator to a wave: F⁻¹[p · F[ψ]].

    Parameters
    ----------
    wave:
        Complex tensor of shape (..., ny, nx).
    propagator:
        Complex tensor broadcastable to ``wave`` (typically (ny, nx) or (B, 1, ..., ny, nx)).

    Returns
    -------
    torch.Tensor
        Complex tensor of the broadcast shape.
    """
    out: torch.Tensor = torch.fft.ifft2(torch.fft.fft2(wave) * propagator)
    return out
