"""Scan-grid source average and dose: counts follow the dose, zero source size is the
identity."""

from __future__ import annotations

import math

import pytest
import torch

from ptyscope.simulation.acquisition import apply_dose, apply_source_size, electrons_per_pattern


def _patterns(generator: torch.Generator) -> torch.Tensor:
    raw = torch.rand((12, 10, 16, 16), generator=generator, dtype=torch.float64)
    return 0.9 * raw / raw.sum(dim=(-2, -1), keepdim=True)  # 90% of the beam recorded


def test_zero_source_size_leaves_data_unchanged(generator: torch.Generator) -> None:
    data = _patterns(generator)
    assert torch.equal(apply_source_size(data, (0.4, 0.5), 0.0), data)


def test_source_blur_has_the_requested_width_in_angstrom() -> None:
    """A single bright scan position spreads into a Gaussian of σ = source_sigma_ang."""
    data = torch.zeros((41, 41, 2, 2), dtype=torch.float64)
    data[20, 20] = 1.0
    step = (0.25, 0.4)
    sigma = 0.8
    out = apply_source_size(data, step, sigma)[..., 0, 0]
    weights = out / out.sum()
    y = (torch.arange(41, dtype=torch.float64) - 20) * step[0]
    x = (torch.arange(41, dtype=torch.float64) - 20) * step[1]
    var_y = float((weights.sum(1) * y**2).sum())
    var_x = float((weights.sum(0) * x**2).sum())
    # Sampled Gaussian on a grid of step h: variance σ² + O(e^{-2π²σ²/h²}) -> exact here.
    assert math.sqrt(var_y) == pytest.approx(sigma, rel=1e-3)
    assert math.sqrt(var_x) == pytest.approx(sigma, rel=1e-3)


def test_source_blur_preserves_every_pattern_total(generator: torch.Generator) -> None:
    data = _patterns(generator)
    out = apply_source_size(data, 0.3, 0.5)
    torch.testing.assert_close(out.sum(dim=(-2, -1)), data.sum(dim=(-2, -1)))
    assert float((out - data).abs().max()) > 1e-4  # it did blur


def test_total_counts_follow_the_dose(generator: torch.Generator) -> None:
    data = _patterns(generator)
    dose, step = 5e4, (0.4, 0.5)
    counts = apply_dose(data, dose, step, generator)
    expected = float(data.sum()) * electrons_per_pattern(dose, step)
    assert electrons_per_pattern(dose, step) == pytest.approx(dose * 0.4 * 0.5)
    # Poisson: the total has standard deviation sqrt(expected); allow 5 of them.
    assert abs(float(counts.sum()) - expected) < 5 * math.sqrt(expected)
    assert torch.equal(counts, counts.round()) and float(counts.min()) >= 0
    # Per-pixel variance equals the mean (Poisson), checked over many pixels.
    rate = data * electrons_per_pattern(dose, step)
    z = (counts - rate) / rate.sqrt()
    assert float(z.var()) == pytest.approx(1.0, abs=0.05)


def test_bad_inputs_are_clear_errors(generator: torch.Generator) -> None:
    data = _patterns(generator)
    with pytest.raises(ValueError, match="dose_e_per_ang2 must be > 0"):
        apply_dose(data, -1.0, 0.4)
    with pytest.raises(ValueError, match="must be finite and >= 0 to draw Poisson"):
        apply_dose(-data, 1e3, 0.4)
    with pytest.raises(ValueError, match="source_sigma_ang must be finite and >= 0"):
        apply_source_size(data, 0.4, -0.1)
    with pytest.raises(ValueError, match="scan_step_ang must be > 0"):
        apply_source_size(data, 0.0, 0.1)
    with pytest.raises(ValueError, match=r"data must have shape \(scan_y, scan_x, det_y, det_x\)"):
        apply_source_size(data[0], 0.4, 0.1)
