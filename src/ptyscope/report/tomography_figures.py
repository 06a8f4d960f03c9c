"""Figures of the tomography: arrays in, a matplotlib :class:`Figure` out.

* :func:`orthoslices_figure`: the xy, xz and yz slices (or slabs) of a volume through one
  point, with the atoms near each plane drawn over them.
* :func:`projections_figure`: measured and reprojected projections and their difference
  for a few tilts, and the relative residual of every tilt.
* :func:`axis_spectra_figure`: the spectral amplitude along k_x, k_y and k_z with the
  resolution of each axis, and optionally projected planes of the 3D spectrum.
* :func:`fsc_figure`: Fourier shell correlation curves, thresholds and resolutions.

The alignment and atom figures are in :mod:`ptyscope.report.tomography_atoms_figures`.

:func:`save_figure` writes a figure atomically (PNG at 110 dpi unless the suffix names
another format). The figures use the object-oriented API (:class:`Figure`, no pyplot):
no backend or other global state is touched.

Conventions are those of :mod:`ptyscope.tomography.projector`: a volume is real
(nz, ny, nx), axes (z, y, x), of isotropic voxel v [Å], voxel (k, i, j) centred at
(z, y, x) = (k·v, i·v, j·v) Å; atom positions are (N, 3) (x, y, z) [Å] in that frame;
projections are (tilts, ny, nx) on the volume's lateral pixels, shifts (s_y, s_x) [Å];
tilts are Euler angles (φ, θ, ψ) [deg], a single-axis series being (0, θ, 0). Real-space
images are in Å with pixel centres at k·v and the row axis (y, or z in the side views)
pointing down as in the stored arrays: in the xz and yz panels the beam (+z) goes down.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D

from ptyscope._validation import require_positive
from ptyscope.io.atomic import atomic_path

__all__ = [
    "axis_spectra_figure",
    "fsc_figure",
    "orthoslices_figure",
    "projections_figure",
    "save_figure",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Extent = tuple[float, float, float, float]

_DPI = 110
#: Tilts shown by :func:`projections_figure` when none are chosen.
_DEFAULT_TILTS = 5
_AXIS_COLOURS = {"x": "tab:blue", "y": "tab:orange", "z": "tab:green"}
_XYZ = "xyz"
#: The panels of :func:`orthoslices_figure`: (name, normal, across, down) as (x, y, z) indices.
_PLANES = (("xy", 2, 0, 1), ("xz", 1, 0, 2), ("yz", 0, 1, 2))
#: Atoms over the orthoslices: open circles.
_RING: dict[str, Any] = {"s": 36, "facecolors": "none", "linewidths": 1.2}


def save_figure(figure: Figure, path: str | os.PathLike[str], *, dpi: int = _DPI) -> None:
    """Write ``figure`` to ``path`` atomically, in the format of its suffix (PNG if none).

    Parameters
    ----------
    figure:
        The figure, e.g. from :func:`orthoslices_figure`.
    path:
        File to write; its folder is created. An interrupted write leaves the old file.
    dpi:
        Resolution [dots per inch].
    """
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, dpi=dpi, format=target.suffix.lstrip(".").lower() or "png")


def _real(name: str, value: npt.ArrayLike, ndim: int, layout: str) -> FloatArray:
    array = np.asarray(value)
    numeric = np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)
    if array.ndim != ndim or not (numeric or array.size == 0):
        raise ValueError(
            f"{name} must be a real array {layout}, got shape {array.shape}, dtype {array.dtype}"
        )
    return array.astype(np.float64, copy=False)


def _shaped(name: str, value: npt.ArrayLike, shape: tuple[int, ...], layout: str) -> FloatArray:
    """``value`` as a real array of exactly ``shape``, described as ``layout``."""
    array = _real(name, value, len(shape), layout)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {layout} = {shape}, got {array.shape}")
    return array


def _positions(name: str, value: npt.ArrayLike) -> FloatArray:
    raw = np.asarray(value)
    positions = _real(name, raw.reshape(0, 3) if raw.size == 0 else raw, 2, "(N, 3)")
    if positions.shape[1] != 3 or not np.isfinite(positions).all():
        raise ValueError(
            f"{name} must be finite, of shape (N, 3), (x, y, z) [Å], got shape "
            f"{positions.shape} with {np.sum(~np.isfinite(positions))} non-finite"
        )
    return positions


def _labels(name: str, value: npt.ArrayLike | None, count: int, species: int | None) -> IntArray:
    """Integer labels (count,) >= 0, below ``species`` if given; all 0 when None."""
    if value is None:
        return np.zeros(count, dtype=np.int64)
    raw = np.asarray(value)
    if raw.shape != (count,) or (raw.size and not np.issubdtype(raw.dtype, np.integer)):
        raise ValueError(
            f"{name} must be integers of shape ({count},), got shape {raw.shape}, dtype {raw.dtype}"
        )
    labels = raw.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= (species or math.inf)):
        rule = ">= 0" if species is None else f"in [0, {species - 1}] (one per symbol)"
        raise ValueError(f"{name} must be {rule}, got [{labels.min()}, {labels.max()}]")
    return labels


def _names(symbols: Sequence[str] | None, labels: IntArray) -> list[str]:
    if symbols is not None:
        return [str(s) for s in symbols]
    return [f"species {s}" for s in range(int(labels.max()) + 1 if labels.size else 1)]


def _euler(name: str, value: npt.ArrayLike, tilts: int | None = None) -> FloatArray:
    euler = _real(name, value, 2, "(tilts, 3)")
    if euler.shape[1] != 3 or (tilts is not None and euler.shape[0] != tilts):
        rows = "tilts" if tilts is None else str(tilts)
        raise ValueError(f"{name} must have shape ({rows}, 3), (φ, θ, ψ) [deg], got {euler.shape}")
    return euler


Frequencies = npt.ArrayLike | Mapping[str, npt.ArrayLike]


def _curves(
    name: str, curves: Mapping[str, npt.ArrayLike], frequencies: Frequencies
) -> dict[str, tuple[FloatArray, FloatArray]]:
    """name → (k [1/Å], values), both (n,); k shared or per curve, NaN where undefined."""
    if not curves:
        raise ValueError(f"{name} must hold at least one curve, got none")
    result = {}
    for key, values in curves.items():
        where = "frequencies_per_angstrom"
        if isinstance(frequencies, Mapping):
            if key not in frequencies:
                raise ValueError(f"{where} must have a key for each of {name}, missing {key!r}")
            raw, where = frequencies[key], f"{where}[{key!r}]"
        else:
            raw = frequencies
        k = _real(where, raw, 1, "(n,) [1/Å]")
        if np.sum(np.isfinite(k)) < 2 or np.isinf(k).any():
            raise ValueError(
                f"{where} must hold at least 2 finite values [1/Å] and no infinite one, got "
                f"{np.sum(np.isfinite(k))} finite and {np.sum(np.isinf(k))} infinite of {k.size}"
            )
        result[str(key)] = (k, _shaped(f"{name}[{key!r}]", values, k.shape, f"(n,) of {where}"))
    return result


def _resolutions(
    resolution_ang: Mapping[str, float | None] | None, names: Sequence[str]
) -> dict[str, float]:
    """Resolutions [Å] by curve name (NaN: not determined)."""
    result: dict[str, float] = {}
    for key, value in (resolution_ang or {}).items():
        if key not in names:
            raise ValueError(f"resolution_ang keys must be among {list(names)}, got {key!r}")
        number = math.nan if value is None else float(value)
        if not (math.isnan(number) or number > 0):
            raise ValueError(f"resolution_ang[{key!r}] must be > 0 Å or NaN, got {value!r}")
        result[key] = number
    return result


def _extent(rows: int, columns: int, voxel_ang: float) -> Extent:
    """imshow extent [Å]: pixel (i, j) centred at (i·v, j·v), rows pointing down."""
    v = voxel_ang
    return (-v / 2, (columns - 0.5) * v, (rows - 0.5) * v, -v / 2)


def _range(*arrays: FloatArray) -> tuple[float, float]:
    """(min, max) over the finite values, never an empty range."""
    values = np.concatenate([a[np.isfinite(a)] for a in arrays])
    if values.size == 0:
        return -0.5, 0.5
    low, high = float(values.min()), float(values.max())
    return (low - 0.5, high + 0.5) if not high > low else (low, high)


def _species_colour(label: int) -> tuple[float, float, float, float]:
    colours = colormaps["tab10"]
    return colours(label % colours.N)


def _tilt_title(euler: FloatArray) -> str:
    """θ as "θ = 30°", with φ and ψ added where they are not 0."""
    phi, theta, psi = (round(float(a), 2) for a in euler)
    extra = [f"{name} = {a:g}°" for name, a in (("φ", phi), ("ψ", psi)) if a != 0]
    return ", ".join([f"θ = {theta:g}°", *extra])


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def _resolution_text(resolution: float | None) -> str:
    if resolution is None:
        return ""
    return f": {resolution:.2f} Å" if math.isfinite(resolution) else ": not determined"


def _centre_of_mass(volume: FloatArray, voxel_ang: float) -> tuple[float, float, float]:
    """(x, y, z) [Å] of the centre of the positive part; the box centre n·v/2 if none."""
    weights = np.clip(np.nan_to_num(volume), 0.0, None)
    total = float(weights.sum())
    nz, ny, nx = volume.shape
    if not (total > 0 and math.isfinite(total)):
        return (nx * voxel_ang / 2, ny * voxel_ang / 2, nz * voxel_ang / 2)
    marginals = (weights.sum(axis=(0, 1)), weights.sum(axis=(0, 2)), weights.sum(axis=(1, 2)))
    x, y, z = (float(m @ np.arange(m.size)) * voxel_ang / total for m in marginals)
    return (x, y, z)


def _slab(size: int, centre_ang: float, voxel_ang: float, slab_ang: float | None) -> IntArray:
    """Voxels along an axis within ±slab/2 of the plane (at least the nearest one)."""
    nearest = np.array([np.clip(np.rint(centre_ang / voxel_ang), 0, size - 1)], dtype=np.int64)
    if slab_ang is None:
        return nearest
    distance = np.abs(np.arange(size) * voxel_ang - centre_ang)
    chosen = np.flatnonzero(distance <= slab_ang / 2 + 1e-9 * voxel_ang)
    return chosen if chosen.size else nearest


def _centre(
    center_ang: Sequence[float] | None, data: FloatArray, v: float
) -> tuple[float, float, float]:
    if center_ang is None:
        return _centre_of_mass(data, v)
    values = tuple(float(c) for c in center_ang)
    top = tuple((n - 0.5) * v for n in data.shape[::-1])
    if len(values) != 3 or not all(-v / 2 <= c <= t for c, t in zip(values, top, strict=True)):
        raise ValueError(
            f"center_ang must be (x, y, z) [Å] in the box, from -v/2 = {-v / 2:g} to "
            f"(n - 1/2)·v = {tuple(round(t, 6) for t in top)}, got {tuple(center_ang)}"
        )
    return (values[0], values[1], values[2])


def orthoslices_figure(
    volume: npt.ArrayLike,
    voxel_ang: float,
    *,
    center_ang: Sequence[float] | None = None,
    atoms: npt.ArrayLike | None = None,
    labels: npt.ArrayLike | None = None,
    symbols: Sequence[str] | None = None,
    slab_ang: float | None = None,
    units: str = "a.u.",
    cmap: str = "gray",
) -> Figure:
    """The xy, xz and yz slices (or summed slabs) of a volume through one point.

    Panels, left to right: xy (x across, y down) at z = c_z, xz (x across, z down) at
    y = c_y and yz (y across, z down) at x = c_x, on one colour scale (min to max). Atoms
    within ±slab/2 of a plane are drawn as circles coloured by species, named in a legend.

    Parameters
    ----------
    volume:
        Real array (nz, ny, nx), axes (z, y, x); voxel (k, i, j) centred at
        (z, y, x) = (k·v, i·v, j·v) [Å].
    voxel_ang:
        Voxel size v [Å].
    center_ang:
        (x, y, z) [Å] where the three planes cross, inside the box; default: the centre
        of mass of the positive voxels (the box centre n·v/2 when there are none).
    atoms:
        Real array (N, 3), (x, y, z) [Å], drawn over the images.
    labels:
        Integer array (N,) of species 0 … S − 1 (default: all 0).
    symbols:
        S names of the species for the legend (default: "species s").
    slab_ang:
        Slab thickness [Å]: the voxels whose centres lie within ±slab/2 of a plane are
        summed and the atoms within ±slab/2 drawn. Default: the nearest voxel only, and
        the atoms within ±v/2.
    units:
        Units of the volume, for the colour bar (e.g. "V").
    cmap:
        Colour map of the images (grey by default, so that the atom colours stand out).

    Returns
    -------
    Figure
        Its first three axes are the xy, xz and yz panels.

    Examples
    --------
    >>> figure = orthoslices_figure(np.ones((4, 4, 4)), 0.5, atoms=[[1.0, 1.0, 1.0]])
    >>> [ax.get_title().split(" at ")[0] for ax in figure.axes[:3]]
    ['xy', 'xz', 'yz']
    """
    data = _real("volume", volume, 3, "(nz, ny, nx)")
    if data.size == 0:
        raise ValueError(f"volume must not be empty, got shape {data.shape}")
    require_positive("voxel_ang", voxel_ang, "Å")
    v = float(voxel_ang)
    if slab_ang is not None:
        require_positive("slab_ang", slab_ang, "Å")
    centre = _centre(center_ang, data, v)
    positions = None if atoms is None else _positions("atoms", atoms)
    if labels is not None and positions is None:
        raise ValueError("labels needs atoms, got labels alone")
    count = 0 if positions is None else len(positions)
    species = _labels("labels", labels, count, None if symbols is None else len(symbols))
    names = _names(symbols, species)
    half = (v if slab_ang is None else slab_ang) / 2

    slabs = [
        _slab(data.shape[2 - normal], centre[normal], v, slab_ang) for _, normal, *_ in _PLANES
    ]
    images = [
        np.take(data, chosen, axis=2 - normal).sum(axis=2 - normal)
        for chosen, (_, normal, *_) in zip(slabs, _PLANES, strict=True)
    ]
    low, high = _range(*images)
    figure = Figure(figsize=(12.0, 4.4), layout="constrained")
    axes = list(figure.subplots(1, 3))
    shown: list[AxesImage] = []
    for ax, image, chosen, (plane, normal, across, down) in zip(
        axes, images, slabs, _PLANES, strict=True
    ):
        extent = _extent(image.shape[0], image.shape[1], v)
        shown.append(ax.imshow(image, extent=extent, cmap=cmap, vmin=low, vmax=high))
        ax.set_xlabel(f"{_XYZ[across]} [Å]")
        ax.set_ylabel(f"{_XYZ[down]} [Å]")
        slab = "" if slab_ang is None else f", ±{half:.3g} Å ({chosen.size} voxels)"
        ax.set_title(f"{plane} at {_XYZ[normal]} = {centre[normal]:.2f} Å{slab}", fontsize=9)
        if positions is not None:
            near = np.abs(positions[:, normal] - centre[normal]) <= half
            for s in np.unique(species[near]):
                mine = near & (species == s)
                xy = positions[mine][:, [across, down]].T
                ax.scatter(*xy, edgecolors=[_species_colour(int(s))], **_RING)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal")
    summed = "" if slab_ang is None else f", summed over a {2 * half:.3g} Å slab"
    figure.colorbar(shown[0], ax=axes, shrink=0.8, label=f"{units}{summed}")
    if species.size:
        handles = [
            Line2D([], [], marker="o", ls="none", mfc="none", mec=_species_colour(int(s)))
            for s in np.unique(species)
        ]
        figure.legend(
            handles,
            [names[int(s)] for s in np.unique(species)],
            loc="outside lower center",
            ncols=min(len(handles), 8),
            fontsize=8,
            title=f"atoms within ±{half:.3g} Å of each plane",
            title_fontsize=8,
        )
    nz, ny, nx = data.shape
    figure.suptitle(
        f"volume {nx} × {ny} × {nz} (x, y, z) voxels of {v:.3g} Å, centre "
        f"({centre[0]:.2f}, {centre[1]:.2f}, {centre[2]:.2f}) Å"
    )
    return figure


def _chosen_tilts(tilts: Sequence[int] | None, theta: FloatArray) -> IntArray:
    """The given tilt indices, or 5 spread evenly over the θ range, in θ order."""
    count = theta.size
    if tilts is None:
        picks = np.rint(np.linspace(0, count - 1, min(_DEFAULT_TILTS, count)))
        return np.argsort(theta, kind="stable")[np.unique(picks).astype(np.int64)]
    shown = np.asarray(tilts, dtype=np.int64).reshape(-1)
    if shown.size == 0 or shown.min() < -count or shown.max() >= count:
        raise ValueError(f"tilts must be at least one index in [0, {count - 1}], got {list(tilts)}")
    return shown % count


def projections_figure(
    measured: npt.ArrayLike,
    reprojected: npt.ArrayLike,
    euler_deg: npt.ArrayLike,
    voxel_ang: float,
    *,
    tilts: Sequence[int] | None = None,
    units: str = "a.u.",
) -> Figure:
    """Measured and reprojected projections and their difference, one column per tilt.

    Rows: measured, reprojected (one colour scale), measured − reprojected (a symmetric
    diverging scale) titled with the relative residual r_t = ‖m_t − p_t‖ / ‖m_t‖; below,
    r_t of every tilt against θ, the shown ones ringed. Columns are titled with θ, and
    with φ and ψ where they are not zero.

    Parameters
    ----------
    measured, reprojected:
        Real arrays (tilts, ny, nx) on the volume's lateral pixels: pixel (i, j) at
        (y, x) = (i·v, j·v) [Å].
    euler_deg:
        Real array (tilts, 3): (φ, θ, ψ) [deg] of each tilt.
    voxel_ang:
        Pixel size v [Å].
    tilts:
        Indices of the tilts to show; default: 5 spread over the θ range.
    units:
        Units of the projections (those of the volume times Å), for the colour bars.

    Returns
    -------
    Figure
        Axes: 3 rows × shown tilts (measured, reprojected, difference, row by row), the
        residual plot, then the colour bars.
    """
    m = _real("measured", measured, 3, "(tilts, ny, nx)")
    if m.size == 0:
        raise ValueError(f"measured must not be empty, got shape {m.shape}")
    p = _shaped("reprojected", reprojected, m.shape, "(tilts, ny, nx) of measured")
    euler = _euler("euler_deg", euler_deg, m.shape[0])
    require_positive("voxel_ang", voxel_ang, "Å")
    shown = _chosen_tilts(tilts, euler[:, 1])
    difference = m - p
    norms = np.sqrt(np.sum(m**2, axis=(1, 2)))
    misfit = np.sqrt(np.sum(difference**2, axis=(1, 2)))
    residual = misfit / np.where(norms > 0, norms, np.nan)
    total = float(np.linalg.norm(misfit) / np.linalg.norm(norms)) if norms.any() else math.nan

    columns = int(shown.size)
    aspect = min(max(m.shape[1] / m.shape[2], 0.4), 2.5)
    height = 3 * (2.2 * aspect + 0.5) + 2.4
    figure = Figure(figsize=(2.6 * columns + 1.8, height), layout="constrained")
    grid = figure.add_gridspec(4, columns, height_ratios=(1.0, 1.0, 1.0, 0.9))
    rows = [[figure.add_subplot(grid[r, c]) for c in range(columns)] for r in range(3)]
    trend = figure.add_subplot(grid[3, :])
    extent = _extent(m.shape[1], m.shape[2], float(voxel_ang))
    low, high = _range(m[shown], p[shown])
    bound = max(float(np.nanmax(np.abs(difference[shown]))), 1e-12)
    top: list[AxesImage] = []
    diff: list[AxesImage] = []
    for c, t in enumerate(shown):
        for r, data in enumerate((m, p)):
            top.append(
                rows[r][c].imshow(data[t], extent=extent, cmap="viridis", vmin=low, vmax=high)
            )
        diff.append(
            rows[2][c].imshow(difference[t], extent=extent, cmap="RdBu_r", vmin=-bound, vmax=bound)
        )
        rows[0][c].set_title(f"tilt {t}: {_tilt_title(euler[t])}", fontsize=9)
        rows[2][c].set_title(f"r = {residual[t]:.3g}", fontsize=9)
        for r, name in enumerate(("measured", "reprojected", "difference")):
            rows[r][c].set_xlabel("x [Å]")
            rows[r][c].set_ylabel(f"{name}\ny [Å]" if c == 0 else "y [Å]")
    figure.colorbar(top[0], ax=rows[0] + rows[1], shrink=0.8, label=f"projection [{units}]")
    figure.colorbar(diff[0], ax=rows[2], shrink=0.8, label=f"measured − reprojected [{units}]")
    trend.plot(euler[:, 1], residual, "o", markersize=3, color="tab:blue", label="all tilts")
    trend.plot(
        euler[shown, 1], residual[shown], "o", ms=9, mfc="none", mec="tab:red", label="shown"
    )
    trend.set_xlabel("θ [deg]")
    trend.set_ylabel("relative residual $r_t$")
    trend.grid(alpha=0.3)
    trend.legend(fontsize=8)
    figure.suptitle(f"{m.shape[0]} projections: relative residual ‖m − p‖/‖m‖ = {total:.3g}")
    return figure


def _plane(
    name: str, amplitude: npt.ArrayLike, extent: Sequence[float]
) -> tuple[FloatArray, Extent, str, str]:
    """(image, extent, across, up) of one spectrum plane, checked."""
    letters = re.findall(r"[xyz]", name.lower())
    if len(letters) != 2 or letters[0] == letters[1]:
        raise ValueError(
            "planes keys must name two different axes of x, y, z (across, then up), e.g. "
            f"'xy' or 'kx-kz', got {name!r}"
        )
    image = _real(f"planes[{name!r}]", amplitude, 2, "(rows, columns)")
    if (image < 0).any():
        raise ValueError(f"planes[{name!r}] must be amplitudes >= 0, got minimum {image.min():g}")
    box = tuple(float(e) for e in extent)
    if len(box) != 4 or not all(math.isfinite(e) for e in box):
        raise ValueError(
            f"planes[{name!r}] extent must be 4 finite (left, right, bottom, top) [1/Å], "
            f"got {extent!r}"
        )
    return image, (box[0], box[1], box[2], box[3]), letters[0], letters[1]


def _draw_curves(
    ax: Axes,
    curves: Mapping[str, tuple[FloatArray, FloatArray]],
    labels: Mapping[str, str],
    marks: Mapping[str, Sequence[float]],
) -> None:
    """Curves (k [1/Å], values), axes x, y, z in their colours, the others in spare ones;
    a dotted line at 1/d for each finite resolution d [Å] in ``marks``."""
    spare = iter(("black", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"))
    for name, (k, values) in curves.items():
        colour = _AXIS_COLOURS.get(name) or next(spare, "0.4")
        ax.plot(k, values, color=colour, lw=1.3, label=labels[name])
        for d in filter(math.isfinite, marks[name]):
            ax.axvline(1.0 / d, color=colour, ls=":", lw=1.1)
    ax.set_xlim(_k_range(curves))
    ax.set_xlabel("spatial frequency k [1/Å]")
    ax.grid(alpha=0.3, which="both")


def _k_range(curves: Mapping[str, tuple[FloatArray, FloatArray]]) -> tuple[float, float]:
    every = np.concatenate([k[np.isfinite(k)] for k, _ in curves.values()])
    return float(every.min()), float(every.max())


def axis_spectra_figure(
    frequencies_per_angstrom: Frequencies,
    spectra: Mapping[str, npt.ArrayLike],
    resolution_ang: Mapping[str, float | None],
    *,
    planes: Mapping[str, tuple[npt.ArrayLike, Sequence[float]]] | None = None,
) -> Figure:
    """Spectral amplitude along each axis against spatial frequency, resolutions marked.

    Each spectrum is drawn on a log scale; the resolution d of its axis is a dotted line
    at k = 1/d in the curve's colour and stated in the legend ("$k_x$: 1.23 Å"). Optional
    small images show projected planes of the 3D spectrum on a log colour scale.

    Parameters
    ----------
    frequencies_per_angstrom:
        Real array (n,): spatial frequency k [1/Å] of the samples, shared by the spectra;
        or axis name → its own array (n_a,) (e.g. the ``frequency_inv_ang`` of
        :class:`ptyscope.tomography.resolution.AxisSpectra` for a non-cubic volume).
    spectra:
        Axis name (e.g. "x", "y", "z", drawn as k_x …) → real array of amplitude [a.u.]
        on its frequencies; non-positive values are left out of the log plot.
    resolution_ang:
        Axis name → resolution d [Å] (> 0; None, NaN or inf: not determined); each key must
        be a key of ``spectra``, which need not all be here.
    planes:
        Name of two axes, across then up (e.g. "xy", "kx-kz"), → (amplitude, extent): a
        real array (rows, columns) ≥ 0, row 0 at the bottom, and its extent
        (left, right, bottom, top) [1/Å] as for ``imshow(origin="lower")``.

    Returns
    -------
    Figure
        Axes: the spectra, then one per plane, then the colour bars.
    """
    curves = _curves("spectra", spectra, frequencies_per_angstrom)
    given = _resolutions(resolution_ang, list(curves))
    images = {name: _plane(name, *entry) for name, entry in (planes or {}).items()}

    panels = max(len(images), 1)
    figure = Figure(figsize=(max(3.3 * panels, 7.0), 7.6 if images else 4.4), layout="constrained")
    grid = figure.add_gridspec(
        1 + bool(images), panels, height_ratios=(1.2, 1.0)[: 1 + bool(images)]
    )
    ax = figure.add_subplot(grid[0, :])
    labels = {
        name: (f"$k_{name}$" if name in _AXIS_COLOURS else name) + _resolution_text(given.get(name))
        for name in curves
    }
    _draw_curves(ax, curves, labels, {name: [given.get(name, math.nan)] for name in curves})
    ax.set_yscale("log", nonpositive="mask")
    ax.set_ylabel("projected spectral amplitude [a.u.]")
    ax.legend(fontsize=8, title="axis: resolution (dotted at 1/d)", title_fontsize=8)
    ax.set_title("spectral amplitude along each axis", fontsize=10)
    for c, (name, (image, extent, across, up)) in enumerate(images.items()):
        plane_ax = figure.add_subplot(grid[1, c])
        positive = image[image > 0]
        if positive.size:
            norm = LogNorm(float(positive.min()), max(positive.max(), 10 * positive.min()))
            shown = plane_ax.imshow(image, extent=extent, origin="lower", cmap="magma", norm=norm)
            figure.colorbar(shown, ax=plane_ax, shrink=0.8, label="amplitude [a.u.]")
        else:
            _no_data(plane_ax, "all zero")
        plane_ax.set(xlabel=f"$k_{across}$ [1/Å]", ylabel=f"$k_{up}$ [1/Å]")
        plane_ax.set_title(f"({across}, {up}) plane: {name}", fontsize=9)
    return figure


def _crossing_ang(frequencies: FloatArray, curve: FloatArray, threshold: float) -> float:
    """1/k [Å] where ``curve`` first falls below ``threshold``, linear between samples;
    +inf if it never does, NaN if it starts below. Undefined (NaN) samples are skipped."""
    defined = np.isfinite(frequencies) & np.isfinite(curve)
    frequencies, curve = frequencies[defined], curve[defined]
    below = np.flatnonzero(curve < threshold)
    if below.size == 0:
        return math.inf
    i = int(below[0])
    if i == 0:
        return math.nan
    c0, c1, f0, f1 = curve[i - 1], curve[i], frequencies[i - 1], frequencies[i]
    k = f0 + (threshold - c0) * (f1 - f0) / (c1 - c0)
    return 1.0 / k if k > 0 else math.nan


def _crossing_text(resolution: float, threshold: float, k_max: float) -> str:
    if math.isnan(resolution):
        return f"none @ {threshold:g}"
    if math.isinf(resolution):
        return f"≤ {1 / k_max:.2f} Å @ {threshold:g} (no crossing)"
    return f"{resolution:.2f} Å @ {threshold:g}"


def fsc_figure(
    frequencies_per_angstrom: Frequencies,
    curves: Mapping[str, npt.ArrayLike],
    *,
    thresholds: Sequence[float] = (0.143,),
    resolution_ang: Mapping[str, float | None] | None = None,
) -> Figure:
    """Fourier shell correlation curves, threshold lines and resolutions in the legend.

    Parameters
    ----------
    frequencies_per_angstrom:
        Real array (n,): shell frequencies k [1/Å], increasing, shared by the curves; or
        label → its own array (e.g. the mean |k| of each cone's shells). NaN marks an
        empty shell, left out.
    curves:
        Label (e.g. "full", "x", "y", "z") → real array of FSC values on its frequencies.
    thresholds:
        FSC levels drawn as horizontal lines (0.143: the half-map criterion of Rosenthal
        & Henderson 2003).
    resolution_ang:
        Label → resolution [Å] to state (None, NaN or inf: not determined). For the curves not
        named here the crossing of each threshold is computed: 1/k where the curve first
        falls below it, linear between samples ("no crossing" if it never does).

    Returns
    -------
    Figure
        One axes.

    References
    ----------
    P. B. Rosenthal and R. Henderson, J. Mol. Biol. 333, 721-745 (2003).
    """
    arrays = _curves("curves", curves, frequencies_per_angstrom)
    given = _resolutions(resolution_ang, list(arrays))
    levels = [float(t) for t in thresholds]
    if not all(math.isfinite(t) for t in levels):
        raise ValueError(f"thresholds must be finite FSC values, got {list(thresholds)}")
    marks = {
        name: [given[name]] if name in given else [_crossing_ang(k, c, t) for t in levels]
        for name, (k, c) in arrays.items()
    }
    k_max = _k_range(arrays)[1]
    labels = {name: name + _resolution_text(d) for name, d in given.items()}
    for name in arrays.keys() - given.keys():
        texts = [_crossing_text(d, t, k_max) for d, t in zip(marks[name], levels, strict=True)]
        labels[name] = ": ".join([name, ", ".join(texts)]) if texts else name
    figure = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax = figure.subplots()
    _draw_curves(ax, arrays, labels, marks)
    for n, t in enumerate(levels):
        ax.axhline(t, color="0.4", ls=("--", "-.")[n % 2], lw=0.9, label=f"threshold {t:g}")
    values = np.concatenate([c[np.isfinite(c)] for _, c in arrays.values()])
    lowest = float(values.min()) if values.size else 0.0
    ax.set_ylim(min(lowest, *levels, 0.0) - 0.05, 1.05)
    ax.set_ylabel("FSC")
    ax.legend(fontsize=8, title="curve: resolution (dotted at 1/d)", title_fontsize=8)
    ax.set_title("Fourier shell correlation", fontsize=10)
    return figure
