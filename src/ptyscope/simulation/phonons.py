"""Frozen-phonon displacement models: Einstein and correlated harmonic snapshots.

Thermal diffuse scattering is simulated by averaging over snapshots of displaced atoms.
Two models are provided:

* **Einstein**: every atom vibrates independently, u ~ N(0, σ²) per Cartesian component,
  σ set per element (σ² = B / (8π²) from a Debye-Waller factor B).
* **Harmonic**: atoms are coupled by springs; in classical statistics the displacements of
  a harmonic crystal follow the Boltzmann distribution P(u) ∝ exp(−uᵀΦu / (2k_BT)), i.e.
  u ~ N(0, k_BT Φ⁺) with Φ the force-constant matrix [eV/Å²] (the pseudo-inverse removes the
  three rigid translations, so the centre of mass is fixed). Neighbouring atoms then move
  together as in a real crystal, which is what CAVIAR (Gladyshev et al. 2025) measures. The
  model's normal-mode frequencies (ω² the eigenvalues of M^(-1/2) Φ M^(-1/2)) are exact
  ground truth: for a periodic supercell they are the crystal's phonons at every wavevector
  commensurate with the supercell.

Atomic coordinates follow ase: Cartesian (x, y, z) in Å, periodic where ``atoms.pbc`` is set.
Displacement arrays are (snapshots, atoms, 3) in that (x, y, z) order, so that
``atoms.positions + u[m]`` is snapshot m; conversion to ptyscope's (y, x) array order
happens when atoms are rasterised into potentials.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import ase
import numpy as np
from ase.neighborlist import neighbor_list

from ptyscope._validation import require_positive

__all__ = [
    "BOLTZMANN_EV_PER_K",
    "HarmonicModel",
    "einstein_displacements",
    "spring_model",
]

#: Boltzmann constant [eV/K] (CODATA 2018, exact).
BOLTZMANN_EV_PER_K = 8.617333262e-5
#: sqrt(eV / (Å² · amu)) in THz (cycles per second / 1e12): ω = sqrt(λ)·this·2π.
_THZ_PER_SQRT_EV_ANG2_AMU = math.sqrt(1.602176634e-19 / (1e-20 * 1.66053906660e-27)) / (
    2 * math.pi * 1e12
)
#: Largest number of degrees of freedom handled by dense eigendecomposition.
MAX_DENSE_DOF = 12_000


def _require_generator(generator: np.random.Generator) -> None:
    if not isinstance(generator, np.random.Generator):
        raise TypeError(
            "generator must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), "
            f"got {type(generator).__name__}"
        )


def einstein_displacements(
    atoms: ase.Atoms,
    sigma_ang: Mapping[str, float] | float,
    num_snapshots: int,
    generator: np.random.Generator,
) -> np.ndarray:
    """Independent Gaussian displacements (Einstein model).

    Parameters
    ----------
    atoms:
        The specimen.
    sigma_ang:
        Root-mean-square displacement per Cartesian component [Å], one value for all atoms
        or one per chemical symbol (every symbol present must be given).
    num_snapshots:
        Number of snapshots M >= 1.
    generator:
        Random generator (no global seeds are used).

    Returns
    -------
    numpy.ndarray
        float64 array (M, N, 3) of displacements [Å], Cartesian (x, y, z).
    """
    _require_generator(generator)
    if not isinstance(num_snapshots, int) or num_snapshots < 1:
        raise ValueError(f"num_snapshots must be an integer >= 1, got {num_snapshots!r}")
    symbols = atoms.get_chemical_symbols()
    if isinstance(sigma_ang, Mapping):
        missing = sorted(set(symbols) - set(sigma_ang))
        if missing:
            raise ValueError(
                f"sigma_ang must give a value for every element present; missing {missing}"
            )
        sigma = np.array([float(sigma_ang[s]) for s in symbols])
    else:
        sigma = np.full(len(symbols), float(sigma_ang))
    if not np.all(np.isfinite(sigma)) or np.any(sigma < 0):
        raise ValueError(f"sigma_ang must be finite and >= 0 Å, got {sigma_ang!r}")
    noise = generator.standard_normal((num_snapshots, len(symbols), 3))
    displacements: np.ndarray = noise * sigma[None, :, None]
    return displacements


@dataclass(frozen=True)
class HarmonicModel:
    """A classical harmonic lattice.

    Attributes
    ----------
    force_constants:
        float64 array (3N, 3N): Φ [eV/Å²], symmetric, positive semi-definite, rows ordered
        atom-major (atom 0 x, y, z, atom 1 x, ...).
    masses_amu:
        float64 array (N,) [amu].
    """

    force_constants: np.ndarray
    masses_amu: np.ndarray

    def __post_init__(self) -> None:
        phi = np.asarray(self.force_constants, dtype=np.float64)
        masses = np.asarray(self.masses_amu, dtype=np.float64)
        n = masses.shape[0]
        if phi.shape != (3 * n, 3 * n):
            raise ValueError(
                f"force_constants must have shape (3N, 3N) = ({3 * n}, {3 * n}) for N={n} "
                f"masses, got {phi.shape}"
            )
        if 3 * n > MAX_DENSE_DOF:
            raise ValueError(
                f"the harmonic model has {3 * n} degrees of freedom; the dense solver handles "
                f"at most {MAX_DENSE_DOF} (use a smaller supercell)"
            )
        if not np.allclose(phi, phi.T, atol=1e-10 * max(1.0, np.abs(phi).max())):
            raise ValueError("force_constants must be symmetric")
        require_positive("masses_amu", float(masses.min()) if n else 0.0, "amu")
        object.__setattr__(self, "force_constants", phi)
        object.__setattr__(self, "masses_amu", masses)
        eigenvalues, eigenvectors = np.linalg.eigh(phi)
        scale = max(float(np.abs(eigenvalues).max()), 1e-300)
        rigid = eigenvalues < 1e-9 * scale
        if eigenvalues.min() < -1e-9 * scale:
            raise ValueError(
                f"force_constants must be positive semi-definite; lowest eigenvalue "
                f"{eigenvalues.min():.3g} eV/Å²"
            )
        if rigid.sum() > 3:
            raise ValueError(
                f"the spring model is not mechanically stable: {int(rigid.sum()) - 3} "
                "zero-frequency modes besides the 3 rigid translations (add springs to "
                "further neighbour shells)"
            )
        object.__setattr__(self, "_eigenvalues", eigenvalues[~rigid])
        object.__setattr__(self, "_eigenvectors", eigenvectors[:, ~rigid])

    @property
    def num_atoms(self) -> int:
        return int(self.masses_amu.shape[0])

    def covariance(self, temperature_k: float) -> np.ndarray:
        """Exact displacement covariance k_BT·Φ⁺ [Å²], float64 (3N, 3N)."""
        require_positive("temperature_k", temperature_k, "K")
        vectors: np.ndarray = self._eigenvectors  # type: ignore[attr-defined]
        values: np.ndarray = self._eigenvalues  # type: ignore[attr-defined]
        kt = BOLTZMANN_EV_PER_K * temperature_k
        result: np.ndarray = (vectors / values) @ vectors.T * kt
        return result

    def sample(
        self, temperature_k: float, num_snapshots: int, generator: np.random.Generator
    ) -> np.ndarray:
        """Draw displacement snapshots u ~ N(0, k_BT Φ⁺).

        Returns
        -------
        numpy.ndarray
            float64 (M, N, 3) [Å], Cartesian (x, y, z); each snapshot has zero net
            displacement (the centre of mass of equal masses stays put).
        """
        _require_generator(generator)
        require_positive("temperature_k", temperature_k, "K")
        if not isinstance(num_snapshots, int) or num_snapshots < 1:
            raise ValueError(f"num_snapshots must be an integer >= 1, got {num_snapshots!r}")
        vectors: np.ndarray = self._eigenvectors  # type: ignore[attr-defined]
        values: np.ndarray = self._eigenvalues  # type: ignore[attr-defined]
        kt = BOLTZMANN_EV_PER_K * temperature_k
        z = generator.standard_normal((num_snapshots, values.shape[0]))
        u: np.ndarray = (z * np.sqrt(kt / values)) @ vectors.T
        return u.reshape(num_snapshots, self.num_atoms, 3)

    def mode_frequencies_thz(self) -> np.ndarray:
        """Normal-mode frequencies ν = ω/2π [THz], ascending, float64 (3N,).

        ω² are the eigenvalues of the mass-weighted matrix M^(-1/2) Φ M^(-1/2); the three
        rigid translations give ν = 0.
        """
        inv_sqrt_m = np.repeat(1.0 / np.sqrt(self.masses_amu), 3)
        weighted = self.force_constants * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
        omega2 = np.linalg.eigvalsh(weighted)
        omega2[omega2 < 1e-12 * omega2.max()] = 0.0  # rigid translations (round-off only)
        frequencies: np.ndarray = np.sqrt(omega2) * _THZ_PER_SQRT_EV_ANG2_AMU
        return frequencies


def _validated_shells(shells: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(max_distance_ang, spring_ev_per_ang2) arrays of neighbour shells, validated."""
    if not shells:
        raise ValueError("shells must list at least one (max_distance_ang, spring) pair")
    previous = 0.0
    for distance, spring in shells:
        require_positive("shells max_distance_ang", distance, "Å")
        require_positive("shells spring_ev_per_ang2", spring, "eV/Å²")
        if distance <= previous:
            raise ValueError(f"shells must increase in distance, got {list(shells)}")
        previous = distance
    limits = np.array([d for d, _ in shells], dtype=np.float64)
    springs = np.array([k for _, k in shells], dtype=np.float64)
    return limits, springs


