"""The alignment and atom figures of the tomography: the history, the per-tilt
corrections and errors, and the traced atoms with their errors and displacements."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ptyscope.report.tomography_atoms_figures import alignment_figure, atoms_figure

from .test_tomography_figures import saved


def test_alignment_figure_plots_history_corrections_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    tilts = 8
    theta = np.linspace(-70.0, 70.0, tilts)
    true = np.column_stack([np.zeros(tilts), theta, np.full(tilts, 179.5)])
    start = true + rng.normal(0.0, 1.0, (tilts, 3))
    final = true + rng.normal(0.0, 0.1, (tilts, 3))
    final[:, 2] = -179.8  # across ±180°: ψ moved by a little, not by ~360°
    shifts_true = rng.normal(0.0, 2.0, (tilts, 2))
    shifts_start, shifts_final = np.zeros((tilts, 2)), shifts_true + 0.05
    history = [
        {
            "level": float(level),
            "relative_residual": 0.5 / (n + 1),
            "angle_change_deg": 1.0 / (n + 1),
            "shift_change_ang": 2.0 / (n + 1),
        }
        for n, level in enumerate([2, 2, 2, 1, 1])
    ]
    figure = alignment_figure(
        history, start, final, shifts_start, shifts_final, euler_true=true, shifts_true=shifts_true
    )
    saved(figure, tmp_path / "alignment.png")
    assert len(figure.axes) == 7
    residual = figure.axes[0]
    assert residual.get_yscale() == "log"
    np.testing.assert_allclose(residual.lines[0].get_ydata(), 0.5 / np.arange(1, 6))
    assert [t.get_text() for t in residual.texts] == ["bin 2", "bin 1"]
    angles = figure.axes[3]
    dpsi = next(line for line in angles.lines if line.get_label() == "Δψ")
    order = np.argsort(start[:, 1])
    expected = (final[order, 2] - start[order, 2] + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(dpsi.get_ydata(), expected)
    assert np.all(np.abs(expected) < 10)
    shift_errors = figure.axes[6]
    assert shift_errors.get_title().endswith(f"→ {math.sqrt(2 * 0.05**2):.3g} Å")
    assert len(alignment_figure(history, start, final, shifts_start, shifts_final).axes) == 5
    assert len(alignment_figure([], start, start, shifts_start, shifts_start).axes) == 5
    with pytest.raises(ValueError, match=r"shifts_final must have shape .* = \(8, 2\)"):
        alignment_figure(history, start, final, shifts_start, shifts_final[:-1])
    with pytest.raises(ValueError, match=r"history\[0\] must have the keys"):
        alignment_figure([{"level": 1.0}], start, final, shifts_start, shifts_final)


def test_atoms_figure_histograms_errors_of_matched_atoms(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    true = rng.uniform(0.0, 20.0, (40, 3))
    true_labels = rng.integers(0, 2, 40)
    found = true + np.array([0.1, 0.0, 0.0])  # every traced atom 0.1 Å from its true one
    found = np.vstack([found, [[50.0, 50.0, 50.0]]])  # and one far from all
    labels = np.append(true_labels, 1)
    labels[0] = 1 - labels[0]  # one species wrong
    displacements = np.tile([0.0, 0.3, 0.4], (41, 1))
    figure = atoms_figure(
        found,
        labels,
        ["Fe", "Pt"],
        true_positions=true,
        true_labels=true_labels,
        displacements=displacements,
    )
    saved(figure, tmp_path / "atoms.png")
    scene, errors, moves = figure.axes[:3]
    assert sum(len(c.get_offsets()) for c in scene.collections) == 41
    counts = np.bincount(labels)
    assert [t.get_text() for t in scene.get_legend().get_texts()] == [
        f"Fe ({counts[0]})",
        f"Pt ({counts[1]})",
    ]
    assert sum(p.get_height() for p in errors.patches) == 40
    assert "40 of 41" in errors.get_title() and "RMSD 0.100 Å" in errors.get_title()
    assert f"species agree {100 * 39 / 40:.1f} %" in errors.get_title()
    assert "RMS 0.500 Å" in moves.get_title()
    assert len(atoms_figure(found, None, None).axes) == 1
    with pytest.raises(ValueError, match=r"displacements must have shape .* = \(41, 3\)"):
        atoms_figure(found, labels, ["Fe", "Pt"], displacements=displacements[:-1])
    with pytest.raises(ValueError, match=r"positions must be finite, of shape \(N, 3\)"):
        atoms_figure(found[:, :2], None, None)
