"""Specimen builders: atoms from files, crystal slabs, rotated crystals, nanoparticles.

Every builder returns an :class:`ase.Atoms`. Coordinates follow ase: Cartesian (x, y, z)
in Å, the electron beam travels along +z and z = 0 is the entrance surface. Lateral pairs
here are ordered (x, y) like the coordinates (``repeat_xy = (nx, ny)``); conversion to
ptyscope's (y, x) array order happens when atoms are rasterised into potentials.
Orientations are Euler angles (φ, θ, ψ) in degrees, intrinsic Z-Y-Z, applied to the
specimen as an active rotation (:func:`rotation_matrix`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import ase
import ase.io
import numpy as np
from ase.data import atomic_numbers

from ptyscope._validation import require_finite, require_positive

__all__ = [
    "ORDERED_ALLOY_STRUCTURES",
    "SRTIO3_LATTICE_CONSTANT_ANG",
    "crystal_slab",
    "fcc_cluster",
    "load_atoms",
    "load_trajectory",
    "ordered_alloy_cluster",
    "ordered_alloy_unit_cell",
    "rotate_atoms",
    "rotation_matrix",
    "srtio3_slab",
    "srtio3_two_domain",
    "srtio3_unit_cell",
    "tilted_crystal",
    "two_domain_specimen",
]

#: Cubic SrTiO3 at room temperature [Å].
SRTIO3_LATTICE_CONSTANT_ANG = 3.905
#: Atoms closer than this to a face of a cropping box or sphere count as on it [Å].
_EDGE_TOL_ANG = 1e-6
#: Fractional coordinates of the four sites of the FCC conventional cell.
_FCC_SITES = np.array([[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
#: Ordered FCC superstructures: which of ``symbols = (A, B)`` occupies each FCC site.
ORDERED_ALLOY_STRUCTURES: dict[str, tuple[int, int, int, int]] = {
    "L1_2": (1, 0, 0, 0),  # A3B (Cu3Au): B on the cube corners, A on the face centres
    "L1_0": (0, 1, 1, 0),  # AB (CuAu, FePt): A on the z = 0 planes, B on z = a/2
}
_AXES = {"x": 0, "y": 1, "z": 2}


def _require_repeat_xy(value: Sequence[int]) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, Sequence | np.ndarray) else ()
    integers = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in pair)
    if len(pair) != 2 or not integers:
        raise TypeError(f"repeat_xy must be a pair of integers (nx, ny), got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"repeat_xy entries must be >= 1, got {value!r}")
    return int(pair[0]), int(pair[1])


def _require_vector(name: str, value: Sequence[float], what: str) -> np.ndarray:
    ok = isinstance(value, Sequence | np.ndarray) and not isinstance(value, str)
    vector = np.asarray(value, dtype=np.float64) if ok else np.empty(0)
    if vector.shape != (3,) or not np.all(np.isfinite(vector)):
        raise ValueError(f"{name} must be three finite numbers {what}, got {value!r}")
    return vector


def _require_atoms(name: str, atoms: object) -> None:
    if not isinstance(atoms, ase.Atoms):
        raise TypeError(f"{name} must be an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise ValueError(f"{name} must contain at least one atom, got 0 atoms")


def _require_symbol(name: str, symbol: object) -> str:
    if not isinstance(symbol, str) or symbol not in atomic_numbers:
        raise ValueError(f"{name} must be a chemical symbol such as 'Au', got {symbol!r}")
    return symbol


def _orthorhombic_lengths(name: str, atoms: ase.Atoms) -> np.ndarray:
    """Cell lengths (Lx, Ly, Lz) [Å]; raise unless the cell vectors lie along +x, +y, +z."""
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    lengths = np.diag(cell).copy()
    skew = np.abs(cell - np.diag(lengths)).max()
    if np.any(lengths <= 0) or skew > 1e-8 * max(lengths.max(), 1.0):
        raise ValueError(
            f"{name} must have an orthorhombic cell with vectors along +x, +y, +z, "
            f"got cell {np.round(cell, 6).tolist()} Å"
        )
    return lengths


def _wrapped_copy(unit_cell: ase.Atoms) -> ase.Atoms:
    """Copy of ``unit_cell`` with fractional coordinates wrapped into [0, 1)."""
    unit: ase.Atoms = unit_cell.copy()
    unit.pbc = True
    unit.wrap()
    return unit


# --- files ------------------------------------------------------------------------------


def _read(path: str | Path, index: int | str, format: str | None) -> object:
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"path {str(file)!r} does not exist")
    if not file.is_file():
        raise ValueError(f"path {str(file)!r} is not a file")
    try:
        return ase.io.read(file, index=index, format=format)
    except Exception as exc:  # ase raises many exception types for unreadable files
        raise ValueError(
            f"could not read atoms from {str(file)!r} (format={format!r}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def load_atoms(path: str | Path, index: int = -1, format: str | None = None) -> ase.Atoms:
    """Read one structure from any file :func:`ase.io.read` understands.

    Raises FileNotFoundError if ``path`` does not exist and ValueError (naming the path)
    if it cannot be read as atoms or has no frame ``index``.

    Parameters
    ----------
    path:
        CIF, XYZ, extended XYZ, ase trajectory, POSCAR, ... (format guessed from the name).
    index:
        Frame of a multi-frame file; the last one by default.
    format:
        ase format name when the file name does not reveal it (e.g. ``"extxyz"``).

    Returns
    -------
    ase.Atoms
        The structure as stored: positions [Å], cell and pbc as the file gives them.
    """
    if not isinstance(index, int) or isinstance(index, bool):
        raise TypeError(f"index must be an integer frame number, got {index!r}")
    atoms = _read(path, index, format)
    if not isinstance(atoms, ase.Atoms):
        raise ValueError(f"frame {index} of {str(path)!r} is not one ase.Atoms")
    return atoms


def load_trajectory(path: str | Path, format: str | None = None) -> list[ase.Atoms]:
    """Read every frame of a file (e.g. user-supplied frozen-phonon snapshots).

    Returns all frames in file order after checking that they hold the same chemical
    symbols in the same order, so that frame m is snapshot m of one specimen. Raises as
    :func:`load_atoms`, and ValueError when frames differ in atom count or species order.
    """
    frames = _read(path, ":", format)
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{str(path)!r} holds no frames")
    symbols = frames[0].get_chemical_symbols()
    for m, frame in enumerate(frames[1:], start=1):
        if len(frame) != len(symbols):
            raise ValueError(
                f"all frames of {str(path)!r} must have the same number of atoms; frame 0 "
                f"has {len(symbols)}, frame {m} has {len(frame)}"
            )
        if frame.get_chemical_symbols() != symbols:
            raise ValueError(
                f"all frames of {str(path)!r} must list the same species in the same "
                f"order; frame {m} differs from frame 0"
            )
    return frames


# --- crystal slabs ----------------------------------------------------------------------


def srtio3_unit_cell(lattice_constant_ang: float = SRTIO3_LATTICE_CONSTANT_ANG) -> ase.Atoms:
    """Cubic perovskite SrTiO3 (Pm-3m): 5 atoms in the cell a·I [Å].

    Fractional positions: Sr (0, 0, 0); Ti (½, ½, ½); O (½, ½, 0), (½, 0, ½), (0, ½, ½).
    """
    require_positive("lattice_constant_ang", lattice_constant_ang, "Å")
    fractional = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    cell = np.eye(3) * float(lattice_constant_ang)
    return ase.Atoms("SrTiO3", scaled_positions=fractional, cell=cell, pbc=True)


def crystal_slab(unit_cell: ase.Atoms, repeat_xy: Sequence[int], thickness_ang: float) -> ase.Atoms:
    """A slab of nx × ny × nz unit cells, periodic laterally, viewed along its c axis.

    Parameters
    ----------
    unit_cell:
        Orthorhombic cell (vectors along +x, +y, +z with lengths a, b, c [Å]); positions
        are wrapped into it first.
    repeat_xy:
        ``(nx, ny)``: repetitions along x and y.
    thickness_ang:
        Requested thickness [Å], >= c/2. The slab holds nz = round(thickness_ang / c)
        whole cells (halves round up), so its **actual thickness is nz·c**.

    Returns
    -------
    ase.Atoms
        ``len(unit_cell)·nx·ny·nz`` atoms; cell diag(nx·a, ny·b, nz·c); pbc (True, True,
        False); the unit cell's z = 0 plane is the entrance surface.
    """
    _require_atoms("unit_cell", unit_cell)
    lengths = _orthorhombic_lengths("unit_cell", unit_cell)
    nx, ny = _require_repeat_xy(repeat_xy)
    require_positive("thickness_ang", thickness_ang, "Å")
    c = float(lengths[2])
    if thickness_ang < 0.5 * c:
        raise ValueError(
            f"thickness_ang must be >= half the unit-cell height c/2 = {0.5 * c:g} Å, "
            f"got {thickness_ang!r}"
        )
    nz = math.floor(thickness_ang / c + 0.5)
    slab: ase.Atoms = _wrapped_copy(unit_cell).repeat((nx, ny, nz))
    slab.pbc = (True, True, False)
    return slab


def srtio3_slab(
    repeat_xy: Sequence[int],
    thickness_ang: float,
    lattice_constant_ang: float = SRTIO3_LATTICE_CONSTANT_ANG,
) -> ase.Atoms:
    """SrTiO3 viewed along [001]: :func:`crystal_slab` of :func:`srtio3_unit_cell`.

    ``repeat_xy = (nx, ny)`` cells along (x, y); the actual thickness is nz·a with
    nz = round(thickness_ang / a); the entrance surface z = 0 is a SrO plane.

    Examples
    --------
    >>> slab = srtio3_slab((4, 4), thickness_ang=20.0)  # 5 cells: 19.525 Å thick
    >>> len(slab)
    400
    """
    return crystal_slab(srtio3_unit_cell(lattice_constant_ang), repeat_xy, thickness_ang)


# --- rotations --------------------------------------------------------------------------


def _cos_sin_deg(angle_deg: float) -> tuple[float, float]:
    """cos and sin of an angle in degrees, exact at multiples of 90°."""
    quarter, rest = divmod(float(angle_deg), 90.0)
    if rest == 0.0:
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[int(quarter) % 4]
    return math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))


def _rz(angle_deg: float) -> np.ndarray:
    c, s = _cos_sin_deg(angle_deg)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _ry(angle_deg: float) -> np.ndarray:
    c, s = _cos_sin_deg(angle_deg)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_matrix(euler_deg: Sequence[float]) -> np.ndarray:
    """Active rotation of the specimen for intrinsic Z-Y-Z Euler angles (φ, θ, ψ) [deg].

    ``R = Rz(φ) @ Ry(θ) @ Rz(ψ)``, right-handed, with

        Rz(α) = [[cos α, −sin α, 0], [sin α, cos α, 0], [0, 0, 1]]
        Ry(α) = [[cos α, 0, sin α], [0, 1, 0], [−sin α, 0, cos α]]

    Every point of the specimen moves as r → R r (ase Cartesian (x, y, z)): ψ about z,
    then θ about y, then φ about z, all about the fixed lab axes (equivalently φ about z,
    θ about the new y', ψ about the new z''). A zone axis along ẑ ends up along
    R ẑ = (cos φ sin θ, sin φ sin θ, cos θ): tilted by θ from the beam toward azimuth φ.
    A single-axis tomographic tilt series is (0, θ, 0), a rotation about y that takes x̂
    to (cos θ, 0, −sin θ).

    GENFIRE (Pryor et al. 2017) names and orders its angles the same way, but its source
    writes the RELION/XMIPP matrix, which equals Rᵀ, and fills the central slice of
    projection (φ, θ, ψ) at R·(kx, ky, 0) (``calculateProjection_interp`` in
    genfire/utility.py, ``fillInFourierGrid.m``): it projects the specimen along R ẑ,
    i.e. rotates it actively by Rᵀ. GENFIRE angles (φ, θ, ψ) are therefore ptyscope
    angles (−ψ, −θ, −φ); convert at that boundary.

    Parameters
    ----------
    euler_deg:
        (φ, θ, ψ) [deg]; a tilt in mrad converts with ``math.degrees(tilt_mrad / 1e3)``.

    Returns
    -------
    numpy.ndarray
        float64 (3, 3), orthonormal, determinant +1; exact at multiples of 90°.

    References
    ----------
    A. Pryor Jr. et al., "GENFIRE: a generalized Fourier iterative reconstruction
    algorithm for high-resolution 3D imaging", Sci. Rep. 7, 10409 (2017).
    """
    phi, theta, psi = _require_vector("euler_deg", euler_deg, "(φ, θ, ψ) in degrees")
    result: np.ndarray = _rz(phi) @ _ry(theta) @ _rz(psi)
    return result


def _preserves_lattice(rotation: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> bool:
    """Whether ``rotation`` maps the lattice of the periodic cell vectors onto itself."""
    basis = cell[pbc]  # one periodic lattice vector per row
    if basis.shape[0] == 0:
        return True
    if np.linalg.matrix_rank(basis) < basis.shape[0]:
        return False
    rotated = basis @ rotation.T
    coefficients = np.linalg.lstsq(basis.T, rotated.T, rcond=None)[0].T
    integers = np.round(coefficients)
    tol = 1e-8 * max(float(np.abs(basis).max()), 1.0)
    return bool(
        np.allclose(integers @ basis, rotated, rtol=0, atol=tol)
        and abs(abs(np.linalg.det(integers)) - 1.0) < 0.5
    )


def rotate_atoms(
    atoms: ase.Atoms, euler_deg: Sequence[float], center: Sequence[float] | None = None
) -> ase.Atoms:
    """Rotate a specimen actively by :func:`rotation_matrix` about a point.

    Parameters
    ----------
    atoms:
        The specimen (left unchanged).
    euler_deg:
        (φ, θ, ψ) [deg], intrinsic Z-Y-Z.
    center:
        Centre (x, y, z) [Å]. Default: the cell centre ½(a₁ + a₂ + a₃) when the cell is
        three-dimensional, else the centroid (unweighted mean) of the positions.

    Returns
    -------
    ase.Atoms
        A copy with positions R (r − center) + center and the same cell; atoms are not
        wrapped, so they may leave the cell. pbc is kept only when the rotation maps the
        lattice of the periodic cell vectors onto itself (the identity; a turn by a
        multiple of 90° about z of a cell square in x-y; 180° about z of a cell with
        c ∥ z); otherwise it is set False on all axes, because a generally rotated
        crystal is not periodic with the original cell and its periodic images would
        overlap or leave gaps. :func:`tilted_crystal` fills a box with a rotated crystal.
    """
    _require_atoms("atoms", atoms)
    rotation = rotation_matrix(euler_deg)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if center is not None:
        origin = _require_vector("center", center, "(x, y, z) in Å")
    elif atoms.cell.rank == 3:
        origin = 0.5 * cell.sum(axis=0)
    else:
        origin = atoms.positions.mean(axis=0)
    rotated: ase.Atoms = atoms.copy()
    rotated.positions = (atoms.positions - origin) @ rotation.T + origin
    if not _preserves_lattice(rotation, cell, np.asarray(atoms.pbc, dtype=bool)):
        rotated.pbc = False
    return rotated


def tilted_crystal(
    unit_cell: ase.Atoms, euler_deg: Sequence[float], box_ang: Sequence[float]
) -> ase.Atoms:
    """Fill a box with an infinite crystal rotated by Euler angles (e.g. tilted off axis).

    The lattice of ``unit_cell``, with its origin at the box origin, is rotated actively by
    :func:`rotation_matrix` about the box centre (Lx/2, Ly/2, Lz/2); atoms whose rotated
    positions lie in [0, Lx) × [0, Ly) × [0, Lz) are kept (within 1e-6 Å of a lower face
    counts as inside, of an upper face as outside). With ``euler_deg = (0, 0, 0)`` and a
    box of whole cells this is :func:`crystal_slab` up to atom order.

    Parameters
    ----------
    unit_cell:
        Any three-dimensional cell (need not be orthorhombic); per-atom arrays (tags,
        masses, ...) are carried over.
    euler_deg:
        (φ, θ, ψ) [deg]; the crystal axis along ẑ ends up along R ẑ, tilted by θ from
        the beam. A 5 mrad tilt about y is ``(0, math.degrees(5e-3), 0)``.
    box_ang:
        (Lx, Ly, Lz) [Å].

    Returns
    -------
    ase.Atoms
        Cell diag(Lx, Ly, Lz); pbc False on all axes (the cut is not periodic in general).
    """
    _require_atoms("unit_cell", unit_cell)
    cell = np.asarray(unit_cell.cell.array, dtype=np.float64)
    if unit_cell.cell.rank != 3:
        raise ValueError(f"unit_cell must have a three-dimensional cell, got {cell.tolist()} Å")
    rotation = rotation_matrix(euler_deg)
    box = _require_vector("box_ang", box_ang, "(Lx, Ly, Lz) in Å")
    for length in box:
        require_positive("box_ang", float(length), "Å")
    center = 0.5 * box
    # Box corners in the crystal frame (inverse rotation), in fractional coordinates.
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * box
    fractional = ((corners - center) @ rotation + center) @ np.linalg.inv(cell)
    low = np.floor(fractional.min(axis=0)).astype(int) - 1
    high = np.ceil(fractional.max(axis=0)).astype(int)
    tiled = _wrapped_copy(unit_cell).repeat(tuple(int(n) for n in high - low + 1))
    positions = (tiled.positions + low @ cell - center) @ rotation.T + center
    inside = np.all((positions >= -_EDGE_TOL_ANG) & (positions < box - _EDGE_TOL_ANG), axis=1)
    crystal: ase.Atoms = tiled[inside]
    crystal.positions = positions[inside]
    crystal.cell = np.diag(box)
    crystal.pbc = False
    return crystal


# --- nanoparticles ----------------------------------------------------------------------


def _spherical_fcc(
    site_symbols: Sequence[str], a: float, radius_ang: float, vacuum_ang: float
) -> ase.Atoms:
    """FCC lattice sites (site k holding ``site_symbols[k]``) within a sphere, boxed."""
    require_positive("lattice_constant_ang", a, "Å")
    require_positive("radius_ang", radius_ang, "Å")
    require_finite("vacuum_ang", vacuum_ang)
    if vacuum_ang < 0:
        raise ValueError(f"vacuum_ang must be >= 0 Å, got {vacuum_ang!r}")
    n = math.ceil(radius_ang / a) + 1
    steps = np.arange(-n, n + 1)
    cells = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    positions = ((cells + _FCC_SITES[None]) * a).reshape(-1, 3)
    symbols = np.tile(np.asarray(site_symbols), cells.shape[0])
    keep = np.linalg.norm(positions, axis=1) <= radius_ang + _EDGE_TOL_ANG
    side = 2.0 * (radius_ang + vacuum_ang)
    return ase.Atoms(
        symbols=symbols[keep].tolist(),
        positions=positions[keep] + 0.5 * side,
        cell=np.eye(3) * side,
        pbc=False,
    )


def fcc_cluster(
    symbol: str, lattice_constant_ang: float, radius_ang: float, vacuum_ang: float = 5.0
) -> ase.Atoms:
    """Spherical nanoparticle cut from an FCC crystal around one atom.

    Parameters
    ----------
    symbol:
        Element, e.g. ``"Au"``.
    lattice_constant_ang:
        Cubic lattice constant a [Å]; the nearest-neighbour distance is a/√2.
    radius_ang:
        Every lattice site within this distance [Å] of the central atom is kept.
    vacuum_ang:
        Minimum vacuum [Å] between the sphere and each face of the box.

    Returns
    -------
    ase.Atoms
        About (4/a³)(4π/3)R³ atoms, the central one at the box centre; cubic cell of side
        2·(radius_ang + vacuum_ang); pbc False; cube axes along x, y, z ([001] ∥ beam).

    Examples
    --------
    >>> len(fcc_cluster("Au", 4.08, radius_ang=4.1))  # centre, 12 + 6 neighbours
    19
    """
    _require_symbol("symbol", symbol)
    return _spherical_fcc([symbol] * 4, lattice_constant_ang, radius_ang, vacuum_ang)


def _alloy_site_symbols(symbols: Sequence[str], structure: str) -> list[str]:
    if isinstance(symbols, str) or not isinstance(symbols, Sequence) or len(symbols) != 2:
        raise ValueError(f"symbols must be two chemical symbols (A, B), got {symbols!r}")
    pair = [_require_symbol("symbols", s) for s in symbols]
    if structure not in ORDERED_ALLOY_STRUCTURES:
        raise ValueError(
            f"structure must be one of {sorted(ORDERED_ALLOY_STRUCTURES)}, got {structure!r}"
        )
    return [pair[k] for k in ORDERED_ALLOY_STRUCTURES[structure]]


def ordered_alloy_unit_cell(
    symbols: Sequence[str], structure: str, lattice_constant_ang: float
) -> ase.Atoms:
    """Conventional 4-atom cubic cell of an ordered FCC alloy, ``symbols = (A, B)``.

    ``"L1_2"``: A3B (``("Cu", "Au")`` gives Cu3Au), B on the cube corner (0, 0, 0), A on
    the face centres. ``"L1_0"``: AB (``("Fe", "Pt")``), alternating (001) planes, A at
    z = 0 and B at z = a/2; its tetragonal distortion (c/a ≈ 0.96 for FePt) is ignored.
    """
    site_symbols = _alloy_site_symbols(symbols, structure)
    require_positive("lattice_constant_ang", lattice_constant_ang, "Å")
    cell = np.eye(3) * float(lattice_constant_ang)
    return ase.Atoms(site_symbols, scaled_positions=_FCC_SITES, cell=cell, pbc=True)


def ordered_alloy_cluster(
    symbols: Sequence[str],
    structure: str,
    lattice_constant_ang: float,
    radius_ang: float,
    vacuum_ang: float = 5.0,
) -> ase.Atoms:
    """Spherical nanoparticle of an ordered FCC alloy (:func:`ordered_alloy_unit_cell`).

    Geometry as in :func:`fcc_cluster`. The central atom is on a cube-corner site (B for
    L1_2, A for L1_0). The A:B ratio tends to 3:1 (L1_2) or 1:1 (L1_0) as the radius
    grows; shell filling makes it swing by up to ~20% for radii below about 4a.
    """
    site_symbols = _alloy_site_symbols(symbols, structure)
    return _spherical_fcc(site_symbols, lattice_constant_ang, radius_ang, vacuum_ang)


# --- multi-domain specimens -------------------------------------------------------------


def two_domain_specimen(
    atoms_a: ase.Atoms, atoms_b: ase.Atoms, axis: Literal["x", "y", "z"] = "x"
) -> ase.Atoms:
    """Join two domains across a planar boundary (twin, grain, stacked layers).

    Parameters
    ----------
    atoms_a, atoms_b:
        Domains with orthorhombic cells (vectors along +x, +y, +z) whose lengths agree
        within 1e-4 Å on the two axes other than ``axis``.
    axis:
        ``"x"`` or ``"y"``: side by side, ``atoms_b`` shifted by La (``atoms_a``'s cell
        length) along that axis. ``"z"``: stacked along the beam, ``atoms_a`` at the
        entrance (0 <= z < La) and ``atoms_b`` below it, shifted by La.

    Returns
    -------
    ase.Atoms
        The atoms of ``atoms_a`` then ``atoms_b``; cell length La + Lb along ``axis``;
        per-atom array ``"domain"`` (0 for A, 1 for B); ``info["domain_boundary_ang"] =
        La`` and ``info["domain_axis"]``. pbc is False along ``axis`` (a periodic image
        would add a second boundary where B's far face meets A) and kept on the other
        axes where both domains are periodic. Nothing is wrapped or checked for overlap.
    """
    _require_atoms("atoms_a", atoms_a)
    _require_atoms("atoms_b", atoms_b)
    if axis not in _AXES:
        raise ValueError(f"axis must be one of {sorted(_AXES)}, got {axis!r}")
    k = _AXES[axis]
    lengths_a = _orthorhombic_lengths("atoms_a", atoms_a)
    lengths_b = _orthorhombic_lengths("atoms_b", atoms_b)
    others = [i for i in range(3) if i != k]
    if not np.allclose(lengths_a[others], lengths_b[others], rtol=0, atol=1e-4):
        raise ValueError(
            f"atoms_a and atoms_b must have equal cell lengths along "
            f"{' and '.join('xyz'[i] for i in others)} to join along {axis}, got "
            f"{lengths_a[others].tolist()} Å and {lengths_b[others].tolist()} Å"
        )
    second: ase.Atoms = atoms_b.copy()
    second.positions[:, k] += lengths_a[k]
    joined: ase.Atoms = atoms_a.copy()
    joined.extend(second)
    cell = lengths_a.copy()
    cell[k] += lengths_b[k]
    joined.cell = np.diag(cell)
    pbc = np.asarray(atoms_a.pbc, dtype=bool) & np.asarray(atoms_b.pbc, dtype=bool)
    pbc[k] = False
    joined.pbc = pbc
    joined.arrays.pop("domain", None)
    joined.new_array("domain", np.repeat([0, 1], [len(atoms_a), len(atoms_b)]))
    joined.info["domain_boundary_ang"] = float(lengths_a[k])
    joined.info["domain_axis"] = axis
    return joined


def srtio3_two_domain(
    repeat_xy: Sequence[int],
    thickness_ang: float,
    euler_deg_b: Sequence[float] = (0.0, 3.0, 0.0),
    lattice_constant_ang: float = SRTIO3_LATTICE_CONSTANT_ANG,
) -> ase.Atoms:
    """SrTiO3 of two side-by-side domains: one on the [001] zone axis, one rotated.

    Domain A (``"domain"`` 0, 0 <= x < nx·a) is ``srtio3_slab(repeat_xy, thickness_ang)``.
    Domain B (``"domain"`` 1, x >= nx·a) is the same crystal rotated by ``euler_deg_b``
    about the centre of an equal box (nx·a, ny·a, nz·a) and cropped to it
    (:func:`tilted_crystal`). The default (0, 3, 0) tilts B's [001] axis by 3° about y
    toward +x: a low-angle tilt boundary in the plane x = nx·a, containing the tilt axis.

    Returns
    -------
    ase.Atoms
        Cell diag(2·nx·a, ny·a, nz·a); pbc False on all axes (B is not periodic); see
        :func:`two_domain_specimen` for the ``"domain"`` array and ``info``.
    """
    domain_a = srtio3_slab(repeat_xy, thickness_ang, lattice_constant_ang)
    box = tuple(float(v) for v in _orthorhombic_lengths("domain A", domain_a))
    domain_b = tilted_crystal(srtio3_unit_cell(lattice_constant_ang), euler_deg_b, box)
    return two_domain_specimen(domain_a, domain_b, axis="x")
