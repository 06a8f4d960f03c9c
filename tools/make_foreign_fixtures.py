#!/usr/bin/env python
"""Write the small PtyRAD and py4DSTEM result files that ``tests/io/test_foreign.py`` reads.

Each fixture is written by the peer package itself, in its own environment, from a tiny
real reconstruction of a synthetic 5 x 5 scan; this script only builds the synthetic data
and calls the package's API. Run it once per package::

    benchmarks/.venvs/ptyrad/bin/python tools/make_foreign_fixtures.py ptyrad
    /tmp/p4venv/bin/python tools/make_foreign_fixtures.py py4dstem

(``benchmarks/peers/setup_ptyrad.sh`` makes the PtyRAD 1.0.0 environment; py4DSTEM pins
numpy < 2, so it needs its own: ``python3.11 -m venv /tmp/p4venv &&
/tmp/p4venv/bin/pip install py4DSTEM``.)

Files written under ``tests/io/fixtures/``:

``ptyrad_model.hdf5``
    PtyRAD's ``model_iter0001.hdf5`` after one iteration started from a given object
    (1 object mode, 2 slices) and probe (2 modes), with learning rates of 1e-9 and
    PtyRAD's default object blurs and position re-centring off, so the saved arrays still
    hold the given values to ~1e-8. To keep it small, the copies of the
    input arrays PtyRAD stores under ``params/init_params`` and the other ``params``
    groups (hyper-tuning, losses, constraints, ...) are left out; everything else is
    copied unchanged.
``py4dstem_singleslice.h5``
    ``py4DSTEM.save`` of a ``SingleslicePtychography`` after one iteration.
``py4dstem_mixed_multislice.h5``
    ``py4DSTEM.save`` of a ``MixedstateMultislicePtychography`` (2 probe modes, 2 slices)
    after one iteration.
``<name>.json``
    What was set: pixel size, energy, slices, modes; for PtyRAD the object value at a
    marked pixel, for py4DSTEM samples of its own ``probe_centered`` and ``object`` views;
    so the tests check values and not only shapes.

Only numpy, h5py and the package under test are needed; nothing of ptyscope is imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "io" / "fixtures"

ENERGY_EV = 80e3
SEMIANGLE_MRAD = 20.0
DEFOCUS_ANG = 40.0  # positive = underfocus
PIXEL_ANG = 0.35  # real-space pixel = 1 / (N_det * dk)
DETECTOR = 24
SCAN = (5, 5)
STEP_ANG = 0.9
SLICE_THICKNESS_ANG = 2.5
#: The marked pixel of the PtyRAD object (slice, y, x) and the phase set there [rad].
MARK = (1, 17, 21)
MARK_PHASE_RAD = 0.4321


def wavelength_ang(energy_ev: float) -> float:
    """Relativistic electron wavelength [Å]."""
    m0c2 = 510998.95  # eV
    hc = 12398.419843320026  # eV·Å
    return hc / np.sqrt(energy_ev * (2 * m0c2 + energy_ev))


def synthetic_probe(n: int = DETECTOR) -> np.ndarray:
    """complex128 (n, n): aperture with defocus, centred at (n//2, n//2), unit power."""
    lam = wavelength_ang(ENERGY_EV)
    k = np.fft.fftfreq(n, PIXEL_ANG)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    k2 = ky**2 + kx**2
    aperture = (np.sqrt(k2) * lam * 1e3 <= SEMIANGLE_MRAD).astype(float)
    chi = np.pi * lam * DEFOCUS_ANG * k2  # χ = -π λ C10 k², C10 = -Δf
    probe = np.fft.fftshift(np.fft.ifft2(aperture * np.exp(-1j * chi)))
    return probe / np.sqrt((np.abs(probe) ** 2).sum())


def synthetic_object(shape: tuple[int, int]) -> np.ndarray:
    """complex128 (ny, nx): a few Gaussian 'atoms' of phase."""
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    phase = np.zeros(shape)
    rng = np.random.default_rng(7)
    for cy, cx in rng.uniform(4, np.array([ny - 4, nx - 4]), size=(12, 2)):
        phase += 0.3 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 1.2**2))
    return np.exp(1j * phase)


def scan_centres_px(origin_px: float) -> np.ndarray:
    """float64 (N, 2): (y, x) probe centres in object pixels, raster order."""
    iy, ix = np.mgrid[0 : SCAN[0], 0 : SCAN[1]]
    step = STEP_ANG / PIXEL_ANG
    return np.stack([iy.ravel(), ix.ravel()], axis=1) * step + origin_px


