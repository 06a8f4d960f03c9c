"""Multislice forward pass for a batch of probe positions, with mixed probe and object states.

For probe mode P_m, object state O_s with slices O_{s,0..L−1}, and propagator p
(DESIGN.md "Multislice"; Cowley & Moodie 1957; Sha et al. 2022, Eq. 3):

    ψ_0 = P_m(r − r_b)
    ψ_{j+1} = F⁻¹[p · F[ψ_j · O_{s,j}]]         (j = 0 .. L−2)
    exit    = ψ_{L−1} · O_{s,L−1}               (no propagation after the last slice)
    I_b(k)  = Σ_s w_s Σ_m |F[exit_{b,s,m}](k)|²  (mixed state: incoherent sum)

Positions are given in object pixels: ``positions_px[b] = (y, x)`` is where the probe's
centre (array index (ny//2, nx//2)) sits on the object grid. The integer part selects a
patch of the object; the fractional part shifts the probe by a Fourier phase ramp.

The far field uses the orthonormal FFT, so a unit-intensity probe in vacuum gives a pattern
that sums to 1; patterns are returned with zero frequency at the centre (``fftshift``).
"""

from __future__ import annotations

import torch

from . import fft_backend
from .multislice_autograd import (
    far_field_power,
    gather_windows,
    multislice_object_waves,
    multislice_waves,
)

__all__ = [
    "check_substeps",
    "detector_offset_ramp",
    "extract_patches",
    "far_field_intensity",
    "fourier_shift",
    "multislice_exit_waves",
    "multislice_forward",
    "split_positions",
]


def fourier_shift(images: torch.Tensor, shifts_px: torch.Tensor) -> torch.Tensor:
    """Shift images by (sub-)pixel amounts with a Fourier phase ramp (periodic boundaries).

    f(r) → f(r − s): F[f](k) · exp(−2πi k·s), k in cycles per pixel.

    Parameters
    ----------
    images:
        Complex tensor of shape (..., ny, nx).
    shifts_px:
        Real tensor of shape (B, 2) or (2,), ordered (y, x) [pixels]. A (B, 2) tensor
        shifts ``images`` (..., ny, nx) to (B, ..., ny, nx).

    Returns
    -------
    torch.Tensor
        Complex tensor: shape (B, ..., ny, nx) for (B, 2) shifts, else like ``images``.
    """
    if shifts_px.ndim not in (1, 2) or shifts_px.shape[-1] != 2:
        raise ValueError(
            f"shifts_px must have shape (2,) or (B, 2) ordered (y, x), got {tuple(shifts_px.shape)}"
        )
    ny, nx = images.shape[-2:]
    real = images.real.dtype
    shifts = shifts_px.to(dtype=real, device=images.device)
    ky = torch.fft.fftfreq(ny, device=images.device, dtype=real)
    kx = torch.fft.fftfreq(nx, device=images.device, dtype=real)
    batched = shifts.ndim == 2
    s = shifts if batched else shifts[None]
    extra = images.ndim - 2
    sy = s[:, 0].reshape(-1, *([1] * extra), 1, 1)
    sx = s[:, 1].reshape(-1, *([1] * extra), 1, 1)
    # The ramp carries the 1/N of the inverse transform (fft_backend's are unnormalised).
    ramp = torch.polar(
        torch.full((), 1.0 / (ny * nx), dtype=real, device=images.device),
        -2.0 * torch.pi * (ky[:, None] * sy + kx[None, :] * sx),
    )
    shifted = fft_backend.ifft2(fft_backend.fft2(images) * ramp)
    return shifted if batched else shifted[0]


