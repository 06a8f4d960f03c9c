"""Scattering factors and projected potentials against closed forms and exact sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import k0, k1

from ptyscope.physics.grids import Grid
from ptyscope.physics.potential import (
    POTENTIAL_PREFACTOR_V_ANG2,
    available_elements,
    electron_scattering_factor,
    projected_potential,
    scattering_factor_parameters,
)

BOHR_ANG = 0.529177210903


def test_prefactor_is_h2_over_2pi_m0_e() -> None:
    h, m0, e = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19
    expected = h**2 / (2 * math.pi * m0 * e) * 1e20  # V·m² -> V·Å²
    prefactor = POTENTIAL_PREFACTOR_V_ANG2
    assert prefactor == pytest.approx(expected, rel=1e-9)
    assert prefactor == pytest.approx(47.878, abs=1e-3)  # Kirkland Eq. 5.9


def test_every_element_obeys_the_high_angle_constraint() -> None:
    # Lobato & Van Dyck 2014: g² f_e(g) -> Z / (2π² a₀) as g -> ∞, i.e. Σ a_i/b_i.
    elements = available_elements()
    assert len(elements) == 103
    assert elements[0] == "H"
    assert elements[-1] == "Lr"
    for z, symbol in enumerate(elements, start=1):
        a, b = scattering_factor_parameters(symbol)
        asymptote = sum(ai / bi for ai, bi in zip(a, b, strict=True))
        assert asymptote == pytest.approx(z / (2 * math.pi**2 * BOHR_ANG), rel=1e-6), symbol


def test_hydrogen_forward_scattering_is_the_bohr_radius() -> None:
    # Exact for hydrogen's 1s density: f_e(0) = Z<r²>/(3 a₀) = a₀.
    f0 = electron_scattering_factor("H", torch.zeros((), dtype=torch.float64))
    assert float(f0) == pytest.approx(BOHR_ANG, rel=2e-3)


def test_scattering_factor_decreases_with_angle_and_grows_with_z() -> None:
    g = torch.linspace(0, 4, 200, dtype=torch.float64)
    for symbol in ("O", "Ti", "Sr"):
        f = electron_scattering_factor(symbol, g)
        assert bool((f[1:] < f[:-1]).all())
    big = electron_scattering_factor("Sr", torch.tensor(2.0, dtype=torch.float64))
    small = electron_scattering_factor("O", torch.tensor(2.0, dtype=torch.float64))
    assert float(big) > 3 * float(small)


def test_unknown_symbol_is_named() -> None:
    with pytest.raises(ValueError, match=r"symbol.*'Xx'"):
        electron_scattering_factor("Xx", torch.zeros(3))


def _lobato_projected_real_space(symbol: str, r: np.ndarray) -> np.ndarray:
    # 2D Fourier transforms: (2+bq²)/(1+bq²)² = 1/(1+bq²) + 1/(1+bq²)², and
    # ∫d²q e^{2πiq·r}/(1+bq²) = (2π/b) K0(2πr/√b),
    # ∫d²q e^{2πiq·r}/(1+bq²)² = (2π² r / b^{3/2}) K1(2πr/√b).
    a, b = scattering_factor_parameters(symbol)
    total = np.zeros_like(r)
    for ai, bi in zip(a, b, strict=True):
        x = 2 * np.pi * r / np.sqrt(bi)
        total += ai * (2 * np.pi / bi * k0(x) + 2 * np.pi**2 * r / bi**1.5 * k1(x))
    return POTENTIAL_PREFACTOR_V_ANG2 * total


@pytest.mark.parametrize("symbol", ["O", "Ti", "Sr"])
def test_projected_potential_matches_the_closed_form(symbol: str) -> None:
    grid = Grid((400, 400), (0.04, 0.04))  # 16 Å cell: periodic images negligible
    centre = torch.tensor([[8.0, 8.0]], dtype=torch.float64)
    v = projected_potential(centre, [symbol], grid, dtype=torch.float64).numpy()
    y, x = np.meshgrid(np.arange(400) * 0.04, np.arange(400) * 0.04, indexing="ij")
    r = np.hypot(y - 8.0, x - 8.0)
    ring = (r > 0.3) & (r < 3.0)
    expected = _lobato_projected_real_space(symbol, r[ring])
    # The grid potential is band-limited at 12.5 Å⁻¹; away from the nucleus the rest of
    # f_e (∝ 1/g²) changes v_z by well under 1%.
    np.testing.assert_allclose(v[ring], expected, rtol=1e-2, atol=1e-3 * expected.max())


def test_integral_is_the_forward_scattering_factor() -> None:
    grid = Grid((96, 80), (0.07, 0.09))
    positions = torch.tensor([[1.0, 2.0], [3.3, 4.1], [5.0, 0.2]], dtype=torch.float64)
    symbols = ["Sr", "O", "O"]
    v = projected_potential(positions, symbols, grid, dtype=torch.float64)
    integral = float(v.sum()) * 0.07 * 0.09
    zero = torch.zeros((), dtype=torch.float64)
    expected = POTENTIAL_PREFACTOR_V_ANG2 * sum(
        float(electron_scattering_factor(s, zero)) for s in symbols
    )
    assert integral == pytest.approx(expected, rel=1e-9)


def test_atom_lands_at_its_y_x_pixel() -> None:
    grid = Grid((80, 120), (0.1, 0.1))
    v = projected_potential(torch.tensor([[1.0, 8.5]]), ["Ti"], grid)
    row, col = divmod(int(v.argmax()), 120)
    assert (row, col) == (10, 85)


def test_superposition_periodicity_and_precision() -> None:
    grid = Grid((64, 48), (0.11, 0.13))
    ey, ex = grid.extent_ang
    a = torch.tensor([[1.3, 2.2]], dtype=torch.float64)
    b = torch.tensor([[4.0, 0.7]], dtype=torch.float64)
    both = projected_potential(torch.cat((a, b)), ["O", "Sr"], grid, dtype=torch.float64)
    separate = projected_potential(a, ["O"], grid, dtype=torch.float64) + projected_potential(
        b, ["Sr"], grid, dtype=torch.float64
    )
    torch.testing.assert_close(both, separate, rtol=1e-12, atol=1e-9)
    # Whole periods far from the origin: same potential, also in float32.
    far = torch.cat((a, b)) + torch.tensor([[7 * ey, -11 * ex]], dtype=torch.float64)
    shifted = projected_potential(far, ["O", "Sr"], grid)
    torch.testing.assert_close(shifted, both.float(), rtol=1e-5, atol=1e-3)


def test_empty_specimen_is_vacuum_and_bad_input_is_named() -> None:
    grid = Grid((16, 16), (0.2, 0.2))
    v = projected_potential(torch.zeros((0, 2)), [], grid)
    assert v.shape == (16, 16)
    assert float(v.abs().max()) == 0.0
    with pytest.raises(ValueError, match="positions_yx_ang must have shape"):
        projected_potential(torch.zeros((3, 3)), ["O"] * 3, grid)
    with pytest.raises(ValueError, match="symbols must name one element per atom"):
        projected_potential(torch.zeros((2, 2)), ["O"], grid)
    with pytest.raises(ValueError, match="finite"):
        projected_potential(torch.tensor([[float("nan"), 0.0]]), ["O"], grid)
