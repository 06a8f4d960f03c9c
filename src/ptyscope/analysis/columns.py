"""Atomic columns in a projected image: peaks, the lattice they sit on, and their species.

* :func:`find_peaks`: local maxima of an image (integer pixel, optionally parabolic
  sub-pixel), a starting point for :mod:`ptyscope.analysis.refine`.
* :class:`Lattice`, :func:`lattice_sites`, :func:`assign_sites`, :func:`fit_lattice`: a 2D
  lattice with a basis, its sites in a region, the nearest site of each measured column
  and the least-squares origin and basis vectors.
* :func:`srtio3_lattice`: SrTiO3 viewed along [001] (Sr, Ti-O and O columns), the crystal of
  Sha et al. 2022, whose d_Sr-TiO and d_O-TiO (shift of a Ti-O column from the centre of
  its four Sr, or four O, neighbours) come from such labelled, refined positions.
* :func:`integrated_intensity`, :func:`classify_by_intensity`: species by the integrated
  signal of each column (k-means in one dimension).

Images are float (ny, nx) with pixel (i, j) at ``origin_ang + (i·dy, j·dx)`` [Å]; every
position is (y, x) [Å] in that frame.

References
----------
Sha, H., Cui, J. & Yu, R. Deep sub-angstrom resolution imaging by electron ptychography
with misorientation correction. Sci. Adv. 8, eabn2275 (2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ptyscope._validation import require_finite, require_positive

from .refine import Pair, _image_stack, _pair, _require_inside, _windows

__all__ = [
    "SRTIO3_LATTICE_CONSTANT_ANG",
    "Lattice",
    "assign_sites",
    "classify_by_intensity",
    "find_peaks",
    "fit_lattice",
    "integrated_intensity",
    "kmeans_1d",
    "lattice_sites",
    "srtio3_lattice",
]

SRTIO3_LATTICE_CONSTANT_ANG = 3.905
"""Cubic SrTiO3 at room temperature [Å] (the value of :mod:`ptyscope.simulation.specimens`)."""


# ---------------------------------------------------------------------------------------
# Peaks.


def find_peaks(
    image: np.ndarray,
    pixel_size_ang: Pair,
    *,
    min_distance_ang: float,
    threshold_rel: float | None = 0.2,
    threshold_abs: float | None = None,
    exclude_border_ang: float | None = None,
    subpixel: bool = True,
    origin_ang: Pair = (0.0, 0.0),
) -> np.ndarray:
    """Local maxima of an image, brightest first.

    A pixel is a peak when it is the largest within ``min_distance_ang`` (an elliptical
    footprint for anisotropic pixels) and exceeds the threshold; of equal maxima closer
    than ``min_distance_ang`` only the first is kept. Peaks whose final (sub-pixel)
    position lies closer than ``exclude_border_ang`` to the edge are dropped.

    Parameters
    ----------
    image:
        float (ny, nx), e.g. a phase [rad]; columns are maxima.
    pixel_size_ang:
        (dy, dx) [Å], or one number for square pixels.
    min_distance_ang:
        smallest separation of two peaks [Å]; about half the nearest-neighbour distance.
    threshold_rel:
        peaks must exceed min + ``threshold_rel`` · (max − min) of the image; ``None`` for no
        relative threshold.
    threshold_abs:
        peaks must exceed this value [image units]; when both are given the higher applies.
    exclude_border_ang:
        peaks closer than this to the image's outer pixel centres are dropped [Å]; by
        default ``min_distance_ang``. Use the refinement radius to keep only columns that
        :func:`ptyscope.analysis.refine.refine_com` can refine.
    subpixel:
        refine each peak by a parabola through it and its two neighbours along each axis
        (a shift of at most half a pixel); otherwise positions are pixel centres.
    origin_ang:
        (y, x) [Å] of pixel (0, 0).

    Returns
    -------
    np.ndarray
        float64 (K, 2): (y, x) [Å] of the peaks, sorted by decreasing peak value.

    Examples
    --------
    >>> y, x = np.mgrid[:30, :30] * 0.1
    >>> image = np.exp(-((y - 1.0) ** 2 + (x - 2.0) ** 2) / 0.1)
    >>> image += 0.5 * np.exp(-((y - 2.0) ** 2 + (x - 1.0) ** 2) / 0.1)
    >>> find_peaks(image, 0.1, min_distance_ang=0.5).round(3).tolist()
    [[1.0, 2.0], [2.0, 1.0]]
    """
    stack = _image_stack(image)
    if stack.ndim != 2:
        raise ValueError(f"image must be 2D (ny, nx), got shape {stack.shape}")
    pixel = _pair("pixel_size_ang", pixel_size_ang, positive=True)
    origin = _pair("origin_ang", origin_ang, positive=False)
    require_positive("min_distance_ang", min_distance_ang, "Å")
    border = min_distance_ang if exclude_border_ang is None else exclude_border_ang
    require_finite("exclude_border_ang", border)
    if border < 0:
        raise ValueError(f"exclude_border_ang must be >= 0 Å, got {border!r}")
    if threshold_rel is not None and not 0.0 <= threshold_rel <= 1.0:
        raise ValueError(f"threshold_rel must lie in [0, 1], got {threshold_rel!r}")
    if threshold_abs is not None:
        require_finite("threshold_abs", threshold_abs)

    low, high = float(stack.min()), float(stack.max())
    threshold = -math.inf
    if threshold_rel is not None:
        threshold = low + threshold_rel * (high - low)
    if threshold_abs is not None:
        threshold = max(threshold, float(threshold_abs))

    reach = np.floor(min_distance_ang / pixel).astype(int)
    fy = np.arange(-reach[0], reach[0] + 1)[:, None] * pixel[0]
    fx = np.arange(-reach[1], reach[1] + 1)[None, :] * pixel[1]
    footprint = fy**2 + fx**2 <= min_distance_ang**2
    local_max = ndimage.maximum_filter(stack, footprint=footprint, mode="constant", cval=-np.inf)
    candidate = (stack == local_max) & (stack > threshold)
    rows, cols = np.nonzero(candidate)
    values = stack[rows, cols]
    order = np.argsort(-values, kind="stable")
    rows, cols = rows[order], cols[order]

    # Equal maxima (plateaus) within min_distance_ang: keep the first of each group.
    keep = np.ones(rows.size, dtype=bool)
    if rows.size > 1:
        points = np.column_stack([rows * pixel[0], cols * pixel[1]])
        tree = cKDTree(points)
        for a, b in sorted(tree.query_pairs(min_distance_ang * (1 - 1e-12))):
            if keep[a]:
                keep[b] = False
    rows, cols = rows[keep], cols[keep]

    peaks = np.column_stack([rows, cols]).astype(np.float64)
    if subpixel and rows.size:
        peaks += _parabolic_offsets(stack, rows, cols)
    # The border applies to the final positions, so that they pass the refinements' check.
    extent = (np.asarray(stack.shape) - 1.0) * pixel
    positions = peaks * pixel
    interior = np.all((positions >= border) & (positions <= extent - border), axis=1)
    result: np.ndarray = origin + positions[interior]
    return result


def _parabolic_offsets(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Vertex of the parabola through each peak and its two neighbours, per axis [px]."""
    ny, nx = image.shape
    offsets = np.zeros((rows.size, 2))
    for axis, (index, size) in enumerate(((rows, ny), (cols, nx))):
        ok = (index > 0) & (index < size - 1)
        r, c = rows[ok], cols[ok]
        step = (1, 0) if axis == 0 else (0, 1)
        minus = image[r - step[0], c - step[1]]
        centre = image[r, c]
        plus = image[r + step[0], c + step[1]]
        curvature = minus - 2.0 * centre + plus
        with np.errstate(invalid="ignore", divide="ignore"):
            shift = np.where(curvature < 0, 0.5 * (minus - plus) / curvature, 0.0)
        offsets[ok, axis] = np.clip(shift, -0.5, 0.5)
    return offsets


