"""``ptyscope analyze vibrations``: correlated vibrations and phonons of a mixed-object result.

:func:`analyze_vibrations` runs CAVIAR's analysis (Gladyshev et al. 2025) on the object
states of a result file:

1. columns: peaks of the phase summed over the chosen slices and averaged over states,
   inside the scanned area less a margin;
2. the crystal: Bravais lattice and basis found from the columns alone
   (:func:`~ptyscope.analysis.bravais.find_crystal_lattice`), basis atoms ordered by
   decreasing mean column phase (brightest first);
3. per slice, each column's position in every state
   (:func:`~ptyscope.analysis.vibrations.state_positions`), its displacements (Eq. 1) and
   the Green's tensor G (Eq. 2), averaged over the chosen slices (the paper averages over
   z-ranges); the Debye-Waller factor per column and the blocks averaged over equivalent
   unit-cell pairs (Fig. 4);
4. per slice, Kong's dispersion (Eqs. 5-6) along Γ-K-M-Γ (hexagonal) or Γ-X-M-Γ
   (otherwise), the frequencies averaged over the slices, and their branch averages.

Files written to ``out_dir``: ``vibrations.csv``, ``pairs.csv``, ``dispersion.csv``,
``greens.npy`` (the slice-averaged G [Å²], float64 (2K, 2K) in the order of
``vibrations.csv``), and the figures ``correlations.png``, ``correlations_averaged.png``,
``greens.png`` and ``dispersion.png``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ptyscope._validation import require_positive
from ptyscope.io.atomic import atomic_path
from ptyscope.report.vibration_figures import (
    averaged_correlation_figure,
    correlation_figure,
    dispersion_figure,
    greens_figure,
)

from .bravais import (
    _HEXAGONAL_ANGLE_DEG,
    _HEXAGONAL_LENGTH_FRACTION,
    CrystalLattice,
    find_crystal_lattice,
    high_symmetry_path,
)
from .columns import Lattice, _nearest_per_site, assign_sites, find_peaks
from .commands import _write_csv, link_into_report
from .dispersion import Dispersion, branch_averages, kong_dispersion, reduced_path
from .images import PhaseImage, load_phase_states
from .vibrations import (
    PairAverage,
    average_equivalent_pairs,
    correlation_pairs,
    debye_waller,
    displacements,
    greens_tensor,
    state_positions,
)

__all__ = ["BasisAtom", "VibrationReport", "analyze_vibrations"]

#: Default q points per segment of the path in the Brillouin zone.
POINTS_PER_SEGMENT = 8

_PM2_PER_ANG2 = 1e4
#: Default refinement radius and pair distance, in units of the nearest-neighbour distance.
_RADIUS_FRACTION = 0.35
_PAIR_FRACTION = 1.2


@dataclass(frozen=True)
class BasisAtom:
    """One basis atom (kind of column) of the crystal found."""

    index: int
    fractional: tuple[float, float]
    """(u, v) along (a, b)."""
    mean_phase_rad: float
    """Mean phase of its columns in the projected (slice-summed, state-averaged) phase."""
    mass_amu: float
    columns: int
    """Columns of this basis atom in the analysis."""
    mean_b_ang2: float
    """Mean Debye-Waller B = 8π²(⟨u_x²⟩ + ⟨u_y²⟩) of its columns [Å²]."""
    mean_self_pm2: tuple[float, float]
    """Mean (⟨u_y²⟩, ⟨u_x²⟩) of its columns [pm²]."""


@dataclass(frozen=True)
class VibrationReport:
    """Summary of :func:`analyze_vibrations`: headline numbers and the files written."""

    columns: int
    states: int
    slices: tuple[int, ...]
    lattice: Lattice
    hexagonal: bool
    basis: tuple[BasisAtom, ...]
    cells: int
    """Complete unit cells entering the dispersion."""
    path_labels: tuple[str, ...]
    branch_averages_thz: tuple[float, ...]
    """Mean frequency of each branch along the path (Γ left out), lowest branch first."""
    reference_column: int
    vibrations_csv: Path
    pairs_csv: Path
    dispersion_csv: Path
    greens_npy: Path
    correlation_png: Path
    averaged_png: Path
    greens_png: Path
    dispersion_png: Path

    @property
    def angle_deg(self) -> float:
        """Angle between the lattice vectors a and b [°]."""
        return self.lattice.angle_deg

    @property
    def lattice_kind(self) -> str:
        """The lattice: hexagonal, square, rectangular or oblique (within 3 % and 3°, the
        tolerances of the hexagonal test)."""
        if self.hexagonal:
            return "hexagonal"
        if abs(self.angle_deg - 90.0) > _HEXAGONAL_ANGLE_DEG:
            return "oblique"
        ratio = math.hypot(*self.lattice.a_ang) / math.hypot(*self.lattice.b_ang)
        return "square" if abs(ratio - 1) <= _HEXAGONAL_LENGTH_FRACTION else "rectangular"


def _masses(masses_amu: Sequence[float]) -> np.ndarray:
    try:
        masses = np.asarray(masses_amu, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(
            f"masses_amu must be numbers, one per basis atom [amu], got {masses_amu!r}"
        ) from None
    if masses.size == 0 or not np.all(np.isfinite(masses)) or not np.all(masses > 0):
        raise ValueError(f"masses_amu must be > 0 amu per basis atom, got {masses.tolist()}")
    return masses


def _find_columns(
    image: PhaseImage, margin_ang: float, radius_ang: float | None
) -> tuple[np.ndarray, float, float]:
    """Peaks of the projected phase inside the scanned region less the margin, the median
    nearest-neighbour distance and the refinement radius [Å]."""
    pixel, origin = image.pixel_size_ang, image.origin_ang
    # A first pass with a small separation measures the spacing of the columns.
    coarse = find_peaks(
        image.phase_rad, pixel, min_distance_ang=max(0.5, 2 * max(pixel)), origin_ang=origin
    )
    coarse = coarse[image.inside(coarse, margin_ang)]
    if len(coarse) < 4:
        raise ValueError(
            f"found {len(coarse)} columns inside the scanned area less margin_ang = "
            f"{margin_ang} Å: too few to find a lattice"
        )
    spacing = float(np.median(cKDTree(coarse).query(coarse, k=2)[0][:, 1]))
    radius = _RADIUS_FRACTION * spacing if radius_ang is None else float(radius_ang)
    require_positive("radius_ang", radius, "Å")
    peaks = find_peaks(
        image.phase_rad,
        pixel,
        min_distance_ang=0.6 * spacing,
        exclude_border_ang=radius + max(pixel),
        origin_ang=origin,
    )
    peaks = peaks[image.inside(peaks, margin_ang)]
    if len(peaks) < 4:
        raise ValueError(f"found {len(peaks)} columns: too few to find a lattice")
    nearest = float(np.median(cKDTree(peaks).query(peaks, k=2)[0][:, 1]))
    return peaks, nearest, radius


def _column_phases(image: PhaseImage, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Phase at each column (bilinear) and the same above the background between columns
    (the 5th percentile of the scanned region)."""
    at = ndimage.map_coordinates(image.phase_rad, image.pixel_of(points).T, order=1)
    rows, cols = image.inner_slices(0.0)
    scanned = image.phase_rad[max(rows.start, 0) : rows.stop, max(cols.start, 0) : cols.stop]
    background = float(np.percentile(scanned if scanned.size else image.phase_rad, 5))
    return at, at - background


