"""Aberration function against textbook closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from ptyscope.physics import aberration_function, canonical_aberrations, spatial_frequencies

LAM = 0.019687  # Å, 300 kV


@pytest.fixture
def k() -> tuple[torch.Tensor, torch.Tensor]:
    return spatial_frequencies((32, 32), 0.1, dtype=torch.float64)


def test_defocus_and_spherical_aberration_closed_form(k: tuple[torch.Tensor, torch.Tensor]) -> None:
    ky, kx = k
    k2 = ky**2 + kx**2
    chi = aberration_function(ky, kx, LAM, {"defocus": 120.0, "Cs": 1.2e7})
    # χ = −πλΔf k² + (π/2) Cs λ³ k⁴   (Scherzer form; Δf = −C10 > 0 is underfocus)
    expected = -math.pi * LAM * 120.0 * k2 + 0.5 * math.pi * 1.2e7 * LAM**3 * k2**2
    torch.testing.assert_close(chi, expected, rtol=1e-12, atol=1e-12)


def test_twofold_astigmatism_orientation(k: tuple[torch.Tensor, torch.Tensor]) -> None:
    ky, kx = k
    phi12 = math.radians(30.0)
    chi = aberration_function(ky, kx, LAM, {"C12": 50.0, "phi12": phi12})
    k2 = ky**2 + kx**2
    phi = torch.atan2(ky, kx)
    expected = math.pi * LAM * 50.0 * k2 * torch.cos(2 * (phi - phi12))
    torch.testing.assert_close(chi, expected, rtol=1e-12, atol=1e-12)


def test_all_fourteen_coefficients_scale_with_order(k: tuple[torch.Tensor, torch.Tensor]) -> None:
    ky, kx = k
    assert canonical_aberrations({}) == {}
    count = 0
    for n in range(1, 6):
        for m in range(n + 2):
            if (n + m) % 2 == 0:
                continue
            chi = aberration_function(ky, kx, LAM, {f"C{n}{m}": 1.0})
            # Along φ = 0 (the +kx axis) the term is (2π/λ)(λk)^(n+1)/(n+1).
            kk = float(kx[0, 3])
            expected = 2 * math.pi / LAM * (LAM * kk) ** (n + 1) / (n + 1)
            assert float(chi[0, 3]) == pytest.approx(expected, rel=1e-12)
            count += 1
    assert count == 14


def test_unknown_or_duplicate_names_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown coefficient 'C11'.*C10"):
        canonical_aberrations({"C11": 1.0})
    with pytest.raises(ValueError, match="given twice"):
        canonical_aberrations({"C10": 1.0, "defocus": 2.0})


def test_tensor_coefficients_are_differentiable(k: tuple[torch.Tensor, torch.Tensor]) -> None:
    ky, kx = k
    c10 = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    chi = aberration_function(ky, kx, LAM, {"C10": c10})
    chi.sum().backward()
    assert c10.grad is not None
    assert float(c10.grad) == pytest.approx(float((math.pi * LAM * (ky**2 + kx**2)).sum()))


def test_every_term_with_angle_matches_the_krivanek_form(
    k: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Each C_nm with a non-zero φ_nm, everywhere in k (not only along φ = 0)."""
    ky, kx = k
    kk = torch.sqrt(ky**2 + kx**2)
    phi = torch.atan2(ky, kx)
    for n in range(1, 6):
        for m in range(n + 2):
            if (n + m) % 2 == 0:
                continue
            coefficients = {f"C{n}{m}": 3.0}
            angle = 0.4 + 0.1 * n + 0.05 * m
            if m > 0:
                coefficients[f"phi{n}{m}"] = angle
            chi = aberration_function(ky, kx, LAM, coefficients)
            expected = (
                2
                * math.pi
                / LAM
                * 3.0
                * (LAM * kk) ** (n + 1)
                / (n + 1)
                * torch.cos(m * (phi - angle))
            )
            torch.testing.assert_close(chi, expected, rtol=1e-10, atol=1e-14)


def test_bad_coefficient_values_are_clear_errors() -> None:
    with pytest.raises(TypeError, match=r"aberrations\['C10'\] must be a number"):
        canonical_aberrations({"C10": None})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"aberrations\['Cs'\] must be finite"):
        canonical_aberrations({"Cs": torch.tensor(float("nan"))})