# ---------------------------------------------------------------------------------------
# Lattices.


@dataclass(frozen=True)
class Lattice:
    """A 2D lattice with a basis: site (i, j, k) lies at origin + (i + u_k)·a + (j + v_k)·b.

    Attributes
    ----------
    origin_ang:
        (y, x) [Å] of cell (0, 0).
    a_ang, b_ang:
        basis vectors, each (y, x) [Å]; not parallel.
    basis:
        the atoms (columns) of one cell: (label, (u, v)) with (u, v) fractional along
        (a, b). Labels may repeat (two O sites in SrTiO3).
    """

    origin_ang: tuple[float, float]
    a_ang: tuple[float, float]
    b_ang: tuple[float, float]
    basis: tuple[tuple[str, tuple[float, float]], ...] = (("A", (0.0, 0.0)),)

    def __post_init__(self) -> None:
        for name in ("origin_ang", "a_ang", "b_ang"):
            pair = _pair(name, getattr(self, name), positive=False)
            object.__setattr__(self, name, (float(pair[0]), float(pair[1])))
        area = abs(float(np.linalg.det(self.matrix)))
        scale = math.hypot(*self.a_ang) * math.hypot(*self.b_ang)
        if not area > 1e-9 * scale:
            raise ValueError(
                f"a_ang and b_ang must not be parallel (or zero), got {self.a_ang} and {self.b_ang}"
            )
        try:
            basis = tuple((str(label), (float(uv[0]), float(uv[1]))) for label, uv in self.basis)
        except (TypeError, ValueError, IndexError):
            raise ValueError(
                f"basis must be a sequence of (label, (u, v)), got {self.basis!r}"
            ) from None
        if not basis or not all(math.isfinite(u) and math.isfinite(v) for _, (u, v) in basis):
            raise ValueError(f"basis must hold at least one (label, (u, v)), got {self.basis!r}")
        object.__setattr__(self, "basis", basis)

    @property
    def matrix(self) -> np.ndarray:
        """float64 (2, 2) with columns a and b: fractional (u, v) -> (y, x) offsets [Å]."""
        return np.column_stack([self.a_ang, self.b_ang]).astype(np.float64)

    @property
    def angle_deg(self) -> float:
        """Angle between a and b [°], in (0, 180)."""
        a, b = np.asarray(self.a_ang), np.asarray(self.b_ang)
        return math.degrees(math.acos(np.clip(a @ b / np.hypot(*a) / np.hypot(*b), -1.0, 1.0)))

    @property
    def labels(self) -> list[str]:
        """The basis labels, in order."""
        return [label for label, _ in self.basis]

    @property
    def fractional(self) -> np.ndarray:
        """float64 (n_basis, 2): the basis atoms' (u, v)."""
        return np.array([uv for _, uv in self.basis], dtype=np.float64)

    def positions(self, indices: np.ndarray, basis_index: np.ndarray) -> np.ndarray:
        """(y, x) [Å] (K, 2) of sites with cell ``indices`` (K, 2) and ``basis_index`` (K,)."""
        cells = np.asarray(indices, dtype=np.float64)
        fractional = cells + self.fractional[np.asarray(basis_index)]
        result: np.ndarray = np.asarray(self.origin_ang) + fractional @ self.matrix.T
        return result


