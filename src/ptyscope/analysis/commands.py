"""``ptyscope analyze``: measurements of a result file written as CSV tables and figures.

* :func:`analyze_columns`: SrTiO3-type [001] lattice fitted to the summed phase, every
  column refined (centre of mass or 2D Gaussian, with uncertainties), and the polar
  displacements d_Sr-TiO and d_O-TiO (Sha et al. 2022, Figs. 2F and 4).
* :func:`analyze_resolution`: diffractogram and information limit, and the Fourier ring
  correlation with a second (half-scan) reconstruction when given.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ptyscope.io.atomic import atomic_path
from ptyscope.io.hdf5_guard import open_untrusted_hdf5

from .columns import find_peaks, fit_lattice, lattice_sites, srtio3_lattice
from .images import PhaseImage, load_phase
from .metrics import relative_displacements, summarize_displacements
from .refine import refine_com, refine_gaussian
from .resolution import diffractogram, fourier_ring_correlation, frc_resolution, information_limit

__all__ = [
    "AlignmentReport",
    "ColumnReport",
    "ResolutionReport",
    "analyze_alignment",
    "analyze_columns",
    "analyze_resolution",
    "default_folder",
    "link_into_report",
]


def default_folder(result_path: str | os.PathLike[str]) -> Path:
    """Where measurements of a result go: ``<result>_report/analysis`` (beside the HTML
    report of the reconstruction)."""
    result = Path(result_path)
    return result.with_name(result.stem + "_report") / "analysis"


#: Smallest ring [pixels] that enters the FRC resolution estimate.
_MIN_RING_PIXELS = 32


@dataclass(frozen=True)
class ColumnReport:
    """Summary of :func:`analyze_columns` (pm: mean ± std over columns)."""

    columns: int
    lattice_a_ang: tuple[float, float]
    d_sr_tio_pm: tuple[float, float, float, float]
    d_o_tio_pm: tuple[float, float, float, float]
    median_sigma_pm: float
    table: Path
    figure: Path


@dataclass(frozen=True)
class ResolutionReport:
    """Summary of :func:`analyze_resolution`."""

    information_limit_ang: float
    frc_resolution_ang: float | None
    figure: Path
    table: Path | None


def _output_folder(out_dir: str | os.PathLike[str]) -> Path:
    """Create the measurement folder; called only once the result has been read, so that
    a file that cannot be read leaves no empty folder behind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def link_into_report(folder: Path) -> None:
    """List the measurement files of ``folder`` in the reconstruction report beside it.

    When ``folder`` is ``<result>_report/analysis`` and the report's ``index.html`` exists,
    its "Measurements" section is (re)written with links to every PNG and CSV there.
    """
    index = folder.parent / "index.html"
    if not index.is_file():
        return
    items = sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".csv"))
    figures = "".join(
        f'<p><img src="{folder.name}/{name}" alt="{name}" style="max-width:100%"></p>'
        for name in items
        if name.endswith(".png")
    )
    tables = "".join(
        f'<li><a href="{folder.name}/{name}">{name}</a></li>'
        for name in items
        if name.endswith(".csv")
    )
    section = (
        "<!-- measurements -->"
        f"<h2>Measurements</h2>{figures}<ul>{tables}</ul>"
        "<!-- /measurements -->"
    )
    html = index.read_text()
    start, end = html.find("<!-- measurements -->"), html.find("<!-- /measurements -->")
    if start >= 0 and end >= 0:
        html = html[:start] + section + html[end + len("<!-- /measurements -->") :]
    else:
        html = html.replace("</body>", section + "</body>")
    with atomic_path(index) as tmp:
        tmp.write_text(html)


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def analyze_columns(
    result_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    method: str = "gaussian",
    a_ang: float = 3.905,
    radius_ang: float = 0.6,
    margin_ang: float = 1.0,
    slice_index: int | None = None,
    state: int = 0,
    sr_position_ang: tuple[float, float] | None = None,
) -> ColumnReport:
    """Fit an [001] perovskite lattice (Sr, TiO, O columns), refine, measure displacements.

    ``sr_position_ang`` (y, x) [Å] marks one Sr (A-site) column; without it the brightest
    column is taken as Sr. At sub-ångström resolution Sr and TiO columns can be nearly
    equally bright, and swapping them flips the sign of d_Sr-TiO: give it for real data.
    Writes ``columns.csv`` (label, y, x, σ_y, σ_x in Å) and ``columns.png``.
    """
    if method not in ("gaussian", "com"):
        raise ValueError(f"method must be 'gaussian' or 'com', got {method!r}")
    image = load_phase(result_path, state=state, slice_index=slice_index)
    out = _output_folder(out_dir)
    phase = image.phase_rad
    peaks = find_peaks(
        phase,
        image.pixel_size_ang,
        min_distance_ang=0.8 * a_ang / 2,
        origin_ang=image.origin_ang,
    )
    region = image.inner_region(margin_ang)
    peaks = peaks[image.inside(peaks, margin_ang)]
    if len(peaks) < 4:
        raise ValueError(
            f"found {len(peaks)} columns inside the scanned area less {margin_ang} Å: too "
            "few to fit a lattice"
        )
    if sr_position_ang is None:
        strongest = peaks[0]  # brightest column: taken as Sr
    else:  # the peak nearest to the given Sr column
        strongest = peaks[np.argmin(np.hypot(*(peaks - np.asarray(sr_position_ang)).T))]
    lattice = fit_lattice(peaks, srtio3_lattice((float(strongest[0]), float(strongest[1])), a_ang))
    sites, labels, _ = lattice_sites(lattice, region)
    refine = refine_gaussian if method == "gaussian" else refine_com
    fit = refine(phase, sites, image.pixel_size_ang, radius_ang, origin_ang=image.origin_ang)
    positions, sigma = fit.positions_ang, fit.sigma_ang
    valid = np.all(np.isfinite(positions), axis=1)
    positions, sigma = positions[valid], sigma[valid]
    labels = [label for label, ok in zip(labels, valid, strict=True) if ok]
    summaries = []
    # d_Sr-TiO and d_O-TiO: a TiO column from the centre of its 4 Sr neighbours (at a/√2)
    # and of its 4 O neighbours (at a/2) (Sha et al. 2022, Figs. 2E and 4; see
    # ptyscope.analysis.metrics.relative_displacements).
    for neighbour in ("Sr", "O"):
        shifts = relative_displacements(
            positions, labels, "TiO", neighbour, neighbours=4, max_distance_ang=0.8 * a_ang
        )
        s = summarize_displacements(shifts.displacements_ang)
        summaries.append((s.mean_pm[0], s.mean_pm[1], s.std_pm[0], s.std_pm[1]))
    table = out / "columns.csv"
    _write_csv(
        table,
        ["label", "y_ang", "x_ang", "sigma_y_ang", "sigma_x_ang"],
        [
            [lab, *p.tolist(), *e.tolist()]
            for lab, p, e in zip(labels, positions, sigma, strict=True)
        ],
    )
    figure = out / "columns.png"
    _column_figure(figure, image, positions, labels)
    a_vec, b_vec = lattice.a_ang, lattice.b_ang
    link_into_report(out)
    return ColumnReport(
        columns=len(labels),
        lattice_a_ang=(float(np.hypot(*a_vec)), float(np.hypot(*b_vec))),
        d_sr_tio_pm=summaries[0],
        d_o_tio_pm=summaries[1],
        median_sigma_pm=float(np.median(sigma) * 100),
        table=table,
        figure=figure,
    )


