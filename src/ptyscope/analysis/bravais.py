"""The Bravais lattice and basis of a set of atomic columns, found from the columns alone.

A translation t belongs to the crystal's lattice when it maps (nearly) every column onto a
column of the same kind. Nearest-neighbour vectors often do not: in a honeycomb (hBN,
graphene) they take one sublattice onto the other and the rest into hexagon centres; in a
checkerboard of two species they take every column onto one of the other species. So
:func:`find_crystal_lattice` tests candidate translations (differences between columns)
for self-coincidence of both position and brightness, takes the two shortest
non-parallel ones that pass as a and b, clusters the columns' fractional coordinates
mod 1 into basis atoms, and refines origin, a and b by least squares
(:func:`~ptyscope.analysis.columns.fit_lattice`).

Conventions: positions are (y, x) [Å]; a is the shorter vector (of two equally long ones,
the one closer to the x axis), with a_x > 0 (a_y > 0 when a_x = 0), and b is turned from
a towards +y (a_x·b_y − a_y·b_x > 0). A hexagonal lattice (|a| = |b|, 60° or 120°) is
returned with a and b at 120°, so that K = (1/3, 1/3) and M = (1/2, 0) in reduced
coordinates (f_a, f_b).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ptyscope._validation import require_in_range, require_positive

from .columns import Lattice, assign_sites, fit_lattice

__all__ = ["CrystalLattice", "find_crystal_lattice", "high_symmetry_path"]

#: |a|/|b| and the angle within these of 1 and 60°/120° make a lattice hexagonal.
_HEXAGONAL_LENGTH_FRACTION = 0.03
_HEXAGONAL_ANGLE_DEG = 3.0
#: Translations closer than this to parallel (|sin| of the angle) are not a second vector.
_MIN_SINE = 0.2
#: A basis atom needs at least this fraction of the largest cluster's columns.
_MIN_CLUSTER_FRACTION = 0.3


@dataclass(frozen=True)
class CrystalLattice:
    """Result of :func:`find_crystal_lattice`.

    Attributes
    ----------
    lattice:
        Refined origin, a, b and the basis, labelled ``"0"``, ``"1"``, … in order of
        decreasing mean column value (brightest first); the origin is a site of basis 0.
    basis_values:
        float64 (n_basis,): mean ``values`` of the columns of each basis atom.
    hexagonal:
        |a| = |b| and 120° between them (within 3 % and 3°).
    nearest_distance_ang:
        Median distance of a column to its nearest neighbour [Å].
    fractions:
        float64 (2,): fraction of the columns that a and b map onto alike columns.
    """

    lattice: Lattice
    basis_values: np.ndarray
    hexagonal: bool
    nearest_distance_ang: float
    fractions: np.ndarray

    @property
    def num_basis(self) -> int:
        """Basis atoms (columns) per cell."""
        return len(self.lattice.basis)

    @property
    def angle_deg(self) -> float:
        """Angle between a and b [°], in (0, 180)."""
        return self.lattice.angle_deg


#: Two brightness classes are separate species when their means differ by more than this
#: many pooled within-class standard deviations (one uniform or Gaussian class split in
#: two gives 3.5 or 2.7).
_SPECIES_SEPARATION = 4.0


def _species(values: np.ndarray, tolerance: float) -> np.ndarray:
    """Brightness classes of the columns (label per column), by recursive Otsu splits.

    A class is split at the threshold of largest between-class variance when both parts
    hold at least 2 columns, their means differ by more than ``tolerance`` of the larger,
    and by more than ``_SPECIES_SEPARATION`` pooled standard deviations: reconstructed
    columns of one species vary by 10-20 % (edges, noise), so a fixed relative tolerance
    alone would split or merge them.
    """
    labels = np.zeros(len(values), dtype=np.int64)
    pending = [np.arange(len(values))]
    next_label = 1
    while pending:
        index = pending.pop()
        v = values[index]
        order = np.argsort(v)
        sorted_v = v[order]
        n = len(v)
        best, cut = -1.0, 0
        for k in range(2, n - 1):
            low, high = sorted_v[:k], sorted_v[k:]
            score = k * (n - k) * (high.mean() - low.mean()) ** 2
            if score > best:
                best, cut = score, k
        if cut == 0:
            continue
        low, high = sorted_v[:cut], sorted_v[cut:]
        pooled = np.sqrt((low.var() * len(low) + high.var() * len(high)) / n)
        gap = high.mean() - low.mean()
        if gap <= tolerance * abs(high.mean()) or gap <= _SPECIES_SEPARATION * pooled:
            continue
        upper = index[order[cut:]]
        labels[upper] = next_label
        next_label += 1
        pending += [index[order[:cut]], upper]
    return labels


def _coincidence(
    points: np.ndarray,
    values: np.ndarray,
    tree: cKDTree,
    t: np.ndarray,
    box: tuple[np.ndarray, np.ndarray],
    tolerance_ang: float,
) -> tuple[float, int, np.ndarray]:
    """Fraction of the testable columns that t maps onto a column of the same species
    (``values``: labels from :func:`_species`), their number, and the mean matched
    difference (the refined t)."""
    moved = points + t
    # A column can be tested when its image lies within the columns' bounding box (grown
    # by the tolerance: in a field a few cells wide, many images land on the edge columns).
    testable = np.all((moved >= box[0] - tolerance_ang) & (moved <= box[1] + tolerance_ang), axis=1)
    if not testable.any():
        return 0.0, 0, t
    distance, index = tree.query(moved[testable])
    source = np.nonzero(testable)[0]
    match = (distance <= tolerance_ang) & (values[source] == values[index])
    if not match.any():
        return 0.0, int(testable.sum()), t
    refined = np.mean(points[index[match]] - points[source[match]], axis=0)
    return float(match.mean()), int(testable.sum()), refined


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    """a_x·b_y − a_y·b_x for (y, x) vectors: > 0 when b turns from a towards +y."""
    return float(a[1] * b[0] - a[0] * b[1])


def _orient(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Sign conventions of the module; a hexagonal pair turned to 120°."""
    la, lb = float(np.hypot(*a)), float(np.hypot(*b))
    if abs(la / lb - 1) <= _HEXAGONAL_LENGTH_FRACTION and abs(b[1]) / lb > abs(a[1]) / la:
        a, b = b, a  # of two (nearly) equal vectors, a is the one closer to ±x
    if a[1] < -1e-9 * np.hypot(*a) or (abs(a[1]) <= 1e-9 * np.hypot(*a) and a[0] < 0):
        a = -a
    if _cross(a, b) < 0:
        b = -b
    la, lb = float(np.hypot(*a)), float(np.hypot(*b))
    angle = math.degrees(math.acos(np.clip(a @ b / (la * lb), -1.0, 1.0)))
    hexagonal = abs(la / lb - 1) <= _HEXAGONAL_LENGTH_FRACTION and (
        min(abs(angle - 60.0), abs(angle - 120.0)) <= _HEXAGONAL_ANGLE_DEG
    )
    if hexagonal and angle < 90.0:
        b = b - a  # same handedness, 120° from a
    return a, b, hexagonal


