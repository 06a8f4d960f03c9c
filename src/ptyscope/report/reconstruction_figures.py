"""The figures of the reconstruction report: arrays in, one PNG out (written atomically).

Every image axis is in Å (from the pixel size), y pointing down as in the stored arrays;
every colour bar names its unit. ``ptyscope.report.reconstruction_report`` reads the
result file and calls these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from ptyscope.io.atomic import atomic_path

__all__ = [
    "comparison_figure",
    "loss_figure",
    "object_amplitude_figure",
    "object_phase_figure",
    "object_states_figure",
    "parameter_figure",
    "position_corrections_ang",
    "positions_figure",
    "probe_figure",
    "probe_power_fractions",
    "tilt_map_figure",
    "truth_figure",
]

FloatArray = npt.NDArray[np.float64]

#: At most this many arrows in the position-correction quiver.
_MAX_ARROWS = 4096
_MAX_COLUMNS = 6
_DPI = 110


def probe_power_fractions(probe: npt.ArrayLike) -> FloatArray:
    """Fraction of the total power carried by each probe mode.

    Parameters
    ----------
    probe:
        Complex array (modes, ny, nx).

    Returns
    -------
    Real array (modes,): Σ|ψ_m|² / Σ_m Σ|ψ_m|², summing to 1 (all zero for a zero probe).

    Examples
    --------
    >>> import numpy as np
    >>> probe_power_fractions(np.stack([np.ones((2, 2)), np.zeros((2, 2))])).tolist()
    [1.0, 0.0]
    """
    modes = np.asarray(probe)
    if modes.ndim != 3:
        raise ValueError(f"probe must have shape (modes, ny, nx), got {modes.shape}")
    power = (np.abs(modes).astype(np.float64) ** 2).sum(axis=(-2, -1))
    total = float(power.sum())
    return power / total if total > 0 else np.zeros_like(power)


def position_corrections_ang(
    positions_ang: npt.ArrayLike, nominal_positions_ang: npt.ArrayLike
) -> tuple[FloatArray, float]:
    """Position corrections and their RMS length [Å].

    Parameters
    ----------
    positions_ang, nominal_positions_ang:
        Real arrays (N, 2), (y, x) [Å]: refined and nominal scan positions.

    Returns
    -------
    shift: real array (N, 2), (y, x), ``positions_ang - nominal_positions_ang`` [Å].
    rms: sqrt(mean |shift|²) [Å] (0 for no positions).

    Examples
    --------
    >>> import numpy as np
    >>> position_corrections_ang([[0.0, 3.0], [4.0, 0.0]], np.zeros((2, 2)))[1]
    3.5355339059327378
    """
    final = np.asarray(positions_ang, dtype=np.float64)
    nominal = np.asarray(nominal_positions_ang, dtype=np.float64)
    if final.ndim != 2 or final.shape[1] != 2 or final.shape != nominal.shape:
        raise ValueError(
            "positions_ang and nominal_positions_ang must both have shape (N, 2), "
            f"got {final.shape} and {nominal.shape}"
        )
    shift = final - nominal
    rms = float(np.sqrt(np.mean(np.sum(shift**2, axis=1)))) if len(shift) else 0.0
    return shift, rms


def _extent(
    shape: Sequence[int], pixel_ang: tuple[float, float], *, centred: bool
) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) [Å] of an (ny, nx) image, y down."""
    ny, nx = shape[-2], shape[-1]
    height, width = ny * pixel_ang[0], nx * pixel_ang[1]
    if centred:
        return (-width / 2, width / 2, height / 2, -height / 2)
    return (0.0, width, height, 0.0)


def _label_image_axes(ax: Axes) -> None:
    ax.set_xlabel("x [Å]")
    ax.set_ylabel("y [Å]")


def _limits(values: npt.ArrayLike) -> tuple[float, float]:
    """Robust colour limits (0.5th and 99.5th percentiles), never an empty range."""
    data = np.asarray(values, dtype=np.float64)
    low, high = (float(v) for v in np.nanpercentile(data, [0.5, 99.5]))
    if not high > low:
        low, high = low - 0.5, high + 0.5
    return low, high


