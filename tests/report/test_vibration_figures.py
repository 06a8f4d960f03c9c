"""The vibration figures: arrow scale, matrix image and dispersion plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptyscope.analysis.dispersion import Dispersion
from ptyscope.report.vibration_figures import (
    correlation_figure,
    dispersion_figure,
    greens_figure,
)


def test_correlation_arrows_share_one_scale_set_by_the_longest(tmp_path: Path) -> None:
    columns = np.array([[5.0, 5.0], [5.0, 7.5], [7.5, 5.0], [5.0, 2.5]])
    greens = 0.002 * np.eye(8)
    greens[0:2, 2:4] = greens[2:4, 0:2] = [[0.0005, 0.0], [0.0, 0.001]]
    greens[0, 0] = 0.004  # the longest row: (⟨u_y²⟩, ⟨u_y u_x⟩) = (0.004, 0) Å²
    path = tmp_path / "correlations.png"
    scale = correlation_figure(
        path, np.zeros((100, 100)), (0.1, 0.1), (0.0, 0.0), columns, greens, 0, [1, 2]
    )
    assert scale * 0.004 == pytest.approx(0.4 * 2.5)  # longest arrow = 0.4 × neighbour distance
    assert path.stat().st_size > 10_000
    assert (
        correlation_figure(
            path, np.zeros((100, 100)), (0.1, 0.1), (0.0, 0.0), columns, greens, 0, [1], scale=100.0
        )
        == 100.0
    )
    with pytest.raises(ValueError, match="index the 4 columns"):
        correlation_figure(
            path, np.zeros((100, 100)), (0.1, 0.1), (0.0, 0.0), columns, greens, 0, [7]
        )


def test_greens_and_dispersion_figures(tmp_path: Path) -> None:
    greens_figure(tmp_path / "g.png", np.diag([1e-3, -2e-3, 3e-3, 4e-3]))
    assert (tmp_path / "g.png").stat().st_size > 5_000
    with pytest.raises(ValueError, match=r"greens must be \(2K, 2K\)"):
        greens_figure(tmp_path / "g.png", np.zeros((3, 3)))
    q = np.linspace(0, 0.5, 5)[:, None] * [1.0, 0.0]
    frequencies = np.column_stack([10 * q[:, 0], 20 * q[:, 0] + 1])
    frequencies[0] = np.nan  # Γ
    dispersion = Dispersion(q, frequencies, np.zeros((5, 2, 2)), 49, 20)
    dispersion_figure(tmp_path / "d.png", dispersion, ["G", "X"], [0, 4], reference=frequencies)
    assert (tmp_path / "d.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="labels and tick_index must match"):
        dispersion_figure(tmp_path / "d.png", dispersion, ["G"], [0, 4])
