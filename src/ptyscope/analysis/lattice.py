"""2D lattices of atomic columns: least-squares lattice fit and local strain.

* :func:`lattice_parameters`: origin and two basis vectors fitted to the columns of one
  species.
* :func:`strain_map`: local strain and rotation of every column relative to a reference
  lattice, from the least-squares affine map of its neighbour vectors (the real-space
  analogue of geometric phase analysis, Hÿtch, Snoeck & Kilaas, Ultramicroscopy 74, 131
  (1998)).

Positions are (K, 2) arrays ordered (y, x) [Å]; labels are one string per column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["LatticeFit", "StrainMap", "lattice_parameters", "strain_map"]


def validated_positions(positions_ang: np.ndarray, name: str = "positions_ang") -> np.ndarray:
    """``positions_ang`` as float64 (K, 2), checked (shared with :mod:`.metrics`)."""
    array = np.asarray(positions_ang, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{name} must have shape (K, 2) ordered (y, x) [Å], got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def positions_of(
    positions: np.ndarray, labels: Sequence[str] | np.ndarray, label: str, name: str
) -> np.ndarray:
    """The rows of ``positions`` labelled ``label`` (``name`` is the argument's name)."""
    tags = np.asarray(labels)
    if tags.shape != (positions.shape[0],):
        raise ValueError(
            f"labels must hold one label per column ({positions.shape[0]}), got shape {tags.shape}"
        )
    mask = tags == label
    if not np.any(mask):
        raise ValueError(f"{name}={label!r} is not among the labels {sorted(set(tags.tolist()))}")
    selected: np.ndarray = positions[mask]
    return selected


@dataclass(frozen=True)
class LatticeFit:
    """A 2D lattice r(n) = origin + n_a·a + n_b·b fitted to column positions.

    Attributes
    ----------
    origin_ang:
        float64 (2,): (y, x) [Å] of the lattice point with index (0, 0).
    basis_ang:
        float64 (2, 2): rows a and b, each (y, x) [Å]. The basis is reduced (the two
        shortest independent lattice vectors); a is the one closer in direction to +x, with
        a_x > 0, and b is a turned by ``angle_deg`` from +x towards +y.
    indices:
        int (K, 2): (n_a, n_b) of every fitted column, in input order.
    residual_rms_ang:
        Root-mean-square distance [Å] of the columns from their fitted lattice points.
    """

    origin_ang: np.ndarray
    basis_ang: np.ndarray
    indices: np.ndarray
    residual_rms_ang: float

    @property
    def a_ang(self) -> float:
        """|a| [Å]."""
        return float(np.hypot(*self.basis_ang[0]))

    @property
    def b_ang(self) -> float:
        """|b| [Å]."""
        return float(np.hypot(*self.basis_ang[1]))

    @property
    def angle_deg(self) -> float:
        """Angle from a to b [°], in (0, 180)."""
        (ay, ax), (by, bx) = self.basis_ang
        return math.degrees(math.atan2(ax * by - ay * bx, ax * bx + ay * by))


def _reduce(basis: np.ndarray) -> np.ndarray:
    """Lagrange-Gauss reduction, then the orientation convention of :class:`LatticeFit`."""
    a, b = basis[0].copy(), basis[1].copy()
    for _ in range(100):
        if a @ a > b @ b:
            a, b = b, a
        m = round(float(a @ b) / float(a @ a))
        if m == 0:
            break
        b = b - m * a
    if abs(b[1]) / np.hypot(*b) > abs(a[1]) / np.hypot(*a):
        a, b = b, a
    if a[1] < 0:
        a = -a
    if a[1] * b[0] - a[0] * b[1] < 0:  # a_x·b_y − a_y·b_x > 0: b turned from +x to +y
        b = -b
    return np.stack([a, b])


def _basis_guess(points: np.ndarray) -> np.ndarray:
    """Two independent neighbour vectors, each averaged over all columns."""
    k = min(9, len(points))
    _, index = cKDTree(points).query(points, k=k)
    vectors = (points[index[:, 1:]] - points[:, None, :]).reshape(-1, 2)
    vectors[(vectors[:, 1] < 0) | ((vectors[:, 1] == 0) & (vectors[:, 0] < 0))] *= -1
    lengths = np.hypot(vectors[:, 0], vectors[:, 1])
    vectors, lengths = vectors[np.argsort(lengths)], np.sort(lengths)
    basis: list[np.ndarray] = []
    for v, length in zip(vectors, lengths, strict=True):
        if basis and abs(basis[0][0] * v[1] - basis[0][1] * v[0]) < 0.5 * length * np.hypot(
            *basis[0]
        ):
            continue  # collinear with the first (within 30°)
        cluster = np.hypot(*(vectors - v).T) < 0.2 * length
        basis.append(vectors[cluster].mean(axis=0))
        if len(basis) == 2:
            return np.stack(basis)
    raise ValueError("the columns do not span a 2D lattice (all neighbours are collinear)")


def lattice_parameters(
    positions_ang: np.ndarray, labels: Sequence[str] | np.ndarray, label: str
) -> LatticeFit:
    """Least-squares 2D lattice of the columns of one species.

    Neighbour vectors averaged over all columns give a first basis; every column is then
    indexed (n_a, n_b) and origin, a and b are fitted to all of them (twice, re-indexing).

    Parameters
    ----------
    positions_ang:
        float (K, 2): column positions (y, x) [Å].
    labels:
        K strings: each column's species.
    label:
        The species fitted (at least 3 non-collinear columns).

    Returns
    -------
    LatticeFit
        With ``a_ang``, ``b_ang`` and ``angle_deg``.

    Examples
    --------
    >>> n = np.stack(np.meshgrid(np.arange(4), np.arange(4)), -1).reshape(-1, 2)
    >>> fit = lattice_parameters(n @ np.array([[0.0, 3.9], [4.0, 0.0]]), ["Sr"] * 16, "Sr")
    >>> round(fit.a_ang, 6), round(fit.b_ang, 6), round(fit.angle_deg, 6)
    (3.9, 4.0, 90.0)
    """
    points = positions_of(validated_positions(positions_ang), labels, label, "label")
    if len(points) < 3:
        raise ValueError(
            f"label={label!r} must have >= 3 columns to fit a lattice, got {len(points)}"
        )
    basis = _reduce(_basis_guess(points))
    origin = points[np.argmin(np.hypot(*(points - points.mean(axis=0)).T))]
    for _ in range(2):
        indices = np.rint((points - origin) @ np.linalg.inv(basis)).astype(int)
        design = np.column_stack([np.ones(len(points)), indices])
        solution, *_ = np.linalg.lstsq(design, points, rcond=None)
        origin, basis = solution[0], solution[1:]
    reduced = _reduce(basis)
    # Re-express the indices in the reduced basis (an integer change of basis).
    change = np.rint(basis @ np.linalg.inv(reduced)).astype(int)
    indices = indices @ change
    residual = points - origin - indices @ reduced
    rms = float(np.sqrt(np.mean(np.sum(residual**2, axis=1))))
    return LatticeFit(origin, reduced, indices, rms)


@dataclass(frozen=True)
class StrainMap:
    """Local strain and rotation at every column (small-strain tensor, image axes).

    With F the 2×2 map (y, x) of reference neighbour vectors onto measured ones:
    ε = (F + Fᵀ)/2 − I and rotation ω = atan2(F_yx − F_xy, F_yy + F_xx), positive from +x
    towards +y. Columns with too few neighbours are NaN.

    Attributes
    ----------
    positions_ang:
        float64 (K, 2): (y, x) [Å] of the columns, in input order.
    eps_yy, eps_xx, eps_xy:
        float64 (K,): strain components (dimensionless; 0.01 is 1%).
    rotation_mrad:
        float64 (K,): local lattice rotation [mrad].
    neighbours:
        int (K,): number of neighbour vectors used per column.
    """

    positions_ang: np.ndarray
    eps_yy: np.ndarray
    eps_xx: np.ndarray
    eps_xy: np.ndarray
    rotation_mrad: np.ndarray
    neighbours: np.ndarray


def strain_map(
    positions_ang: np.ndarray,
    reference_lattice: LatticeFit | np.ndarray,
    *,
    radius_ang: float | None = None,
    min_neighbours: int = 3,
) -> StrainMap:
    """Strain of each column from its neighbour vectors against a reference lattice.

    Each neighbour vector d (within ``radius_ang``) is indexed on the reference basis,
    r = round(d·B⁻¹)·B, and F minimises Σ|d − F r|² (Hÿtch et al. 1998 define the same ε
    and ω from the displacement gradient).

    Parameters
    ----------
    positions_ang:
        float (K, 2): (y, x) [Å] of the columns of the species of the reference lattice.
    reference_lattice:
        A :class:`LatticeFit` (e.g. of an unstrained region) or its (2, 2) basis, rows a
        and b in (y, x) [Å].
    radius_ang:
        Neighbour search radius [Å]; default 1.5 × max(|a|, |b|).
    min_neighbours:
        Fewest neighbour vectors (>= 2, non-collinear) for a column to get a value.

    Returns
    -------
    StrainMap

    Examples
    --------
    >>> n = np.stack(np.meshgrid(np.arange(5), np.arange(5)), -1).reshape(-1, 2)
    >>> basis = np.array([[0.0, 3.9], [3.9, 0.0]])
    >>> strained = (n @ basis) * [1.01, 1.0]  # stretched 1% along y
    >>> result = strain_map(strained, basis)
    >>> float(np.median(result.eps_yy).round(6)), float(np.median(result.eps_xx).round(6))
    (0.01, 0.0)
    """
    points = validated_positions(positions_ang)
    if isinstance(reference_lattice, LatticeFit):
        basis = reference_lattice.basis_ang
    else:
        basis = np.asarray(reference_lattice, dtype=np.float64)
    if basis.shape != (2, 2) or abs(np.linalg.det(basis)) < 1e-12:
        raise ValueError(
            "reference_lattice must be a LatticeFit or a non-singular (2, 2) basis "
            f"(rows a, b in (y, x) [Å]), got shape {basis.shape}"
        )
    lengths = np.hypot(basis[:, 0], basis[:, 1])
    radius = 1.5 * float(lengths.max()) if radius_ang is None else float(radius_ang)
    if not radius > 0:
        raise ValueError(f"radius_ang must be > 0 Å, got {radius_ang!r}")
    if (
        isinstance(min_neighbours, bool)
        or not isinstance(min_neighbours, int)
        or min_neighbours < 2
    ):
        raise ValueError(f"min_neighbours must be an integer >= 2, got {min_neighbours!r}")
    inverse = np.linalg.inv(basis)
    tree = cKDTree(points)
    gradients = np.full((len(points), 2, 2), np.nan)
    counts = np.zeros(len(points), dtype=int)
    for i, members in enumerate(tree.query_ball_point(points, radius)):
        d = points[[j for j in members if j != i]] - points[i]
        r = np.rint(d @ inverse) @ basis
        good = np.hypot(*(d - r).T) < 0.3 * lengths.min()
        d, r = d[good], r[good]
        counts[i] = len(d)
        if len(d) < min_neighbours or np.linalg.matrix_rank(r, tol=1e-6 * lengths.min()) < 2:
            continue
        transposed, *_ = np.linalg.lstsq(r, d, rcond=None)  # d = r Fᵀ
        gradients[i] = transposed.T
    f_yy, f_yx = gradients[:, 0, 0], gradients[:, 0, 1]
    f_xy, f_xx = gradients[:, 1, 0], gradients[:, 1, 1]
    return StrainMap(
        points,
        f_yy - 1.0,
        f_xx - 1.0,
        0.5 * (f_yx + f_xy),
        1e3 * np.arctan2(f_yx - f_xy, f_yy + f_xx),
        counts,
    )
