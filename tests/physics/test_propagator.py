"""Tilted Fresnel propagator: algebra, gradients and the pinned tilt convention."""

from __future__ import annotations

import math

import pytest
import torch

from ptyscope.physics import (
    Grid,
    fresnel_propagator,
    multislice_exit_waves,
    propagate,
    wavelength_ang,
)

LAM = wavelength_ang(300e3)
F64 = torch.float64


def _k(shape: tuple[int, int] = (48, 40), pixel: tuple[float, float] = (0.1, 0.13)):
    return Grid(shape, pixel).frequencies(dtype=F64)


def _random_wave(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.complex128, generator=generator)


def test_unitary(generator: torch.Generator) -> None:
    ky, kx = _k()
    p = fresnel_propagator(ky, kx, LAM, 37.0, (4.0, -9.0))
    torch.testing.assert_close(p.abs(), torch.ones_like(ky), rtol=0, atol=1e-14)
    psi = _random_wave(ky.shape, generator)
    out = propagate(psi, p)
    assert float((out.abs() ** 2).sum()) == pytest.approx(float((psi.abs() ** 2).sum()), rel=1e-12)


@pytest.mark.parametrize("tilt", [(0.0, 0.0), (3.0, -12.0)])
def test_composition(tilt: tuple[float, float], generator: torch.Generator) -> None:
    ky, kx = _k()
    p1 = fresnel_propagator(ky, kx, LAM, 12.5, tilt)
    p2 = fresnel_propagator(ky, kx, LAM, -4.0, tilt)
    p12 = fresnel_propagator(ky, kx, LAM, 8.5, tilt)
    torch.testing.assert_close(p1 * p2, p12, rtol=0, atol=1e-12)
    psi = _random_wave(ky.shape, generator)
    torch.testing.assert_close(propagate(propagate(psi, p1), p2), propagate(psi, p12))


def test_zero_thickness_is_identity(generator: torch.Generator) -> None:
    ky, kx = _k()
    p = fresnel_propagator(ky, kx, LAM, 0.0, (10.0, 10.0))
    torch.testing.assert_close(p, torch.ones_like(p), rtol=0, atol=0)
    psi = _random_wave(ky.shape, generator)
    torch.testing.assert_close(propagate(psi, p), psi)


def test_batched_tilts_and_thicknesses_broadcast() -> None:
    ky, kx = _k()
    tilts = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-5.0, 3.0]], dtype=F64)
    batch = fresnel_propagator(ky, kx, LAM, 20.0, tilts)
    assert batch.shape == (3, *ky.shape)
    for b in range(3):
        single = fresnel_propagator(ky, kx, LAM, 20.0, tilts[b])
        torch.testing.assert_close(batch[b], single)
    with pytest.raises(ValueError, match=r"tilt_mrad must have shape \(\.\.\., 2\)"):
        fresnel_propagator(ky, kx, LAM, 20.0, torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="slice_thickness_ang must be finite"):
        fresnel_propagator(ky, kx, LAM, float("nan"))


def test_gradients_match_finite_differences(generator: torch.Generator) -> None:
    ky, kx = _k((16, 12), (0.2, 0.25))
    psi = _random_wave(ky.shape, generator)
    dz = torch.tensor(15.0, dtype=F64, requires_grad=True)
    tilt = torch.tensor([6.0, -4.0], dtype=F64, requires_grad=True)

    def wave_out(dz: torch.Tensor, tilt: torch.Tensor) -> torch.Tensor:
        return propagate(psi, fresnel_propagator(ky, kx, LAM, dz, tilt))

    assert torch.autograd.gradcheck(wave_out, (dz, tilt), eps=1e-6, atol=1e-7, rtol=1e-5)

    # A scalar loss of the kind a reconstruction uses, checked against central differences.
    target = _random_wave(ky.shape, generator).abs()

    def loss(dz: torch.Tensor, tilt: torch.Tensor) -> torch.Tensor:
        return ((wave_out(dz, tilt).abs() - target) ** 2).sum()

    value = loss(dz, tilt)
    g_dz, g_tilt = torch.autograd.grad(value, (dz, tilt))
    h = 1e-4
    with torch.no_grad():
        fd_dz = (loss(dz + h, tilt) - loss(dz - h, tilt)) / (2 * h)
        e = torch.tensor([0.0, 1.0], dtype=F64) * h
        fd_tx = (loss(dz, tilt + e) - loss(dz, tilt - e)) / (2 * h)
    assert float(g_dz) == pytest.approx(float(fd_dz), rel=1e-6)
    assert float(g_tilt[1]) == pytest.approx(float(fd_tx), rel=1e-6)
    assert abs(float(g_dz)) > 0 and abs(float(g_tilt[1])) > 0


