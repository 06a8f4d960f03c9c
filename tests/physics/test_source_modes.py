"""Probe modes of a finite source: the exact mixed state of shifted probes.

The reference is the definition itself: the pattern of a Gaussian source is the average of
coherent patterns over probe shifts s weighted by g(s), computed here by Gauss-Hermite
quadrature over the shifts, independently of the coherence matrix the modes come from.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptyscope.physics import Grid, build_probe
from ptyscope.physics.multislice import fourier_shift
from ptyscope.physics.probe import source_modes

GRID = Grid((48, 48), 0.15)
ENERGY = 300e3


def _probe() -> torch.Tensor:
    return build_probe(GRID, ENERGY, 20.0, {"defocus": 30.0}, dtype=torch.complex128)[0]


def _object(generator: torch.Generator) -> torch.Tensor:
    """A strong phase object with structure down to the probe's resolution."""
    noise = torch.randn(GRID.shape, generator=generator, dtype=torch.float64)
    ky, kx = GRID.frequencies(dtype=torch.float64)
    smooth = torch.fft.ifft2(torch.fft.fft2(noise) * torch.exp(-((ky**2 + kx**2) / 1.5**2))).real
    return torch.polar(torch.ones_like(smooth), 1.5 * smooth / smooth.std())


def _pattern(probes: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    return (torch.fft.fft2(probes * obj, norm="ortho").abs() ** 2).sum(dim=0)


def _shift_average(probe: torch.Tensor, obj: torch.Tensor, sigma_ang: float) -> torch.Tensor:
    """Σ_ab w_a w_b |F[P(r − s_ab)·O]|² over a 24 × 24 Gauss-Hermite grid of shifts."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(24)  # weight exp(−x²/2)
    weights = weights / weights.sum()
    sy, sx = np.meshgrid(nodes * sigma_ang, nodes * sigma_ang, indexing="ij")
    shifts = torch.as_tensor(np.c_[sy.ravel(), sx.ravel()] / GRID.pixel_size_ang[0])
    w = torch.as_tensor(np.outer(weights, weights).ravel())
    shifted = fourier_shift(probe, shifts)  # (576, ny, nx)
    return _pattern(shifted * w.sqrt()[:, None, None], obj)


def test_modes_give_the_patterns_of_the_shifted_probes(generator: torch.Generator) -> None:
    probe, obj, sigma = _probe(), _object(generator), 0.15
    reference = _shift_average(probe, obj, sigma)
    coherent = _pattern(probe[None], obj)
    assert float((reference - coherent).abs().sum()) > 0.05  # the source matters here
    exact, dropped = source_modes(probe, GRID, sigma, tolerance=1e-10)
    assert dropped <= 1e-10
    torch.testing.assert_close(_pattern(exact, obj), reference, rtol=0, atol=1e-9)
    # Dropping modes of total power d and rescaling the rest changes a pattern of unit
    # total by at most 2d (L1), whatever the object.
    modes, dropped = source_modes(probe, GRID, sigma, tolerance=1e-2)
    assert 0 < dropped <= 1e-2 and len(modes) < len(exact)
    assert float((_pattern(modes, obj) - reference).abs().sum()) <= 2 * dropped


def test_mode_intensities_add_up_to_the_blurred_probe() -> None:
    """Σ_m |P_m(r)|² = (g * |P|²)(r): the probe's intensity convolved with the source."""
    probe, sigma = _probe(), 0.2
    modes, _ = source_modes(probe, GRID, sigma, tolerance=1e-12)
    ky, kx = GRID.frequencies(dtype=torch.float64)
    gaussian = torch.exp(-2 * math.pi**2 * sigma**2 * (ky**2 + kx**2))  # FT of g
    blurred = torch.fft.ifft2(torch.fft.fft2(probe.abs() ** 2) * gaussian).real
    torch.testing.assert_close((modes.abs() ** 2).sum(dim=0), blurred, rtol=0, atol=1e-10)


def test_modes_are_orthogonal_strongest_first_and_keep_the_power() -> None:
    probe = _probe()
    previous = 0
    for sigma in (0.05, 0.1, 0.2):
        modes, dropped = source_modes(probe, GRID, sigma)
        assert 0 <= dropped <= 1e-3 and len(modes) > previous  # a wider source, more modes
        previous = len(modes)
        flat = modes.reshape(len(modes), -1)
        gram = flat.conj() @ flat.T
        powers = gram.diagonal().real
        assert float((gram - torch.diag(gram.diagonal())).abs().max()) < 1e-12
        assert bool((powers[:-1] >= powers[1:] - 1e-12).all())  # pairs are degenerate
        assert float(powers.sum()) == pytest.approx(1.0, abs=1e-12)
    # Small σ: |⟨P|P_s⟩|² ≈ 1 − 4π² sᵀ·cov(k)·s, so the coherent mode loses
    # 4π²σ²·tr cov(k) of the power, to second order in σ (cov over |ψ(k)|²).
    sigma = 0.01
    modes, _ = source_modes(probe, GRID, sigma, tolerance=1e-9)
    weight = torch.fft.fft2(probe, norm="ortho").abs() ** 2
    ky, kx = GRID.frequencies(dtype=torch.float64)
    spread = sum(float((weight * k**2).sum() - (weight * k).sum() ** 2) for k in (ky, kx))
    loss = 1.0 - float((modes[0].abs() ** 2).sum())
    assert loss == pytest.approx(4 * math.pi**2 * sigma**2 * spread, rel=0.01)


def test_no_source_is_the_probe_itself() -> None:
    probe = _probe().to(torch.complex64)
    modes, dropped = source_modes(probe, GRID, 0.0)
    assert dropped == 0.0 and modes.dtype == torch.complex64
    assert torch.equal(modes, probe[None])


def test_bad_source_inputs_are_clear_errors() -> None:
    probe = _probe()
    with pytest.raises(ValueError, match="source_sigma_ang must be finite and >= 0"):
        source_modes(probe, GRID, -0.1)
    with pytest.raises(ValueError, match=r"tolerance must lie in \(0, 1\), got 0.0"):
        source_modes(probe, GRID, 0.1, tolerance=0.0)
    with pytest.raises(ValueError, match="probe must be a complex tensor of the grid's shape"):
        source_modes(probe[:10], GRID, 0.1)
    with pytest.raises(ValueError, match="probe must be a complex tensor"):
        source_modes(probe.real, GRID, 0.1)
    with pytest.raises(TypeError, match=r"grid must be a ptyscope\.physics\.Grid"):
        source_modes(probe, (48, 48), 0.1)  # type: ignore[arg-type]
    wide = Grid((256, 256), 0.05)
    flat = torch.ones(wide.shape, dtype=torch.complex64)  # a delta in Fourier space is fine
    source_modes(flat, wide, 0.1)
    noisy = torch.polar(torch.ones(wide.shape), torch.rand(wide.shape) * 6.3)
    with pytest.raises(ValueError, match="Fourier pixels; source_modes handles at most 8192"):
        source_modes(noisy, wide, 0.1)
