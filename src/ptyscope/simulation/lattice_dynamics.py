"""Periodic lattice dynamics of central-spring crystals: dispersion and Bloch-mode sampling.

The force constants are those of :func:`ptyscope.simulation.phonons.spring_model`: every
pair at distance d gets the spring k_s of the first shell with d <= max_distance, a spring
along the unit vector e contributes −k e⊗e to Φ(i0; jR) and +k e⊗e to Φ(i0; i0) (acoustic
sum rule). Kept per bond on one periodic cell, they give phonons at any wavevector and
exact thermal snapshots u ~ N(0, k_BT Φ⁺) of large periodic supercells at the cost of one
small eigenproblem per commensurate q and FFTs over cells, instead of the dense O(N³) of
:class:`~ptyscope.simulation.phonons.HarmonicModel`.

Conventions
-----------
* Wavevectors q are Cartesian in Å⁻¹ **cycles**: plane waves are exp(2πi q·r), as in
  ptyscope's FFT frequencies (no 2π in q). The zone boundary of a cubic cell of side a is
  at q = 1/(2a) along [100].
* Reduced coordinates refer to reciprocal vectors b_i with a_i·b_j = δ_ij (ase's
  ``cell.reciprocal()``, no 2π): q = Σ_i f_i b_i.
* Positions, displacements and translations are Cartesian (x, y, z) in Å; a supercell is
  ``cell_atoms.repeat((n1, n2, n3))``, whose atom index is ((m1·n2 + m2)·n3 + m3)·n + j
  for cell (m1, m2, m3) and basis atom j.

References: M. T. Dove, *Introduction to Lattice Dynamics* (1993), ch. 4-6; CAVIAR:
Gladyshev et al. (2025).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import ase
import numpy as np
from ase.neighborlist import neighbor_list

from ptyscope._validation import require_positive
from ptyscope.simulation.phonons import (
    _THZ_PER_SQRT_EV_ANG2_AMU,
    BOLTZMANN_EV_PER_K,
    MAX_DENSE_DOF,
    _require_generator,
    _validated_shells,
)

__all__ = [
    "ForceConstantBlocks",
    "displacement_covariance",
    "dynamical_matrix",
    "force_constant_blocks",
    "in_plane_dispersion",
    "phonon_dispersion",
    "q_path",
    "sample_supercell",
]

#: Eigenvalues of Φ(q) below this fraction of the largest are zero modes (as HarmonicModel).
_NULL_FRACTION = 1e-9
#: Eigenvalues ω² below this fraction of max|Φ_ab|/min(m) are round-off (as phonons.py).
_ROUNDOFF_FRACTION = 1e-12


@dataclass(frozen=True)
class ForceConstantBlocks:
    """Real-space force constants Φ(i0; jR) of a periodic cell, one 3×3 block per bond.

    Entry e couples atom ``first_atom[e]`` in the home cell to atom ``second_atom[e]`` in
    the cell translated by ``translation_ang[e]``; on-site blocks (i = j, R = 0) are listed
    once per atom. Every bond appears in both directions, so the sum over entries is
    Hermitian.

    Attributes
    ----------
    first_atom, second_atom:
        int64 arrays (B,): basis indices i and j.
    translation_ang:
        float64 (B, 3): lattice translation R [Å], Cartesian (x, y, z).
    block_ev_per_ang2:
        float64 (B, 3, 3): Φ_ab(i0; jR) [eV/Å²], a, b Cartesian.
    positions_ang:
        float64 (n, 3): basis positions r_j [Å] as in the cell (not wrapped).
    masses_amu:
        float64 (n,) [amu].
    cell_ang:
        float64 (3, 3): lattice vectors a_i as rows [Å].
    """

    first_atom: np.ndarray
    second_atom: np.ndarray
    translation_ang: np.ndarray
    block_ev_per_ang2: np.ndarray
    positions_ang: np.ndarray
    masses_amu: np.ndarray
    cell_ang: np.ndarray

    @property
    def num_atoms(self) -> int:
        """Number n of atoms in the cell."""
        return int(self.masses_amu.shape[0])

    @property
    def bond_vectors_ang(self) -> np.ndarray:
        """float64 (B, 3): R + r_j − r_i [Å], the vector from atom i0 to atom jR."""
        vectors: np.ndarray = (
            self.translation_ang
            + self.positions_ang[self.second_atom]
            - self.positions_ang[self.first_atom]
        )
        return vectors


def force_constant_blocks(
    cell_atoms: ase.Atoms, shells: Sequence[tuple[float, float]]
) -> ForceConstantBlocks:
    """Central-spring force constants of a periodic cell, per bond.

    Parameters
    ----------
    cell_atoms:
        Primitive or conventional cell, periodic on all three axes. The neighbour cutoff
        may exceed the cell: bonds to every periodic image are included.
    shells:
        Sequence of (max_distance_ang, spring_ev_per_ang2), increasing in distance, as in
        :func:`~ptyscope.simulation.phonons.spring_model`.

    Returns
    -------
    ForceConstantBlocks

    Examples
    --------
    >>> from ase.build import bulk
    >>> blocks = force_constant_blocks(bulk("Cu", "fcc", a=3.61), [(2.6, 1.0)])
    >>> blocks.num_atoms, blocks.block_ev_per_ang2.shape   # 12 neighbours + on-site
    (1, (13, 3, 3))
    """
    pbc = np.asarray(cell_atoms.pbc, dtype=bool)
    if not pbc.all():
        raise ValueError(
            "cell_atoms.pbc must be True on all three axes for periodic lattice dynamics, "
            f"got {pbc.tolist()}"
        )
    cell = np.array(cell_atoms.cell, dtype=np.float64)
    if not abs(float(np.linalg.det(cell))) > 0 or len(cell_atoms) == 0:
        raise ValueError(f"cell_atoms must hold atoms in a cell of volume > 0 Å³, got {cell_atoms}")
    n, masses = len(cell_atoms), np.asarray(cell_atoms.get_masses(), dtype=np.float64)
    require_positive("cell_atoms masses_amu", float(masses.min()), "amu")
    positions = np.array(cell_atoms.positions, dtype=np.float64)
    limits, springs = _validated_shells(shells)
    i_idx, j_idx, vectors = neighbor_list("ijD", cell_atoms, float(limits[-1]))
    distances = np.linalg.norm(vectors, axis=1)
    unit = vectors / distances[:, None]
    spring = springs[np.searchsorted(limits, distances - 1e-9)]  # first shell with d <= limit
    pair_blocks = spring[:, None, None] * unit[:, :, None] * unit[:, None, :]
    onsite = np.zeros((n, 3, 3))
    np.add.at(onsite, i_idx, pair_blocks)  # +k e⊗e on the diagonal: acoustic sum rule
    # neighbor_list lists each bond both ways; R from D = r_j + R − r_i.
    translations = vectors - (positions[j_idx] - positions[i_idx])
    atoms_range = np.arange(n)
    return ForceConstantBlocks(
        first_atom=np.concatenate([i_idx, atoms_range]).astype(np.int64),
        second_atom=np.concatenate([j_idx, atoms_range]).astype(np.int64),
        translation_ang=np.concatenate([translations, np.zeros((n, 3))]),
        block_ev_per_ang2=np.concatenate([-pair_blocks, onsite]),
        positions_ang=positions,
        masses_amu=masses,
        cell_ang=cell,
    )


def _as_q(q_inv_ang: np.ndarray) -> np.ndarray:
    q = np.asarray(q_inv_ang, dtype=np.float64)
    if q.ndim == 0 or q.shape[-1] != 3:
        raise ValueError(f"q_inv_ang must have shape (..., 3), got {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError("q_inv_ang must be finite")
    return q


def _fourier_blocks(
    blocks: ForceConstantBlocks, q_inv_ang: np.ndarray, vectors_ang: np.ndarray
) -> np.ndarray:
    """Σ_e Φ_e exp(2πi q·v_e) summed into (..., 3n, 3n) complex128, rows (atom, xyz)."""
    n = blocks.num_atoms
    pair = blocks.first_atom * n + blocks.second_atom
    order = np.argsort(pair, kind="stable")
    sorted_pair = pair[order]
    starts = np.flatnonzero(np.r_[True, sorted_pair[1:] != sorted_pair[:-1]])
    phases = np.exp(2j * np.pi * (q_inv_ang @ vectors_ang[order].T))  # (..., B)
    weighted = phases[..., None, None] * blocks.block_ev_per_ang2[order]  # (..., B, 3, 3)
    summed = np.add.reduceat(weighted, starts, axis=-3)  # (..., pairs, 3, 3)
    out = np.zeros((*q_inv_ang.shape[:-1], n * n, 3, 3), dtype=np.complex128)
    out[..., sorted_pair[starts], :, :] = summed
    out = out.reshape(*q_inv_ang.shape[:-1], n, n, 3, 3).swapaxes(-3, -2)
    return out.reshape(*q_inv_ang.shape[:-1], 3 * n, 3 * n)


def dynamical_matrix(blocks: ForceConstantBlocks, q_inv_ang: np.ndarray) -> np.ndarray:
    """Mass-weighted dynamical matrix D(q) [eV/(Å²·amu)].

    D_ia,jb(q) = Σ_R Φ_ab(i0; jR) exp(2πi q·(R + r_j − r_i)) / sqrt(m_i m_j)
    (Dove 1993, ch. 6, with q in cycles). The phase uses the bond vector, so D is
    smooth in q but not periodic in the reciprocal lattice; its eigenvalues ω² are.

    Parameters
    ----------
    blocks:
        Force constants from :func:`force_constant_blocks`.
    q_inv_ang:
        float array (..., 3): Cartesian wavevectors [Å⁻¹, cycles: exp(2πi q·r)].

    Returns
    -------
    numpy.ndarray
        complex128 (..., 3n, 3n), Hermitian, rows atom-major (atom 0 x, y, z, atom 1 ...);
        D(−q) = conj(D(q)).
    """
    q = _as_q(q_inv_ang)
    phi_q = _fourier_blocks(blocks, q, blocks.bond_vectors_ang)
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(blocks.masses_amu), 3)
    result: np.ndarray = phi_q * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    return result


def phonon_dispersion(blocks: ForceConstantBlocks, q_inv_ang: np.ndarray) -> np.ndarray:
    """Phonon frequencies ν = ω/2π [THz] at each wavevector, ascending.

    ω² are the eigenvalues of :func:`dynamical_matrix`; values below 1e-12 of the stiffest
    max|Φ_ab|/min(m) (round-off, e.g. the acoustic modes at Γ) are set to 0, as in
    :meth:`~ptyscope.simulation.phonons.HarmonicModel.mode_frequencies_thz`. Central
    springs with k > 0 make D(q) positive semi-definite, so nothing physical is clipped.

    Parameters
    ----------
    blocks:
        Force constants from :func:`force_constant_blocks`.
    q_inv_ang:
        float array (..., 3): Cartesian wavevectors [Å⁻¹, cycles].

    Returns
    -------
    numpy.ndarray
        float64 (..., 3n) [THz].

    Examples
    --------
    >>> from ase.build import bulk
    >>> blocks = force_constant_blocks(bulk("Cu", "fcc", a=3.61), [(2.6, 1.0)])
    >>> phonon_dispersion(blocks, [0.0, 0.0, 0.0]).tolist()
    [0.0, 0.0, 0.0]
    """
    omega2 = np.linalg.eigvalsh(dynamical_matrix(blocks, q_inv_ang))
    # q-independent stiffness scale (at Γ every ω² may be round-off), ~ the largest ω².
    scale = float(np.abs(blocks.block_ev_per_ang2).max() / blocks.masses_amu.min())
    omega2 = np.where(omega2 < _ROUNDOFF_FRACTION * scale, 0.0, omega2)
    frequencies: np.ndarray = np.sqrt(omega2) * _THZ_PER_SQRT_EV_ANG2_AMU
    return frequencies


def in_plane_dispersion(blocks: ForceConstantBlocks, q_xy_inv_ang: np.ndarray) -> np.ndarray:
    """In-plane phonon frequencies ν [THz] at q_z = 0, ascending: the reference for what a
    projection along z (columns moving in x, y) can measure.

    The (x, y) rows and columns of :func:`dynamical_matrix` at (q_x, q_y, 0) are
    diagonalised alone, which is exact when z motion decouples from in-plane motion (a
    crystal with mirror symmetry z → −z, e.g. a tetragonal cell with atoms at z = 0).

    Parameters
    ----------
    blocks:
        Force constants from :func:`force_constant_blocks`.
    q_xy_inv_ang:
        float array (..., 2): Cartesian (q_x, q_y) [Å⁻¹, cycles].

    Returns
    -------
    numpy.ndarray
        float64 (..., 2n) [THz].
    """
    q_xy = np.asarray(q_xy_inv_ang, dtype=np.float64)
    if q_xy.shape[-1:] != (2,):
        raise ValueError(f"q_xy_inv_ang must be (..., 2) (q_x, q_y), got shape {q_xy.shape}")
    q = np.concatenate([q_xy, np.zeros((*q_xy.shape[:-1], 1))], axis=-1)
    in_plane = (3 * np.arange(blocks.num_atoms)[:, None] + np.arange(2)).ravel()  # x, y rows
    d = dynamical_matrix(blocks, q)[..., in_plane, :][..., in_plane]
    omega2 = np.linalg.eigvalsh(d)
    frequencies: np.ndarray = np.sqrt(np.clip(omega2, 0.0, None)) * _THZ_PER_SQRT_EV_ANG2_AMU
    return frequencies


def q_path(
    cell: ase.Atoms | ase.cell.Cell | np.ndarray,
    points: Sequence[tuple[str, Sequence[float]]],
    num_per_segment: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Straight-segment band-structure path through high-symmetry points.

    Parameters
    ----------
    cell:
        Lattice vectors a_i as rows [Å]: an ase Atoms or Cell, or a (3, 3) array.
    points:
        Sequence of (label, (f1, f2, f3)) with q = Σ f_i b_i, a_i·b_j = δ_ij; at least two.
    num_per_segment:
        Samples per segment (>= 1); each segment includes its start, the path its end.

    Returns
    -------
    q_inv_ang:
        float64 (K, 3), K = (len(points) − 1)·num_per_segment + 1 [Å⁻¹, cycles].
    distance_inv_ang:
        float64 (K,): cumulative path length [Å⁻¹], the x axis of a band plot.
    ticks_inv_ang:
        float64 (len(points),): path length at each labelled point.
    labels:
        The point labels.

    Examples
    --------
    >>> q, x, ticks, labels = q_path(np.eye(3) * 4.0, [("G", (0, 0, 0)), ("X", (0.5, 0, 0))], 4)
    >>> q[-1].tolist(), ticks.tolist()
    ([0.125, 0.0, 0.0], [0.0, 0.125])
    """
    lattice = np.array(cell.cell if isinstance(cell, ase.Atoms) else cell, dtype=np.float64)
    if lattice.shape != (3, 3) or not abs(float(np.linalg.det(lattice))) > 0:
        raise ValueError(f"cell must be three non-coplanar lattice vectors (3, 3), got {lattice}")
    if not isinstance(num_per_segment, int) or num_per_segment < 1:
        raise ValueError(f"num_per_segment must be an integer >= 1, got {num_per_segment!r}")
    if len(points) < 2:
        raise ValueError(f"points must list at least two (label, coordinates), got {points!r}")
    labels = [str(label) for label, _ in points]
    if any(np.shape(f) != (3,) for _, f in points):
        raise ValueError(f"points must give three reduced coordinates each, got {points}")
    fractional = np.array([f for _, f in points], dtype=np.float64)
    if not np.all(np.isfinite(fractional)):
        raise ValueError(f"points must give finite reduced coordinates, got {points}")
    corners = fractional @ np.linalg.inv(lattice).T  # rows b_i of inv(A)ᵀ: a_i·b_j = δ_ij
    steps = np.arange(num_per_segment)[:, None] / num_per_segment
    segments = [start + steps * (end - start) for start, end in itertools.pairwise(corners)]
    q = np.concatenate([*segments, corners[-1:]])
    distance = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(q, axis=0), axis=1))])
    ticks = distance[::num_per_segment].copy()
    return q, distance, ticks, labels


