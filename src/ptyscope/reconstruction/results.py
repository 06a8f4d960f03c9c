"""The reconstruction result file (HDF5), written atomically.

Layout::

    object                 complex64 (states, slices, ny, nx), attrs pixel_size_ang (y, x)
                           and origin_ang: (y, x) [Å] of pixel (0, 0) in the scan frame
    probe                  complex64 (modes, ny, nx), attr pixel_size_ang
    positions_ang          float64 (N, 2), (y, x), final; nominal_positions_ang likewise
    state_weights          float32 (states,)
    tilt_map_mrad          float64 (scan_y, scan_x, 2), (y, x), when a tilt map is used
    history/               loss, tilt_x_mrad, tilt_y_mrad, slice_thickness_ang, seconds
                           (iterations,); probe_mode_power (iterations, modes): the power
                           of each orthogonalised probe mode, strongest first (absent
                           in results written before it was recorded)
    events/                iteration (int), kind, message (str): numerical rollbacks and
                           divergence reports, in order (empty when the run was clean)
    config                 attr text: the TOML config
    provenance             attrs seed, deterministic, threads, processes (torchrun
                           world size), python, platform, the versions of ptyscope,
                           torch, numpy, scipy, h5py, and fft (the CPU transforms:
                           "torch" or "fftw <version> (<planner>[, wisdom
                           <file>])"): what a bit-identical rerun needs
    /                      attrs tilt_x_mrad, tilt_y_mrad, slice_thickness_ang,
                           total_thickness_ang, energy_ev, semiangle_mrad, iterations,
                           kept_iteration (the updates the written parameters have had),
                           device, software, format = "ptyscope-result"
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict

import h5py
import numpy as np

from ptyscope import __version__
from ptyscope.io.atomic import atomic_path
from ptyscope.physics import fft_backend

from .engine import Engine
from .setup import ReconstructionSetup

__all__ = ["RESULT_FORMAT", "provenance", "write_result"]

RESULT_FORMAT = "ptyscope-result"


def provenance(seed: int, deterministic: bool) -> dict[str, str | int | bool]:
    """What produced a result: the seed, the thread count and the software versions."""
    import scipy
    import torch

    return {
        "seed": int(seed),
        "deterministic": bool(deterministic),
        "threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "ptyscope": __version__,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "h5py": h5py.__version__,
        "fft": fft_backend.describe(),
    }


def write_result(
    path: str | os.PathLike[str],
    setup: ReconstructionSetup,
    engine: Engine,
    *,
    energy_ev: float,
    semiangle_mrad: float,
    config_text: str | None = None,
    seed: int = 0,
    deterministic: bool = False,
    kept_iteration: int | None = None,
) -> None:
    """Write the state of a reconstruction as the result file; ``kept_iteration``: the
    updates the written parameters have had (default: all, ``engine.iteration``; fewer
    when the run keeps those of its lowest loss, :meth:`Engine.best_parameters`)."""
    params = setup.params
    tilt = params.tilt.detach().cpu().double().numpy()
    thickness = float(params.thickness.detach())
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs["format"] = RESULT_FORMAT
        handle.attrs["software"] = f"ptyscope {__version__}"
        obj = handle.create_dataset(
            "object", data=params.object.detach().cpu().numpy().astype(np.complex64)
        )
        obj.attrs["pixel_size_ang"] = np.asarray(setup.pixel_size_ang)
        obj.attrs["origin_ang"] = np.asarray(setup.origin_ang)  # (y, x) of pixel (0, 0)
        probe = handle.create_dataset(
            "probe", data=params.probe.detach().cpu().numpy().astype(np.complex64)
        )
        probe.attrs["pixel_size_ang"] = np.asarray(setup.pixel_size_ang)
        handle.create_dataset("positions_ang", data=setup.positions_ang())
        nominal = params.nominal_positions_px.detach().cpu().double().numpy()
        handle.create_dataset(
            "nominal_positions_ang",
            data=np.asarray(setup.origin_ang) + nominal * np.asarray(setup.pixel_size_ang),
        )
        handle.create_dataset("state_weights", data=params.weights().detach().cpu().numpy())
        mean_tilt = tilt.reshape(-1, 2).mean(axis=0)
        handle.attrs["tilt_y_mrad"] = float(mean_tilt[0])
        handle.attrs["tilt_x_mrad"] = float(mean_tilt[1])
        if tilt.ndim == 2:  # one tilt per position: a map on the scan grid when complete
            shape = (*setup.grid_shape, 2) if setup.grid_shape is not None else tilt.shape
            handle.create_dataset("tilt_map_mrad", data=tilt.reshape(shape))
        handle.attrs["slice_thickness_ang"] = thickness
        handle.attrs["total_thickness_ang"] = thickness * params.num_slices
        handle.attrs["energy_ev"] = float(energy_ev)
        handle.attrs["semiangle_mrad"] = float(semiangle_mrad)
        handle.attrs["iterations"] = engine.iteration
        handle.attrs["kept_iteration"] = (
            engine.iteration if kept_iteration is None else kept_iteration
        )
        handle.attrs["device"] = str(params.object.device)
        history = handle.create_group("history")
        for key, values in asdict(engine.history).items():
            data = np.asarray(values, dtype=np.float64)
            if key == "probe_mode_power":  # (iterations, modes), also when empty
                data = data.reshape(-1, params.probe.shape[0])
            history.create_dataset(key, data=data)
        events = handle.create_group("events")
        iterations = [event.iteration for event in engine.events]
        events.create_dataset("iteration", data=np.asarray(iterations, dtype=np.int64))
        text = h5py.string_dtype()
        for key in ("kind", "message"):
            values = [getattr(event, key) for event in engine.events]
            events.create_dataset(key, data=np.asarray(values, dtype=object), dtype=text)
        if config_text is not None:
            handle.create_group("config").attrs["text"] = config_text
        origin = handle.create_group("provenance")
        for key, value in provenance(seed, deterministic).items():
            origin.attrs[key] = value
        origin.attrs["processes"] = engine.parallel.world_size