def srtio3_lattice(
    origin_ang: Pair,
    a_ang: float = SRTIO3_LATTICE_CONSTANT_ANG,
    rotation_deg: float = 0.0,
) -> Lattice:
    """SrTiO3 (cubic perovskite) projected along [001].

    Three kinds of column: Sr at (0, 0); Ti-O (Ti and O alternating along the beam) at
    (½, ½); pure O at (½, 0) and (0, ½). Every column has four nearest neighbours a/2
    away: a Ti-O column four O, and four Sr at a/√2; d_Sr-TiO and d_O-TiO of Sha et al.
    2022 are the shifts of a Ti-O column from the centre of those four Sr, or four O.

    Parameters
    ----------
    origin_ang:
        (y, x) [Å] of an Sr column.
    a_ang:
        lattice constant [Å] (3.905 Å at room temperature).
    rotation_deg:
        ρ turns the lattice from the image axes: unrotated, a points along +y and b along
        +x (so (u, v) read as fractional (y, x)); rotated, a = a·(cos ρ, −sin ρ) and
        b = a·(sin ρ, cos ρ), i.e. b turns from +x towards +y, like ``scan_rotation_deg``.

    Returns
    -------
    Lattice
        basis ``(("Sr", (0, 0)), ("TiO", (½, ½)), ("O", (½, 0)), ("O", (0, ½)))``.

    Examples
    --------
    >>> lattice = srtio3_lattice((0.0, 0.0))
    >>> lattice.labels
    ['Sr', 'TiO', 'O', 'O']
    >>> lattice.positions(np.array([[1, 0]]), np.array([1])).round(4).tolist()
    [[5.8575, 1.9525]]
    """
    require_positive("a_ang", a_ang, "Å")
    require_finite("rotation_deg", rotation_deg)
    origin = _pair("origin_ang", origin_ang, positive=False)
    rho = math.radians(rotation_deg)
    return Lattice(
        origin_ang=(float(origin[0]), float(origin[1])),
        a_ang=(a_ang * math.cos(rho), -a_ang * math.sin(rho)),
        b_ang=(a_ang * math.sin(rho), a_ang * math.cos(rho)),
        basis=(("Sr", (0.0, 0.0)), ("TiO", (0.5, 0.5)), ("O", (0.5, 0.0)), ("O", (0.0, 0.5))),
    )