def _circular_centroid(intensity: torch.Tensor) -> tuple[float, float]:
    """Centroid (y, x) [px] on a periodic grid: exact for a distribution that is symmetric
    about its centre, however far it spreads or wraps."""
    ny, nx = intensity.shape
    y = torch.arange(ny, dtype=F64)[:, None]
    x = torch.arange(nx, dtype=F64)[None, :]
    cy = torch.angle((intensity * torch.exp(2j * math.pi * y / ny)).sum()) * ny / (2 * math.pi)
    cx = torch.angle((intensity * torch.exp(2j * math.pi * x / nx)).sum()) * nx / (2 * math.pi)
    return float(cy), float(cx)


def _wrapped_difference(a: float, b: float, period: int) -> float:
    """a − b on a periodic axis, in (−period/2, period/2]."""
    return (a - b + period / 2) % period - period / 2


def _column_seen_at(
    slice_index: int, tilt_mrad: tuple[float, float], grid: Grid, dz: float, num_slices: int
) -> tuple[float, float]:
    """Where the exit wave sees a small Gaussian phase 'column' placed in one slice."""
    y, x = grid.coordinates(dtype=F64)
    cy, cx = 0.5 * grid.extent_ang[0] + 0.013, 0.5 * grid.extent_ang[1] - 0.021
    column = 0.3 * torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 0.25**2))
    slices = torch.ones((1, 1, num_slices, *grid.shape), dtype=torch.complex128)
    slices[0, 0, slice_index] = torch.exp(1j * column)
    ky, kx = grid.frequencies(dtype=F64)
    p = fresnel_propagator(ky, kx, LAM, dz, tilt_mrad)
    plane_wave = torch.ones((1, *grid.shape), dtype=torch.complex128)
    exit_wave = multislice_exit_waves(plane_wave, slices, p)[0, 0, 0]
    # The plane wave passes unscattered; the column's scattered wave is exit − 1.
    return _circular_centroid((exit_wave - 1).abs() ** 2)


@pytest.mark.parametrize(
    "tilt_mrad",
    [(0.0, 10.0), (0.0, -10.0), (10.0, 0.0), (-10.0, 0.0), (7.0, -4.0)],
    ids=["+x", "-x", "+y", "-y", "oblique"],
)
def test_tilt_convention_column_shifts_by_z_tan_theta(tilt_mrad: tuple[float, float]) -> None:
    """DESIGN.md: a column in slice j is seen displaced by (z_j tanθ_y, z_j tanθ_x) relative
    to the same column in slice 0, to within 2% of a pixel. Anisotropic pixels catch any
    y/x mix-up."""
    grid = Grid((128, 112), (0.1, 0.12))
    dz, num_slices = 20.0, 5
    y0, x0 = _column_seen_at(0, tilt_mrad, grid, dz, num_slices)
    for j in (1, 4):
        yj, xj = _column_seen_at(j, tilt_mrad, grid, dz, num_slices)
        z = j * dz
        expected_y = z * math.tan(tilt_mrad[0] * 1e-3) / grid.pixel_size_ang[0]
        expected_x = z * math.tan(tilt_mrad[1] * 1e-3) / grid.pixel_size_ang[1]
        ny, nx = grid.shape
        assert _wrapped_difference(yj, y0, ny) == pytest.approx(expected_y, abs=0.02)
        assert _wrapped_difference(xj, x0, nx) == pytest.approx(expected_x, abs=0.02)
    # Sanity: without tilt nothing moves, so the test above measures the tilt alone.
    y0, x0 = _column_seen_at(0, (0.0, 0.0), grid, dz, num_slices)
    yz, xz = _column_seen_at(4, (0.0, 0.0), grid, dz, num_slices)
    assert _wrapped_difference(yz, y0, grid.shape[0]) == pytest.approx(0.0, abs=1e-6)
    assert _wrapped_difference(xz, x0, grid.shape[1]) == pytest.approx(0.0, abs=1e-6)


def test_tilt_as_a_pair_of_tensors_keeps_its_gradient() -> None:
    ky, kx = _k((8, 8), (0.2, 0.2))
    ty = torch.tensor(1.0, dtype=F64, requires_grad=True)
    tx = torch.tensor(-2.0, dtype=F64, requires_grad=True)
    p = fresnel_propagator(ky, kx, LAM, 10.0, (ty, tx))
    torch.testing.assert_close(p, fresnel_propagator(ky, kx, LAM, 10.0, (1.0, -2.0)))
    p.real.sum().backward()
    assert ty.grad is not None and tx.grad is not None


def test_bad_propagator_inputs_are_clear_errors() -> None:
    ky, kx = _k((8, 8), (0.2, 0.2))
    with pytest.raises(ValueError, match="did you pass the energy"):
        fresnel_propagator(ky, kx, 300e3, 10.0)
    with pytest.raises(ValueError, match="wavelength_ang must be > 0"):
        fresnel_propagator(ky, kx, 0.0, 10.0)
    with pytest.raises(ValueError, match=r"tilt_mrad must lie within"):
        fresnel_propagator(ky, kx, LAM, 10.0, (0.0, 2000.0))
