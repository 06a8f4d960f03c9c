#!/usr/bin/env python
"""Run PtyRAD (the peer tool) on a ptyscope benchmark case and print one JSON line.

Runs INSIDE PtyRAD's own environment (see setup_ptyrad.sh):

    benchmarks/.venvs/ptyrad/bin/python benchmarks/peers/run_ptyrad.py CASE.npz \
        --iterations K --modes M [--batch 32] [--threads N]

CASE.npz holds ``intensities`` (N, ny, nx; zero frequency at (ny//2, nx//2)),
``positions_px`` (N, 2; (y, x) probe centres in object pixels, raster order),
``scan_shape``, ``energy_ev``, ``semiangle_mrad``, ``defocus_ang`` (positive =
underfocus), ``pixel_ang``, ``num_slices``, ``slice_thickness_ang`` and
``scan_step_ang``.

PtyRAD's own reconstruction loop (``ptyrad.solver.reconstruction.recon_loop``)
is driven unchanged; the runner only wraps its per-iteration function
``recon_step`` with a wall-clock timer, so every iteration (all mini-batches,
the optimizer steps and the iteration-wise constraints) is timed on its own.
Saving, figures and torch.compile are off.  Everything PtyRAD prints or logs
goes to stderr; stdout carries only the JSON line.  See README.md here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import time


def _status_mib(field: str) -> float:
    """Read a memory field (VmRSS, VmHWM) of /proc/self/status, in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("case", help="benchmark case .npz written by ptyscope")
    p.add_argument(
        "--iterations", type=int, required=True, help="number of full passes over the data"
    )
    p.add_argument("--modes", type=int, required=True, help="number of mixed-state probe modes")
    p.add_argument("--batch", type=int, default=32, help="mini-batch size (default 32)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own default)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for PtyRAD's batching and init")
    p.add_argument("--verbose", action="store_true", help="show PtyRAD's INFO log on stderr")
    return p.parse_args(argv)


