"""Phonon frequencies from an ensemble of displacements (Kong's method, as used by CAVIAR).

With the columns assigned to unit cells l (integer (i, j) along the lattice vectors a, b)
and basis atoms κ, the displacements are Fourier-transformed over the L complete cells,

    ũ_κα(q) = (1/√L) Σ_l u_lκα exp(−2πi q·r_l),      q·r_l = f_a·i + f_b·j,

(CAVIAR Eq. 5; q in reduced coordinates (f_a, f_b) of the reciprocal lattice, cycles, so
f = (1/2, 0) is the zone boundary along a), and the dynamical matrix follows from the
equipartition theorem (CAVIAR Eq. 6; Kong 2011):

    D(q) = k_B T · M^(−1/2) [⟨ũ(q) ũ(q)†⟩]⁻¹ M^(−1/2),

with M the diagonal of the basis masses (one mass m for all gives the paper's
(k_B T/m)[⟨ũũ*⟩]⁻¹). The frequencies ν = √eig(D)/2π [THz] are sorted ascending per q:
branch b is the b-th lowest mode.

What is measured is in-plane: (y, x) per column. A column (or the part of it in one slice)
moves as one rigid body in this analysis, so its mass is the sum of the atoms' masses; for
a crystal periodic along the beam with mirror symmetry z → −z, the result is then exactly
the in-plane dispersion of the 3D crystal at q_z = 0.

Bias from few states: ⟨ũũ†⟩ estimated from M states (their mean removed) is a Wishart
matrix, and the mean of its inverse is too large: E[S⁻¹] = M/(M − 1 − p)·Σ⁻¹ for complex
ũ (q ≠ −q) and M/(M − 2 − p)·Σ⁻¹ for real ũ (2q on the reciprocal lattice), p = 2·(basis
atoms). ``correct_bias=True`` multiplies D by the inverse factor, so each ω² is unbiased
to first order; the frequencies are then high by only O(1/M). A small field of view biases
the result by itself (the Fourier sum over few cells blurs q); see ``../DESIGN.md``.

References
----------
Kong, L. T. Phonon dispersion measured directly from molecular dynamics simulations.
Comput. Phys. Commun. 182, 2201 (2011).
Gladyshev, A. et al. CAVIAR (2025), Eqs. 5-6.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ptyscope._validation import require_positive
from ptyscope.simulation.phonons import _THZ_PER_SQRT_EV_ANG2_AMU, BOLTZMANN_EV_PER_K

__all__ = [
    "Dispersion",
    "branch_averages",
    "complete_cells",
    "displacement_spectrum",
    "kong_dispersion",
    "reduced_path",
]

#: A covariance whose smallest eigenvalue is below this fraction of its largest is singular.
_SINGULAR_FRACTION = 1e-10


def complete_cells(cells: np.ndarray, basis_index: np.ndarray, num_basis: int) -> np.ndarray:
    """Column indices (L, num_basis) of the cells holding every basis atom exactly once.

    Parameters
    ----------
    cells:
        int (K, 2): unit cell (i, j) of each column.
    basis_index:
        int (K,): basis atom κ of each column, −1 for unassigned.
    num_basis:
        Basis atoms per cell.

    Returns
    -------
    numpy.ndarray
        int64 (L, num_basis): entry [l, κ] is the column of basis atom κ in cell l; cells
        sorted by (i, j).
    """
    cell = np.asarray(cells, dtype=np.int64)
    basis = np.asarray(basis_index, dtype=np.int64)
    if cell.ndim != 2 or cell.shape[1] != 2 or basis.shape != (cell.shape[0],):
        raise ValueError(
            f"cells must be (K, 2) and basis_index (K,), got {cell.shape} and {basis.shape}"
        )
    if not isinstance(num_basis, int) or num_basis < 1:
        raise ValueError(f"num_basis must be an integer >= 1, got {num_basis!r}")
    if basis.size and basis.max() >= num_basis:
        raise ValueError(f"basis_index must be < num_basis = {num_basis}, got {basis.max()}")
    table: dict[tuple[int, int], list[int]] = {}
    for column, (key, kappa) in enumerate(zip(map(tuple, cell), basis, strict=True)):
        if kappa >= 0:
            slots = table.setdefault((int(key[0]), int(key[1])), [-1] * num_basis)
            slots[kappa] = -2 if slots[kappa] != -1 else column  # -2: seen twice
    rows = [table[key] for key in sorted(table) if min(table[key]) >= 0]
    if not rows:
        raise ValueError(
            f"no unit cell holds all {num_basis} basis atoms once; check the lattice and the "
            "column assignment"
        )
    return np.array(rows, dtype=np.int64)


def _spectrum(u: np.ndarray, cells: np.ndarray, table: np.ndarray, q: np.ndarray) -> np.ndarray:
    """⟨ũ(q) ũ(q)†⟩ (Q, p, p) of displacements u (S, K, 2) over the complete cells
    ``table`` (L, num_basis) of :func:`complete_cells`."""
    points = np.asarray(cells, dtype=np.int64)[table[:, 0]]  # (L, 2) lattice points
    per_cell = u[:, table, :].reshape(u.shape[0], table.shape[0], -1)  # (S, L, p)
    phase = np.exp(-2j * np.pi * (q @ points.T)) / np.sqrt(table.shape[0])  # (Q, L)
    modes = np.einsum("ql,slp->sqp", phase, per_cell)
    result: np.ndarray = np.einsum("sqa,sqb->qab", modes, modes.conj()) / u.shape[0]
    return result


def displacement_spectrum(
    displacements_ang: np.ndarray,
    cells: np.ndarray,
    basis_index: np.ndarray,
    num_basis: int,
    q_reduced: np.ndarray,
) -> np.ndarray:
    """⟨ũ(q) ũ(q)†⟩ over the states [Å²] (CAVIAR Eq. 5 and the average of Eq. 6).

    Parameters
    ----------
    displacements_ang:
        float (states, K, 2): (y, x) displacements from the mean [Å].
    cells, basis_index, num_basis:
        The columns' unit cells and basis atoms (see :func:`complete_cells`); only
        complete cells enter.
    q_reduced:
        float (Q, 2): wavevectors (f_a, f_b) in reduced coordinates [cycles].

    Returns
    -------
    numpy.ndarray
        complex128 (Q, 2·num_basis, 2·num_basis), Hermitian; rows (κ 0 y, κ 0 x, κ 1 y, ...).
    """
    u = np.asarray(displacements_ang, dtype=np.float64)
    if u.ndim != 3 or u.shape[-1] != 2:
        raise ValueError(f"displacements_ang must be (states, K, 2), got shape {u.shape}")
    q = np.asarray(q_reduced, dtype=np.float64).reshape(-1, 2)
    return _spectrum(u, cells, complete_cells(cells, basis_index, num_basis), q)


class Dispersion(NamedTuple):
    """Result of :func:`kong_dispersion`."""

    q_reduced: np.ndarray
    """float64 (Q, 2): the wavevectors (f_a, f_b) [cycles]."""
    frequencies_thz: np.ndarray
    """float64 (Q, 2·num_basis): ν per q, ascending [THz]; NaN at Γ and singular q."""
    dynamical: np.ndarray
    """complex128 (Q, p, p): D(q) [eV/(Å²·amu)]."""
    num_cells: int
    """L, the complete cells used."""
    num_states: int


def _is_real_q(q: np.ndarray) -> np.ndarray:
    doubled = 2 * q
    result: np.ndarray = np.all(np.abs(doubled - np.rint(doubled)) < 1e-9, axis=-1)
    return result


def kong_dispersion(
    displacements_ang: np.ndarray,
    cells: np.ndarray,
    basis_index: np.ndarray,
    masses_amu: Sequence[float] | np.ndarray,
    temperature_k: float,
    q_reduced: np.ndarray,
    *,
    correct_bias: bool = True,
) -> Dispersion:
    """Phonon frequencies from displacement fluctuations (Kong 2011; CAVIAR Eq. 6).

    Parameters
    ----------
    displacements_ang:
        float (states, K, 2): (y, x) displacements from the mean [Å] (one slice, or the
        projection; see the module notes on masses).
    cells, basis_index:
        Unit cell (K, 2) and basis atom (K,) of each column, e.g. from
        :func:`~ptyscope.analysis.columns.assign_sites`.
    masses_amu:
        (num_basis,): mass of each basis column [amu].
    temperature_k:
        Specimen temperature [K].
    q_reduced:
        float (Q, 2): wavevectors (f_a, f_b) [cycles], e.g. from :func:`reduced_path`.
    correct_bias:
        Remove the inverse-Wishart bias of inverting a covariance from few states.

    Returns
    -------
    Dispersion
        At Γ (integer f) the rigid shifts of the field make ⟨ũũ†⟩ meaningless (singular
        for a periodic cell, a field-of-view artefact otherwise): NaN there.
    """
    masses = np.asarray(masses_amu, dtype=np.float64).reshape(-1)
    if masses.size < 1 or not np.all(masses > 0):
        raise ValueError(f"masses_amu must be > 0 amu per basis atom, got {masses.tolist()}")
    require_positive("temperature_k", temperature_k, "K")
    num_basis = masses.size
    q = np.asarray(q_reduced, dtype=np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(q)):
        raise ValueError("q_reduced must be finite")
    u = np.asarray(displacements_ang, dtype=np.float64)
    if u.ndim != 3 or u.shape[-1] != 2:
        raise ValueError(f"displacements_ang must be (states, K, 2), got shape {u.shape}")
    table = complete_cells(cells, basis_index, num_basis)
    spectrum = _spectrum(u, cells, table, q)
    states = u.shape[0]
    p = 2 * num_basis
    if correct_bias and states - 2 - p <= 0:
        raise ValueError(
            f"correct_bias needs more than {p + 2} object states for {num_basis} basis atoms "
            f"(p = {p} degrees of freedom per q), got {states}"
        )
    gamma = np.all(np.abs(q - np.rint(q)) < 1e-9, axis=-1)
    values, vectors = np.linalg.eigh(spectrum)
    singular = gamma | (values[:, 0] <= _SINGULAR_FRACTION * values[:, -1])
    safe = np.where(singular[:, None], 1.0, values)
    inverse = (vectors / safe[:, None, :]) @ vectors.conj().swapaxes(-1, -2)
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 2)
    dynamical = BOLTZMANN_EV_PER_K * temperature_k * inverse
    dynamical = dynamical * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    if correct_bias:
        lost = np.where(_is_real_q(q), 2 + p, 1 + p)
        dynamical = dynamical * ((states - lost) / states)[:, None, None]
    omega2 = np.linalg.eigvalsh(dynamical)
    frequencies = np.sqrt(np.clip(omega2, 0.0, None)) * _THZ_PER_SQRT_EV_ANG2_AMU
    frequencies[singular] = np.nan
    return Dispersion(q, frequencies, dynamical, int(table.shape[0]), states)


def branch_averages(dispersion: Dispersion) -> np.ndarray:
    """Mean frequency of each branch over the q points, Γ and singular points left out.

    Returns float64 (2·num_basis,) [THz], lowest branch first (for hBN: TA, LA, TO, LO
    as CAVIAR reports them along Γ-K-M-Γ).
    """
    freqs = dispersion.frequencies_thz
    valid = np.all(np.isfinite(freqs), axis=1)
    if not np.any(valid):
        raise ValueError("no q point away from Γ with a regular covariance to average over")
    result: np.ndarray = freqs[valid].mean(axis=0)
    return result


def reduced_path(
    points: Sequence[tuple[str, Sequence[float]]], num_per_segment: int
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Straight path through labelled points in reduced coordinates (f_a, f_b).

    Parameters
    ----------
    points:
        (label, (f_a, f_b)), at least two, e.g. for a hexagonal lattice with a, b at 120°
        ``[("Γ", (0, 0)), ("K", (1/3, 1/3)), ("M", (1/2, 0)), ("Γ", (0, 0))]``.
    num_per_segment:
        Samples per segment, each segment including its start; the path includes its end.

    Returns
    -------
    q_reduced:
        float64 (K, 2).
    labels:
        The point labels.
    tick_index:
        int64 (len(points),): index of each labelled point in ``q_reduced``.
    """
    if not isinstance(num_per_segment, int) or num_per_segment < 1:
        raise ValueError(f"num_per_segment must be an integer >= 1, got {num_per_segment!r}")
    if len(points) < 2 or any(np.shape(f) != (2,) for _, f in points):
        raise ValueError(f"points must list at least two (label, (f_a, f_b)), got {points!r}")
    corners = np.array([f for _, f in points], dtype=np.float64)
    steps = np.arange(num_per_segment)[:, None] / num_per_segment
    segments = [start + steps * (end - start) for start, end in itertools.pairwise(corners)]
    q = np.concatenate([*segments, corners[-1:]])
    ticks = np.arange(len(points), dtype=np.int64) * num_per_segment
    return q, [label for label, _ in points], ticks
