"""Probe builder: normalisation, aperture support, focus, modes."""

from __future__ import annotations

import pytest
import torch

from ptyscope.physics import (
    Grid,
    angle_mrad_to_inv_ang,
    build_probe,
    fresnel_propagator,
    orthogonal_modes,
    propagate,
    wavelength_ang,
)

ENERGY = 300e3
GRID = Grid((96, 96), (0.12, 0.12))


def test_unit_intensity_single_and_multi_mode() -> None:
    p1 = build_probe(GRID, ENERGY, 21.4, {"defocus": 80.0, "Cs": 1e4})
    p4 = build_probe(GRID, ENERGY, 21.4, {"defocus": 80.0}, num_modes=4)
    assert p1.dtype == torch.complex64 and p1.shape == (1, 96, 96)
    assert float((p1.abs() ** 2).sum()) == pytest.approx(1.0, abs=1e-5)
    assert float((p4.abs() ** 2).sum()) == pytest.approx(1.0, abs=1e-5)


def test_zero_outside_the_aperture() -> None:
    semiangle = 21.4
    probe = build_probe(GRID, ENERGY, semiangle, {"defocus": 150.0, "C23": 300.0})[0]
    amplitude = torch.fft.fft2(probe, norm="ortho").abs()
    ky, kx = GRID.frequencies(dtype=torch.float64)
    k = torch.sqrt(ky**2 + kx**2)
    cutoff = angle_mrad_to_inv_ang(semiangle, ENERGY)
    edge = min(GRID.reciprocal_pixel_inv_ang)
    outside = k > cutoff + edge / 2
    inside = k < cutoff - edge / 2
    assert outside.any() and inside.any()
    assert float(amplitude[outside].max()) < 1e-6 * float(amplitude.max())
    # Inside the aperture the amplitude is flat (the aberrations only change the phase).
    flat = amplitude[inside]
    assert float((flat.max() - flat.min()) / flat.max()) < 1e-4


def test_underfocused_probe_propagated_by_its_defocus_is_in_focus() -> None:
    defocus = 200.0  # Å, positive = underfocus
    focused = build_probe(GRID, ENERGY, 21.4)[0]
    defocused = build_probe(GRID, ENERGY, 21.4, {"defocus": defocus})[0]
    ky, kx = GRID.frequencies()
    p = fresnel_propagator(ky, kx, wavelength_ang(ENERGY), defocus)
    refocused = propagate(defocused, p)
    error = float((refocused - focused).abs().max() / focused.abs().max())
    assert error < 1e-4
    # and the defocused probe is genuinely different (the test can fail)
    assert float((defocused - focused).abs().max() / focused.abs().max()) > 0.1


def test_aberration_free_probe_is_centred() -> None:
    """An aberration-free probe is point-symmetric about (ny//2, nx//2) and peaks there."""
    probe = build_probe(Grid((64, 80), (0.1, 0.1)), ENERGY, 25.0, dtype=torch.complex128)[0]
    intensity = probe.abs() ** 2
    assert divmod(int(intensity.argmax()), 80) == (32, 40)
    centred = torch.roll(intensity, shifts=(-32, -40), dims=(0, 1))  # centre -> index 0
    mirrored = torch.roll(torch.flip(centred, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))
    torch.testing.assert_close(centred, mirrored, rtol=0, atol=1e-12 * float(intensity.max()))


def test_modes_are_orthogonal_with_requested_powers() -> None:
    powers = [0.7, 0.2, 0.06, 0.04]
    modes = build_probe(
        GRID,
        ENERGY,
        21.4,
        {"defocus": 100.0},
        num_modes=4,
        mode_powers=powers,
        dtype=torch.complex128,
    )
    flat = modes.reshape(4, -1)
    gram = flat.conj() @ flat.T
    torch.testing.assert_close(gram.real.diagonal(), torch.tensor(powers, dtype=torch.float64))
    off = gram - torch.diag(gram.diagonal())
    assert float(off.abs().max()) < 1e-12
    # Mode 0 is the coherent probe itself.
    single = build_probe(GRID, ENERGY, 21.4, {"defocus": 100.0}, dtype=torch.complex128)[0]
    torch.testing.assert_close(modes[0], single * 0.7**0.5)


