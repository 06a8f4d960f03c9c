"""Bridge to abTEM (optional extra ``ptyscope[sim]``): the same specimen and parameters
through the field's reference simulator, returned in ptyscope's format.

All conversions between abTEM's conventions and ptyscope's live here, and only here
(tested in ``tests/simulation/test_abtem_bridge.py``; measured in abTEM 1.0.11 source):

* **Axes.** abTEM arrays are ``(x, y)``: potentials ``(slices, x, y)``, waves
  ``(..., x, y)``, diffraction patterns ``(..., k_x, k_y)``, grid scans
  ``(scan_x, scan_y, ...)``. ptyscope's are ``(y, x)``: swap the last two axes (and the
  two scan axes). Positions are given to abTEM as (x, y) pairs.
* **Tilt.** abTEM's ``Probe(tilt=(t_x, t_y))`` [mrad] enters only the propagator, as
  exp(−2πi Δz (k_x tan t_x + k_y tan t_y)); ptyscope's is exp(+2πi Δz (k_x tan θ_x +
  k_y tan θ_y)) (Sha et al. 2022, Eq. 3). Hence θ_x = −t_x and θ_y = −t_y, and the pair
  order flips: ptyscope (θ_y, θ_x) = (−t_y, −t_x).
* **Grid.** abTEM is given ptyscope's grid (``gpts`` of :func:`specimen_grid`), so both
  codes sample the same cell with the same pixels and the patterns share one calibration.
* **Detector.** ``PixelatedDetector(max_angle="full")`` returns the whole pattern (zero
  frequency at index n//2, like ptyscope); ptyscope then crops and bins it exactly as its
  own simulator does.

abTEM also band-limits to 2/3 of Nyquist (with a small cosine taper), uses a soft probe
aperture like ptyscope's, places atoms by bilinear interpolation of delta functions (exact
only for atoms on pixels) and multiplies the potential by a pixel sinc correction; these
are the residual differences measured by ``validation/simulator_vs_abtem.py``.
"""

from __future__ import annotations

from typing import Any

import ase
import numpy as np
import torch

from ptyscope.data.dataset import Dataset4D

from .potential import specimen_grid
from .stem4d import (
    DetectorSettings,
    ProbeSettings,
    ScanSettings,
    SimulationResult,
    detector_crop,
)

__all__ = [
    "abtem_patterns_to_ptyscope",
    "abtem_tilt_to_ptyscope",
    "ptyscope_tilt_to_abtem",
    "simulate_4dstem_abtem",
]

#: Aberrations passed to abTEM (round ones only; the angle conventions of the others are
#: not yet pinned by a test).
_ROUND_ABERRATIONS = ("defocus", "C10", "C30", "C50", "Cs", "C5")


def ptyscope_tilt_to_abtem(tilt_mrad: tuple[float, float]) -> tuple[float, float]:
    """ptyscope (θ_y, θ_x) [mrad] -> abTEM ``tilt=(t_x, t_y)`` [mrad]."""
    theta_y, theta_x = (float(v) for v in tilt_mrad)
    return -theta_x, -theta_y


def abtem_tilt_to_ptyscope(tilt: tuple[float, float]) -> tuple[float, float]:
    """abTEM ``tilt=(t_x, t_y)`` [mrad] -> ptyscope (θ_y, θ_x) [mrad]."""
    t_x, t_y = (float(v) for v in tilt)
    return -t_y, -t_x


def abtem_patterns_to_ptyscope(patterns: np.ndarray) -> np.ndarray:
    """abTEM diffraction patterns (..., k_x, k_y) -> ptyscope (..., k_y, k_x).

    For a grid scan (scan_x, scan_y, k_x, k_y) also swap the scan axes.
    """
    swapped = np.swapaxes(np.asarray(patterns), -1, -2)
    if swapped.ndim == 4:
        swapped = np.swapaxes(swapped, 0, 1)
    return swapped


def _import_abtem() -> Any:
    try:
        import abtem
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "the abTEM bridge needs abTEM: pip install 'ptyscope[sim]' (abtem>=1.0,<1.1)"
        ) from None
    return abtem