def _image_grid(
    panels: int, shape: Sequence[int], *, extra_width: float
) -> tuple[list[Axes], Figure]:
    """A figure with a grid of ``panels`` image axes of ``shape``; spare cells hidden."""
    columns = min(panels, _MAX_COLUMNS)
    rows = math.ceil(panels / columns)
    width, height = _panel_size(shape)
    figure = Figure(figsize=(width * columns + extra_width, height * rows), layout="constrained")
    axes = list(np.asarray(figure.subplots(rows, columns, squeeze=False)).ravel())
    for ax in axes[panels:]:
        ax.set_axis_off()
    return axes[:panels], figure


def _save(figure: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=_DPI, format="png")


def _panel_size(shape: Sequence[int]) -> tuple[float, float]:
    """(width, height) [inch] of one image panel, keeping the aspect ratio roughly."""
    aspect = min(max(shape[-2] / max(shape[-1], 1), 0.4), 2.5)
    return 3.0, 2.6 * aspect + 0.4


def object_phase_figure(
    path: Path,
    *,
    phases: npt.ArrayLike,
    slice_indices: Sequence[int],
    phase_sum: npt.ArrayLike,
    pixel_size_ang: tuple[float, float],
) -> None:
    """Write a grid of slice phases (one shared colour scale) and the summed phase.

    Parameters
    ----------
    phases: real array (K, ny, nx), arg O_k of the slices shown [rad].
    slice_indices: the K slice numbers, for the panel titles.
    phase_sum: real array (ny, nx), Σ_k arg O_k over all slices [rad].
    pixel_size_ang: (y, x) object pixel size [Å].
    """
    phases = np.asarray(phases)
    phase_sum = np.asarray(phase_sum)
    panels = len(slice_indices) + 1
    axes, figure = _image_grid(panels, phase_sum.shape, extra_width=1.0)
    extent = _extent(phase_sum.shape, pixel_size_ang, centred=False)
    low, high = _limits(phases) if phases.size else (-1.0, 1.0)
    image = None
    for ax, k, phase in zip(axes, slice_indices, phases, strict=False):
        image = ax.imshow(phase, extent=extent, cmap="viridis", vmin=low, vmax=high)
        ax.set_title(f"slice {k}", fontsize=9)
        _label_image_axes(ax)
    if image is not None:
        figure.colorbar(image, ax=axes[:-1], shrink=0.8, label="phase [rad]")
    total = axes[-1].imshow(phase_sum, extent=extent, cmap="viridis")
    axes[-1].set_title("Σ over slices", fontsize=9)
    _label_image_axes(axes[-1])
    figure.colorbar(total, ax=axes[-1], shrink=0.8, label="summed phase [rad]")
    _save(figure, path)


def object_amplitude_figure(
    path: Path, *, amplitude: npt.ArrayLike, pixel_size_ang: tuple[float, float]
) -> None:
    """Write the object amplitude.

    Parameters
    ----------
    amplitude: real array (ny, nx), Π_k |O_k| over the slices.
    pixel_size_ang: (y, x) object pixel size [Å].
    """
    amplitude = np.asarray(amplitude)
    width, height = _panel_size(amplitude.shape)
    figure = Figure(figsize=(width + 1.6, height + 0.4), layout="constrained")
    ax = figure.subplots()
    low, high = _limits(amplitude)
    image = ax.imshow(
        amplitude,
        extent=_extent(amplitude.shape, pixel_size_ang, centred=False),
        cmap="gray",
        vmin=low,
        vmax=high,
    )
    ax.set_title("amplitude Π_k |O_k|", fontsize=9)
    _label_image_axes(ax)
    figure.colorbar(image, ax=ax, shrink=0.8, label="|O| (transmission, 1 = vacuum)")
    _save(figure, path)


