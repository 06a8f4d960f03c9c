"""Simulated SrTiO3 data shared by the reconstruction tests (simulated once per session)."""

from __future__ import annotations

import functools

from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG, srtio3_slab
from ptyscope.simulation.stem4d import (
    ProbeSettings,
    ScanSettings,
    SimulationResult,
    simulate_4dstem,
)

A = SRTIO3_LATTICE_CONSTANT_ANG
PROBE = ProbeSettings(300e3, 22.0, {"defocus": 60.0})
SCAN = ScanSettings((20, 20), (0.45, 0.45), origin_ang=(4.0, 4.0))


@functools.cache
def srtio3(cells_z: int, source_sigma_ang: float = 0.0, scan_shape: int = 20) -> SimulationResult:
    """SrTiO3 [001], 5x5 cells, ``cells_z`` thick, 300 kV, 22 mrad, 60 Å defocus,
    20x20 positions at 0.45 Å, 8 Å probe window (0.146 Å object pixels), 1e6 e/Å²."""
    scan = ScanSettings((scan_shape, scan_shape), SCAN.step_ang, SCAN.origin_ang)
    return simulate_4dstem(
        srtio3_slab((5, 5), cells_z * A),
        PROBE,
        scan,
        sampling_ang=0.1,
        slice_thickness_ang=A / 2,
        window_ang=8.0,
        source_sigma_ang=source_sigma_ang,
        dose_e_per_ang2=1e6,
        seed=1,
    )
