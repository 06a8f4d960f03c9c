"""Benchmark datasets, simulated once and cached under ``benchmarks/.cache/``.

The PtyRAD case of issue 10: 256 patterns (16 × 16 scan) of 98 × 98 pixels, reconstructed
with 20 slices and batch 32. Here it is SrTiO3 [001], 10 unit cells (39 Å) thick, 300 kV,
20 mrad, 50 Å underfocus, 0.4 Å steps, 1e6 e/Å², simulated by ptyscope and cropped to the
98 × 98 pixels inside the simulator's band limit (0.159 Å object pixels).

``case_files()`` writes it twice: ``srtio3_16x16_98px.h5`` (ptyscope's format, read by
``ptyscope reconstruct``) and ``ptyrad_case.npz`` (plain arrays for the peers' runners,
keys documented in ``benchmarks/peers/README.md``; ``ptyscope_file`` names the twin).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
DETECTOR = 98
SLICES = 20
SLICE_THICKNESS_ANG = 39.05 / SLICES


def simulated(scan: int = 16, cache: Path = CACHE) -> Path:
    """The simulated SrTiO3 dataset with a ``scan`` × ``scan`` raster, cached."""
    from ptyscope.io.datafile import write_dataset
    from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG as A
    from ptyscope.simulation.specimens import srtio3_slab
    from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings, simulate_4dstem

    path = cache / f"srtio3_{scan}x{scan}_{DETECTOR}px.h5"
    if path.exists():
        return path
    cells = 7 + (scan * 0.4) // A  # lateral period: the scan plus the 14.7 Å window
    result = simulate_4dstem(
        srtio3_slab((int(cells), int(cells)), 10 * A),
        ProbeSettings(300e3, 20.0, {"defocus": 50.0}),
        ScanSettings((scan, scan), (0.4, 0.4), origin_ang=(7.0, 7.0)),
        sampling_ang=0.1,
        slice_thickness_ang=SLICE_THICKNESS_ANG,
        window_ang=14.7,
        dose_e_per_ang2=1e6,
        seed=1,
    )
    full = result.dataset
    ny, nx = full.detector_shape
    y0, x0 = ny // 2 - DETECTOR // 2, nx // 2 - DETECTOR // 2
    cropped = full.crop_detector(slice(y0, y0 + DETECTOR), slice(x0, x0 + DETECTOR))
    cache.mkdir(parents=True, exist_ok=True)
    write_dataset(path, cropped.to_memory())
    return path


def variant(scan: int, detector: int, cache: Path = CACHE) -> Path:
    """The case with a ``scan`` × ``scan`` raster and a ``detector``² detector (cropped to
    fewer pixels, zero-padded to more), for the scaling benchmark."""
    from ptyscope.data.readers import read_4dstem
    from ptyscope.io.datafile import write_dataset

    path = cache / f"srtio3_{scan}x{scan}_{detector}px.h5"
    if path.exists():
        return path
    dataset = read_4dstem(simulated(16 if scan <= 16 else scan, cache)).to_memory()
    dataset = dataset.crop_scan(slice(0, scan), slice(0, scan))
    if detector < DETECTOR:
        low = DETECTOR // 2 - detector // 2
        dataset = dataset.crop_detector(slice(low, low + detector), slice(low, low + detector))
    elif detector > DETECTOR:
        dataset = dataset.pad_detector((detector, detector))
    write_dataset(path, dataset)
    return path


def case_files(cache: Path = CACHE) -> tuple[Path, Path]:
    """(the ptyscope file, ``ptyrad_case.npz``): the PtyRAD case in both forms."""
    from ptyscope.data.readers import read_4dstem
    from ptyscope.reconstruction.setup import prepare

    h5 = simulated(16, cache)
    npz = cache / "ptyrad_case.npz"
    if not npz.exists():
        dataset = read_4dstem(h5).to_memory()
        cal = dataset.calibration
        assert cal.semiangle_mrad is not None
        setup = prepare(dataset, num_slices=1, slice_thickness_ang=1.0)
        intensities = np.asarray(dataset.data, dtype=np.float32).reshape(-1, DETECTOR, DETECTOR)
        np.savez(
            npz,
            intensities=intensities,
            positions_px=setup.params.positions_px().detach().numpy().astype(np.float32),
            object_shape=np.asarray(setup.params.object.shape[-2:]),
            scan_shape=np.asarray(dataset.scan_shape),
            energy_ev=cal.energy_ev,
            semiangle_mrad=cal.semiangle_mrad,
            defocus_ang=50.0,
            pixel_ang=setup.pixel_size_ang[0],
            num_slices=SLICES,
            slice_thickness_ang=SLICE_THICKNESS_ANG,
            scan_step_ang=cal.scan_step_ang[0],
            ptyscope_file=h5.name,
        )
    return h5, npz


def ptyscope_run(
    npz: Path,
    *,
    modes: int = 1,
    states: int = 1,
    slices: int | None = None,
    batch: int | None = 32,
    iterations: int = 5,
    chunk: int | None = None,
    data: Path | None = None,
    device: str = "cpu",
) -> Any:
    """A ``ReconstructionRun`` of the case, built the way ``ptyscope reconstruct`` builds it.

    The settings the peers' runners use: Adam on the object and the probe from the first
    iteration, amplitude loss, random mini-batches (``batch=None``: full batch), the
    probe-power and amplitude ≤ 1 constraints and the NaN guard; no position, tilt or
    thickness fitting; no checkpoints. ``slices`` other than 20 keep the total thickness.
    ``chunk``: ``optimization.chunk_size`` (``None``: "auto", the default of a config).
    ``data``: another dataset of the same specimen (see :func:`variant`); ``device``: as
    ``optimization.device`` (``"cuda"`` for the GPU figures).
    """
    from ptyscope.config import ReconstructionConfig
    from ptyscope.reconstruction.run import build_run

    case = np.load(npz)
    total = float(case["slice_thickness_ang"]) * int(case["num_slices"])
    slices = slices or int(case["num_slices"])
    config = ReconstructionConfig.model_validate(
        {
            "data": {"path": str(data or npz.parent / str(case["ptyscope_file"]))},
            "probe": {"modes": modes, "defocus_ang": float(case["defocus_ang"]), "start": 0},
            "object": {"slices": slices, "states": states, "slice_thickness_ang": total / slices},
            "propagator": {"fit_tilt": "off"},
            "optimization": {
                "iterations": iterations,
                "batch_size": "full" if batch is None else batch,
                "chunk_size": "auto" if chunk is None else chunk,
                "checkpoint_every": None,
                "device": device,
            },
        }
    )
    return build_run(config)


if __name__ == "__main__":
    for made in case_files():
        print(made)
