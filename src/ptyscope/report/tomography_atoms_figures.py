"""Figures of the tomography's alignment and atoms: arrays in, a matplotlib :class:`Figure` out.

* :func:`alignment_figure`: the course of a projection alignment and its per-tilt
  corrections (and errors against a known truth).
* :func:`atoms_figure`: traced atoms in 3D, with their position errors or displacements.

Save them with :func:`ptyscope.report.tomography_figures.save_figure`. The conventions
(tilts as Euler angles (φ, θ, ψ) [deg], shifts (s_y, s_x) [Å], atom positions (N, 3)
(x, y, z) [Å]) and the validation helpers are those of
:mod:`ptyscope.report.tomography_figures`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d.axes3d import Axes3D
from scipy.spatial import cKDTree

from ptyscope._validation import require_positive
from ptyscope.report.tomography_figures import (
    FloatArray,
    IntArray,
    _euler,
    _labels,
    _names,
    _no_data,
    _positions,
    _shaped,
    _species_colour,
)

__all__ = ["alignment_figure", "atoms_figure"]

_HISTORY_KEYS = ("level", "relative_residual", "angle_change_deg", "shift_change_ang")
_DOTS: dict[str, Any] = {"marker": "o", "markersize": 3, "lw": 0.8}


def _minus(a: FloatArray, b: FloatArray, *, angles: bool) -> FloatArray:
    """a − b, wrapped to [-180, 180) for angles [deg]."""
    return (a - b + 180.0) % 360.0 - 180.0 if angles else a - b


def _rms(values: FloatArray) -> float:
    """sqrt(mean over rows of the squared row length)."""
    return float(np.sqrt(np.mean(np.sum(values**2, axis=1)))) if len(values) else math.nan


def _history(history: Sequence[Mapping[str, float]]) -> dict[str, FloatArray]:
    for n, entry in enumerate(history):
        missing = [key for key in _HISTORY_KEYS if key not in entry]
        if missing:
            raise ValueError(
                f"history[{n}] must have the keys {list(_HISTORY_KEYS)}, missing {missing}"
            )
    return {
        key: np.array([float(entry[key]) for entry in history], dtype=np.float64)
        for key in _HISTORY_KEYS
    }


def _per_tilt(
    ax: Axes, theta: FloatArray, values: FloatArray, names: Sequence[str], *, start: bool = False
) -> None:
    """One line per column of ``values`` (tilts, columns) against θ; dotted and faint for
    the starting values."""
    order = np.argsort(theta, kind="stable")
    for c, name in enumerate(names):
        style = {"ls": ":", "alpha": 0.5, "label": f"{name} (start)"} if start else {"label": name}
        ax.plot(theta[order], values[order, c], color=f"C{c}", **_DOTS, **style)


def _history_panels(axes: Sequence[Axes], steps: dict[str, FloatArray]) -> None:
    """Residual and RMS changes against the update number, binning levels marked."""
    updates = np.arange(1, steps["level"].size + 1)
    panels = (
        ("relative_residual", "relative residual", "residual before each update"),
        ("angle_change_deg", "RMS angle change [deg]", "angle change per update"),
        ("shift_change_ang", "RMS shift change [Å]", "shift change per update"),
    )
    levels = steps["level"]
    starts = np.flatnonzero(np.r_[True, levels[1:] != levels[:-1]]) if levels.size else ()
    for ax, (key, label, title) in zip(axes, panels, strict=True):
        ax.set(xlabel="update", ylabel=label)
        ax.set_title(title, fontsize=9)
        if updates.size == 0:
            _no_data(ax, "no updates")
            continue
        ax.plot(updates, steps[key], **_DOTS)
        finite = steps[key][np.isfinite(steps[key])]
        if finite.size and np.all(finite > 0):
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        for n in starts:
            ax.axvline(updates[n] - 0.5, color="0.6", lw=0.8, ls="--")
            where = ax.get_xaxis_transform()
            ax.text(
                updates[n] - 0.4, 0.97, f"bin {levels[n]:g}", transform=where, fontsize=7, va="top"
            )


def alignment_figure(
    history: Sequence[Mapping[str, float]],
    euler_start: npt.ArrayLike,
    euler_final: npt.ArrayLike,
    shifts_start: npt.ArrayLike,
    shifts_final: npt.ArrayLike,
    *,
    euler_true: npt.ArrayLike | None = None,
    shifts_true: npt.ArrayLike | None = None,
) -> Figure:
    """The course of a projection alignment and the corrections it made to each tilt.

    Top row, against the update number: the relative residual and the RMS angle and shift
    changes (log scales when positive), the binning level of each stretch marked. Middle
    row, against the starting θ: the corrections final − start of (φ, θ, ψ) [deg] (wrapped
    to ±180°) and of the shifts (s_y, s_x) [Å]. With a truth, a bottom row: the errors
    against it, starting (dotted) and final (solid), with their RMS in the titles (raw
    differences: a global rotation or shift left free by the alignment shows up).

    Parameters
    ----------
    history:
        One mapping per update with ``level`` (binning), ``relative_residual``,
        ``angle_change_deg`` and ``shift_change_ang``, as in
        :class:`ptyscope.tomography.alignment.AlignmentResult`.
    euler_start, euler_final:
        Real arrays (tilts, 3): (φ, θ, ψ) [deg] before and after.
    shifts_start, shifts_final:
        Real arrays (tilts, 2): (s_y, s_x) [Å] before and after.
    euler_true, shifts_true:
        Real arrays (tilts, 3) [deg] and (tilts, 2) [Å]: the truth, either or both.

    Returns
    -------
    Figure
        Axes: residual, angle change, shift change, angle corrections, shift corrections,
        then (with a truth) angle errors and shift errors.
    """
    steps = _history(history)
    start = _euler("euler_start", euler_start)
    tilts = start.shape[0]
    final = _euler("euler_final", euler_final, tilts)
    layout = "(tilts, 2) of euler_start"
    shifts0 = _shaped("shifts_start", shifts_start, (tilts, 2), layout)
    shifts1 = _shaped("shifts_final", shifts_final, (tilts, 2), layout)
    true_euler = None if euler_true is None else _euler("euler_true", euler_true, tilts)
    true_shifts = (
        None if shifts_true is None else _shaped("shifts_true", shifts_true, (tilts, 2), layout)
    )
    truth = true_euler is not None or true_shifts is not None

    figure = Figure(figsize=(13.0, 10.5 if truth else 7.2), layout="constrained")
    grid = figure.add_gridspec(3 if truth else 2, 6)
    _history_panels([figure.add_subplot(grid[0, 2 * c : 2 * c + 2]) for c in range(3)], steps)
    theta = start[:, 1]
    kinds = (
        ("angle", "deg", "°", ("Δφ", "Δθ", "Δψ"), start, final, true_euler),
        ("shift", "Å", " Å", ("Δs_y", "Δs_x"), shifts0, shifts1, true_shifts),
    )
    for c, (what, unit, suffix, names, before, after, true) in enumerate(kinds):
        ax = figure.add_subplot(grid[1, 3 * c : 3 * c + 3])
        correction = _minus(after, before, angles=what == "angle")
        _per_tilt(ax, theta, correction, names)
        ax.set(xlabel="θ (start) [deg]", ylabel=f"final − start [{unit}]")
        ax.set_title(f"{what} corrections: RMS {_rms(correction):.3g}{suffix}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncols=3)
        if not truth:
            continue
        ax = figure.add_subplot(grid[2, 3 * c : 3 * c + 3])
        ax.set(xlabel="θ (start) [deg]", ylabel=f"value − truth [{unit}]")
        if true is None:
            _no_data(ax, f"no true {what}s given")
            continue
        error0 = _minus(before, true, angles=what == "angle")
        error1 = _minus(after, true, angles=what == "angle")
        _per_tilt(ax, theta, error0, names, start=True)
        _per_tilt(ax, theta, error1, names)
        rms0, rms1 = _rms(error0), _rms(error1)
        ax.set_title(f"{what} errors: RMS {rms0:.3g}{suffix} → {rms1:.3g}{suffix}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncols=2)
    residuals = steps["relative_residual"]
    last = f", last residual {residuals[-1]:.3g}" if residuals.size else ""
    figure.suptitle(f"alignment of {tilts} tilts: {residuals.size} updates{last}")
    return figure


def _errors_panel(
    ax: Axes,
    found: FloatArray,
    species: IntArray,
    reference: FloatArray,
    reference_species: IntArray | None,
    limit: float,
) -> None:
    """Histogram of the distances of the traced atoms to their nearest true atom."""
    distance = np.full(len(found), np.inf)
    nearest = np.zeros(len(found), dtype=np.int64)
    if len(found) and len(reference):
        distance, nearest = cKDTree(reference).query(found, distance_upper_bound=limit)
    matched = np.isfinite(distance)
    errors = distance[matched]
    ax.hist(errors, bins=20, range=(0.0, limit), color="tab:blue", edgecolor="white")
    rmsd = float(np.sqrt(np.mean(errors**2))) if errors.size else math.nan
    agree = ""
    if reference_species is not None and errors.size:
        same = species[matched] == reference_species[nearest[matched]]
        agree = f", species agree {100 * same.mean():.1f} %"
    ax.set_title(
        f"{errors.size} of {len(found)} traced atoms within {limit:g} Å of the "
        f"{len(reference)} true ones\nRMSD {rmsd:.3f} Å{agree}",
        fontsize=9,
    )
    ax.set(xlabel="distance to the nearest true atom [Å]", ylabel="atoms")


def atoms_figure(
    positions: npt.ArrayLike,
    labels: npt.ArrayLike | None,
    symbols: Sequence[str] | None,
    *,
    true_positions: npt.ArrayLike | None = None,
    true_labels: npt.ArrayLike | None = None,
    displacements: npt.ArrayLike | None = None,
    match_distance_ang: float = 1.0,
) -> Figure:
    """Traced atoms in 3D, coloured by species, with their errors or displacements.

    With ``true_positions``, each traced atom is matched to its nearest true atom within
    ``match_distance_ang`` (nearest neighbour, not one-to-one; for the optimal one-to-one
    matching and its scores see :func:`ptyscope.tomography.atoms.match_atoms`) and the
    distances are histogrammed, their RMSD in the title. With ``displacements``, their
    lengths are histogrammed.

    Parameters
    ----------
    positions:
        Real array (N, 3): traced (x, y, z) [Å].
    labels:
        Integer array (N,) of species 0 … S − 1, or None (all 0).
    symbols:
        S species names for the legend, or None ("species s").
    true_positions:
        Real array (M, 3): reference (x, y, z) [Å].
    true_labels:
        Integer array (M,) of the reference species, same numbering: the fraction of
        matched atoms whose species agree is added to the title.
    displacements:
        Real array (N, 3): displacement (x, y, z) [Å] of each traced atom, e.g. from a
        lattice fit.
    match_distance_ang:
        Largest distance of a match [Å].

    Returns
    -------
    Figure
        Axes: the 3D scatter, then the histograms (errors, then displacements).
    """
    found = _positions("positions", positions)
    species_count = None if symbols is None else len(symbols)
    species = _labels("labels", labels, len(found), species_count)
    names = _names(symbols, species)
    require_positive("match_distance_ang", match_distance_ang, "Å")
    reference = None if true_positions is None else _positions("true_positions", true_positions)
    if true_labels is not None and reference is None:
        raise ValueError("true_labels needs true_positions, got true_labels alone")
    reference_species = None
    if true_labels is not None and reference is not None:
        reference_species = _labels("true_labels", true_labels, len(reference), species_count)
    moves = None
    if displacements is not None:
        moves = _shaped("displacements", displacements, found.shape, "(N, 3) of positions")

    panels = 1 + (reference is not None) + (moves is not None)
    figure = Figure(figsize=(5.6 + 4.4 * (panels - 1), 5.0), layout="constrained")
    scene = cast(Axes3D, figure.add_subplot(1, panels, 1, projection="3d"))
    for s in np.unique(species):
        mine = species == s
        label = f"{names[int(s)]} ({int(mine.sum())})"
        scene.scatter(*found[mine].T, s=10, color=_species_colour(int(s)), label=label)
    scene.set(xlabel="x [Å]", ylabel="y [Å]", zlabel="z [Å]")
    if len(found):
        scene.set_aspect("equal")
        scene.legend(fontsize=8, loc="upper left")
    figure.suptitle(f"{len(found)} traced atoms")
    if reference is not None:
        ax = figure.add_subplot(1, panels, 2)
        _errors_panel(ax, found, species, reference, reference_species, float(match_distance_ang))
    if moves is not None:
        ax = figure.add_subplot(1, panels, panels)
        length = np.linalg.norm(moves, axis=1)
        ax.hist(length, bins=30, color="tab:orange", edgecolor="white")
        rms = float(np.sqrt(np.mean(length**2))) if length.size else math.nan
        ax.set_title(f"displacements of {length.size} atoms: RMS {rms:.3f} Å", fontsize=9)
        ax.set(xlabel="|displacement| [Å]", ylabel="atoms")
    return figure