def probe_figure(path: Path, *, probe: npt.ArrayLike, pixel_size_ang: tuple[float, float]) -> None:
    """Write |ψ| of each probe mode, titled with its share of the total power.

    Parameters
    ----------
    probe: complex array (modes, ny, nx).
    pixel_size_ang: (y, x) probe pixel size [Å].
    """
    probe = np.asarray(probe)
    fractions = probe_power_fractions(probe)
    modes = probe.shape[0]
    axes, figure = _image_grid(modes, probe.shape, extra_width=0.6 * min(modes, _MAX_COLUMNS))
    extent = _extent(probe.shape, pixel_size_ang, centred=True)
    for m, ax in enumerate(axes):
        image = ax.imshow(np.abs(probe[m]), extent=extent, cmap="magma")
        ax.set_title(f"mode {m}: {100 * fractions[m]:.1f} % of power", fontsize=9)
        _label_image_axes(ax)
        figure.colorbar(image, ax=ax, shrink=0.8, label="|ψ| [a.u.]")
    _save(figure, path)


def _iterations(values: FloatArray) -> npt.NDArray[np.int64]:
    return np.arange(1, len(values) + 1)


def _plot_history(ax: Axes, values: FloatArray | None, *, label: str, log: bool = False) -> None:
    ax.set_xlabel("iteration")
    ax.set_ylabel(label)
    if values is None or len(values) == 0:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        return
    marker = "o" if len(values) <= 50 else None
    ax.plot(_iterations(values), values, marker=marker, markersize=3)
    if log and np.all(values[np.isfinite(values)] > 0):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)


def loss_figure(path: Path, *, loss: npt.ArrayLike | None) -> None:
    """Write the loss per iteration (log scale when positive); ``loss``: real (iterations,)."""
    loss = None if loss is None else np.atleast_1d(np.asarray(loss, dtype=np.float64))
    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = figure.subplots()
    _plot_history(ax, loss, label="loss", log=True)
    final = "" if loss is None or len(loss) == 0 else f": final {loss[-1]:.4g}"
    ax.set_title(f"loss{final}")
    _save(figure, path)


