"""A small FePt particle and its tilt series, shared by the alignment and pipeline tests."""

from __future__ import annotations

import numpy as np
import torch

from ptyscope.simulation.specimens import ordered_alloy_cluster, rotate_atoms
from ptyscope.simulation.tilt_series import potential_volume
from ptyscope.tomography.volume import gaussian_smooth

#: 15 tilts (0, θ, 0) over ±70°.
TILTS = torch.tensor([[0.0, t, 0.0] for t in np.linspace(-70.0, 70.0, 15)], dtype=torch.float64)


def _particle():
    """FePt L1_0 (r = 5 Å) at a generic orientation (no tilt is a zone axis), 16 Å box."""
    atoms = ordered_alloy_cluster(["Fe", "Pt"], "L1_0", 3.85, radius_ang=5.0, vacuum_ang=3.0)
    atoms.set_cell([16.0] * 3)
    atoms.center()
    return rotate_atoms(atoms, [17.0, 23.0, 41.0], [8.0] * 3)


ATOMS = _particle()


def particle_volume() -> torch.Tensor:
    """The particle's potential at 0.4 Å voxels, blurred by 0.5 Å (a ptychographic
    resolution)."""
    grid = torch.tensor(potential_volume(ATOMS, 0.4)["potential_v"], dtype=torch.float64)
    return gaussian_smooth(grid, 0.5 / 0.4)
