"""Shared fixtures of the tomography tests."""

from __future__ import annotations

import pytest
import torch

from ._particle import particle_volume


@pytest.fixture(scope="module")
def volume() -> torch.Tensor:
    """The FePt particle of ``_particle`` at 0.4 Å voxels, blurred by 0.5 Å."""
    return particle_volume()
