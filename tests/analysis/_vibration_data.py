"""A synthetic mixed-object result of a crystal whose correlated displacements are known.

The crystal is the harmonic checkerboard of ``test_vibrations.py``: tetragonal (a = 4 Å,
c = 3 Å), a light atom "C" (12 amu) at (0, 0, 0) and a heavy "O" (40 amu) at
(a/2, a/2, 0), central springs to the first two shells. Its periodic 8 × 8 × 2 supercell
is sampled exactly (u ~ N(0, k_BT Φ⁺)) once per object state. Each of the two slices holds
one layer, so a column in a slice is one atom; its phase is a Gaussian at the atom's
displaced in-plane position (O brighter than C), plus white noise. The result file has the layout of
:func:`ptyscope.reconstruction.results.write_result`.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ase
import h5py
import numpy as np

from ptyscope.analysis.truth import column_displacements
from ptyscope.simulation.lattice_dynamics import force_constant_blocks, sample_supercell

from ._synthetic import gaussian_columns

A, C, CELLS, SLICES = 4.0, 3.0, 8, 2
MASSES = {"C": 12.0, "O": 40.0}
#: Peak phase of a column per slice [rad]: the heavy O is the brighter basis atom.
PEAK_RAD = {"C": 0.3, "O": 0.5}
SIGMA_ANG, PIXEL_ANG, OFFSET_ANG, FIELD_ANG = 0.35, 0.1, 2.0, 34.0
TEMPERATURE_K = 300.0
#: White noise on each slice's phase [rad] (1 % of the O column's peak).
NOISE_RAD = 0.005


@dataclass(frozen=True)
class VibrationData:
    """A result file and the truth that made it."""

    path: Path
    columns_ang: np.ndarray
    """float64 (K, 2): undisplaced (y, x) of the columns in the image frame [Å]."""
    displacements_ang: np.ndarray
    """float64 (states, slices, K, 2): each column's (y, x) displacement per slice [Å]."""
    species: tuple[str, ...]
    """The K columns' species."""


def write_object(path: Path, obj: np.ndarray, pixel_ang: float) -> None:
    """A result file holding ``obj`` (states, slices, ny, nx) and a scan over the field."""
    ny, nx = obj.shape[-2:]
    grid = np.stack(
        np.meshgrid(
            np.linspace(0.5, ny * pixel_ang - 0.5, 24),
            np.linspace(0.5, nx * pixel_ang - 0.5, 24),
            indexing="ij",
        ),
        -1,
    ).reshape(-1, 2)
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = "ptyscope-result"
        dataset = handle.create_dataset("object", data=obj.astype(np.complex64))
        dataset.attrs["pixel_size_ang"] = np.array([pixel_ang, pixel_ang])
        dataset.attrs["origin_ang"] = np.array([0.0, 0.0])
        handle.create_dataset("positions_ang", data=grid)
        handle.create_dataset("state_weights", data=np.full(obj.shape[0], 1 / obj.shape[0]))
        handle.attrs["slice_thickness_ang"] = C


@functools.cache
def vibration_result(states: int = 20, seed: int = 4) -> VibrationData:
    """The checkerboard result with ``states`` object states (cached per process)."""
    cell = ase.Atoms("CO", positions=[(0, 0, 0), (A / 2, A / 2, 0)], cell=[A, A, C], pbc=True)
    cell.set_masses([MASSES["C"], MASSES["O"]])
    blocks = force_constant_blocks(cell, [(3.1, 4.0), (4.2, 1.5)])
    supercell = cell.repeat((CELLS, CELLS, SLICES))
    u = sample_supercell(
        blocks, (CELLS, CELLS, SLICES), TEMPERATURE_K, states, np.random.default_rng(seed)
    )
    per_slice = [
        column_displacements(supercell.positions, u, depth_range_ang=(z * C - C / 2, z * C + C / 2))
        for z in range(SLICES)
    ]
    columns = per_slice[0][0] + OFFSET_ANG
    displacement = np.stack([d for _, d in per_slice], axis=1)  # (states, slices, K, 2)
    fractional = (columns - OFFSET_ANG) / (A / 2)
    species = tuple("C" if i % 2 == 0 else "O" for i, _ in np.rint(fractional).astype(int))
    peaks = np.array([PEAK_RAD[s] for s in species])
    shape = (round(FIELD_ANG / PIXEL_ANG),) * 2
    generator = np.random.default_rng(seed + 1)
    phase = np.array(
        [
            [
                gaussian_columns(
                    columns + displacement[s, z], peaks, shape, (PIXEL_ANG,) * 2, SIGMA_ANG
                )
                for z in range(SLICES)
            ]
            for s in range(states)
        ]
    )
    phase += generator.normal(0.0, NOISE_RAD, phase.shape)
    path = Path(tempfile.mkdtemp(prefix="ptyscope-vibrations-")) / "result.h5"
    write_object(path, np.exp(1j * phase), PIXEL_ANG)
    return VibrationData(path, columns, displacement, species)