def _cluster_fractions(
    fractional: np.ndarray, matrix: np.ndarray, tolerance_ang: float
) -> np.ndarray:
    """Greedy periodic clustering of fractional coordinates; label per point."""
    labels = np.full(len(fractional), -1, dtype=np.int64)
    centres: list[np.ndarray] = []
    for k, f in enumerate(fractional):
        for c, centre in enumerate(centres):
            delta = f - centre
            delta -= np.rint(delta)
            if np.hypot(*(matrix @ delta)) <= tolerance_ang:
                labels[k] = c
                break
        else:
            labels[k] = len(centres)
            centres.append(f)
    return labels


def _basis_means(
    fractional: np.ndarray, labels: np.ndarray, keep: Sequence[int]
) -> list[np.ndarray]:
    """Periodic mean fractional position of each kept cluster, unwrapped around its first
    member."""
    means = []
    for c in keep:
        members = fractional[labels == c]
        delta = members - members[0]
        means.append(members[0] + np.mean(delta - np.rint(delta), axis=0))
    return means


def find_crystal_lattice(
    columns_ang: np.ndarray,
    values: np.ndarray,
    *,
    tolerance_ang: float | None = None,
    min_fraction: float = 0.8,
    value_tolerance: float = 0.1,
    max_search_ang: float | None = None,
) -> CrystalLattice:
    """Bravais lattice and basis of a set of columns, from their self-coincidence.

    A candidate translation t (a difference between two columns near the centre of the
    field) is accepted when at least ``min_fraction`` of the columns p, for which p + t
    lies inside the field, find a column of the same species within ``tolerance_ang`` of
    p + t. Species are brightness classes: the values are split (recursively, at the
    threshold of largest between-class variance) where the two classes' means differ by
    more than ``value_tolerance`` of the larger and by more than 4 pooled standard
    deviations, so that the 10-20 % scatter of one species in a reconstruction does not
    split it. The shortest
    accepted t and the shortest accepted one not parallel to it are a and b (in 2D the
    two successive minima of a lattice form a basis). The columns' fractional
    coordinates mod 1 are clustered (within ``tolerance_ang``); clusters with at least 30 %
    of the largest cluster's columns are the basis atoms (smaller ones: spurious peaks),
    ordered by decreasing mean value. Origin, a and b are then refined by
    :func:`~ptyscope.analysis.columns.fit_lattice`.

    Two species whose values are not separated that way read as one: the
    lattice found is then that of the positions alone (e.g. a checkerboard of equal
    columns is a square lattice of the diagonal spacing, with one atom per cell).

    Parameters
    ----------
    columns_ang:
        float (K, 2): column positions (y, x) [Å], e.g. peaks of a phase image within a
        rectangular region.
    values:
        float (K,): brightness of each column above the background (e.g. the phase at the
        column minus the phase between columns) [any unit, > 0 for real columns].
    tolerance_ang:
        Largest distance of p + t from a column that still coincides [Å]; default 0.25 ×
        the median nearest-neighbour distance.
    min_fraction:
        Fraction of columns a lattice translation must map onto alike columns.
    value_tolerance:
        Smallest relative difference of the mean values of two species.
    max_search_ang:
        Longest translation tried [Å]; default 6 × the nearest-neighbour distance, at
        most 3/4 of the field.

    Returns
    -------
    CrystalLattice

    Examples
    --------
    >>> i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    >>> cells = np.column_stack([i.ravel(), j.ravel()]) * 4.0
    >>> columns = np.concatenate([cells, cells + 2.0])  # a checkerboard of two species
    >>> values = np.repeat([1.0, 0.6], 64)
    >>> crystal = find_crystal_lattice(columns, values)
    >>> crystal.num_basis, round(float(np.hypot(*crystal.lattice.a_ang)), 6)
    (2, 4.0)
    """
    points = np.asarray(columns_ang, dtype=np.float64)
    brightness = np.asarray(values, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or not np.all(np.isfinite(points)):
        raise ValueError(f"columns_ang must be finite (K, 2) (y, x) [Å], got shape {points.shape}")
    if brightness.shape != (len(points),) or not np.all(np.isfinite(brightness)):
        raise ValueError(
            f"values must be finite with one value per column ({len(points)}), got shape "
            f"{brightness.shape}"
        )
    if len(points) < 4:
        raise ValueError(
            f"columns_ang: need at least 4 columns to find a lattice, got {len(points)}"
        )
    require_in_range("min_fraction", min_fraction, 0.0, 1.0)
    require_positive("value_tolerance", value_tolerance)
    species = _species(brightness, value_tolerance)
    tree = cKDTree(points)
    nearest = float(np.median(tree.query(points, k=2)[0][:, 1]))
    if not nearest > 0:
        raise ValueError("columns_ang: the median nearest-neighbour distance is 0 (duplicates)")
    tol = 0.25 * nearest if tolerance_ang is None else float(tolerance_ang)
    require_positive("tolerance_ang", tol, "Å")
    low, high = points.min(axis=0), points.max(axis=0)
    reach = 6 * nearest if max_search_ang is None else float(max_search_ang)
    reach = min(reach, 0.75 * float(np.max(high - low)))
    require_positive("max_search_ang", reach, "Å")

    centres = np.argsort(np.hypot(*(points - points.mean(axis=0)).T))[: min(5, len(points))]
    candidates = np.concatenate(
        [points[tree.query_ball_point(points[c], reach)] - points[c] for c in centres]
    )
    candidates = candidates[np.hypot(*candidates.T) > tol]
    candidates = candidates[np.argsort(np.hypot(*candidates.T))]
    need = max(4, len(points) // 4)
    tried: list[np.ndarray] = []
    accepted: list[tuple[np.ndarray, float]] = []
    for t in candidates:
        if any(min(np.hypot(*(t - s)), np.hypot(*(t + s))) <= tol for s in tried):
            continue
        tried.append(t)
        fraction, testable, refined = _coincidence(points, species, tree, t, (low, high), tol)
        if testable < need or fraction < min_fraction:
            continue
        if not accepted:
            accepted.append((refined, fraction))
            continue
        first = accepted[0][0]
        if abs(_cross(first, refined)) > _MIN_SINE * np.hypot(*first) * np.hypot(*refined):
            accepted.append((refined, fraction))
            break
    if len(accepted) < 2:
        raise ValueError(
            f"found {len(accepted)} of 2 lattice translations up to {reach:.2f} Å that map "
            f">= {min_fraction:.0%} of the {len(points)} columns onto alike columns; the "
            "columns may not form one crystal, or max_search_ang is too small"
        )
    a, b, hexagonal = _orient(accepted[0][0], accepted[1][0])
    matrix = np.column_stack([a, b])

    origin = points[centres[0]]
    fractional = np.linalg.solve(matrix, (points - origin).T).T
    fractional -= np.floor(fractional)
    labels = _cluster_fractions(fractional, matrix, tol)
    counts = np.bincount(labels)
    keep = [int(c) for c in np.nonzero(counts >= _MIN_CLUSTER_FRACTION * counts.max())[0]]
    means = np.array([brightness[labels == c].mean() for c in keep])
    order = np.argsort(-means, kind="stable")
    keep = [keep[k] for k in order]
    centres_f = _basis_means(fractional, labels, keep)
    shifted = [(f - centres_f[0]) % 1.0 for f in centres_f]
    shifted = [np.where(f > 1 - 0.02, f - 1, f) for f in shifted]  # 0.999… is 0
    initial = Lattice(
        origin_ang=tuple(origin + matrix @ centres_f[0]),
        a_ang=(float(a[0]), float(a[1])),
        b_ang=(float(b[0]), float(b[1])),
        basis=tuple((str(k), (float(f[0]), float(f[1]))) for k, f in enumerate(shifted)),
    )
    fitted = fit_lattice(points, initial, max_distance_ang=tol)
    # Basis fractions from the fitted cell, then the final fit.
    cells, atoms, _ = assign_sites(points, fitted, max_distance_ang=tol)
    fractional = np.linalg.solve(fitted.matrix, (points - np.asarray(fitted.origin_ang)).T).T
    basis = []
    for k, (label, uv) in enumerate(fitted.basis):
        members = atoms == k
        mean = np.mean(fractional[members] - cells[members], axis=0) if members.any() else uv
        basis.append((label, (float(mean[0]), float(mean[1]))))
    fitted = fit_lattice(
        points,
        Lattice(fitted.origin_ang, fitted.a_ang, fitted.b_ang, tuple(basis)),
        max_distance_ang=tol,
    )
    return CrystalLattice(
        lattice=fitted,
        basis_values=means[order],
        hexagonal=hexagonal,
        nearest_distance_ang=nearest,
        fractions=np.array([accepted[0][1], accepted[1][1]]),
    )


def high_symmetry_path(crystal: CrystalLattice) -> list[tuple[str, tuple[float, float]]]:
    """Γ-K-M-Γ for a hexagonal lattice (a, b at 120°), Γ-X-M-Γ otherwise.

    Reduced coordinates (f_a, f_b): hexagonal K = (1/3, 1/3), M = (1/2, 0); otherwise
    X = (1/2, 0), M = (1/2, 1/2) (the zone corners of a rectangular or square cell; for an
    oblique cell the same points of its reduced cell).
    """
    if crystal.hexagonal:
        return [("Γ", (0.0, 0.0)), ("K", (1 / 3, 1 / 3)), ("M", (0.5, 0.0)), ("Γ", (0.0, 0.0))]
    return [("Γ", (0.0, 0.0)), ("X", (0.5, 0.0)), ("M", (0.5, 0.5)), ("Γ", (0.0, 0.0))]