def patterns(obj: np.ndarray, probe: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """float32 (N, n, n): |FFT(probe · object patch)|², zero frequency at the centre."""
    n = probe.shape[-1]
    out = []
    for cy, cx in np.round(centres).astype(int):
        patch = obj[cy - n // 2 : cy - n // 2 + n, cx - n // 2 : cx - n // 2 + n]
        out.append(np.abs(np.fft.fftshift(np.fft.fft2(probe * patch))) ** 2)
    return (np.asarray(out) * 1e4).astype(np.float32)  # ~1e4 counts per pattern


def write_json(name: str, record: dict) -> None:
    path = FIXTURES / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")


# ---------------------------------------------------------------------------------------
# PtyRAD 1.0.0


#: Dropped from PtyRAD's file to keep the fixture small: the copies of the input arrays
#: that PtyRAD stores in params/init_params, and every params group but init_params.
_PTYRAD_DROPPED = (
    "params/init_params/meas_params",
    "params/init_params/obj_params",
    "params/init_params/probe_params",
)
_PTYRAD_PARAMS_KEPT = ("init_params",)


def _trimmed_copy(source: Path, target: Path) -> None:
    """Copy PtyRAD's HDF5 file without the parts named above (everything else unchanged:
    h5py copies datasets with their dtype, shape and attributes)."""
    import h5py

    def copy(group, into, prefix: str) -> None:
        for key, value in group.attrs.items():
            into.attrs[key] = value
        for key in group:
            path = f"{prefix}{key}"
            if path in _PTYRAD_DROPPED or (prefix == "params/" and key not in _PTYRAD_PARAMS_KEPT):
                continue
            if isinstance(group[key], h5py.Group):
                copy(group[key], into.create_group(key), path + "/")
            else:
                group.copy(group[key], into, key)

    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        copy(src, dst, "")


def make_ptyrad() -> None:
    import ptyrad
    import torch
    from ptyrad.params.parser import normalize_probe_params
    from ptyrad.params.ptyrad_params import PtyRADParams
    from ptyrad.runtime.device import set_gpu_device
    from ptyrad.solver import PtyRADSolver

    torch.set_num_threads(1)
    n = DETECTOR
    probe1 = synthetic_probe()
    # second mode: the probe times a linear ramp, orthogonalised; 10 % of the power
    y = np.arange(n)[:, None] - n // 2
    second = probe1 * y
    second -= (np.vdot(probe1, second)) * probe1
    second *= np.sqrt(0.1 / (np.abs(second) ** 2).sum())
    probe = np.stack([probe1 * np.sqrt(0.9), second]).astype(np.complex64)

    # PtyRAD positions are the top-left corners of the probe windows on its canvas.
    corners = scan_centres_px(0.0) + 6.0
    extent = int(np.ceil(corners.max() + n + 6))
    obj2d = synthetic_object((extent, extent))
    obj = np.stack([obj2d, obj2d * np.exp(0.05j)])[None].astype(np.complex64)  # (1, 2, Ny, Nx)
    slc, my, mx = MARK
    obj[0, slc, my, mx] = np.exp(1j * MARK_PHASE_RAD) * 0.97
    meas = patterns(obj2d, probe1, corners + n // 2)

    init_params = {
        "random_seed": 0,
        "probe_illum_type": "electron",
        "probe_kv": ENERGY_EV / 1e3,
        "probe_conv_angle": SEMIANGLE_MRAD,
        "probe_aberrations": {"defocus": DEFOCUS_ANG},
        "meas_Npix": n,
        "pos_N_scans": SCAN[0] * SCAN[1],
        "pos_N_scan_slow": SCAN[0],
        "pos_N_scan_fast": SCAN[1],
        "pos_scan_step_size": STEP_ANG,
        "meas_calibration": {"mode": "dx", "value": PIXEL_ANG},
        "probe_pmode_max": 2,
        "obj_omode_max": 1,
        "obj_Nlayer": 2,
        "obj_slice_thickness": SLICE_THICKNESS_ANG,
        "meas_flipT": None,
        "pos_scan_rand_std": None,
        "meas_source": "custom",
        "meas_params": meas,
        "probe_source": "custom",
        "probe_params": probe,
        "pos_source": "custom",
        "pos_params": corners.astype(np.float32),
        "obj_source": "custom",
        "obj_params": obj,
    }
    tiny = 1e-9  # one Adam step moves each value by ~1e-9: the given arrays survive
    update = {
        "obja": {"start_iter": 1, "lr": tiny},
        "objp": {"start_iter": 1, "lr": tiny},
        "probe": {"start_iter": 1, "lr": tiny},
        "probe_pos_shifts": {"start_iter": None, "lr": 0.0},
        "obj_tilts": {"start_iter": None, "lr": 0.0},
        "slice_thickness": {"start_iter": None, "lr": 0.0},
    }
    with tempfile.TemporaryDirectory() as tmp:
        recon_params = {
            "NITER": 1,
            "BATCH_SIZE": {"size": 25, "grad_accumulation": 1},
            "SAVE_ITERS": 1,
            "output_dir": tmp,
            "recon_dir_affixes": [],
            "prefix_time": False,
            "save_result": ["model"],
            "selected_figs": [],
            "copy_params": False,
            "compiler_configs": {"enable": False},
            "convergence_monitor": None,
        }
        raw = {
            "init_params": normalize_probe_params(init_params),
            "model_params": {
                "optimizer_params": {"name": "Adam", "configs": {}},
                "update_params": update,
            },
            "recon_params": recon_params,
            # PtyRAD's defaults blur the object (lateral and along z) and re-centre the
            # positions after every iteration; off, so the saved arrays are the given ones.
            "constraint_params": {
                "obj_rblur": {"start_iter": None},
                "obj_zblur": {"start_iter": None},
                "pos_recenter": {"start_iter": None},
            },
        }
        params = PtyRADParams(**raw).model_dump()
        params["params_path"] = None
        solver = PtyRADSolver(params, device=set_gpu_device("cpu"), seed=0)
        solver.reconstruct()
        found = sorted(Path(tmp).rglob("model*.hdf5"))
        if len(found) != 1:
            raise SystemExit(f"expected one model*.hdf5 from PtyRAD, found {found}")
        target = FIXTURES / "ptyrad_model.hdf5"
        _trimmed_copy(found[0], target)
        print(
            f"wrote {target} ({target.stat().st_size} bytes; PtyRAD's "
            f"{found[0].name} is {found[0].stat().st_size} bytes)"
        )
    write_json(
        "ptyrad_model",
        {
            "package": f"ptyrad {ptyrad.__version__}",
            "pixel_size_ang": [PIXEL_ANG, PIXEL_ANG],
            "energy_ev": ENERGY_EV,
            "probe_modes": 2,
            "probe_window": [n, n],
            "probe_mode_power": [0.9, 0.1],
            "object_shape": list(obj.shape),
            "slice_thickness_ang": SLICE_THICKNESS_ANG,
            "mark_index": [0, *MARK],
            "mark_phase_rad": MARK_PHASE_RAD,
            "mark_amplitude": 0.97,
            "probe_centres_px": (corners + n // 2).tolist(),
        },
    )


# ---------------------------------------------------------------------------------------
# py4DSTEM


def make_py4dstem() -> None:
    import py4DSTEM
    from py4DSTEM.process.phase import MixedstateMultislicePtychography, SingleslicePtychography

    n = DETECTOR
    probe = synthetic_probe()
    centres = scan_centres_px(n / 2 + 4.0)
    obj = synthetic_object((int(centres.max()) + n // 2 + 8,) * 2)
    meas = patterns(obj, probe, centres).reshape(*SCAN, n, n)
    datacube = py4DSTEM.DataCube(data=meas)
    datacube.calibration.set_R_pixel_size(STEP_ANG)
    datacube.calibration.set_R_pixel_units("A")
    datacube.calibration.set_Q_pixel_size(1.0 / (n * PIXEL_ANG))
    datacube.calibration.set_Q_pixel_units("A^-1")
    common = {
        "energy": ENERGY_EV,
        "semiangle_cutoff": SEMIANGLE_MRAD,
        "defocus": DEFOCUS_ANG,
        "device": "cpu",
        "verbose": False,
    }
    preprocess = {
        "plot_center_of_mass": False,
        "plot_rotation": False,
        "plot_probe_overlaps": False,
        "force_com_rotation": 0.0,
        "force_com_transpose": False,
        "fit_function": "constant",
    }
    runs = {
        "py4dstem_singleslice": SingleslicePtychography(datacube=datacube, **common),
        "py4dstem_mixed_multislice": MixedstateMultislicePtychography(
            datacube=datacube,
            num_probes=2,
            num_slices=2,
            slice_thicknesses=SLICE_THICKNESS_ANG,
            **common,
        ),
    }
    for name, ptycho in runs.items():
        ptycho.preprocess(**preprocess)
        ptycho.reconstruct(num_iter=1, progress_bar=False, store_iterations=False)
        target = FIXTURES / f"{name}.h5"
        target.unlink(missing_ok=True)
        py4DSTEM.save(str(target), ptycho, mode="o")
        print(f"wrote {target} ({target.stat().st_size} bytes)")
        # py4DSTEM's own views, sampled, for the reader to match: its centred probe (unit
        # total power) and its object, both at a few pixels.
        centred = np.asarray(ptycho.probe_centered).reshape(-1, n, n)
        centred = centred / np.sqrt((np.abs(centred) ** 2).sum())
        obj_view = np.asarray(ptycho.object).reshape(-1, *np.shape(ptycho.object)[-2:])
        pixels = [[12, 12], [10, 15], [7, 3]]
        write_json(
            name,
            {
                "package": f"py4DSTEM {py4DSTEM.__version__}",
                "class": type(ptycho).__name__,
                "pixel_size_ang": [float(s) for s in ptycho.sampling],
                "energy_ev": ENERGY_EV,
                "probe_modes": 2 if "mixed" in name else 1,
                "probe_window": [n, n],
                "slices": 2 if "multislice" in name else 1,
                "slice_thickness_ang": SLICE_THICKNESS_ANG if "multislice" in name else None,
                "object_shape": list(np.shape(ptycho._object)),
                "positions_px": np.asarray(ptycho._positions_px).tolist(),
                "sample_pixels": pixels,
                "probe_centered_samples": [
                    [[float(v.real), float(v.imag)] for v in centred[:, y, x]] for y, x in pixels
                ],
                "object_samples": [
                    [[float(v.real), float(v.imag)] for v in obj_view[:, y, x]] for y, x in pixels
                ],
            },
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", choices=("ptyrad", "py4dstem"))
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    {"ptyrad": make_ptyrad, "py4dstem": make_py4dstem}[args.package]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
