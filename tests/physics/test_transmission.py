"""Transmission function: values, dtypes, and its sign relative to the propagator."""

from __future__ import annotations

import pytest
import torch

from ptyscope.physics import (
    Grid,
    fresnel_propagator,
    interaction_constant,
    propagate,
    transmission_function,
    wavelength_ang,
)


def test_phase_and_absorption_values() -> None:
    v = torch.tensor([[0.0, 10.0], [100.0, -5.0]], dtype=torch.float64)
    t = transmission_function(v, 200e3, absorption_vang=torch.full_like(v, 2.0))
    sigma = interaction_constant(200e3)
    torch.testing.assert_close(torch.angle(t), sigma * v)
    torch.testing.assert_close(
        t.abs(), torch.full_like(v, float(torch.exp(torch.tensor(-2 * sigma))))
    )
    assert transmission_function(v.float(), 200e3).dtype == torch.complex64
    mixed = transmission_function(v, 200e3, absorption_vang=v.float())  # promoted, no error
    assert mixed.dtype == torch.complex128
    with pytest.raises(ValueError, match="projected_potential_vang must be a real floating"):
        transmission_function(v.to(torch.complex128), 200e3)


def test_positive_potential_focuses_the_beam() -> None:
    """An atom's positive potential is a converging lens for electrons: a plane wave behind a
    Gaussian potential bump brightens on axis. This pins the sign of σV relative to the
    propagator's λ|k|² term (and so of the defocus convention)."""
    grid = Grid((96, 96), (0.1, 0.1))
    y, x = grid.coordinates(dtype=torch.float64)
    bump = 30.0 * torch.exp(-((y - 4.8) ** 2 + (x - 4.8) ** 2) / (2 * 0.4**2))  # V·Å
    wave = transmission_function(bump, 300e3)
    ky, kx = grid.frequencies(dtype=torch.float64)
    after = propagate(wave, fresnel_propagator(ky, kx, wavelength_ang(300e3), 20.0))
    assert float(after[48, 48].abs() ** 2) > 1.01
    before = propagate(wave, fresnel_propagator(ky, kx, wavelength_ang(300e3), -20.0))
    assert float(before[48, 48].abs() ** 2) < 0.99  # and diverges when propagated backwards