def _validate_repeat(repeat: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(repeat) if isinstance(repeat, Sequence | np.ndarray) else ()
    if len(values) != 3 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in values
    ):
        raise ValueError(f"repeat must be three integers >= 1 (n1, n2, n3), got {repeat!r}")
    return int(values[0]), int(values[1]), int(values[2])


def _supercell_filter(
    blocks: ForceConstantBlocks, repeat: tuple[int, int, int], power: float
) -> np.ndarray:
    """f(Φ(q)) = Σ_λ≠0 λ^power v v† at the commensurate q of the half grid (rfftn layout).

    Φ(q) = Σ_R Φ(i0; jR) exp(2πi q·R) is the unweighted, cell-gauge Fourier transform,
    q = (h/n1, k/n2, l/n3) in reduced units with l <= n3/2. The three zero modes at q = 0
    (rigid translations) get 0, exactly as the pseudo-inverse of the dense Φ drops them.

    Returns complex128 (n1, n2, n3//2 + 1, 3n, 3n).
    """
    n1, n2, n3 = repeat
    axes = (np.arange(n1) / n1, np.arange(n2) / n2, np.arange(n3 // 2 + 1) / n3)
    reduced = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    q = reduced @ np.linalg.inv(blocks.cell_ang).T  # rows b_i, a_i·b_j = δ_ij
    values, vectors = np.linalg.eigh(_fourier_blocks(blocks, q, blocks.translation_ang))
    scale = max(float(np.abs(values).max()), 1e-300)
    null = values < _NULL_FRACTION * scale  # as HarmonicModel; springs k > 0 give Φ(q) >= 0
    extra = int(null.sum()) - 3  # the acoustic sum rule gives 3 at q = 0
    if extra != 0:
        raise ValueError(
            f"the spring model is not mechanically stable: {extra} zero-frequency modes on "
            f"the {n1}×{n2}×{n3} grid besides the 3 rigid translations (add springs to "
            "further neighbour shells)"
        )
    weights = np.where(null, 0.0, np.where(null, 1.0, values) ** power)
    result: np.ndarray = (vectors * weights[..., None, :]) @ vectors.conj().swapaxes(-1, -2)
    return result


def displacement_covariance(
    blocks: ForceConstantBlocks, repeat: Sequence[int], temperature_k: float
) -> np.ndarray:
    """Exact displacement covariance k_BT·Φ⁺ [Å²] of the periodic supercell.

    Φ of the supercell is block-diagonal in the commensurate q (unitary DFT over cells), so
    Φ⁺ = F† diag(Φ(q)⁺) F and C(m, m') = k_BT·(1/N_c) Σ_q Φ(q)⁺ exp(2πi q·(R_m − R_m')).
    Equals ``spring_model(cell_atoms.repeat(repeat), shells).covariance(temperature_k)``.

    Parameters
    ----------
    blocks:
        Force constants from :func:`force_constant_blocks`.
    repeat:
        Supercell (n1, n2, n3), integers >= 1.
    temperature_k:
        Temperature [K], > 0.

    Returns
    -------
    numpy.ndarray
        float64 (3N, 3N), N = n·n1·n2·n3, rows (atom, xyz) with atoms in
        ``cell_atoms.repeat(repeat)`` order.
    """
    n1, n2, n3 = _validate_repeat(repeat)
    require_positive("temperature_k", temperature_k, "K")
    n, cells = blocks.num_atoms, n1 * n2 * n3
    if 3 * n * cells > MAX_DENSE_DOF:
        raise ValueError(
            f"the covariance would be {3 * n * cells}×{3 * n * cells}; at most {MAX_DENSE_DOF} "
            f"degrees of freedom are built densely (use a smaller repeat, got {repeat!r})"
        )
    pinv_q = _supercell_filter(blocks, (n1, n2, n3), power=-1.0)
    # G(Δ) = (1/N_c) Σ_q Φ⁺(q) exp(+2πi q·R_Δ): numpy's inverse FFT; real since Φ(−q) = Φ(q)*.
    kernel = np.fft.irfftn(pinv_q, s=(n1, n2, n3), axes=(0, 1, 2))
    index = np.indices((n1, n2, n3)).reshape(3, -1).T  # ase repeat order, m3 fastest
    delta = (index[:, None, :] - index[None, :, :]) % np.array([n1, n2, n3])
    blocks_mm = kernel[delta[..., 0], delta[..., 1], delta[..., 2]]  # (Nc, Nc, 3n, 3n)
    kt = BOLTZMANN_EV_PER_K * temperature_k
    result: np.ndarray = kt * blocks_mm.transpose(0, 2, 1, 3).reshape(3 * n * cells, -1)
    return result


def sample_supercell(
    blocks: ForceConstantBlocks,
    repeat: Sequence[int],
    temperature_k: float,
    num_snapshots: int,
    generator: np.random.Generator,
) -> np.ndarray:
    """Thermal snapshots u ~ N(0, k_BT Φ⁺) of a periodic supercell, without dense Φ.

    Real white noise z ~ N(0, 1) is filtered by the symmetric square root S = (Φ⁺)^(1/2),
    applied per commensurate q: u = sqrt(k_BT)·F† diag(Φ(q)⁺^(1/2)) F z with F the
    orthonormal DFT over cell indices. S is real symmetric, so Cov(u) = k_BT·S² = k_BT·Φ⁺
    exactly, with the rigid translations removed as in the dense model (Σ_atoms u = 0 in
    every snapshot, the centre of mass for equal masses). The classical configurational
    distribution does not depend on the masses. Only half the q grid is diagonalised:
    f(Φ(−q)) = f(Φ(q))*, so the filtered spectrum is Hermitian and ``irfftn`` returns u.

    Parameters
    ----------
    blocks:
        Force constants from :func:`force_constant_blocks`.
    repeat:
        Supercell (n1, n2, n3), integers >= 1.
    temperature_k:
        Temperature [K], > 0.
    num_snapshots:
        Number of snapshots M >= 1.
    generator:
        Random generator (no global seeds are used).

    Returns
    -------
    numpy.ndarray
        float64 (M, N, 3) [Å], Cartesian (x, y, z), atoms in ``cell_atoms.repeat(repeat)``
        order, so ``supercell.positions + u[m]`` is snapshot m.

    Examples
    --------
    >>> from ase.build import bulk
    >>> blocks = force_constant_blocks(bulk("Cu", "fcc", a=3.61), [(2.6, 1.0)])
    >>> u = sample_supercell(blocks, (4, 4, 4), 300.0, 2, np.random.default_rng(0))
    >>> u.shape
    (2, 64, 3)
    """
    _require_generator(generator)
    n1, n2, n3 = _validate_repeat(repeat)
    require_positive("temperature_k", temperature_k, "K")
    if not isinstance(num_snapshots, int) or num_snapshots < 1:
        raise ValueError(f"num_snapshots must be an integer >= 1, got {num_snapshots!r}")
    n = blocks.num_atoms
    root_q = _supercell_filter(blocks, (n1, n2, n3), power=-0.5)
    noise = generator.standard_normal((num_snapshots, n1, n2, n3, 3 * n))
    noise_q = np.fft.rfftn(noise, axes=(1, 2, 3), norm="ortho")  # F z: exp(−2πi q·R_m)/√N_c
    filtered = (root_q @ noise_q[..., None])[..., 0]
    u = np.fft.irfftn(filtered, s=(n1, n2, n3), axes=(1, 2, 3), norm="ortho")  # F†
    u *= np.sqrt(BOLTZMANN_EV_PER_K * temperature_k)
    displacements: np.ndarray = u.reshape(num_snapshots, n1 * n2 * n3 * n, 3)
    return displacements
