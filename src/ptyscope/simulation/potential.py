"""Atoms -> potential slices: sampling, slicing and the transmission functions.

The specimen's cell sets the lateral period: the grid covers exactly the cell's x and y
extent (a periodic supercell; put vacuum around non-periodic specimens such as
nanoparticles), with an FFT-friendly number of pixels (factors 2, 3, 5, 7) no coarser than
the requested sampling. Along the beam (+z) the cell is cut into slices of
``slice_thickness_ang`` starting at z = 0; an atom belongs to the slice that contains its
centre (slice j holds j·Δz <= z < (j+1)·Δz; an atom on a boundary, to round-off, starts
the next slice), and all of its projected potential is placed
there (the "infinite projection" of Kirkland 2020, Ch. 6). ase's x is array axis −1 and
ase's y is array axis −2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ase
import numpy as np
import torch

from ptyscope._validation import require_positive
from ptyscope.physics.grids import Grid, fft_friendly_span
from ptyscope.physics.potential import projected_potential

__all__ = ["PotentialSlices", "cell_lengths_ang", "slice_potential", "specimen_grid"]

#: Atoms closer than this fraction of Δz below a slice boundary count as on it.
_BOUNDARY_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PotentialSlices:
    """Projected potential of consecutive slices.

    Attributes
    ----------
    slices_vang:
        Real tensor (slices, ny, nx): projected potential of each slice [V·Å].
    grid:
        Lateral grid (one period of the specimen).
    slice_thickness_ang:
        Δz [Å].
    """

    slices_vang: torch.Tensor
    grid: Grid
    slice_thickness_ang: float

    @property
    def num_slices(self) -> int:
        return int(self.slices_vang.shape[0])

    @property
    def thickness_ang(self) -> float:
        """Total thickness covered by the slices [Å]."""
        return self.num_slices * self.slice_thickness_ang


def cell_lengths_ang(atoms: ase.Atoms) -> np.ndarray:
    """Cell lengths (L_x, L_y, L_z) [Å] of a specimen's orthorhombic cell.

    Raises a ``ValueError`` unless the cell is complete (three non-zero vectors) and its
    vectors lie along x, y and z (the beam is along z).
    """
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    if np.any(np.linalg.norm(cell, axis=1) == 0):
        raise ValueError(
            "atoms must have a full 3D cell (the lateral period and the thickness); "
            f"got cell lengths {atoms.cell.lengths().round(3).tolist()} Å — set one with "
            "atoms.set_cell(...) or use ptyscope.simulation.specimens helpers"
        )
    off_diagonal = cell - np.diag(np.diag(cell))
    if np.any(np.diag(cell) <= 0) or np.abs(off_diagonal).max() > 1e-6 * np.abs(cell).max():
        raise ValueError(
            "atoms.cell must be orthorhombic with axes along x, y, z (the beam is along z); "
            f"got cell {cell.round(4).tolist()} Å"
        )
    lengths: np.ndarray = np.diag(cell).copy()
    return lengths


def _lateral_extent(atoms: ase.Atoms) -> tuple[float, float, float]:
    """(L_y, L_x, L_z) [Å]: the grid's (y, x) period and the thickness."""
    length_x, length_y, length_z = (float(v) for v in cell_lengths_ang(atoms))
    return length_y, length_x, length_z


def specimen_grid(atoms: ase.Atoms, sampling_ang: float, *, even: bool = False) -> Grid:
    """The lateral grid of a specimen: its cell, with pixels no larger than ``sampling_ang``.

    ``even=True``: even numbers of pixels (see :func:`~ptyscope.physics.grids.fft_friendly_span`).

    Returns
    -------
    Grid
        shape (ny, nx) FFT-friendly, pixel (cell_y/ny, cell_x/nx) [Å].
    """
    require_positive("sampling_ang", sampling_ang, "Å")
    extent_y, extent_x, _ = _lateral_extent(atoms)
    ny = fft_friendly_span(extent_y, sampling_ang, even=even)
    nx = fft_friendly_span(extent_x, sampling_ang, even=even)
    return Grid((ny, nx), (extent_y / ny, extent_x / nx))


def slice_potential(
    atoms: ase.Atoms,
    grid: Grid,
    slice_thickness_ang: float,
    *,
    displacements_ang: np.ndarray | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> PotentialSlices:
    """Projected potential slices of a specimen.

    Parameters
    ----------
    atoms:
        Specimen with an orthorhombic cell; the cell's z length is the thickness.
    grid:
        Lateral grid, usually :func:`specimen_grid`; its extent must equal the cell's.
    slice_thickness_ang:
        Δz [Å]; the number of slices is ceil(cell_z / Δz).
    displacements_ang:
        Optional float (N, 3) frozen-phonon displacements in ase (x, y, z) order [Å].
    device, dtype:
        Device and real dtype of the slices.

    Returns
    -------
    PotentialSlices
    """
    require_positive("slice_thickness_ang", slice_thickness_ang, "Å")
    extent_y, extent_x, thickness = _lateral_extent(atoms)
    grid_y, grid_x = grid.extent_ang
    if abs(grid_y - extent_y) > 1e-6 * extent_y or abs(grid_x - extent_x) > 1e-6 * extent_x:
        raise ValueError(
            f"grid extent (y, x) = ({grid_y:.4f}, {grid_x:.4f}) Å must equal the cell's "
            f"({extent_y:.4f}, {extent_x:.4f}) Å; build it with specimen_grid(atoms, ...)"
        )
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if displacements_ang is not None:
        displacements = np.asarray(displacements_ang, dtype=np.float64)
        if displacements.shape != positions.shape:
            raise ValueError(
                f"displacements_ang must have shape (atoms, 3) = {positions.shape}, "
                f"got {displacements.shape}"
            )
        positions = positions + displacements
    num_slices = max(1, math.ceil(thickness / slice_thickness_ang - 1e-9))
    # An atom on a slice boundary (to round-off) belongs to the slice below it.
    depth = positions[:, 2] / slice_thickness_ang
    index = np.clip(np.floor(depth + _BOUNDARY_TOLERANCE), 0, num_slices - 1)
    symbols = atoms.get_chemical_symbols()
    yx = torch.as_tensor(positions[:, [1, 0]], device=device)
    slices = torch.zeros((num_slices, *grid.shape), dtype=dtype, device=device)
    for j in np.unique(index).astype(int):
        members = np.flatnonzero(index == j)
        slices[j] = projected_potential(
            yx[torch.as_tensor(members, device=yx.device)],
            [symbols[m] for m in members],
            grid,
            dtype=dtype,
        )
    return PotentialSlices(slices, grid, float(slice_thickness_ang))
