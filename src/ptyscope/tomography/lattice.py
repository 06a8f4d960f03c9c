"""Registration of atoms to an FCC lattice: sites, displacements, vacancies, order.

The step of atomic electron tomography (AET) that follows tracing and classification
(:mod:`ptyscope.tomography.atoms`): :func:`register_to_lattice` finds the FCC lattice
(origin and arbitrary orientation) the atoms sit on, each atom's site and displacement
from it, the empty sites inside the particle, and for the ordered alloys L1_0 / L1_2 how
well the species follow the sublattices.

Positions are float64 (N, 3) arrays in ase Cartesian order (x, y, z) [Å] and species are
integer labels 0 … S − 1, as in :mod:`ptyscope.tomography.atoms`.
``tests/tomography/test_lattice.py`` measures the registration on simulated FePt L1_0,
Cu3Au L1_2 and Au nanoparticles.

References
----------
J. Zhou, Y. Yang, P. Ercius and J. Miao, "Atomic electron tomography in three and four
dimensions", MRS Bulletin 45, 290-297 (2020).
Y. Yang et al., "Deciphering chemical order/disorder and material properties at the
single-atom level", Nature 542, 75-79 (2017).
W. Kabsch, "A solution for the best rotation to relate two sets of vectors", Acta Cryst.
A 32, 922-923 (1976).
J. H. Conway and N. J. A. Sloane, "Fast quantizing and decoding algorithms for lattice
quantizers and codes", IEEE Trans. Inf. Theory 28, 227-232 (1982).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
from scipy.spatial import ConvexHull, QhullError, cKDTree

from ptyscope._validation import require_finite, require_in_range, require_positive
from ptyscope.tomography.atoms import _require_int, _require_labels, _require_positions

__all__ = ["LatticeRegistration", "register_to_lattice"]

#: The 12 nearest-neighbour vectors of an FCC lattice, in units of a/2 (crystal frame).
_FCC_NEIGHBOURS = (
    np.array([v for v in np.ndindex(3, 3, 3) if sum(abs(c - 1) for c in v) == 2], dtype=np.float64)
    - 1.0
)
Structure = Literal["fcc", "L1_0", "L1_2"]


class LatticeRegistration(NamedTuple):
    """Result of :func:`register_to_lattice`.

    Site n (integers in units of a/2 with an even sum: the FCC lattice) lies at
    ``origin_ang + rotation @ (n · a/2)`` (x, y, z) [Å]. The crystal axes are those of the
    cube; they are determined only up to the 24 rotations of the cube, which is why
    ordered alloys try every equivalent assignment of their sublattices.
    """

    rotation: np.ndarray
    """float64 (3, 3): crystal (cube) axes as columns, in the lab (x, y, z) frame."""
    origin_ang: np.ndarray
    """float64 (3,): lab position (x, y, z) [Å] of site n = 0."""
    sites: np.ndarray
    """int64 (N, 3): nearest site of each atom, n in units of a/2 (crystal frame)."""
    assigned: np.ndarray
    """bool (N,): atom owns its site (within ``max_distance_ang``, nearest of those there)."""
    displacements_ang: np.ndarray
    """float64 (N, 3): atom − site (x, y, z) [Å]; NaN for unassigned atoms."""
    displacement_magnitudes_ang: np.ndarray
    """float64 (N,): |displacement| [Å]; NaN for unassigned atoms."""
    rms_displacement_ang: float
    """sqrt(mean |d|²) over assigned atoms [Å]."""
    mean_displacement_ang: float
    """mean |d| over assigned atoms [Å]."""
    unassigned: np.ndarray
    """int64 (U,): indices of atoms that map to no site."""
    missing_sites_ang: np.ndarray
    """float64 (M, 3): lab positions (x, y, z) [Å] of empty sites inside the particle."""
    num_interior_sites: int
    """Sites inside the particle (the convex hull shrunk by ``hull_margin_ang``)."""
    species_match_fraction: float | None
    """Ordered alloys with labels: fraction of assigned atoms whose species is that of
    their sublattice, for the best sublattice assignment; None otherwise."""
    order_parameter: float | None
    """r_α + r_β − 1 (Bragg-Williams long-range order), r_α the fraction of the α
    sublattice's atoms of α's species: 1 ordered, ≈ 0 random; None like the fraction."""
    variant: str | None
    """The sublattice assignment chosen, e.g. ``"L1_0: c ∥ crystal z (lab [0.0, 0.0, 1.0]),
    label 0 on n_c even"`` (label 0 on the planes of even n along c); None like the
    fraction."""
    variant_fractions: dict[str, float] | None
    """Match fraction of every assignment tried: one clearly above the others means the
    ordering is unambiguous; similar values mean disorder or several domains."""


def _nearest_fcc(q: np.ndarray) -> np.ndarray:
    """Nearest points of the FCC (D3) lattice: integers with an even sum, int64 (N, 3)
    (Conway & Sloane: round, then re-round the worst coordinate the other way if odd)."""
    f = np.rint(q)
    odd = np.remainder(f.sum(axis=1), 2) != 0
    if np.any(odd):
        rows = np.flatnonzero(odd)
        error = q[rows] - f[rows]
        worst = np.argmax(np.abs(error), axis=1)
        step = np.sign(error[np.arange(rows.size), worst])
        f[rows, worst] += np.where(step == 0, 1.0, step)
    result: np.ndarray = f.astype(np.int64)
    return result


def _rotation_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Proper rotation R minimising Σ |R s − t|² over paired rows (Kabsch 1976)."""
    u, _, vt = np.linalg.svd(source.T @ target)
    d = 1.0 if np.linalg.det(vt.T @ u.T) >= 0 else -1.0
    rotation: np.ndarray = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rotation