def _column_figure(path: Path, image: PhaseImage, positions: np.ndarray, labels: list[str]) -> None:
    ny, nx = image.phase_rad.shape
    (dy, dx), (oy, ox) = image.pixel_size_ang, image.origin_ang
    figure = Figure(figsize=(6, 5.4), layout="constrained")
    ax = figure.subplots()
    ax.imshow(
        image.phase_rad, cmap="gray", extent=(ox, ox + nx * dx, oy + ny * dy, oy), origin="upper"
    )
    for label, colour in (("Sr", "tab:green"), ("TiO", "tab:blue"), ("O", "tab:red")):
        chosen = np.array([p for p, lab in zip(positions, labels, strict=True) if lab == label])
        if len(chosen):
            ax.scatter(chosen[:, 1], chosen[:, 0], s=6, color=colour, label=label)
    ax.set_xlabel("x [Å]")
    ax.set_ylabel("y [Å]")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("refined atomic columns on the summed phase")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")


def analyze_resolution(
    result_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    other_path: str | os.PathLike[str] | None = None,
    margin_ang: float = 1.0,
) -> ResolutionReport:
    """Diffractogram and information limit of the summed phase (scanned area less a
    margin); FRC against ``other_path`` (same object grid, e.g. the other scan half)."""
    image = load_phase(result_path)
    other = None if other_path is None else load_phase(other_path)
    if other is not None and (
        other.phase_rad.shape != image.phase_rad.shape or other.origin_ang != image.origin_ang
    ):
        raise ValueError(
            "the two results must share the object grid (e.g. the even and odd halves of "
            "one scan, data.scan_half)"
        )
    out = _output_folder(out_dir)
    crop = _crop(image, margin_ang)
    limit = information_limit(crop, image.pixel_size_ang)
    power, ky, kx = diffractogram(crop, image.pixel_size_ang)
    frc_value = None
    table = None
    curve = None
    if other is not None:
        curve = fourier_ring_correlation(crop, _crop(other, margin_ang), image.pixel_size_ang)
        # The innermost rings hold a handful of pixels and the phase's low-frequency
        # ambiguity (offset, ramps) of ptychography: judge from rings of >= 32 pixels.
        usable = curve.n_pixels >= _MIN_RING_PIXELS
        frc_value = frc_resolution(
            curve.k_inv_ang[usable], curve.frc[usable], curve.n_pixels[usable]
        )
        table = out / "frc.csv"
        _write_csv(
            table,
            ["k_inv_ang", "frc", "pixels"],
            [list(map(float, row)) for row in zip(*curve, strict=True)],
        )
    figure = out / "resolution.png"
    _resolution_figure(figure, power, ky, kx, limit.k_max_inv_ang, curve, frc_value)
    link_into_report(out)
    return ResolutionReport(float(limit.d_min_ang), frc_value, figure, table)