def _check_masses(masses: np.ndarray, crystal: CrystalLattice) -> None:
    if masses.size != crystal.num_basis:
        phases = ", ".join(f"{v:.3g}" for v in crystal.basis_values)
        raise ValueError(
            f"masses_amu must give one mass per basis atom, brightest first: found "
            f"{crystal.num_basis} basis atoms (column phase above background {phases} rad), "
            f"got {masses.size} masses {masses.tolist()}"
        )


def _reference(
    positions: np.ndarray, basis: np.ndarray, reference_ang: Sequence[float] | None
) -> int:
    if reference_ang is not None:
        target = np.asarray(reference_ang, dtype=np.float64).reshape(-1)
        if target.shape != (2,) or not np.all(np.isfinite(target)):
            raise ValueError(f"reference_ang must be (y, x) [Å], got {reference_ang!r}")
        return int(np.argmin(np.hypot(*(positions - target).T)))
    candidates = np.nonzero(basis == 0)[0]
    middle = positions.mean(axis=0)
    return int(candidates[np.argmin(np.hypot(*(positions[candidates] - middle).T))])


def analyze_vibrations(
    result_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    temperature_k: float,
    masses_amu: Sequence[float],
    slices: slice | Sequence[int] | None = None,
    projected: bool = False,
    radius_ang: float | None = None,
    pair_distance_ang: float | None = None,
    reference_ang: Sequence[float] | None = None,
    q_points: Sequence[tuple[str, Sequence[float]]] | None = None,
    correct_bias: bool = True,
    margin_ang: float = 1.0,
    value_tolerance: float = 0.1,
    points_per_segment: int = POINTS_PER_SEGMENT,
) -> VibrationReport:
    """Correlated vibrations, Debye-Waller factors and phonon frequencies of a result.

    Parameters
    ----------
    result_path:
        A result file with at least 2 object states (a mixed-object reconstruction).
    out_dir:
        Folder for the tables and figures (created).
    temperature_k:
        Specimen temperature [K].
    masses_amu:
        One mass per basis atom [amu], in the order the analysis finds them: by
        decreasing mean column phase (brightest first). It is the mass that moves with
        the column within one slice (the atomic mass times the atoms per column per
        slice; CAVIAR used one atomic mass for hBN). A count that differs from the basis
        found raises an error listing the basis atoms' phases.
    slices:
        The slices analysed: indices or a Python ``slice`` (``slice(2, 6)``: 2 to 5);
        default all. G and the frequencies are computed per slice and averaged.
    projected:
        Sum the phase of the chosen slices in each state and analyse that projection
        instead (for crystals a few atoms thick, where the depth resolution cannot place
        an atom in one slice and per-slice positions scatter).
    radius_ang:
        Disk radius of the column refinement [Å]; default 0.35 × the nearest-neighbour
        distance.
    pair_distance_ang:
        Largest separation of the pairs whose correlations are averaged and drawn [Å];
        default 1.2 × the nearest-neighbour distance.
    reference_ang:
        (y, x) [Å] near the reference column of ``correlations.png``; default the
        brightest-species column nearest the middle of the field.
    q_points:
        Path corners (label, (f_a, f_b)) in reduced coordinates; default Γ-K-M-Γ for a
        hexagonal lattice (a, b at 120°), Γ-X-M-Γ otherwise.
    correct_bias:
        Inverse-Wishart correction of the frequencies (needs more than 2 + 2·basis
        atoms states).
    margin_ang:
        Columns closer than this to the edge of the scanned area are left out [Å].
    value_tolerance:
        Columns whose phases above the background differ by less than this fraction
        count as one species in the lattice search
        (:func:`~ptyscope.analysis.bravais.find_crystal_lattice`).
    points_per_segment:
        q points per segment of the path.

    Returns
    -------
    VibrationReport
    """
    require_positive("temperature_k", temperature_k, "K")
    masses = _masses(masses_amu)
    if not margin_ang >= 0:
        raise ValueError(f"margin_ang must be >= 0 Å, got {margin_ang!r}")
    if pair_distance_ang is not None:
        require_positive("pair_distance_ang", pair_distance_ang, "Å")
    phase, image, chosen = load_phase_states(result_path, slice_indices=slices)
    if projected:
        phase = phase.sum(axis=1, keepdims=True)
    states = phase.shape[0]
    if states < 2:
        raise ValueError(
            "vibration analysis needs at least 2 object states (a mixed-object "
            f"reconstruction), the result has {states}"
        )

    peaks, nearest, radius = _find_columns(image, margin_ang, radius_ang)
    if radius > 0.5 * nearest:
        raise ValueError(
            f"radius_ang must be at most half the nearest-neighbour distance "
            f"({0.5 * nearest:.3f} Å here) so that no disk reaches a neighbour, got {radius} Å"
        )
    _, contrast = _column_phases(image, peaks)
    crystal = find_crystal_lattice(peaks, contrast, value_tolerance=value_tolerance)
    _check_masses(masses, crystal)
    num_basis = crystal.num_basis
    if correct_bias and states <= 2 + 2 * num_basis:
        raise ValueError(
            f"correct_bias needs more than {2 + 2 * num_basis} object states for "
            f"{num_basis} basis atoms, the result has {states}; analyse without the "
            "bias correction (correct_bias=False, --no-bias-correction)"
        )
    lattice = crystal.lattice
    cells, basis, distance = assign_sites(peaks, lattice)
    keep = np.nonzero(_nearest_per_site(cells, basis, distance))[0]
    keep = keep[np.lexsort((cells[keep, 1], cells[keep, 0], basis[keep]))]  # by basis, cell
    columns, cells, basis = peaks[keep], cells[keep], basis[keep]

    # Per slice: every state's column positions (states, slices, K, 2).
    positions = np.stack(
        [
            state_positions(
                phase[:, z : z + 1],
                columns,
                image.pixel_size_ang,
                radius,
                origin_ang=image.origin_ang,
            )[:, 0]
            for z in range(phase.shape[1])
        ],
        axis=1,
    )
    found = np.all(np.isfinite(positions), axis=(0, 1, 3))  # lost in no state and slice
    positions, cells, basis = positions[:, :, found], cells[found], basis[found]
    u = displacements(positions)
    # Per slice, then averaged over slices (one (2K, 2K) matrix in memory at a time).
    greens = sum(greens_tensor(u[:, z]) for z in range(u.shape[1])) / u.shape[1]
    b_factor = debye_waller(greens)
    mean_positions = positions.mean(axis=(0, 1))
    pair_distance = _PAIR_FRACTION * nearest if pair_distance_ang is None else pair_distance_ang
    pairs = correlation_pairs(mean_positions, pair_distance)
    average = average_equivalent_pairs(greens, pairs, cells, basis)

    corners = list(q_points) if q_points is not None else high_symmetry_path(crystal)
    q, labels, ticks = reduced_path(corners, points_per_segment)
    per_slice = [
        kong_dispersion(u[:, z], cells, basis, masses, temperature_k, q, correct_bias=correct_bias)
        for z in range(u.shape[1])
    ]
    dispersion = Dispersion(
        q,
        np.mean([d.frequencies_thz for d in per_slice], axis=0),
        np.mean([d.dynamical for d in per_slice], axis=0),
        per_slice[0].num_cells,
        states,
    )
    branches = branch_averages(dispersion)
    reference = _reference(mean_positions, basis, reference_ang)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = _write_tables(
        out, mean_positions, cells, basis, greens, b_factor, average, lattice, dispersion
    )
    files |= _write_tick_table(out, dispersion, labels, ticks)
    figures = _write_figures(
        out, image, mean_positions, basis, greens, pairs, reference, lattice, average
    )
    dispersion_png = out / "dispersion.png"
    dispersion_figure(dispersion_png, dispersion, labels, ticks)
    link_into_report(out)

    phases, _ = _column_phases(image, mean_positions)
    atoms = tuple(
        _basis_atom(k, uv, basis == k, phases, masses[k], b_factor, greens)
        for k, (_, uv) in enumerate(lattice.basis)
    )
    return VibrationReport(
        columns=len(basis),
        states=states,
        slices=chosen,
        lattice=lattice,
        hexagonal=crystal.hexagonal,
        basis=atoms,
        cells=dispersion.num_cells,
        path_labels=tuple(labels),
        branch_averages_thz=tuple(float(v) for v in branches),
        reference_column=reference,
        dispersion_png=dispersion_png,
        **files,
        **figures,
    )


