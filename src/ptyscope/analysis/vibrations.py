"""Correlated atomic vibrations from the object states of a mixed-object reconstruction.

CAVIAR (Gladyshev et al. 2025) reads the object states of a mixed-object ptychographic
reconstruction as an ensemble of specimen configurations. Per state n, column l and
in-plane direction α it finds the position R_lαn, and from the displacements
u_lαn = R_lαn − (1/N) Σ_n R_lαn (Eq. 1) it forms the lattice Green's tensor

    G_lα,l'α' = (1/N) Σ_n u_lαn u_l'α'n            (Eq. 2; Kong 2011)

over the N states: a 2K × 2K matrix for K columns, rows and columns ordered
(column 0 y, column 0 x, column 1 y, ...). The 2 × 2 block G[l, l'] holds how column l'
moves when column l moves; its rows are the two correlation vectors the paper draws per
pair (row y: ⟨u_ly u_l'y⟩, ⟨u_ly u_l'x⟩; row x likewise). The diagonal blocks are the
self-correlations, whose trace gives the Debye-Waller factor B = 8π²(⟨u_x²⟩ + ⟨u_y²⟩).

Agreement with a ground truth is scored per pair i with blocks V_i (rows j) by the
length-similarity metric LSM = mean_ij |V_ij^rec| / |V_ij^GT| (Eq. 3, averaged so that
1 means equal strength and 0 no vibration) and the cosine-similarity metric
CSM = mean_i Σ_j V_ij^GT·V_ij^rec / (‖V_i^GT‖ ‖V_i^rec‖) (Eq. 4, the cosine between the
blocks read as 4-vectors; 1 means equal direction).

The estimates are noisy: with M states the sample covariance of a pair scatters by about
1/√M of the self-correlations (``../DESIGN.md``), so a reconstruction is scored against
the correlations of the snapshots that made its data, through the same functions.

References
----------
Gladyshev, A. et al. CAVIAR: correlated atomic vibration imaging with sub-ångström
resolution (2025), Eqs. 1-4.
Kong, L. T. Phonon dispersion measured directly from molecular dynamics simulations.
Comput. Phys. Commun. 182, 2201 (2011).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ptyscope._validation import require_positive
from ptyscope.analysis.refine import refine_com

__all__ = [
    "PairAverage",
    "Similarity",
    "average_equivalent_pairs",
    "correlation_pairs",
    "debye_waller",
    "displacements",
    "greens_tensor",
    "pair_blocks",
    "pair_cosines",
    "similarity",
    "state_positions",
]

Pair = float | Sequence[float]


def _ensemble(positions_ang: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(positions_ang, dtype=np.float64)
    if values.ndim < 3 or values.shape[-1] != 2:
        raise ValueError(f"{name} must be (states, ..., K, 2) (y, x), got shape {values.shape}")
    if values.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 states along axis 0, got {values.shape[0]}")
    if not np.all(np.isfinite(values)):
        lost = int(np.sum(~np.isfinite(values).all(axis=-1)))
        raise ValueError(f"{name} must be finite, got {lost} positions with NaN or inf")
    return values


def state_positions(
    phase: np.ndarray,
    columns_ang: np.ndarray,
    pixel_size_ang: Pair,
    radius_ang: float,
    *,
    origin_ang: Pair = (0.0, 0.0),
) -> np.ndarray:
    """Column positions in every object state and slice (CAVIAR step 2).

    Each column is first refined on the state-averaged phase of each slice, starting from
    ``columns_ang`` (found on the state- and slice-averaged phase, e.g. with
    :func:`~ptyscope.analysis.columns.find_peaks`); then in each state, starting from that
    slice's mean position. Both steps are the phase-weighted centre of mass in a disk of
    ``radius_ang`` (:func:`~ptyscope.analysis.refine.refine_com`, smooth window, local
    minimum as background), re-centred to convergence.

    Parameters
    ----------
    phase:
        float (states, slices, ny, nx): the phase of each object state and slice [rad].
    columns_ang:
        float (K, 2): starting (y, x) of the K columns [Å].
    pixel_size_ang:
        (dy, dx) [Å], or one number.
    radius_ang:
        Disk radius [Å]; at most half the distance to the nearest column.
    origin_ang:
        (y, x) [Å] of pixel (0, 0).

    Returns
    -------
    numpy.ndarray
        float64 (states, slices, K, 2): (y, x) [Å]. NaN where a disk left the image.
    """
    stack = np.asarray(phase, dtype=np.float64)
    if stack.ndim != 4:
        raise ValueError(f"phase must be (states, slices, ny, nx), got shape {stack.shape}")
    if stack.shape[0] < 2:
        raise ValueError(f"phase needs at least 2 object states, got {stack.shape[0]}")
    mean = refine_com(  # (slices, K, 2); noise_std given: the σ are not used
        stack.mean(axis=0),
        columns_ang,
        pixel_size_ang,
        radius_ang,
        origin_ang=origin_ang,
        noise_std=1.0,
    ).positions_ang
    start = np.broadcast_to(mean, (stack.shape[0], *mean.shape))
    if not np.all(np.isfinite(start)):
        raise ValueError(
            "columns_ang: some columns left the image while refined on the mean phase; keep "
            f"columns at least radius_ang = {radius_ang} Å inside the field"
        )
    refined: np.ndarray = refine_com(
        stack, start, pixel_size_ang, radius_ang, origin_ang=origin_ang, noise_std=1.0
    ).positions_ang
    return refined


def displacements(positions_ang: np.ndarray) -> np.ndarray:
    """u_n = R_n − mean over states (Eq. 1).

    Parameters
    ----------
    positions_ang:
        float (states, ..., K, 2): (y, x) [Å]; states on axis 0.

    Returns
    -------
    numpy.ndarray
        float64, the same shape [Å].
    """
    values = _ensemble(positions_ang, "positions_ang")
    result: np.ndarray = values - values.mean(axis=0)
    return result


def greens_tensor(displacements_ang: np.ndarray) -> np.ndarray:
    """G = (1/N) Σ_n u_n u_nᵀ over the N states (Eq. 2) [Å²].

    Parameters
    ----------
    displacements_ang:
        float (states, ..., K, 2): displacements from the mean [Å], states on axis 0.

    Returns
    -------
    numpy.ndarray
        float64 (..., 2K, 2K), symmetric; rows (column 0 y, column 0 x, column 1 y, ...).

    Examples
    --------
    >>> u = np.array([[[0.1, 0.0]], [[-0.1, 0.0]]])  # 2 states, 1 column
    >>> greens_tensor(u).round(4).tolist()
    [[0.01, 0.0], [0.0, 0.0]]
    """
    u = _ensemble(displacements_ang, "displacements_ang")
    flat = u.reshape(*u.shape[:-2], -1)  # (states, ..., 2K)
    result: np.ndarray = np.einsum("n...i,n...j->...ij", flat, flat) / u.shape[0]
    return result


def debye_waller(greens: np.ndarray) -> np.ndarray:
    """B = 8π²(⟨u_x²⟩ + ⟨u_y²⟩) per column [Å²], from the self-correlations of G.

    This is the in-plane sum the CAVIAR paper reports; crystallography's isotropic
    B_iso = 8π²⟨u²⟩ uses the mean square displacement along one direction instead, and
    ⟨u_z²⟩ is not resolved by ptychography.

    Parameters
    ----------
    greens:
        float (..., 2K, 2K) from :func:`greens_tensor`.

    Returns
    -------
    numpy.ndarray
        float64 (..., K) [Å²].
    """
    g = np.asarray(greens, dtype=np.float64)
    diagonal = np.diagonal(g, axis1=-2, axis2=-1)
    result: np.ndarray = 8 * np.pi**2 * diagonal.reshape(*diagonal.shape[:-1], -1, 2).sum(-1)
    return result


def correlation_pairs(
    positions_ang: np.ndarray, max_distance_ang: float, *, include_self: bool = True
) -> np.ndarray:
    """Ordered pairs (l, l') of columns at most ``max_distance_ang`` apart.

    Parameters
    ----------
    positions_ang:
        float (K, 2): mean (y, x) of the columns [Å].
    max_distance_ang:
        Largest separation [Å], e.g. just beyond the nearest-neighbour distance.
    include_self:
        Include (l, l), the self-correlations.

    Returns
    -------
    numpy.ndarray
        int64 (P, 2), sorted by l then l'.
    """
    points = np.asarray(positions_ang, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"positions_ang must be (K, 2), got shape {points.shape}")
    require_positive("max_distance_ang", max_distance_ang, "Å")
    distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
    near = distance <= max_distance_ang
    if not include_self:
        np.fill_diagonal(near, False)
    pairs: np.ndarray = np.argwhere(near).astype(np.int64)
    return pairs


def pair_blocks(greens: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The 2 × 2 blocks G[l, l'] of the pairs: (P, 2, 2), rows = component of column l.

    Row j of block i is the paper's correlation vector V_ij: how column l' moves, in (y, x),
    when column l moves along y (j = 0) or x (j = 1).
    """
    g = np.asarray(greens, dtype=np.float64)
    index = np.asarray(pairs, dtype=np.int64)
    if index.ndim != 2 or index.shape[1] != 2:
        raise ValueError(f"pairs must be (P, 2) column indices, got shape {index.shape}")
    k = g.shape[-1] // 2
    if index.size and (index.min() < 0 or index.max() >= k):
        raise ValueError(f"pairs must index columns 0..{k - 1}, got {index.min()}..{index.max()}")
    rows = 2 * index[:, 0, None, None] + np.arange(2)[None, :, None]
    cols = 2 * index[:, 1, None, None] + np.arange(2)[None, None, :]
    result: np.ndarray = g[..., rows, cols]
    return result


class Similarity(NamedTuple):
    """LSM and CSM of reconstructed against ground-truth correlation blocks (Eqs. 3-4)."""

    lsm: float
    """Mean length ratio |V_rec| / |V_GT| over the vectors (1 = same strength, 0 = none)."""
    csm: float
    """Mean cosine between the blocks of each pair (1 = same direction)."""
    num_pairs: int


def similarity(reconstructed: np.ndarray, truth: np.ndarray) -> Similarity:
    """LSM and CSM between correlation blocks (CAVIAR Eqs. 3 and 4).

    Parameters
    ----------
    reconstructed, truth:
        float (P, 2, 2): blocks of the same pairs, e.g. from :func:`pair_blocks`.

    Returns
    -------
    Similarity

    Examples
    --------
    >>> block = np.array([[[2.0, 0.5], [0.5, 1.0]]])
    >>> s = similarity(0.5 * block, block)
    >>> round(s.lsm, 3), round(s.csm, 3)
    (0.5, 1.0)
    """
    rec, gt = _block_pair(reconstructed, truth)
    length_gt = np.linalg.norm(gt, axis=-1)
    if not np.all(length_gt > 0):
        raise ValueError("truth has a zero correlation vector; LSM divides by its length")
    lsm = float(np.mean(np.linalg.norm(rec, axis=-1) / length_gt))
    cosine = pair_cosines(rec, gt)
    return Similarity(lsm, float(np.mean(cosine)), int(rec.shape[0]))


def pair_cosines(reconstructed: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The cosine between the blocks of each pair, read as 4-vectors: the terms CSM
    averages (:func:`similarity`), float64 (P,); 0 where either block is zero.

    Split by kind to see where a CSM comes from: self blocks (positive definite, large)
    agree far more easily than neighbour blocks, which with M states carry sampling noise
    of relative size ~1/√M.
    """
    rec, gt = _block_pair(reconstructed, truth)
    dot = np.sum(rec * gt, axis=(1, 2))
    norms = np.linalg.norm(rec, axis=(1, 2)) * np.linalg.norm(gt, axis=(1, 2))
    result: np.ndarray = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    return result


def _block_pair(reconstructed: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rec = np.asarray(reconstructed, dtype=np.float64)
    gt = np.asarray(truth, dtype=np.float64)
    if rec.shape != gt.shape or rec.ndim != 3 or rec.shape[1:] != (2, 2):
        raise ValueError(
            f"reconstructed and truth must both be (P, 2, 2), got {rec.shape} and {gt.shape}"
        )
    return rec, gt


class PairAverage(NamedTuple):
    """Correlation blocks averaged over equivalent unit-cell pairs."""

    basis_pairs: np.ndarray
    """int64 (Q, 2): (κ, κ') basis atoms of the reference and the neighbour."""
    cell_offsets: np.ndarray
    """int64 (Q, 2): l' − l, the neighbour's cell relative to the reference's."""
    blocks: np.ndarray
    """float64 (..., Q, 2, 2): mean block G[lκ, l'κ'] over the equivalent pairs [Å²]."""
    counts: np.ndarray
    """int64 (Q,): pairs averaged."""

    @property
    def is_self(self) -> np.ndarray:
        """bool (Q,): the self classes (κ = κ' in the same cell)."""
        same_atom: np.ndarray = (self.basis_pairs[:, 0] == self.basis_pairs[:, 1]) & np.all(
            self.cell_offsets == 0, axis=1
        )
        return same_atom


def average_equivalent_pairs(
    greens: np.ndarray, pairs: np.ndarray, cells: np.ndarray, basis_index: np.ndarray
) -> PairAverage:
    """Average the blocks of pairs with the same (κ, κ', l' − l), as CAVIAR Fig. 4 does.

    Parameters
    ----------
    greens:
        float (..., 2K, 2K), e.g. one per slice; the average is taken per leading index
        (average over slices afterwards with ``.mean(axis=0)`` for a range of slices).
    pairs:
        int (P, 2) from :func:`correlation_pairs`.
    cells:
        int (K, 2): unit cell (i, j) of each column
        (:func:`~ptyscope.analysis.columns.assign_sites`).
    basis_index:
        int (K,): basis atom of each column (−1: unassigned, left out).
    """
    index = np.asarray(pairs, dtype=np.int64)
    cell = np.asarray(cells, dtype=np.int64)
    basis = np.asarray(basis_index, dtype=np.int64)
    blocks = pair_blocks(greens, index)
    keep = (basis[index[:, 0]] >= 0) & (basis[index[:, 1]] >= 0)
    keys = np.column_stack(
        [basis[index[:, 0]], basis[index[:, 1]], cell[index[:, 1]] - cell[index[:, 0]]]
    )[keep]
    unique, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((*blocks.shape[:-3], unique.shape[0], 2, 2))
    np.add.at(np.moveaxis(sums, -3, 0), inverse, np.moveaxis(blocks[..., keep, :, :], -3, 0))
    mean = sums / counts[:, None, None]
    return PairAverage(unique[:, :2], unique[:, 2:], mean, counts.astype(np.int64))
