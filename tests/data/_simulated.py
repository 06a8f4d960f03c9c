"""Small simulated 4D-STEM datasets shared by the preprocessing and direct-imaging tests.

Each is simulated once per test session (functools.cache); tests must copy before they
modify. SrTiO3 [001], two unit cells thick (7.8 Å, weak phase), 300 kV, 20 mrad, in focus.
"""

from __future__ import annotations

import functools

import numpy as np
from ase import Atoms
from scipy import ndimage

from ptyscope.physics.constants import interaction_constant
from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG, srtio3_slab
from ptyscope.simulation.stem4d import (
    DetectorSettings,
    ProbeSettings,
    ScanSettings,
    SimulationResult,
    simulate_4dstem,
)

A = SRTIO3_LATTICE_CONSTANT_ANG
ENERGY_EV = 300e3
SEMIANGLE_MRAD = 20.0
PROBE = ProbeSettings(ENERGY_EV, SEMIANGLE_MRAD)


@functools.cache
def srtio3(
    scan_shape: tuple[int, int],
    step_ang: tuple[float, float],
    rotation_deg: float = 0.0,
    dose_e_per_ang2: float | None = None,
    window_ang: float | None = None,
    binning: int = 1,
) -> SimulationResult:
    """SrTiO3 (2 × 2 cells laterally, periodic), 0.08 Å sampling, origin at a Sr column."""
    return simulate_4dstem(
        srtio3_slab((2, 2), 2 * A),
        PROBE,
        ScanSettings(scan_shape, step_ang, rotation_deg=rotation_deg),
        sampling_ang=0.08,
        slice_thickness_ang=A / 2,
        window_ang=window_ang,
        detector=DetectorSettings(binning=binning),
        dose_e_per_ang2=dose_e_per_ang2,
        seed=7,
    )


@functools.cache
def vacuum(
    scan_shape: tuple[int, int], window_ang: float | None = None, binning: int = 1
) -> SimulationResult:
    """The probe in vacuum (cell 2a × 2a), same optics and detector as :func:`srtio3`."""
    empty = Atoms(cell=[2 * A, 2 * A, A], pbc=True)
    return simulate_4dstem(
        empty,
        PROBE,
        ScanSettings(scan_shape, (A / 8, A / 8)),
        sampling_ang=0.08,
        slice_thickness_ang=A / 2,
        window_ang=window_ang,
        detector=DetectorSettings(binning=binning),
    )


def probe_blurred_phase(result: SimulationResult, positions_ang: np.ndarray) -> np.ndarray:
    """σ·V_projected ⊛ |P|² [rad] of the simulated specimen at positions (..., 2) [Å].

    The thin-specimen iCoM phase (ptyscope.data.direct). The potential and the probe are
    on the same periodic grid when the simulation's window is the cell.
    """
    truth = result.ground_truth
    projected = truth["potential"]["slices_vang"].sum(axis=0)
    pixel = np.asarray(truth["potential"]["pixel_size_ang"])
    probe = truth["probe"]["wave"]
    if probe.shape != projected.shape:
        raise ValueError("the probe window must be the specimen cell")
    intensity = np.abs(np.fft.ifftshift(probe)) ** 2  # probe centre moved to index 0
    phase = interaction_constant(ENERGY_EV) * projected
    blurred = np.fft.ifft2(np.fft.fft2(phase) * np.fft.fft2(intensity)).real
    coordinates = (np.asarray(positions_ang) / pixel).reshape(-1, 2).T
    values = ndimage.map_coordinates(blurred, coordinates, order=1, mode="grid-wrap")
    return values.reshape(np.shape(positions_ang)[:-1])