def _kabsch(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Proper rotation R and translation t minimising Σ |R s + t − p|²."""
    s0, t0 = source.mean(axis=0), target.mean(axis=0)
    rotation = _rotation_fit(source - s0, target - t0)
    return rotation, t0 - rotation @ s0


def _frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Right-handed orthonormal frame (columns) from a and the part of b normal to it."""
    e1 = a / np.linalg.norm(a)
    e2 = b - (b @ e1) * e1
    e2 /= np.linalg.norm(e2)
    return np.column_stack([e1, e2, np.cross(e1, e2)])


def _densest(vectors: np.ndarray, tree: cKDTree, chord: float, subset: np.ndarray) -> np.ndarray:
    """Unit mean of the vectors around the member of ``subset`` with most neighbours."""
    counts = tree.query_ball_point(vectors[subset], chord, return_length=True)
    centre = vectors[subset][int(np.argmax(counts))]
    mean = vectors[tree.query_ball_point(centre, chord)].mean(axis=0)
    result: np.ndarray = mean / np.linalg.norm(mean)
    return result


def _estimate_rotation(points: np.ndarray, a: float, tolerance: float) -> np.ndarray:
    """Orientation of the cube axes from the nearest-neighbour directions (lab ← crystal).

    The densest direction among the unit vectors between atoms a/√2 (± tolerance) apart
    is a ⟨110⟩; the densest at 60 ± 10° from it a second one. The proper rotation taking
    an ideal pair at 60° onto them is unique; of the four ideal second vectors (two
    mirror classes under the cube's rotations) the one whose rotated ⟨110⟩ set best fits
    all measured directions wins, and Kabsch on the assigned directions refines it.
    """
    nn = a / math.sqrt(2.0)
    pairs = cKDTree(points).query_pairs((1.0 + tolerance) * nn, output_type="ndarray")
    vectors = points[pairs[:, 1]] - points[pairs[:, 0]]
    length = np.linalg.norm(vectors, axis=1)
    near = length >= (1.0 - tolerance) * nn
    vectors = vectors[near] / length[near, None]
    vectors = np.concatenate([vectors, -vectors])
    if vectors.shape[0] < 4:
        raise ValueError(
            f"positions have {vectors.shape[0] // 2} neighbour pairs at a/√2 = {nn:.3f} Å "
            f"(± {tolerance:.0%}); need at least 2 to find the lattice: check "
            f"lattice_constant_ang = {a!r} Å"
        )
    tree = cKDTree(vectors)
    chord = 2.0 * math.sin(math.radians(10.0) / 2.0)
    u1 = _densest(vectors, tree, chord, np.arange(vectors.shape[0]))
    cosine = vectors @ u1
    band = np.flatnonzero(
        (cosine > math.cos(math.radians(70))) & (cosine < math.cos(math.radians(50)))
    )
    if band.size == 0:
        raise ValueError(
            "positions have no neighbour directions at 60° to the dominant one; they do not "
            f"look like an FCC lattice with lattice_constant_ang = {a!r} Å"
        )
    u2 = _densest(vectors, tree, chord, band)
    ideal = _FCC_NEIGHBOURS / math.sqrt(2.0)
    e1 = ideal[np.argmax(ideal @ np.array([1.0, 1.0, 0.0]))]
    best, best_score = np.eye(3), np.inf
    for e2 in ideal[np.isclose(ideal @ e1, 0.5)]:
        rotation = _frame(u1, u2) @ _frame(e1, e2).T
        distance, _ = cKDTree(ideal @ rotation.T).query(vectors)
        if float(np.mean(distance**2)) < best_score:
            best, best_score = rotation, float(np.mean(distance**2))
    distance, nearest = cKDTree(ideal @ best.T).query(vectors)
    close = distance < 2.0 * chord
    return _rotation_fit(ideal[nearest[close]], vectors[close])


def _site_keys(sites: np.ndarray, low: np.ndarray, size: np.ndarray) -> np.ndarray:
    """One int64 per site n (rows), for n in [low, low + size)."""
    shifted = sites - low
    result: np.ndarray = (shifted[:, 0] * size[1] + shifted[:, 1]) * size[2] + shifted[:, 2]
    return result


def _interior_sites(
    points: np.ndarray, rotation: np.ndarray, origin: np.ndarray, half: float, margin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sites (int64 (M, 3)) inside the convex hull of the points shrunk by ``margin`` [Å],
    and the (low, size) box of site indices that holds every point's nearest site."""
    q = ((points - origin) @ rotation) / half
    low = np.floor(q.min(axis=0)).astype(np.int64) - 1
    size = np.ceil(q.max(axis=0)).astype(np.int64) + 2 - low
    try:
        equations = ConvexHull(points).equations  # outward unit normals n, n·x + d <= 0
    except QhullError:  # flat or degenerate: no interior
        return np.empty((0, 3), dtype=np.int64), low, size
    axes = [np.arange(low[k], low[k] + size[k]) for k in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    grid = grid[np.remainder(grid.sum(axis=1), 2) == 0]
    inside = np.zeros(grid.shape[0], dtype=bool)
    for start in range(0, grid.shape[0], 16384):  # bounds the (chunk, facets) temporary
        lab = origin + (grid[start : start + 16384] * half) @ rotation.T
        height = lab @ equations[:, :3].T + equations[:, 3]
        inside[start : start + 16384] = np.all(height <= -margin, axis=1)
    return grid[inside], low, size


def _sublattice_variants(
    structure: str, sites: np.ndarray, rotation: np.ndarray
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, expected label per atom, α-sublattice mask) for every equivalent assignment
    of an ordered alloy's two species to its sublattices."""
    variants = []
    if structure == "L1_0":  # A on the planes with n_c even, B on n_c odd
        for axis in range(3):
            even = np.remainder(sites[:, axis], 2) == 0
            c_lab = np.round(rotation[:, axis], 3).tolist()
            for label in (0, 1):
                name = f"L1_0: c ∥ crystal {'xyz'[axis]} (lab {c_lab}), label {label} on n_c even"
                variants.append((name, np.where(even, label, 1 - label), even))
    else:  # L1_2: the minority species on one simple-cubic coset (the cube corners)
        code = np.remainder(sites, 2) @ np.array([4, 2, 1])
        for coset, pattern in ((0, "000"), (3, "011"), (5, "101"), (6, "110")):
            corner = code == coset
            for label in (0, 1):
                name = f"L1_2: label {label} on the corners n ≡ ({pattern}) mod 2"
                variants.append((name, np.where(corner, label, 1 - label), corner))
    return variants


def register_to_lattice(
    positions: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    lattice_constant_ang: float,
    structure: Structure = "fcc",
    max_distance_ang: float,
    hull_margin_ang: float = 0.5,
    neighbour_tolerance: float = 0.15,
    max_iter: int = 50,
) -> LatticeRegistration:
    """Register atoms to an FCC lattice of unknown origin and orientation.

    1. Orientation, with no prior guess: the unit vectors between atoms a/√2 (±
       ``neighbour_tolerance``) apart cluster around the 12 ⟨110⟩ of the crystal. The
       densest cluster and the densest one at 60° to it fix the rotation (of the two
       mirror-related ideal pairs the one whose ⟨110⟩ set fits all vectors best), which a
       least-squares (Kabsch) fit to all vectors then refines.
    2. Origin: the atom nearest the centroid. Then, until the sites stop changing: every
       atom takes its nearest site (Conway-Sloane decoding of the FCC lattice), and the
       rotation and origin are refitted by least squares (Kabsch) to the atoms within
       ``max_distance_ang`` of their sites. The lattice constant stays fixed.
    3. Each site is owned by its nearest atom within ``max_distance_ang``; other atoms map
       to no site (``unassigned``: interstitials, atoms of another grain, or displaced by
       more than the tolerance). Displacements are atom − site.
    4. Missing sites: empty sites inside the convex hull of the atoms shrunk by
       ``hull_margin_ang``. This assumes a convex particle (a concave one shows its
       hollows as missing sites) and cannot see surface vacancies, which are
       indistinguishable from the particle's shape.
    5. Ordered alloys (``"L1_0"``, ``"L1_2"``) with labels: every equivalent assignment of
       the two labels to the sublattices is tried (the c axis along any cube axis and the
       two labels swapped for L1_0: 6; the corner coset and the labels for L1_2: 8), and
       the one matching most atoms is reported, with all fractions to judge ambiguity.

    A single crystal is assumed: for several grains the dominant one is registered and the
    others' atoms come out unassigned (or badly displaced).

    Parameters
    ----------
    positions:
        float (N, 3): (x, y, z) [Å], N >= 4.
    labels:
        int (N,) species 0 / 1, or None; used only for ordered alloys.
    lattice_constant_ang:
        cubic lattice constant a [Å] (3.85 for FePt, ignoring its c/a ≈ 0.96).
    structure:
        ``"fcc"``, ``"L1_0"`` (AB: alternating (001) planes) or ``"L1_2"`` (A3B: B on the
        cube corners).
    max_distance_ang:
        largest atom-site distance of an assigned atom [Å]; below a/(2√2), half the
        nearest-neighbour distance, e.g. 0.6 Å for FePt.
    hull_margin_ang:
        a site counts as inside the particle when it is at least this far [Å] inside the
        atoms' convex hull; about 3 × the displacement RMS.
    neighbour_tolerance:
        relative tolerance on the nearest-neighbour distance for step 1, in (0, 0.5).
    max_iter:
        most rounds of step 2.

    Returns
    -------
    LatticeRegistration
        rotation, origin, sites, displacements and their statistics, unassigned atoms,
        missing sites and, for ordered alloys, the species-sublattice match.
    """
    points = _require_positions("positions", positions, minimum=4)
    require_positive("lattice_constant_ang", lattice_constant_ang, "Å")
    require_positive("max_distance_ang", max_distance_ang, "Å")
    require_finite("hull_margin_ang", hull_margin_ang)
    if hull_margin_ang < 0:
        raise ValueError(f"hull_margin_ang must be >= 0 Å, got {hull_margin_ang!r}")
    require_in_range("neighbour_tolerance", neighbour_tolerance, 0.0, 0.5, inclusive=False)
    rounds = _require_int("max_iter", max_iter, 1)
    if structure not in ("fcc", "L1_0", "L1_2"):
        raise ValueError(f"structure must be one of ['L1_0', 'L1_2', 'fcc'], got {structure!r}")
    species = None if labels is None else _require_labels("labels", labels, points.shape[0])
    if species is not None and structure != "fcc" and species.size and species.max() > 1:
        raise ValueError(
            f"labels must be 0 or 1 for the two species of {structure}, got {int(species.max())}"
        )
    a, limit = float(lattice_constant_ang), float(max_distance_ang)
    half = 0.5 * a

    rotation = _estimate_rotation(points, a, float(neighbour_tolerance))
    origin = points[np.argmin(np.sum((points - points.mean(axis=0)) ** 2, axis=1))]
    previous = None
    for _ in range(rounds):
        sites = _nearest_fcc(((points - origin) @ rotation) / half)
        ideal = origin + (sites * half) @ rotation.T
        inlier = np.sum((points - ideal) ** 2, axis=1) <= limit**2
        if inlier.sum() < 4:
            raise ValueError(
                f"only {int(inlier.sum())} atoms lie within max_distance_ang = {limit:g} Å of "
                f"the lattice found; need >= 4 (check lattice_constant_ang = {a:g} Å)"
            )
        if previous is not None and np.array_equal(sites, previous):
            break
        rotation, origin = _kabsch(sites[inlier] * half, points[inlier])
        previous = sites
    sites = _nearest_fcc(((points - origin) @ rotation) / half)
    offset = points - (origin + (sites * half) @ rotation.T)
    distance = np.linalg.norm(offset, axis=1)

    interior, low, size = _interior_sites(points, rotation, origin, half, float(hull_margin_ang))
    keys = _site_keys(sites, low, size)
    order = np.lexsort((distance, keys))
    first = np.ones(order.size, dtype=bool)
    first[1:] = keys[order][1:] != keys[order][:-1]
    assigned = np.zeros(points.shape[0], dtype=bool)
    assigned[order[first]] = True
    assigned &= distance <= limit
    missing = interior[~np.isin(_site_keys(interior, low, size), keys[assigned])]

    displacement = np.where(assigned[:, None], offset, np.nan)
    magnitude = np.where(assigned, distance, np.nan)
    kept = distance[assigned]
    fraction = order_parameter = variant = fractions = None
    if species is not None and structure != "fcc" and np.any(assigned):
        found = []
        for name, expected, alpha in _sublattice_variants(structure, sites[assigned], rotation):
            match = species[assigned] == expected
            r_alpha = float(match[alpha].mean()) if np.any(alpha) else math.nan
            r_beta = float(match[~alpha].mean()) if np.any(~alpha) else math.nan
            found.append((float(match.mean()), r_alpha + r_beta - 1.0, name))
        fraction, order_parameter, variant = max(found, key=lambda item: item[0])
        fractions = {name: value for value, _, name in found}
    return LatticeRegistration(
        rotation=rotation,
        origin_ang=origin,
        sites=sites,
        assigned=assigned,
        displacements_ang=displacement,
        displacement_magnitudes_ang=magnitude,
        rms_displacement_ang=float(np.sqrt(np.mean(kept**2))) if kept.size else math.nan,
        mean_displacement_ang=float(np.mean(kept)) if kept.size else math.nan,
        unassigned=np.flatnonzero(~assigned),
        missing_sites_ang=origin + (missing * half) @ rotation.T,
        num_interior_sites=int(interior.shape[0]),
        species_match_fraction=fraction,
        order_parameter=order_parameter,
        variant=variant,
        variant_fractions=fractions,
    )
