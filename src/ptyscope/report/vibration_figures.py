"""Figures of the vibration analysis (CAVIAR, Gladyshev et al. 2025): arrays in, one PNG out.

* :func:`correlation_figure`: the correlation vectors of one reference column and its
  neighbours on the phase image (the paper's Fig. 2).
* :func:`averaged_correlation_figure`: the same for blocks averaged over equivalent
  unit-cell pairs, one panel per basis atom (the turquoise boxes of Fig. 4).
* :func:`greens_figure`: the Green's tensor as a matrix.
* :func:`dispersion_figure`: phonon frequencies along a path in the Brillouin zone.

Arrows: the 2 × 2 block G[l, l'] of a pair has two rows, each read as a vector (y, x):
row x, (⟨u_lx u_l'y⟩, ⟨u_lx u_l'x⟩), is how the neighbour l' moves when the reference l
moves along x (coral), and row y likewise (cyan). At the reference itself the rows of
its self block are drawn in yellow (row x: ⟨u_x²⟩ along x) and purple (row y: ⟨u_y²⟩
along y). All arrows of a figure share one scale (Å of arrow per Å² of correlation),
named in pm² by a key arrow. Image axes are in Å, y pointing down as in the stored
arrays. The files are written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Patch
from matplotlib.quiver import Quiver
from scipy.spatial import cKDTree

from ptyscope.io.atomic import atomic_path

if TYPE_CHECKING:
    from ptyscope.analysis.columns import Lattice
    from ptyscope.analysis.dispersion import Dispersion
    from ptyscope.analysis.vibrations import PairAverage

__all__ = [
    "averaged_correlation_figure",
    "correlation_figure",
    "dispersion_figure",
    "greens_figure",
]

_DPI = 110
_PM2_PER_ANG2 = 1e4
#: The longest arrow of a figure spans this fraction of the nearest-neighbour distance.
_ARROW_FRACTION = 0.4
#: Arrow colours (CAVIAR Fig. 2): self x, self y, reference x, reference y.
SELF_X, SELF_Y, REF_X, REF_Y = "gold", "mediumpurple", "coral", "cyan"
_GAMMA_NAMES = {"G", "GAMMA", "Γ", "\\GAMMA", "$\\GAMMA$"}


def _save(figure: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=_DPI, format="png")


def _nearest_distance(columns: np.ndarray) -> float:
    if len(columns) < 2:
        return 1.0
    distance = cKDTree(columns).query(columns, k=2)[0][:, 1]
    return float(np.median(distance))


def _auto_scale(blocks: np.ndarray, nearest_ang: float) -> float:
    """Å of arrow per Å² so that the longest row vector spans 0.4 × the neighbour distance."""
    longest = float(np.max(np.linalg.norm(blocks, axis=-1))) if blocks.size else 0.0
    return _ARROW_FRACTION * nearest_ang / longest if longest > 0 else 1.0


def _key_value_pm2(longest_pm2: float) -> float:
    """A round number (1, 2 or 5 × 10^n) pm² at most the longest arrow."""
    if not longest_pm2 > 0:
        return 1.0
    exponent = math.floor(math.log10(longest_pm2))
    unit = 10.0**exponent
    for mantissa in (5.0, 2.0, 1.0):
        if mantissa * unit <= longest_pm2:
            return mantissa * unit
    return unit


def _background(
    ax: Axes,
    phase: np.ndarray,
    pixel_size_ang: tuple[float, float],
    origin_ang: tuple[float, float],
) -> None:
    ny, nx = phase.shape
    (dy, dx), (oy, ox) = pixel_size_ang, origin_ang
    low, high = (float(v) for v in np.nanpercentile(phase, [0.5, 99.5]))
    extent = (ox - dx / 2, ox + (nx - 0.5) * dx, oy + (ny - 0.5) * dy, oy - dy / 2)
    ax.imshow(phase, cmap="gray", extent=extent, vmin=low, vmax=high if high > low else low + 1)
    ax.set_xlabel("x [Å]")
    ax.set_ylabel("y [Å]")


def _arrows(
    ax: Axes, at_yx: np.ndarray, vectors_yx: np.ndarray, colour: str, scale: float
) -> Quiver:
    """Arrows from the points (n, 2) (y, x) along vectors (n, 2) (y, x) [Å²] × scale."""
    at = np.atleast_2d(at_yx)
    v = np.atleast_2d(vectors_yx)
    return ax.quiver(
        at[:, 1],
        at[:, 0],
        v[:, 1],
        v[:, 0],
        color=colour,
        angles="xy",
        scale_units="xy",
        scale=1.0 / scale,
        width=0.006,
        headwidth=3.5,
        headlength=4.0,
        edgecolor="black",
        linewidth=0.3,
        zorder=4,
    )


def _draw_pairs(
    ax: Axes,
    centre: np.ndarray,
    self_block: np.ndarray,
    neighbours: np.ndarray,
    blocks: np.ndarray,
    scale: float,
    nearest_ang: float,
) -> Quiver:
    """Self arrows and circle at the reference, pair arrows and circles at the neighbours."""
    ring = 0.3 * nearest_ang
    ax.add_patch(Circle((centre[1], centre[0]), ring, fill=False, color="red", lw=1.5, zorder=3))
    for point in neighbours:
        ax.add_patch(
            Circle((point[1], point[0]), ring, fill=False, color="dodgerblue", lw=1.2, zorder=3)
        )
    quiver = _arrows(ax, centre, self_block[1], SELF_X, scale)
    _arrows(ax, centre, self_block[0], SELF_Y, scale)
    if len(neighbours):
        _arrows(ax, neighbours, blocks[:, 1], REF_X, scale)
        _arrows(ax, neighbours, blocks[:, 0], REF_Y, scale)
    return quiver


def _legend_and_key(
    figure: Figure, ax: Axes, quiver: Quiver, scale: float, longest_ang2: float
) -> None:
    """A key arrow of a round length in pm² above ``ax``; the colour legend below, titled
    with the scale."""
    key_pm2 = _key_value_pm2(longest_ang2 * _PM2_PER_ANG2)
    ax.quiverkey(
        quiver,
        0.80,
        1.025,
        key_pm2 / _PM2_PER_ANG2,
        f"{key_pm2:g} pm²",
        labelpos="E",
        coordinates="axes",
        color="black",
        fontproperties={"size": 8},
    )
    handles = [
        Patch(color=SELF_X, label=r"self, row x: $(\langle u_x u_y\rangle, \langle u_x^2\rangle)$"),
        Patch(color=SELF_Y, label=r"self, row y: $(\langle u_y^2\rangle, \langle u_y u_x\rangle)$"),
        Patch(
            color=REF_X,
            label=r"reference x, neighbour: $(\langle u_x u'_y\rangle, \langle u_x u'_x\rangle)$",
        ),
        Patch(
            color=REF_Y,
            label=r"reference y, neighbour: $(\langle u_y u'_y\rangle, \langle u_y u'_x\rangle)$",
        ),
    ]
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncols=2,
        fontsize=8,
        title=f"arrows: 1 Å of arrow = {_PM2_PER_ANG2 / scale:.3g} pm² (key: {key_pm2:g} pm²)",
        title_fontsize=8,
    )


def _window(ax: Axes, centre: np.ndarray, half_ang: float) -> None:
    ax.set_xlim(centre[1] - half_ang, centre[1] + half_ang)
    ax.set_ylim(centre[0] + half_ang, centre[0] - half_ang)  # y down


def correlation_figure(
    path: Path,
    phase: npt.ArrayLike,
    pixel_size_ang: tuple[float, float],
    origin_ang: tuple[float, float],
    columns_ang: npt.ArrayLike,
    greens: npt.ArrayLike,
    reference: int,
    neighbours: Sequence[int],
    scale: float | None = None,
    *,
    window_ang: float | None = None,
    title: str | None = None,
) -> float:
    """Correlation vectors of one reference column with itself and its neighbours.

    Parameters
    ----------
    path:
        PNG to write.
    phase:
        float (ny, nx): background image, e.g. the phase summed over slices and averaged
        over states [rad].
    pixel_size_ang, origin_ang:
        (dy, dx) [Å] of a pixel and (y, x) [Å] of pixel (0, 0).
    columns_ang:
        float (K, 2): mean (y, x) of the columns [Å], in the order of ``greens``.
    greens:
        float (2K, 2K): Green's tensor [Å²] (rows: column 0 y, column 0 x, column 1 y, …).
    reference:
        Index of the reference column (red circle).
    neighbours:
        Indices of the neighbours drawn (blue circles).
    scale:
        Arrow length per correlation [Å per Å²]; default: the longest arrow spans 0.4 ×
        the nearest-neighbour distance.
    window_ang:
        Half-width of the view around the reference [Å]; default: the farthest neighbour
        plus 0.8 × the nearest-neighbour distance.
    title:
        Figure title.

    Returns
    -------
    float
        The scale used [Å per Å²], to draw other figures on the same scale.
    """
    image = np.asarray(phase, dtype=np.float64)
    columns = np.asarray(columns_ang, dtype=np.float64)
    g = np.asarray(greens, dtype=np.float64)
    k = columns.shape[0]
    if image.ndim != 2 or columns.ndim != 2 or columns.shape[1] != 2 or g.shape != (2 * k, 2 * k):
        raise ValueError(
            "phase must be (ny, nx), columns_ang (K, 2) and greens (2K, 2K), got "
            f"{image.shape}, {columns.shape} and {g.shape}"
        )
    others = [int(n) for n in neighbours if int(n) != int(reference)]
    if not 0 <= reference < k or any(not 0 <= n < k for n in others):
        raise ValueError(f"reference and neighbours must index the {k} columns")
    rows = 2 * reference + np.arange(2)
    self_block = g[np.ix_(rows, rows)]
    blocks = np.array([g[np.ix_(rows, 2 * n + np.arange(2))] for n in others]).reshape(-1, 2, 2)
    nearest = _nearest_distance(columns)
    every = np.concatenate([self_block[None], blocks])
    used = _auto_scale(every, nearest) if scale is None else float(scale)
    if not used > 0:
        raise ValueError(f"scale must be > 0 Å per Å², got {scale!r}")
    figure = Figure(figsize=(6.4, 6.6), layout="constrained")
    ax = figure.subplots()
    _background(ax, image, pixel_size_ang, origin_ang)
    centre = columns[reference]
    quiver = _draw_pairs(ax, centre, self_block, columns[others], blocks, used, nearest)
    reach = float(np.max(np.hypot(*(columns[others] - centre).T))) if others else nearest
    _window(ax, centre, reach + 0.8 * nearest if window_ang is None else float(window_ang))
    ax.set_title(
        f"reference at (y, x) = ({centre[0]:.2f}, {centre[1]:.2f}) Å", fontsize=9, loc="left"
    )
    _legend_and_key(figure, ax, quiver, used, float(np.max(np.linalg.norm(every, axis=-1))))
    figure.suptitle(title or f"correlations of column {reference} with {len(others)} neighbours")
    _save(figure, path)
    return used


def averaged_correlation_figure(
    path: Path,
    phase: npt.ArrayLike,
    pixel_size_ang: tuple[float, float],
    origin_ang: tuple[float, float],
    columns_ang: npt.ArrayLike,
    basis_index: npt.ArrayLike,
    lattice: Lattice,
    average: PairAverage,
    scale: float | None = None,
    *,
    basis_names: Sequence[str] | None = None,
) -> float:
    """Correlations averaged over equivalent unit-cell pairs, one panel per basis atom.

    Each panel centres on the column of basis atom κ nearest the middle of the field and
    draws, at the lattice position of each neighbour class (κ, κ', l' − l), the block
    averaged over all such pairs (CAVIAR Fig. 4, turquoise boxes).

    Parameters
    ----------
    path, phase, pixel_size_ang, origin_ang, columns_ang:
        As in :func:`correlation_figure`.
    basis_index:
        int (K,): basis atom of each column.
    lattice:
        The crystal lattice (for the neighbour offsets).
    average:
        From :func:`~ptyscope.analysis.vibrations.average_equivalent_pairs` with 2D
        blocks (Q, 2, 2) [Å²].
    scale:
        [Å per Å²]; default: longest arrow = 0.4 × nearest-neighbour distance.
    basis_names:
        A name per basis atom for the panel titles.

    Returns
    -------
    float
        The scale used [Å per Å²].
    """
    image = np.asarray(phase, dtype=np.float64)
    columns = np.asarray(columns_ang, dtype=np.float64)
    basis = np.asarray(basis_index, dtype=np.int64)
    blocks = np.asarray(average.blocks, dtype=np.float64)
    if blocks.ndim != 3:
        raise ValueError(f"average.blocks must be (Q, 2, 2), got shape {blocks.shape}")
    num_basis = len(lattice.basis)
    names = list(basis_names) if basis_names is not None else lattice.labels
    nearest = _nearest_distance(columns)
    used = _auto_scale(blocks, nearest) if scale is None else float(scale)
    if not used > 0:
        raise ValueError(f"scale must be > 0 Å per Å², got {scale!r}")
    middle = columns.mean(axis=0)
    figure = Figure(figsize=(max(4.2 * num_basis + 0.4, 7.5), 6.2), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, num_basis))
    quiver: Quiver | None = None
    fractional = lattice.fractional
    for kappa, ax in enumerate(axes):
        members = np.nonzero(basis == kappa)[0]
        _background(ax, image, pixel_size_ang, origin_ang)
        for spine in ax.spines.values():
            spine.set_color("turquoise")
            spine.set_linewidth(2.5)
        if members.size == 0:
            ax.set_title(f"{names[kappa]}: no column", fontsize=9)
            continue
        centre = columns[members[np.argmin(np.hypot(*(columns[members] - middle).T))]]
        mine = average.basis_pairs[:, 0] == kappa
        self_class = mine & average.is_self
        if not self_class.any():
            ax.set_title(f"{names[kappa]}: no self-correlation", fontsize=9)
            continue
        others = np.nonzero(mine & ~self_class)[0]
        offsets = (
            average.cell_offsets[others]
            + fractional[average.basis_pairs[others, 1]]
            - fractional[kappa]
        ) @ lattice.matrix.T
        quiver = _draw_pairs(
            ax,
            centre,
            blocks[np.nonzero(self_class)[0][0]],
            centre + offsets,
            blocks[others],
            used,
            nearest,
        )
        reach = float(np.max(np.hypot(*offsets.T))) if len(others) else nearest
        _window(ax, centre, reach + 0.8 * nearest)
        pairs = int(average.counts[others].sum()) if len(others) else 0
        ax.set_title(
            f"{names[kappa]}: {len(others)} neighbour classes, {pairs} pairs",
            fontsize=9,
            loc="left",
        )
    if quiver is not None:
        longest = float(np.max(np.linalg.norm(blocks, axis=-1))) if blocks.size else 0.0
        _legend_and_key(figure, axes[0], quiver, used, longest)
    figure.suptitle("correlations averaged over equivalent unit-cell pairs, per basis atom")
    _save(figure, path)
    return used


def greens_figure(path: Path, greens: npt.ArrayLike, *, title: str | None = None) -> None:
    """The Green's tensor as a matrix image, diverging colours centred on 0, bar in pm².

    Parameters
    ----------
    path:
        PNG to write.
    greens:
        float (2K, 2K) [Å²]; rows and columns (column 0 y, column 0 x, column 1 y, …).
    title:
        Figure title.
    """
    g = np.asarray(greens, dtype=np.float64) * _PM2_PER_ANG2
    if g.ndim != 2 or g.shape[0] != g.shape[1] or g.shape[0] % 2:
        raise ValueError(f"greens must be (2K, 2K), got shape {g.shape}")
    bound = max(float(np.nanmax(np.abs(g))) if g.size else 0.0, 1e-12)
    figure = Figure(figsize=(6.2, 5.4), layout="constrained")
    ax = figure.subplots()
    shown = ax.imshow(g, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
    ax.set_xlabel("2·column + (0: y, 1: x)")
    ax.set_ylabel("2·column + (0: y, 1: x)")
    figure.colorbar(shown, ax=ax, shrink=0.85, label="G [pm²]")
    ax.set_title(title or f"Green's tensor ⟨u uᵀ⟩ of {g.shape[0] // 2} columns", fontsize=10)
    _save(figure, path)


def _tick_label(label: str) -> str:
    return "Γ" if label.strip().upper() in _GAMMA_NAMES else label


def dispersion_figure(
    path: Path,
    dispersion: Dispersion,
    labels: Sequence[str],
    tick_index: npt.ArrayLike,
    reference: npt.ArrayLike | None = None,
    *,
    reference_label: str = "reference",
) -> None:
    """Frequencies along a path in the Brillouin zone, one line with markers per branch.

    Parameters
    ----------
    path:
        PNG to write.
    dispersion:
        From :func:`~ptyscope.analysis.dispersion.kong_dispersion` (NaN points, e.g. Γ,
        are left out).
    labels, tick_index:
        Names of the path's corners and their indices in ``dispersion.q_reduced``, as
        :func:`~ptyscope.analysis.dispersion.reduced_path` returns them ("G" and "Gamma"
        are drawn as Γ).
    reference:
        float (Q, branches) [THz]: frequencies to compare with, drawn dashed.
    reference_label:
        Legend entry of ``reference``.
    """
    frequencies = np.asarray(dispersion.frequencies_thz, dtype=np.float64)
    ticks = np.asarray(tick_index, dtype=np.int64).reshape(-1)
    if len(labels) != ticks.size:
        raise ValueError(f"labels and tick_index must match, got {len(labels)} and {ticks.size}")
    x = np.arange(frequencies.shape[0])
    figure = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = figure.subplots()
    for branch in range(frequencies.shape[1]):
        values = frequencies[:, branch]
        mean = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        ax.plot(
            x, values, marker="o", markersize=3, lw=1.2, label=f"branch {branch}: {mean:.2f} THz"
        )
    if reference is not None:
        ref = np.asarray(reference, dtype=np.float64).reshape(frequencies.shape[0], -1)
        for branch in range(ref.shape[1]):
            ax.plot(
                x,
                ref[:, branch],
                ls="--",
                color="black",
                lw=0.9,
                label=reference_label if branch == 0 else None,
            )
    for tick in ticks:
        ax.axvline(float(tick), color="0.7", lw=0.6, zorder=0)
    ax.set_xticks(ticks, [_tick_label(label) for label in labels])
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(bottom=0)
    ax.set_ylabel("ν [THz]")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="best", title="branch averages", title_fontsize=8)
    ax.set_title(
        f"Kong dispersion from {dispersion.num_states} states, {dispersion.num_cells} cells",
        fontsize=10,
    )
    _save(figure, path)