def spring_model(
    atoms: ase.Atoms,
    shells: Sequence[tuple[float, float]],
) -> HarmonicModel:
    """Central-force spring model over neighbour shells.

    Each pair of atoms at distance d (minimum image and periodic images included, as set by
    ``atoms.pbc``) is joined by a central spring of constant k_s [eV/Å²] where shell s is
    the first with d <= ``shells[s][0]``. A spring along the unit vector e contributes
    −k e⊗e to the off-diagonal block Φ_ij and +k e⊗e to Φ_ii (acoustic sum rule).

    Parameters
    ----------
    atoms:
        Specimen or periodic supercell.
    shells:
        Sequence of (max_distance_ang, spring_ev_per_ang2), increasing in distance.

    Returns
    -------
    HarmonicModel

    Examples
    --------
    >>> from ase.build import bulk
    >>> cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    >>> model = spring_model(cu, [(2.6, 1.0)])   # nearest neighbours at a/√2 = 2.55 Å
    >>> model.num_atoms
    32
    """
    limits, springs = _validated_shells(shells)
    n = len(atoms)
    i_idx, j_idx, vectors = neighbor_list("ijD", atoms, limits[-1])
    distances = np.linalg.norm(vectors, axis=1)
    spring = springs[np.searchsorted(limits, distances - 1e-9)]
    unit = vectors / distances[:, None]
    blocks = spring[:, None, None] * unit[:, :, None] * unit[:, None, :]  # (pairs, 3, 3)
    phi = np.zeros((n, 3, n, 3))
    # neighbor_list lists each bond in both directions: i->j and j->i.
    for a in range(3):
        for b in range(3):
            np.add.at(phi[:, a, :, b], (i_idx, j_idx), -blocks[:, a, b])
            np.add.at(phi[:, a, :, b], (i_idx, i_idx), blocks[:, a, b])
    return HarmonicModel(phi.reshape(3 * n, 3 * n), atoms.get_masses())