def test_bad_probe_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="semiangle_mrad must be > 0"):
        build_probe(GRID, ENERGY, -5.0)
    with pytest.raises(ValueError, match="Nyquist"):
        build_probe(Grid((64, 64), 1.0), ENERGY, 30.0)
    with pytest.raises(ValueError, match="mode_powers must be >= 0 and sum to 1"):
        orthogonal_modes(torch.ones(8, 8, dtype=torch.complex64), 2, mode_powers=[0.5, 0.6])
    with pytest.raises(ValueError, match="num_modes must be an integer >= 1"):
        build_probe(GRID, ENERGY, 20.0, num_modes=0)


def test_probe_phase_is_minus_chi_on_an_anisotropic_grid() -> None:
    """ψ(k) = A·exp(−iχ): the probe's Fourier phase equals −χ computed independently here,
    with k_x along columns and k_y along rows (a swap or sign flip fails)."""
    grid = Grid((64, 80), (0.11, 0.09))
    aberrations = {"C12": 40.0, "phi12": 0.5, "C21": 900.0, "phi21": -1.0, "defocus": 20.0}
    probe = build_probe(grid, ENERGY, 24.0, aberrations, dtype=torch.complex128)[0]
    spectrum = torch.fft.fft2(torch.fft.ifftshift(probe))
    ky = torch.fft.fftfreq(64, 0.11, dtype=torch.float64)[:, None].expand(64, 80)
    kx = torch.fft.fftfreq(80, 0.09, dtype=torch.float64)[None, :].expand(64, 80)
    lam = wavelength_ang(ENERGY)
    a = lam * torch.sqrt(kx**2 + ky**2)
    phi = torch.atan2(ky, kx)
    chi = (2 * torch.pi / lam) * (
        -20.0 * a**2 / 2
        + 40.0 * a**2 / 2 * torch.cos(2 * (phi - 0.5))
        + 900.0 * a**3 / 3 * torch.cos(phi + 1.0)
    )
    inside = spectrum.abs() > 0.5 * spectrum.abs().max()
    ratio = spectrum[inside] / spectrum[inside].abs() * torch.exp(1j * chi[inside])
    # Constant up to a global phase: every ratio equals the first.
    assert float((ratio - ratio[0]).abs().max()) < 1e-9


def test_all_modes_stay_inside_the_aperture() -> None:
    modes = build_probe(GRID, ENERGY, 21.4, {"defocus": 200.0}, num_modes=6, dtype=torch.complex128)
    ky, kx = GRID.frequencies(dtype=torch.float64)
    edge = angle_mrad_to_inv_ang(21.4, ENERGY) + min(GRID.reciprocal_pixel_inv_ang) / 2
    outside = torch.sqrt(ky**2 + kx**2) > edge
    power = torch.fft.fft2(modes, norm="ortho").abs() ** 2
    leaked = power[:, outside].sum(-1) / power.sum(dim=(-2, -1))
    assert float(leaked.max()) < 1e-12


def test_a_probe_too_big_for_its_window_warns() -> None:
    with pytest.warns(UserWarning, match="wraps around"):
        build_probe(Grid((64, 64), 0.12), ENERGY, 25.0, {"defocus": 600.0})


def test_more_modes_than_the_probe_supports_is_an_error() -> None:
    delta = torch.zeros((16, 16), dtype=torch.complex128)
    delta[8, 8] = 1.0
    with pytest.raises(ValueError, match="linearly dependent"):
        orthogonal_modes(delta, 3)
    with pytest.raises(ValueError, match="mode_powers must be >= 0 and sum to 1"):
        orthogonal_modes(delta, 2, mode_powers=[float("nan"), 1.0])