def _basis_atom(
    k: int,
    uv: tuple[float, float],
    mine: np.ndarray,
    phases: np.ndarray,
    mass: float,
    b_factor: np.ndarray,
    greens: np.ndarray,
) -> BasisAtom:
    self_pm2 = np.diagonal(greens).reshape(-1, 2)[mine] * _PM2_PER_ANG2
    count = int(mine.sum())
    return BasisAtom(
        index=k,
        fractional=uv,
        mean_phase_rad=float(phases[mine].mean()) if count else math.nan,
        mass_amu=float(mass),
        columns=count,
        mean_b_ang2=float(b_factor[mine].mean()) if count else math.nan,
        mean_self_pm2=(
            (float(self_pm2[:, 0].mean()), float(self_pm2[:, 1].mean()))
            if count
            else (math.nan, math.nan)
        ),
    )


def _write_tables(
    out: Path,
    positions: np.ndarray,
    cells: np.ndarray,
    basis: np.ndarray,
    greens: np.ndarray,
    b_factor: np.ndarray,
    average: PairAverage,
    lattice: Lattice,
    dispersion: Dispersion,
) -> dict[str, Path]:
    k = len(basis)
    self_blocks = greens.reshape(k, 2, k, 2)[np.arange(k), :, np.arange(k), :]  # (K, 2, 2)
    vibrations = out / "vibrations.csv"
    _write_csv(
        vibrations,
        [
            *("column", "basis", "cell_i", "cell_j", "y_ang", "x_ang"),
            *("uyy_pm2", "uxx_pm2", "uyx_pm2", "b_ang2"),
        ],
        [
            [
                column,
                int(basis[column]),
                *(int(c) for c in cells[column]),
                *(float(v) for v in positions[column]),
                *(float(v) * _PM2_PER_ANG2 for v in self_blocks[column][[0, 1, 0], [0, 1, 1]]),
                float(b_factor[column]),
            ]
            for column in range(k)
        ],
    )
    separations = (
        average.cell_offsets
        + lattice.fractional[average.basis_pairs[:, 1]]
        - lattice.fractional[average.basis_pairs[:, 0]]
    ) @ lattice.matrix.T
    pairs = out / "pairs.csv"
    _write_csv(
        pairs,
        [
            *("basis_ref", "basis_neighbour", "offset_i", "offset_j", "dy_ang", "dx_ang"),
            *("g_yy_pm2", "g_yx_pm2", "g_xy_pm2", "g_xx_pm2", "count"),
        ],
        [
            [
                *(int(v) for v in average.basis_pairs[i]),
                *(int(v) for v in average.cell_offsets[i]),
                *(float(v) for v in separations[i]),
                *(float(v) * _PM2_PER_ANG2 for v in average.blocks[i].ravel()),
                int(average.counts[i]),
            ]
            for i in range(len(average.counts))
        ],
    )
    greens_path = out / "greens.npy"
    with atomic_path(greens_path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, greens)
    return {"vibrations_csv": vibrations, "pairs_csv": pairs, "greens_npy": greens_path}