def _crop(image: PhaseImage, margin_ang: float) -> np.ndarray:
    rows, cols = image.inner_slices(margin_ang)
    cropped: np.ndarray = image.phase_rad[rows, cols]
    return cropped


def _resolution_figure(
    path: Path,
    power: np.ndarray,
    ky: np.ndarray,
    kx: np.ndarray,
    k_max: float,
    curve: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    frc_value: float | None,
) -> None:
    figure = Figure(figsize=(10 if curve is not None else 5, 4.4), layout="constrained")
    axes = figure.subplots(1, 2 if curve is not None else 1, squeeze=False)[0]
    extent = (float(kx.min()), float(kx.max()), float(ky.max()), float(ky.min()))
    axes[0].imshow(np.log1p(power / np.median(power)), cmap="magma", extent=extent)
    if np.isfinite(k_max):
        t = np.linspace(0, 2 * np.pi, 200)
        axes[0].plot(k_max * np.cos(t), k_max * np.sin(t), color="cyan", lw=0.8)
        axes[0].set_title(f"diffractogram; information limit {1 / k_max:.3f} Å")
    axes[0].set_xlabel("k_x [Å⁻¹]")
    if curve is not None:
        k, frc, _ = curve
        axes[1].plot(k, frc)
        axes[1].axhline(0, color="k", lw=0.5)
        axes[1].set_xlabel("k [Å⁻¹]")
        axes[1].set_ylabel("FRC")
        if frc_value is not None and np.isfinite(frc_value):
            axes[1].set_title(f"FRC (half-bit): {frc_value:.3f} Å")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")


@dataclass(frozen=True)
class AlignmentReport:
    """Summary of :func:`analyze_alignment`."""

    shifts_ang: np.ndarray
    apparent_tilt_mrad: tuple[float, float]
    fitted_tilt_mrad: tuple[float, float]
    table: Path


def analyze_alignment(
    result_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    state: int = 0,
    margin_ang: float = 1.0,
) -> AlignmentReport:
    """Post-align the slices of a result by cross-correlation (the fixed-propagator
    baseline of Sha et al. 2022, Fig. 1C): shift per slice and the apparent tilt.

    The apparent tilt is what a fixed propagator leaves in the slices; for a run that
    fitted or used the true tilt in its propagator it should be close to zero. With three
    slices or more the entrance slice, which absorbs the probe's errors, is left out of
    the line fit (every slice is still aligned and listed). Writes
    ``alignment.csv`` (slice, depth, shift y/x in Å).
    """

    from .alignment import align_slices, apparent_tilt_mrad

    first = load_phase(result_path, state=state, slice_index=0)
    out = _output_folder(out_dir)
    with open_untrusted_hdf5(result_path) as handle:
        slices = int(handle["object"].shape[1])
        thickness = float(handle.attrs.get("slice_thickness_ang", float("nan")))
        fitted = (
            float(handle.attrs.get("tilt_y_mrad", 0.0)),
            float(handle.attrs.get("tilt_x_mrad", 0.0)),
        )
    if slices < 2:
        raise ValueError(f"slice alignment needs at least 2 slices, the result has {slices}")
    stack = np.stack(
        [
            _crop(load_phase(result_path, state=state, slice_index=j), margin_ang)
            for j in range(slices)
        ]
    )
    alignment = align_slices(stack, first.pixel_size_ang)
    entrance = 1 if slices >= 3 else 0  # the entrance slice absorbs the probe's errors
    tilt = apparent_tilt_mrad(alignment.shifts_ang[entrance:], thickness)
    table = out / "alignment.csv"
    _write_csv(
        table,
        ["slice", "depth_ang", "shift_y_ang", "shift_x_ang"],
        [[j, j * thickness, *alignment.shifts_ang[j].tolist()] for j in range(slices)],
    )
    link_into_report(out)
    return AlignmentReport(alignment.shifts_ang, tilt, fitted, table)