def _build_params(case, iterations, modes, batch, seed):
    """PtyRAD params for the case: its defaults, with the benchmark's choices."""
    import numpy as np

    intensities = np.asarray(case["intensities"], dtype=np.float32)
    n, ny, nx = intensities.shape
    if ny != nx:
        raise SystemExit(f"PtyRAD needs square patterns, got {ny}x{nx}")
    scan_slow, scan_fast = (int(v) for v in np.asarray(case["scan_shape"]).ravel()[:2])
    if scan_slow * scan_fast != n:
        raise SystemExit(f"scan_shape {scan_slow}x{scan_fast} does not match {n} patterns")

    # Positions: ptyscope gives probe centres; PtyRAD wants the top-left corner
    # of the probe window on its object canvas (the probe is centred at
    # Npix//2 of its window).  PtyRAD sizes its canvas itself
    # (1.2 * (scan extent + window)) and, for its own simulated raster scans,
    # centres the scan on it; do the same here so the window never leaves it.
    centres = np.asarray(case["positions_px"], dtype=np.float64)
    corners = centres - ny // 2
    extent = (1.2 * np.ceil(corners.max(0) - corners.min(0) + np.array([ny, nx]))).astype(int)
    corners = corners - corners.mean(0) + (extent // 2 - np.array([ny, nx]) // 2)

    init_params = {
        "random_seed": seed,
        "probe_illum_type": "electron",
        "probe_kv": float(case["energy_ev"]) / 1e3,
        "probe_conv_angle": float(case["semiangle_mrad"]),
        # PtyRAD's 'defocus' alias: positive = underfocus (C10 = -defocus), as in ptyscope.
        "probe_aberrations": {"defocus": float(case["defocus_ang"])},
        "meas_Npix": int(ny),
        "pos_N_scans": int(n),
        "pos_N_scan_slow": scan_slow,
        "pos_N_scan_fast": scan_fast,
        "pos_scan_step_size": float(case["scan_step_ang"]),
        # Use the case's real-space pixel exactly instead of PtyRAD's default
        # 'fitRBF' (fit the bright-field disc radius to infer it).
        "meas_calibration": {"mode": "dx", "value": float(case["pixel_ang"])},
        "probe_pmode_max": int(modes),
        "obj_omode_max": 1,
        "obj_Nlayer": int(case["num_slices"]),
        "obj_slice_thickness": float(case["slice_thickness_ang"]),
        "meas_flipT": None,  # same orientation as PtyRAD's forward model
        # PtyRAD's default jitters the starting positions by 0.15 px; use them as given.
        "pos_scan_rand_std": None,
        "meas_source": "custom",
        "meas_params": intensities,  # in-memory arrays, as PtyRAD documents for 'custom'
        "probe_source": "simu",
        "pos_source": "custom",
        "pos_params": corners.astype(np.float32),
        "obj_source": "simu",
    }
    model_params = {
        "optimizer_params": {"name": "Adam", "configs": {}},
        # Object amplitude, phase and probe at PtyRAD's default learning rates;
        # no position, tilt or thickness fitting.
        "update_params": {
            "obja": {"start_iter": 1, "lr": 5.0e-4},
            "objp": {"start_iter": 1, "lr": 5.0e-4},
            "probe": {"start_iter": 1, "lr": 1.0e-4},
            "probe_pos_shifts": {"start_iter": None, "lr": 0.0},
            "obj_tilts": {"start_iter": None, "lr": 0.0},
            "slice_thickness": {"start_iter": None, "lr": 0.0},
        },
    }
    recon_params = {
        "NITER": int(iterations),
        "BATCH_SIZE": {"size": int(batch), "grad_accumulation": 1},
        "GROUP_MODE": "random",  # PtyRAD's default
        "SAVE_ITERS": None,  # no output folder, no saving, no figures
        "copy_params": False,
        "compiler_configs": {"enable": False},  # PtyRAD's default
        "convergence_monitor": None,
    }
    from ptyrad.params.parser import normalize_probe_params
    from ptyrad.params.ptyrad_params import PtyRADParams

    raw = {
        "init_params": normalize_probe_params(init_params),
        "model_params": model_params,
        "recon_params": recon_params,
        # loss_params and constraint_params: PtyRAD's defaults, untouched.
    }
    params = PtyRADParams(**raw).model_dump()
    params["params_path"] = None
    return params, corners


def main(argv=None) -> int:
    args = _parse_args(argv)
    out = sys.stdout
    load_start = os.getloadavg()

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(message)s",
    )
    with contextlib.redirect_stdout(sys.stderr):
        import numpy as np
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)

        import ptyrad
        from ptyrad.core import constraints as constraints_mod
        from ptyrad.runtime.device import set_gpu_device
        from ptyrad.solver import PtyRADSolver
        from ptyrad.solver import reconstruction as recon_mod

        with np.load(args.case) as fh:
            case = {k: fh[k] for k in fh.files}
        params, corners = _build_params(case, args.iterations, args.modes, args.batch, args.seed)

        device = set_gpu_device("cpu")  # what PtyRAD does on a machine without a GPU
        solver = PtyRADSolver(params, device=device, seed=args.seed)

        # Per-iteration timing: wrap PtyRAD's own per-iteration function.
        iter_seconds: list[float] = []
        iter_cpu_seconds: list[float] = []
        constraint_seconds: list[float] = []
        rss_before: list[float] = []
        original_step = recon_mod.recon_step

        def timed_step(*a, **kw):
            if not rss_before:
                rss_before.append(_status_mib("VmRSS"))
            c0, t0 = time.process_time(), time.perf_counter()
            result = original_step(*a, **kw)
            iter_seconds.append(time.perf_counter() - t0)
            iter_cpu_seconds.append(time.process_time() - c0)
            return result

        original_constraint = constraints_mod.CombinedConstraint.forward

        def timed_constraint(self, model, niter):
            t0 = time.perf_counter()
            result = original_constraint(self, model, niter)
            constraint_seconds.append(time.perf_counter() - t0)
            return result

        recon_mod.recon_step = timed_step
        constraints_mod.CombinedConstraint.forward = timed_constraint
        try:
            solver.reconstruct()
        finally:
            recon_mod.recon_step = original_step
            constraints_mod.CombinedConstraint.forward = original_constraint

        model = solver.reconstruct_results
        peak_rss = _status_mib("VmHWM")
        final_loss = float(model.loss_iters[-1][1]) if model.loss_iters else None
        constraints_on = sorted(
            name
            for name, cfg in params["constraint_params"].items()
            if cfg.get("start_iter") is not None
        )
        losses_on = sorted(name for name, cfg in params["loss_params"].items() if cfg.get("state"))
        batches = len(corners) // args.batch
        settings = {
            "case": os.path.abspath(args.case),
            "iterations": args.iterations,
            "probe_modes": args.modes,
            "object_modes": 1,
            "batch_size": args.batch,
            "batches_per_iteration": batches,
            "group_mode": params["recon_params"]["GROUP_MODE"],
            "optimizer": "Adam",
            "learning_rates": {
                k: v["lr"] for k, v in params["model_params"]["update_params"].items() if v["lr"]
            },
            "optimised": [
                k
                for k, v in params["model_params"]["update_params"].items()
                if v["start_iter"] is not None
            ],
            "losses": {k: params["loss_params"][k] for k in losses_on},
            "constraints_on": constraints_on,
            "detector_blur_std": params["model_params"]["detector_blur_std"],
            "meas_normalization": params["init_params"]["meas_normalization"],
            "probe_normalization": params["init_params"]["probe_normalization"],
            "dtype": "float32/complex64",
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "torch_compile": False,
            "saving_and_figures": False,
            "object_shape": list(model.opt_objp.shape),
            "probe_shape": list(model.get_complex_probe_view().shape),
            "pixel_ang": float(model.dx),
            "slices": int(case["num_slices"]),
            "slice_thickness_ang": float(case["slice_thickness_ang"]),
            "timing": "wall clock of each call of PtyRAD's recon_step (all mini-batches, "
            "Adam steps and iteration-wise constraints of one iteration)",
            "ptyrad_iter_times": [float(t) for t in model.iter_times],
            # CPU time of this process (all threads) per iteration: less sensitive
            # than wall time to other jobs on the machine, but includes spin-waits.
            "cpu_seconds_per_iteration": iter_cpu_seconds,
            "constraint_seconds_per_iteration": constraint_seconds,
            "final_loss_definition": (
                "PtyRAD's iteration loss: mean over mini-batches of loss_single "
                "(NRMSE of sqrt intensities, normalised by the batch's mean sqrt "
                "measured intensity), accumulated during the last iteration"
            ),
            "loadavg_start": list(load_start),
            "loadavg_end": list(os.getloadavg()),
            "python": platform.python_version(),
        }

    record = {
        "tool": "ptyrad",
        "version": ptyrad.__version__,
        "seconds_per_iteration": iter_seconds,
        "peak_rss_mib": round(peak_rss, 1),
        "rss_before_iterations_mib": round(rss_before[0], 1) if rss_before else None,
        "final_loss": final_loss,
        "settings": settings,
    }
    out.write(json.dumps(record) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