def split_positions(
    positions_px: torch.Tensor, window_shape: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split probe-centre positions into patch corners and sub-pixel remainders.

    Parameters
    ----------
    positions_px:
        Real tensor of shape (B, 2), (y, x) of the probe centre on the object grid [px].
    window_shape:
        Probe window (ny, nx) [px].

    Returns
    -------
    (corners, fractions):
        ``corners``: int64 tensor (B, 2), top-left object pixel of each patch;
        ``fractions``: real tensor (B, 2) in [−0.5, 0.5], the sub-pixel shift of the probe.
    """
    if positions_px.ndim != 2 or positions_px.shape[-1] != 2:
        raise ValueError(
            f"positions_px must have shape (B, 2) ordered (y, x), got {tuple(positions_px.shape)}"
        )
    if positions_px.shape[0] == 0:
        raise ValueError("positions_px must hold at least one position, got shape (0, 2)")
    if not bool(torch.isfinite(positions_px.detach()).all()):
        raise ValueError("positions_px must be finite, got NaN or Inf entries")
    rounded = torch.round(positions_px.detach())
    centre = torch.tensor([window_shape[0] // 2, window_shape[1] // 2], device=positions_px.device)
    corners = rounded.to(torch.int64) - centre
    return corners, positions_px - rounded


def extract_patches(
    obj: torch.Tensor,
    corners: torch.Tensor,
    window_shape: tuple[int, int],
    *,
    periodic: bool = False,
) -> torch.Tensor:
    """Cut windows out of an object at integer corners (gather, differentiable).

    The backward pass scatter-adds the patch gradients into the object (autograd of
    advanced indexing), so overlapping patches accumulate correctly.

    Parameters
    ----------
    obj:
        Tensor of shape (..., Ny, Nx), e.g. (states, slices, Ny, Nx).
    corners:
        int64 tensor of shape (B, 2): top-left (y, x) of each window [px].
    window_shape:
        (ny, nx) [px].
    periodic:
        Treat the object as one period of a periodic specimen: indices wrap around, so
        windows may start anywhere and may be larger than the object (simulation of
        crystals in a periodic supercell).

    Returns
    -------
    torch.Tensor
        Tensor of shape (B, ..., ny, nx).

    Raises
    ------
    ValueError
        If a window extends beyond the object (``periodic=False``).
    """
    ny, nx = window_shape
    big_y, big_x = obj.shape[-2:]
    corners = corners.to(obj.device)
    if not periodic:
        _check_inside(corners, window_shape, (big_y, big_x))
    lead = obj.shape[:-2]
    flat = obj.reshape(-1, 1, big_y, big_x)  # (..., Ny, Nx) as (S·L, 1, Ny, Nx)
    windows = gather_windows(flat, corners, window_shape, periodic)  # (B, S·L, 1, ny, nx)
    return windows.reshape(corners.shape[0], *lead, ny, nx)


def _check_inside(corners: torch.Tensor, window: tuple[int, int], big: tuple[int, int]) -> None:
    (ny, nx), (big_y, big_x) = window, big
    low = corners.min(dim=0).values
    high = corners.max(dim=0).values
    if low[0] < 0 or low[1] < 0 or high[0] + ny > big_y or high[1] + nx > big_x:
        raise ValueError(
            f"probe windows of shape ({ny}, {nx}) at corners from ({int(low[0])}, "
            f"{int(low[1])}) to ({int(high[0])}, {int(high[1])}) must lie inside the "
            f"object of shape ({big_y}, {big_x}); enlarge the object or move the scan "
            "positions"
        )


def check_substeps(substeps: int) -> None:
    """Require a whole number >= 1 of planes per slice.

    Sub-slicing (``substeps`` n > 1) spreads each slice's transmission O over n planes of
    O^(1/n), Δz/n apart. With one plane per slice a tilted propagator only shifts whole
    slices against each other, which a shift of the slices reproduces exactly, so the
    loss cannot tell the tilt from a re-registration of the slices; with n > 1 the columns
    inside each slice are tilted too, as in the specimen, and the tilt becomes part of what
    the data constrain (Sha et al. 2022 use one plane per slice; the sub-planes are
    ptyscope's).
    """
    if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"substeps must be an integer >= 1, got {substeps!r}")


def _check_propagator(propagator: torch.Tensor, window: tuple[int, int], batch: int) -> None:
    if (
        propagator.ndim not in (2, 3)
        or tuple(propagator.shape[-2:]) != window
        or (propagator.ndim == 3 and propagator.shape[0] != batch)
    ):
        raise ValueError(
            f"propagator must have shape {window} or ({batch}, *{window}) to match the "
            f"probe window and batch, got {tuple(propagator.shape)}"
        )


def multislice_exit_waves(
    probe: torch.Tensor,
    object_patches: torch.Tensor,
    propagator: torch.Tensor,
    *,
    substeps: int = 1,
) -> torch.Tensor:
    """Exit waves of every probe mode through every object state.

    Parameters
    ----------
    probe:
        Complex tensor (B, M, ny, nx) (already shifted per position) or (M, ny, nx).
    object_patches:
        Complex tensor (B, S, L, ny, nx): S object states of L slices each; B may be 1
        for one object seen by a batch of (already shifted) probes.
    propagator:
        Complex tensor (ny, nx) for a global propagator, or (B, ny, nx) for one per position
        (e.g. a tilt map); see :func:`ptyscope.physics.propagator.fresnel_propagator`.
        With ``substeps`` > 1 it is the propagator of one sub-step, Δz/substeps.
    substeps:
        Planes per slice: each slice O acts as ``substeps`` planes of O^(1/substeps) with
        the propagator between them (see :func:`check_substeps`).

    Returns
    -------
    torch.Tensor
        Complex tensor (B, S, M, ny, nx).
    """
    check_substeps(substeps)
    if object_patches.ndim != 5:
        raise ValueError(
            "object_patches must have shape (B, states, slices, ny, nx), "
            f"got {tuple(object_patches.shape)}"
        )
    batch = object_patches.shape[0]
    if probe.ndim == 3:
        probe = probe.unsqueeze(0)
    if probe.ndim != 4 or (batch != 1 and probe.shape[0] not in (1, batch)):
        raise ValueError(
            f"probe must have shape (M, ny, nx) or (B={batch}, M, ny, nx), got {tuple(probe.shape)}"
        )
    batch = max(batch, probe.shape[0])  # one object patch may serve a batch of probes
    window = (int(object_patches.shape[-2]), int(object_patches.shape[-1]))
    _check_propagator(propagator, window, batch)
    if tuple(probe.shape[-2:]) != window:
        raise ValueError(
            f"probe window {tuple(probe.shape[-2:])} must equal the object patch window {window}"
        )
    if propagator.ndim == 3:
        propagator = propagator[:, None, None]  # (B, 1, 1, ny, nx)
    # The loop ψ_{j+1} = F⁻¹[p·F[ψ_j·O_j]] with a hand-written backward (same gradients
    # as autograd, several times faster): see multislice_autograd.
    return multislice_waves(probe, object_patches, propagator, substeps)


def far_field_intensity(
    exit_waves: torch.Tensor,
    state_weights: torch.Tensor | None = None,
    exit_ramp: torch.Tensor | None = None,
) -> torch.Tensor:
    """Diffraction intensity summed incoherently over probe modes and object states.

    Parameters
    ----------
    exit_waves:
        Complex tensor (B, S, M, ny, nx).
    state_weights:
        Real tensor (S,) of non-negative state weights w_s; default 1/S each.
    exit_ramp:
        Complex (ny, nx) phase ramp multiplied into the exit waves before the FFT
        (:func:`detector_offset_ramp`): puts the patterns' zero frequency a fraction of a
        pixel off the centre pixel, where the data's optical axis lies.

    Returns
    -------
    torch.Tensor
        Real tensor (B, ny, nx), zero frequency at the centre, I = Σ_s w_s Σ_m |F[exit]|²
        with the orthonormal FFT.
    """
    if exit_ramp is not None:
        exit_waves = exit_waves * exit_ramp
    per_state = far_field_power(exit_waves)  # (B, S, ny, nx)
    num_states = exit_waves.shape[1]
    if state_weights is None:
        intensity = per_state.mean(dim=1)
    else:
        state_weights = torch.as_tensor(state_weights, device=per_state.device)
        if state_weights.shape != (num_states,):
            raise ValueError(
                f"state_weights must have shape (states,)=({num_states},), "
                f"got {tuple(state_weights.shape)}"
            )
        if not state_weights.requires_grad and not bool((state_weights >= 0).all()):
            raise ValueError(
                f"state_weights must be >= 0, got {state_weights.detach().cpu().tolist()}"
            )
        intensity = torch.einsum("bsyx,s->byx", per_state, state_weights.to(per_state.dtype))
    centred: torch.Tensor = torch.fft.fftshift(intensity, dim=(-2, -1))
    return centred


def multislice_forward(
    probe: torch.Tensor,
    obj: torch.Tensor,
    positions_px: torch.Tensor,
    propagator: torch.Tensor,
    state_weights: torch.Tensor | None = None,
    *,
    periodic: bool = False,
    substeps: int = 1,
    exit_ramp: torch.Tensor | None = None,
) -> torch.Tensor:
    """Diffraction patterns of a batch of probe positions (full forward model).

    Parameters
    ----------
    probe:
        Complex tensor (M, ny, nx): probe modes centred on (ny//2, nx//2).
    obj:
        Complex tensor (S, L, Ny, Nx): S object states of L slices on the object grid.
    positions_px:
        Real tensor (B, 2): (y, x) of the probe centre on the object grid [px].
    propagator:
        Complex tensor (ny, nx), or (B, ny, nx) for one propagator per position.
    state_weights:
        Real tensor (S,), default 1/S each.
    periodic:
        The object is one period of a periodic specimen (see :func:`extract_patches`).
    substeps:
        Planes per slice, as in :func:`multislice_exit_waves` (``propagator`` is then the
        propagator of one sub-step).
    exit_ramp:
        Optional detector-offset ramp, as in :func:`far_field_intensity`.

    Returns
    -------
    torch.Tensor
        Real tensor (B, ny, nx): far-field intensities, zero frequency at the centre.
    """
    check_substeps(substeps)
    if probe.ndim != 3:
        raise ValueError(f"probe must have shape (modes, ny, nx), got {tuple(probe.shape)}")
    if obj.ndim != 4:
        raise ValueError(f"obj must have shape (states, slices, Ny, Nx), got {tuple(obj.shape)}")
    window = (probe.shape[-2], probe.shape[-1])
    corners, fractions = split_positions(positions_px, window)
    shifted = fourier_shift(probe, fractions)  # (B, M, ny, nx)
    if not periodic:
        _check_inside(corners, window, (obj.shape[-2], obj.shape[-1]))
    _check_propagator(propagator, window, int(corners.shape[0]))
    if propagator.ndim == 3:
        propagator = propagator[:, None, None]  # (B, 1, 1, ny, nx)
    # Gathers the windows and scatters their gradients one slice at a time.
    exit_waves = multislice_object_waves(shifted, obj, corners, propagator, periodic, substeps)
    return far_field_intensity(exit_waves, state_weights, exit_ramp)


def detector_offset_ramp(
    window: tuple[int, int],
    offset_px: tuple[float, float],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Exit-wave phase ramp that moves the far field by ``offset_px`` detector pixels.

    F[ψ · exp(2πi (δy·y/ny + δx·x/nx))](k) = F[ψ](k − δ): patterns computed with it have
    their zero frequency at (ny//2 + δy, nx//2 + δx). Binning a pattern whose axis lies on
    a pixel puts the axis between pixels (by 1/3 px for a binning of 3), and a model that
    ignored that would see it as a beam tilt of δ·dk·λ (0.7 mrad at 300 kV, 0.11 Å⁻¹
    pixels), which a fitted specimen tilt partly absorbs. Exact for waves that vanish at
    the window's edge; y and x are counted from the window's centre.

    Returns a complex64 tensor (ny, nx).
    """
    ny, nx = window
    dy, dx = (float(v) for v in offset_px)
    y = (torch.arange(ny, dtype=torch.float64, device=device) - ny // 2) / ny
    x = (torch.arange(nx, dtype=torch.float64, device=device) - nx // 2) / nx
    phase = 2.0 * torch.pi * (dy * y[:, None] + dx * x[None, :])
    return torch.polar(torch.ones_like(phase), phase).to(torch.complex64)