def parameter_figure(path: Path, *, history: Mapping[str, npt.ArrayLike]) -> None:
    """Write tilt x, tilt y [mrad] and slice thickness [Å] against iteration.

    Parameters
    ----------
    history: real arrays (iterations,) under ``tilt_x_mrad``, ``tilt_y_mrad`` and
        ``slice_thickness_ang``; a missing one leaves its panel marked "not recorded".
    """
    figure = Figure(figsize=(12.0, 3.6), layout="constrained")
    axes = figure.subplots(1, 3)
    panels = (
        ("tilt_x_mrad", "tilt x [mrad]"),
        ("tilt_y_mrad", "tilt y [mrad]"),
        ("slice_thickness_ang", "slice thickness [Å]"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        raw = history.get(key)
        values = None if raw is None else np.atleast_1d(np.asarray(raw, dtype=np.float64))
        _plot_history(ax, values, label=label)
        if values is not None and len(values):
            ax.set_title(f"{label}: final {values[-1]:.4g}", fontsize=9)
    _save(figure, path)


def positions_figure(
    path: Path, *, positions_ang: npt.ArrayLike, nominal_positions_ang: npt.ArrayLike
) -> float:
    """Write the position corrections as a quiver over the scan and a cloud of vectors.

    Parameters
    ----------
    positions_ang, nominal_positions_ang: real arrays (N, 2), (y, x) [Å].

    Returns
    -------
    The RMS length of the corrections [Å], also in the title.
    """
    nominal_ang = np.asarray(nominal_positions_ang, dtype=np.float64)
    shift_ang, rms = position_corrections_ang(positions_ang, nominal_ang)
    figure = Figure(figsize=(11.0, 4.8), layout="constrained")
    field_ax, cloud_ax = figure.subplots(1, 2)
    length = np.hypot(shift_ang[:, 0], shift_ang[:, 1])
    step = max(1, math.ceil(len(nominal_ang) / _MAX_ARROWS))
    y, x = nominal_ang[::step, 0], nominal_ang[::step, 1]
    longest = float(length.max()) if len(length) else 0.0
    if longest > 0:
        span = max(float(np.ptp(nominal_ang[:, 0])), float(np.ptp(nominal_ang[:, 1])), 1.0)
        exaggeration = 0.05 * span / longest  # the longest arrow spans 5 % of the field
        arrows = field_ax.quiver(
            x,
            y,
            shift_ang[::step, 1],
            shift_ang[::step, 0],
            length[::step],
            angles="xy",
            scale_units="xy",
            scale=1.0 / exaggeration,
            cmap="viridis",
        )
        figure.colorbar(arrows, ax=field_ax, shrink=0.8, label="|Δr| [Å]")
        field_ax.set_title(f"corrections (arrows ×{exaggeration:.3g})", fontsize=9)
    else:
        field_ax.scatter(x, y, s=4)
        field_ax.set_title("no position corrections", fontsize=9)
    field_ax.set_aspect("equal")
    field_ax.invert_yaxis()  # y down, as in the object images
    _label_image_axes(field_ax)
    cloud_ax.scatter(shift_ang[:, 1], shift_ang[:, 0], s=4, alpha=0.5)
    cloud_ax.add_patch(Circle((0.0, 0.0), rms, fill=False, color="tab:orange", linestyle="--"))
    cloud_ax.set_aspect("equal", adjustable="datalim")
    cloud_ax.invert_yaxis()
    cloud_ax.set_xlabel("Δx [Å]")
    cloud_ax.set_ylabel("Δy [Å]")
    cloud_ax.set_title("correction vectors, circle = RMS", fontsize=9)
    figure.suptitle(f"position corrections: RMS {rms:.3g} Å over {len(shift_ang)} positions")
    _save(figure, path)
    return rms


def object_states_figure(
    path: Path,
    *,
    phase_sums: npt.ArrayLike,
    weights: npt.ArrayLike | None,
    pixel_size_ang: tuple[float, float],
) -> None:
    """Write the summed phase of each object state and the standard deviation across them.

    Parameters
    ----------
    phase_sums: real array (states, ny, nx), Σ_k arg O_sk per state [rad].
    weights: real array (states,), the state weights for the titles, or ``None``.
    pixel_size_ang: (y, x) object pixel size [Å].
    """
    phase_sums = np.asarray(phase_sums, dtype=np.float64)
    weights = None if weights is None else np.atleast_1d(np.asarray(weights, dtype=np.float64))
    states = phase_sums.shape[0]
    axes, figure = _image_grid(states + 1, phase_sums.shape, extra_width=1.0)
    extent = _extent(phase_sums.shape, pixel_size_ang, centred=False)
    low, high = _limits(phase_sums)
    image = None
    for s, ax in enumerate(axes[:-1]):
        image = ax.imshow(phase_sums[s], extent=extent, cmap="viridis", vmin=low, vmax=high)
        weight = "" if weights is None or len(weights) != states else f", w = {weights[s]:.3f}"
        ax.set_title(f"state {s}{weight}", fontsize=9)
        _label_image_axes(ax)
    if image is not None:
        figure.colorbar(image, ax=axes[:-1], shrink=0.8, label="summed phase [rad]")
    spread = axes[-1].imshow(phase_sums.std(axis=0), extent=extent, cmap="magma")
    axes[-1].set_title("std across states", fontsize=9)
    _label_image_axes(axes[-1])
    figure.colorbar(spread, ax=axes[-1], shrink=0.8, label="σ(phase) [rad]")
    _save(figure, path)


def tilt_map_figure(path: Path, *, tilt_map_mrad: npt.ArrayLike) -> None:
    """Write the local tilt maps; ``tilt_map_mrad``: real (scan_y, scan_x, 2), (y, x) [mrad]."""
    tilt_map_mrad = np.asarray(tilt_map_mrad, dtype=np.float64)
    figure = Figure(figsize=(9.0, 4.0), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, (index, name) in zip(axes, ((1, "tilt x"), (0, "tilt y")), strict=True):
        image = ax.imshow(tilt_map_mrad[..., index], cmap="coolwarm")
        ax.set_title(f"{name}: mean {tilt_map_mrad[..., index].mean():.3g} mrad", fontsize=9)
        ax.set_xlabel("scan x [index]")
        ax.set_ylabel("scan y [index]")
        figure.colorbar(image, ax=ax, shrink=0.8, label=f"{name} [mrad]")
    _save(figure, path)


def truth_figure(
    path: Path,
    *,
    phase_sum: npt.ArrayLike,
    truth_phase: npt.ArrayLike,
    pixel_size_ang: tuple[float, float],
) -> float:
    """Write reconstruction, truth and their difference, each with its mean removed.

    Parameters
    ----------
    phase_sum, truth_phase: real arrays (ny, nx), summed phases [rad] on the same grid.
    pixel_size_ang: (y, x) object pixel size [Å].

    Returns
    -------
    RMS of the difference [rad] (the phase is defined up to a constant, hence the means).
    """
    phase_sum = np.asarray(phase_sum, dtype=np.float64)
    truth_phase = np.asarray(truth_phase, dtype=np.float64)
    recon = phase_sum - phase_sum.mean()
    truth = truth_phase - truth_phase.mean()
    difference = recon - truth
    rms = float(np.sqrt(np.mean(difference**2)))
    width, height = _panel_size(phase_sum.shape)
    figure = Figure(figsize=(3 * width + 2.0, height + 0.4), layout="constrained")
    axes = figure.subplots(1, 3)
    extent = _extent(phase_sum.shape, pixel_size_ang, centred=False)
    low, high = _limits(np.stack([recon, truth]))
    panels = ((recon, "reconstruction (state 0)"), (truth, "truth"))
    for ax, (data, title) in zip(axes[:2], panels, strict=True):
        image = ax.imshow(data, extent=extent, cmap="viridis", vmin=low, vmax=high)
        ax.set_title(f"{title}, mean removed", fontsize=9)
        _label_image_axes(ax)
    figure.colorbar(image, ax=list(axes[:2]), shrink=0.8, label="summed phase [rad]")
    bound = max(float(np.abs(difference).max()), 1e-12)
    diff = axes[2].imshow(difference, extent=extent, cmap="RdBu_r", vmin=-bound, vmax=bound)
    axes[2].set_title(f"difference, RMS {rms:.3g} rad", fontsize=9)
    _label_image_axes(axes[2])
    figure.colorbar(diff, ax=axes[2], shrink=0.8, label="Δ phase [rad]")
    _save(figure, path)
    return rms


def comparison_figure(
    path: Path,
    panels: Sequence[tuple[str, npt.ArrayLike]],
    *,
    pixel_size_ang: tuple[float, float],
    rows: Sequence[str] = (),
) -> None:
    """Phase images side by side on one colour scale per row (e.g. APP vs FPP, Sha et al.
    2022, Fig. 2C/D): ``panels`` of (title, real (ny, nx) phase [rad]), filled row by
    row with ``len(panels) // max(len(rows), 1)`` columns; ``rows`` label the rows."""
    count = len(panels)
    if count == 0:
        raise ValueError("panels must hold at least one (title, image) pair")
    nrows = max(len(rows), 1)
    if count % nrows:
        raise ValueError(f"{count} panels do not fill {nrows} rows evenly")
    ncols = count // nrows
    images = [np.asarray(image, dtype=np.float64) for _, image in panels]
    width, height = _panel_size(images[0].shape)
    figure = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.asarray(figure.subplots(nrows, ncols, squeeze=False))
    for r in range(nrows):
        row = images[r * ncols : (r + 1) * ncols]
        low, high = _limits(np.concatenate([image.ravel() for image in row]))
        for c in range(ncols):
            ax = axes[r, c]
            title, _ = panels[r * ncols + c]
            shown = ax.imshow(
                row[c],
                extent=_extent(row[c].shape, pixel_size_ang, centred=False),
                cmap="gray",
                vmin=low,
                vmax=high,
            )
            ax.set_title(title if not rows else f"{rows[r]}: {title}", fontsize=9)
            _label_image_axes(ax)
        figure.colorbar(shown, ax=list(axes[r]), shrink=0.8, label="phase [rad]")
    _save(figure, path)
