"""Wavelength and interaction constant against the relativistic formulas in SI units."""

from __future__ import annotations

import math

import pytest
import torch

from ptyscope.physics import interaction_constant, wavelength_ang

# CODATA 2018 SI values, written independently of ptyscope.physics.constants.
H = 6.62607015e-34  # J s
C = 299792458.0  # m/s
E = 1.602176634e-19  # C
M0 = 9.1093837015e-31  # kg


def si_wavelength_ang(voltage: float) -> float:
    """λ = h / sqrt(2 m0 e V (1 + eV / (2 m0 c²))) in Å."""
    p = math.sqrt(2 * M0 * E * voltage * (1 + E * voltage / (2 * M0 * C**2)))
    return H / p * 1e10


def si_sigma(voltage: float) -> float:
    """σ = 2π m e λ / h² with the relativistic mass m = γ m0, in rad/(V·Å)."""
    gamma = 1 + E * voltage / (M0 * C**2)
    lam_m = si_wavelength_ang(voltage) * 1e-10
    return 2 * math.pi * gamma * M0 * E * lam_m / H**2 * 1e-10


@pytest.mark.parametrize(
    ("kv", "published"),
    [(60, 0.048661), (80, 0.041757), (200, 0.025079), (300, 0.019687)],
)
def test_wavelength_matches_relativistic_formula(kv: int, published: float) -> None:
    lam = wavelength_ang(kv * 1e3)
    assert abs(lam - si_wavelength_ang(kv * 1e3)) < 1e-5
    assert abs(lam - published) < 1e-5  # DESIGN.md / Kirkland table values


def test_wavelength_accepts_tensors() -> None:
    energies = torch.tensor([60e3, 300e3], dtype=torch.float64)
    lam = wavelength_ang(energies)
    assert lam.shape == (2,)
    assert abs(float(lam[1]) - 0.019687) < 1e-5


@pytest.mark.parametrize(
    ("kv", "published"), [(100, 9.2448e-4), (200, 7.2884e-4), (300, 6.5249e-4)]
)
def test_interaction_constant(kv: int, published: float) -> None:
    sigma = interaction_constant(kv * 1e3)
    assert sigma == pytest.approx(si_sigma(kv * 1e3), rel=1e-6)
    assert sigma == pytest.approx(published, rel=2e-4)  # Kirkland 2020, Table 5.1 precision


@pytest.mark.parametrize("bad", [0.0, -300e3, float("nan"), float("inf")])
def test_bad_energy_is_a_clear_error(bad: float) -> None:
    with pytest.raises(ValueError, match="energy_ev must be"):
        wavelength_ang(bad)