def simulate_4dstem_abtem(
    atoms: ase.Atoms,
    probe: ProbeSettings,
    scan: ScanSettings,
    *,
    sampling_ang: float = 0.05,
    slice_thickness_ang: float = 2.0,
    tilt_mrad: tuple[float, float] = (0.0, 0.0),
    displacements_ang: np.ndarray | None = None,
    detector: DetectorSettings | None = None,
    precision: str = "float32",
) -> SimulationResult:
    """Simulate with abTEM and return the data in ptyscope's format.

    Parameters mean what they mean in :func:`ptyscope.simulation.simulate_4dstem`; the
    probe window is the whole cell and the band limit is abTEM's (2/3 of Nyquist). Frozen
    phonon configurations are run one by one and averaged. abTEM runs on the CPU in the
    calling thread (dask's synchronous scheduler).
    """
    abtem = _import_abtem()
    detector = detector or DetectorSettings()
    unsupported = sorted(set(probe.aberrations) - set(_ROUND_ABERRATIONS))
    if unsupported:
        raise ValueError(
            f"aberrations {unsupported} are not mapped to abTEM; the bridge passes "
            f"{list(_ROUND_ABERRATIONS)}"
        )
    abtem.config.set({"device": "cpu", "precision": precision, "diagnostics.progress_bar": False})
    grid = specimen_grid(atoms, sampling_ang)
    positions_yx = scan.positions_ang()
    scan_shape = positions_yx.shape[:2]
    positions_xy = positions_yx.reshape(-1, 2)[:, ::-1].copy()
    configs = [None] if displacements_ang is None else list(np.asarray(displacements_ang))
    crop = detector_crop(grid, probe.energy_ev, detector, 2.0 / 3.0)
    aberrations = dict(probe.aberrations)
    defocus = float(aberrations.pop("defocus", 0.0))
    total = None
    for config in configs:
        specimen = atoms.copy()
        if config is not None:
            specimen.positions = specimen.positions + config
        potential = abtem.Potential(
            specimen,
            gpts=(grid.shape[1], grid.shape[0]),  # abTEM gpts are (x, y)
            slice_thickness=slice_thickness_ang,
        )
        abtem_probe = abtem.Probe(
            energy=probe.energy_ev,
            semiangle_cutoff=probe.semiangle_mrad,
            defocus=defocus,
            tilt=ptyscope_tilt_to_abtem(tilt_mrad),
            **aberrations,
        )
        abtem_probe.grid.match(potential)
        measurement = abtem_probe.scan(
            potential,
            scan=abtem.CustomScan(positions_xy),
            detectors=abtem.PixelatedDetector(max_angle="full"),
            lazy=True,
        )
        patterns = np.asarray(measurement.compute(scheduler="synchronous").array)
        patterns = abtem_patterns_to_ptyscope(patterns.reshape(-1, *patterns.shape[-2:]))
        total = patterns.astype(np.float64) if total is None else total + patterns
    assert total is not None
    kept = crop.apply(torch.as_tensor(total / len(configs))).numpy().astype(np.float32)
    data = kept.reshape(*scan_shape, *kept.shape[1:])
    calibration = crop.calibration(probe, scan)
    dataset = Dataset4D(
        data,
        calibration,
        positions_yx,
        metadata={"source": f"abTEM {abtem.__version__} via ptyscope.simulation.abtem_bridge"},
    )
    truth: dict[str, Any] = {
        "atoms": {
            "positions_ang": np.asarray(atoms.positions),
            "numbers": np.asarray(atoms.numbers),
            "cell_ang": np.asarray(atoms.cell[:]),
        },
        "tilt_mrad": np.asarray(tilt_mrad, dtype=np.float64),
        "abtem_tilt_mrad_xy": np.asarray(ptyscope_tilt_to_abtem(tilt_mrad)),
        "frozen_phonon_configs": len(configs),
    }
    if displacements_ang is not None:
        truth["displacements_ang"] = np.asarray(displacements_ang)
    return SimulationResult(dataset, truth)