def _region(region: Sequence[float]) -> tuple[float, float, float, float]:
    values = tuple(float(v) for v in region)
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"region must be four finite numbers (y0, y1, x0, x1) [Å], got {region!r}")
    y0, y1, x0, x1 = values
    if y1 < y0 or x1 < x0:
        raise ValueError(f"region must have y0 <= y1 and x0 <= x1 [Å], got {region!r}")
    return y0, y1, x0, x1


def lattice_sites(
    lattice: Lattice, region: Sequence[float]
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """All sites of a lattice inside a rectangle.

    Parameters
    ----------
    lattice:
        the lattice.
    region:
        (y0, y1, x0, x1) [Å]; sites with y0 <= y <= y1 and x0 <= x <= x1 are returned.

    Returns
    -------
    positions : np.ndarray
        float64 (K, 2): (y, x) [Å], ordered by cell (i, then j) and then by basis atom.
    labels : list[str]
        the K sites' basis labels.
    indices : np.ndarray
        int64 (K, 2): the cells (i, j).

    Examples
    --------
    >>> positions, labels, indices = lattice_sites(srtio3_lattice((0.0, 0.0)), (0, 4, 0, 1))
    >>> labels, positions.tolist()
    (['Sr', 'O', 'Sr'], [[0.0, 0.0], [1.9525, 0.0], [3.905, 0.0]])
    """
    y0, y1, x0, x1 = _region(region)
    corners = np.array([[y0, x0], [y0, x1], [y1, x0], [y1, x1]]) - np.asarray(lattice.origin_ang)
    fractional = np.linalg.solve(lattice.matrix, corners.T).T
    lo = np.floor(fractional.min(axis=0) - lattice.fractional.max(axis=0)).astype(int) - 1
    hi = np.ceil(fractional.max(axis=0) - lattice.fractional.min(axis=0)).astype(int) + 1
    i, j, k = np.meshgrid(
        np.arange(lo[0], hi[0] + 1),
        np.arange(lo[1], hi[1] + 1),
        np.arange(len(lattice.basis)),
        indexing="ij",
    )
    indices = np.column_stack([i.ravel(), j.ravel()]).astype(np.int64)
    atoms = k.ravel()
    positions = lattice.positions(indices, atoms)
    eps = 1e-9 * max(1.0, float(np.abs(corners).max()))
    inside = (
        (positions[:, 0] >= y0 - eps)
        & (positions[:, 0] <= y1 + eps)
        & (positions[:, 1] >= x0 - eps)
        & (positions[:, 1] <= x1 + eps)
    )
    labels = lattice.labels
    return positions[inside], [labels[a] for a in atoms[inside]], indices[inside]


def _shortest_separation(lattice: Lattice) -> float:
    """Smallest distance between two distinct sites [Å]."""
    shifts = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=np.float64)
    fractional = lattice.fractional
    differences = (
        fractional[:, None, None, :] - fractional[None, :, None, :] + shifts[None, None, :, :]
    ) @ lattice.matrix.T
    distances = np.linalg.norm(differences, axis=-1)
    distances[distances < 1e-9 * math.hypot(*lattice.a_ang)] = np.inf
    return float(distances.min())