def _write_tick_table(
    out: Path, dispersion: Dispersion, labels: list[str], ticks: np.ndarray
) -> dict[str, Path]:
    tick_label = {int(t): label for t, label in zip(ticks, labels, strict=True)}
    branches = dispersion.frequencies_thz.shape[1]
    table = out / "dispersion.csv"
    _write_csv(
        table,
        ["index", "label", "f_a", "f_b", *(f"nu_{b}_thz" for b in range(branches))],
        [
            [
                i,
                tick_label.get(i, ""),
                *(float(v) for v in dispersion.q_reduced[i]),
                *(float(v) for v in dispersion.frequencies_thz[i]),
            ]
            for i in range(len(dispersion.q_reduced))
        ],
    )
    return {"dispersion_csv": table}


def _write_figures(
    out: Path,
    image: PhaseImage,
    positions: np.ndarray,
    basis: np.ndarray,
    greens: np.ndarray,
    pairs: np.ndarray,
    reference: int,
    lattice: Lattice,
    average: PairAverage,
) -> dict[str, Path]:
    neighbours = pairs[(pairs[:, 0] == reference) & (pairs[:, 1] != reference), 1]
    correlation_png = out / "correlations.png"
    scale = correlation_figure(
        correlation_png,
        image.phase_rad,
        image.pixel_size_ang,
        image.origin_ang,
        positions,
        greens,
        reference,
        neighbours.tolist(),
        title=f"correlations of column {reference} (basis {basis[reference]}) with its "
        f"{len(neighbours)} neighbours",
    )
    averaged_png = out / "correlations_averaged.png"
    averaged_correlation_figure(
        averaged_png,
        image.phase_rad,
        image.pixel_size_ang,
        image.origin_ang,
        positions,
        basis,
        lattice,
        average,
        scale,
        basis_names=[f"basis {k}" for k in range(len(lattice.basis))],
    )
    greens_png = out / "greens.png"
    greens_figure(greens_png, greens)
    return {
        "correlation_png": correlation_png,
        "averaged_png": averaged_png,
        "greens_png": greens_png,
    }
