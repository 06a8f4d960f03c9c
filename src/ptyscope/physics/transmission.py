"""Transmission function of a slice of projected potential (phase-grating approximation)."""

from __future__ import annotations

import torch

from .constants import interaction_constant

__all__ = ["transmission_function"]


def transmission_function(
    projected_potential_vang: torch.Tensor,
    energy_ev: float,
    absorption_vang: torch.Tensor | None = None,
) -> torch.Tensor:
    """Transmission function O = exp(iσ(v_z + i v_abs)) of potential slices.

    (Kirkland 2020, Eq. 6.61: t(x) = exp[iσ v_z(x)].)

    Parameters
    ----------
    projected_potential_vang:
        Real tensor of shape (..., ny, nx): projected potential v_z of each slice [V·Å].
    energy_ev:
        Beam energy [eV].
    absorption_vang:
        Optional real tensor broadcastable to the potential: an absorptive (imaginary)
        projected potential [V·Å]; the amplitude becomes exp(−σ v_abs).

    Returns
    -------
    torch.Tensor
        Complex tensor of the same shape (complex64 for float32 input).
    """
    for name, value in (
        ("projected_potential_vang", projected_potential_vang),
        ("absorption_vang", absorption_vang),
    ):
        if value is not None and (value.is_complex() or not value.is_floating_point()):
            raise ValueError(f"{name} must be a real floating tensor [V·Å], got {value.dtype}")
    sigma = interaction_constant(energy_ev)
    if absorption_vang is not None:
        common = torch.promote_types(projected_potential_vang.dtype, absorption_vang.dtype)
        projected_potential_vang = projected_potential_vang.to(common)
        absorption_vang = absorption_vang.to(common)
    phase = sigma * projected_potential_vang
    amplitude = (
        torch.ones_like(phase) if absorption_vang is None else torch.exp(-sigma * absorption_vang)
    )
    return torch.polar(amplitude, phase)