def assign_sites(
    positions_ang: np.ndarray, lattice: Lattice, *, max_distance_ang: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nearest lattice site of each position.

    Parameters
    ----------
    positions_ang:
        float (K, 2): measured (y, x) [Å].
    lattice:
        the lattice.
    max_distance_ang:
        positions farther than this from every site are left unassigned [Å]; by default
        0.3 × the shortest distance between two sites.

    Returns
    -------
    indices : np.ndarray
        int64 (K, 2): cell (i, j) of the nearest site.
    basis_index : np.ndarray
        int64 (K,): its basis atom, or −1 when unassigned.
    distance_ang : np.ndarray
        float64 (K,): distance to it [Å].
    """
    points = np.asarray(positions_ang, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or not np.all(np.isfinite(points)):
        raise ValueError(f"positions_ang must be finite with shape (K, 2), got {points.shape}")
    limit = 0.3 * _shortest_separation(lattice) if max_distance_ang is None else max_distance_ang
    require_positive("max_distance_ang", limit, "Å")
    fractional = np.linalg.solve(lattice.matrix, (points - np.asarray(lattice.origin_ang)).T).T
    shifts = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)])
    k = points.shape[0]
    best = np.full(k, np.inf)
    indices = np.zeros((k, 2), dtype=np.int64)
    basis_index = np.full(k, -1, dtype=np.int64)
    for atom, uv in enumerate(lattice.fractional):
        nearest = np.rint(fractional - uv).astype(np.int64)
        for shift in shifts:
            cells = nearest + shift
            distance = np.linalg.norm((fractional - uv - cells) @ lattice.matrix.T, axis=1)
            better = distance < best
            best = np.where(better, distance, best)
            indices[better] = cells[better]
            basis_index[better] = atom
    basis_index[best > limit] = -1
    return indices, basis_index, best


def fit_lattice(
    peaks_ang: np.ndarray,
    initial: Lattice,
    *,
    max_distance_ang: float | None = None,
    max_iter: int = 20,
) -> Lattice:
    """Least-squares origin and basis vectors of the lattice through measured columns.

    Each peak is assigned to the nearest site of the current lattice
    (:func:`assign_sites`; peaks farther than ``max_distance_ang`` are ignored, and of two
    peaks on one site only the nearer counts); with the assignment fixed, the model
    p = o + (i + u)·a + (j + v)·b is linear in (o, a, b), solved for y and x separately;
    peaks whose residual exceeds 5 × the median (spurious peaks that happen to lie near an
    empty site) are dropped and the fit repeated.
    Assignment and fit alternate until the assignment stops changing. The basis's
    fractional coordinates are kept; a rotated or strained cell is described by a and b.
    The initial lattice must be close enough that the peaks go to their true sites
    (errors well below half the site spacing across the field of view).

    Parameters
    ----------
    peaks_ang:
        float (K, 2): measured (y, x) [Å].
    initial:
        starting lattice (and the basis to keep).
    max_distance_ang:
        as in :func:`assign_sites`.
    max_iter:
        most assignment-fit rounds.

    Returns
    -------
    Lattice
        the fitted lattice, with the same basis.

    Examples
    --------
    >>> true = srtio3_lattice((1.0, 2.0), a_ang=3.9, rotation_deg=2.0)
    >>> peaks, _, _ = lattice_sites(true, (0, 20, 0, 20))
    >>> fitted = fit_lattice(peaks, srtio3_lattice((1.1, 1.9), a_ang=3.905))
    >>> np.allclose(fitted.a_ang, true.a_ang), np.allclose(fitted.origin_ang, true.origin_ang)
    (True, True)
    """
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    points = np.asarray(peaks_ang, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or not np.all(np.isfinite(points)):
        raise ValueError(f"peaks_ang must be finite with shape (K, 2), got {points.shape}")
    lattice = initial
    previous: np.ndarray | None = None
    for _ in range(max_iter):
        indices, atoms, distance = assign_sites(points, lattice, max_distance_ang=max_distance_ang)
        used = _nearest_per_site(indices, atoms, distance)
        key = np.column_stack([indices, atoms])[used]
        if previous is not None and previous.shape == key.shape and np.all(previous == key):
            break
        previous = key
        design = np.column_stack(
            [np.ones(used.sum()), indices[used] + lattice.fractional[atoms[used]]]
        )
        if np.linalg.matrix_rank(design) < 3:
            raise ValueError(
                f"peaks_ang: only {int(used.sum())} peaks lie within max_distance_ang of the "
                "lattice's sites, not enough (at least 3, not on one line) to fit it"
            )
        solution = _clipped_lstsq(design, points[used])  # rows o, a, b
        lattice = Lattice(
            origin_ang=(float(solution[0, 0]), float(solution[0, 1])),
            a_ang=(float(solution[1, 0]), float(solution[1, 1])),
            b_ang=(float(solution[2, 0]), float(solution[2, 1])),
            basis=initial.basis,
        )
    return lattice


def _clipped_lstsq(design: np.ndarray, targets: np.ndarray, rounds: int = 5) -> np.ndarray:
    """Least squares, refitted without points whose residual exceeds 5 × the median."""
    keep = np.ones(len(targets), dtype=bool)
    solution: np.ndarray = np.linalg.lstsq(design, targets, rcond=None)[0]
    for _ in range(rounds):
        residual = np.linalg.norm(design @ solution - targets, axis=1)
        scale = float(np.abs(solution[1:]).max())
        outlier = residual > max(5.0 * float(np.median(residual[keep])), 1e-9 * scale)
        if np.array_equal(~outlier, keep) or np.linalg.matrix_rank(design[~outlier]) < 3:
            break
        keep = ~outlier
        solution = np.linalg.lstsq(design[keep], targets[keep], rcond=None)[0]
    return solution


def _nearest_per_site(indices: np.ndarray, atoms: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Mask of assigned peaks, keeping only the nearest peak of each site."""
    used = atoms >= 0
    order = np.lexsort((distance, atoms, indices[:, 1], indices[:, 0]))
    order = order[used[order]]
    key = np.column_stack([indices[order], atoms[order]])
    first = np.ones(order.size, dtype=bool)
    first[1:] = np.any(key[1:] != key[:-1], axis=1)
    mask = np.zeros(atoms.size, dtype=bool)
    mask[order[first]] = True
    return mask


# ---------------------------------------------------------------------------------------
# Species.


def integrated_intensity(
    image: np.ndarray,
    positions_ang: np.ndarray,
    pixel_size_ang: Pair,
    radius_ang: float,
    *,
    origin_ang: Pair = (0.0, 0.0),
) -> np.ndarray:
    """Sum of the image over the pixels within ``radius_ang`` of each position, × pixel area.

    Parameters
    ----------
    image:
        float (ny, nx), e.g. a phase [rad].
    positions_ang:
        float (K, 2): (y, x) [Å]; each disk must lie on the image.
    pixel_size_ang:
        (dy, dx) [Å], or one number for square pixels.
    radius_ang:
        disk radius [Å].
    origin_ang:
        (y, x) [Å] of pixel (0, 0).

    Returns
    -------
    np.ndarray
        float64 (K,) [image units · Å², e.g. rad·Å²].
    """
    stack = _image_stack(image)
    if stack.ndim != 2:
        raise ValueError(f"image must be 2D (ny, nx), got shape {stack.shape}")
    pixel = _pair("pixel_size_ang", pixel_size_ang, positive=True)
    origin = _pair("origin_ang", origin_ang, positive=False)
    require_positive("radius_ang", radius_ang, "Å")
    points = np.asarray(positions_ang, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or not np.all(np.isfinite(points)):
        raise ValueError(f"positions_ang must be finite with shape (K, 2), got {points.shape}")
    centres = (points - origin) / pixel
    _require_inside(centres, (stack.shape[0], stack.shape[1]), pixel, origin, float(radius_ang))
    win = _windows(stack, centres, pixel, float(radius_ang))
    total: np.ndarray = np.sum(np.where(win.rho2 <= 1.0, win.values, 0.0), axis=1)
    return total * float(pixel[0] * pixel[1])


def classify_by_intensity(
    image: np.ndarray,
    positions_ang: np.ndarray,
    pixel_size_ang: Pair,
    n_classes: int,
    radius_ang: float,
    *,
    origin_ang: Pair = (0.0, 0.0),
    max_iter: int = 100,
) -> np.ndarray:
    """Species classes from each column's :func:`integrated_intensity` by 1D k-means.

    Lloyd's algorithm from centroids at the (c + ½)/n quantiles of the intensities
    (deterministic). Classes are numbered by increasing mean intensity: 0 is the weakest
    (in SrTiO3's phase: O, then Ti-O and Sr, which are close and depend on thickness and
    defocus, so check them against the lattice labels).

    Parameters
    ----------
    image, positions_ang, pixel_size_ang, radius_ang, origin_ang:
        as in :func:`integrated_intensity`.
    n_classes:
        number of species, 1 <= n_classes <= K.
    max_iter:
        most k-means rounds.

    Returns
    -------
    np.ndarray
        int64 (K,): class of each column, 0 … n_classes − 1.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer) or n_classes < 1:
        raise ValueError(f"n_classes must be an integer >= 1, got {n_classes!r}")
    values = integrated_intensity(
        image, positions_ang, pixel_size_ang, radius_ang, origin_ang=origin_ang
    )
    if n_classes > values.size:
        raise ValueError(
            f"n_classes must be <= the number of positions ({values.size}), got {n_classes}"
        )
    return kmeans_1d(values, n_classes, max_iter)


def kmeans_1d(values: np.ndarray, k: int, max_iter: int = 100) -> np.ndarray:
    """Lloyd's k-means of 1D values from the (c + ½)/k quantiles.

    Returns int64 labels 0 … k − 1 ordered by increasing class mean (0: the weakest).
    """
    centroids = np.quantile(values, (np.arange(k) + 0.5) / k)
    labels = np.zeros(values.size, dtype=np.int64)
    for _ in range(max_iter):
        labels = np.argmin(np.abs(values[:, None] - centroids[None, :]), axis=1)
        updated = np.array(
            [values[labels == c].mean() if np.any(labels == c) else centroids[c] for c in range(k)]
        )
        if np.array_equal(updated, centroids):
            break
        centroids = updated
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(centroids, kind="stable")] = np.arange(k)
    result: np.ndarray = rank[labels]
    return result
