"""Simulation throughput: ptyscope against abTEM on the same 4D-STEM case (CPU).

SrTiO3 [001] 3x3x21 cells (82 Å), 300 kV, 22 mrad, 240x240 grid (0.049 Å), 42 slices,
one frozen-phonon configuration, 8x8 probe positions, patterns of the full band limit.
Both codes run warm (a first call builds FFT plans and JIT caches), in this process, with
the same number of threads; the ratio within one run is what counts (absolute times on
shared machines are noisy). Each timing is the best of ``--repeats``.

    python benchmarks/simulate_vs_abtem.py [--threads 1] [--positions 8] [--repeats 3]

Needs the optional extra: pip install 'ptyscope[sim]'.
"""

from __future__ import annotations

import argparse
import time

import abtem
import numpy as np
import torch

from ptyscope.simulation.abtem_bridge import ptyscope_tilt_to_abtem
from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG, srtio3_slab
from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings, simulate_4dstem

A = SRTIO3_LATTICE_CONSTANT_ANG
TILT = (0.0, 5.0)  # ptyscope (θ_y, θ_x) [mrad]


def best_of(repeats: int, run: object) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--positions", type=int, default=8, help="scan is N x N")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    specimen = srtio3_slab((3, 3), 21 * A)
    n = args.positions
    scan = ScanSettings((n, n), (A / n, A / n))
    probe = ProbeSettings(300e3, 22.0)

    def ours() -> None:
        simulate_4dstem(
            specimen, probe, scan, sampling_ang=0.05, slice_thickness_ang=A / 2, tilt_mrad=TILT
        )

    abtem.config.set(
        {
            "device": "cpu",
            "precision": "float32",
            "fftw.threads": 1,
            "diagnostics.progress_bar": False,
        }
    )
    positions_xy = scan.positions_ang().reshape(-1, 2)[:, ::-1].copy()

    def reference() -> None:
        potential = abtem.Potential(specimen, gpts=240, slice_thickness=A / 2)
        wave = abtem.Probe(energy=300e3, semiangle_cutoff=22.0, tilt=ptyscope_tilt_to_abtem(TILT))
        wave.grid.match(potential)
        measurement = wave.scan(
            potential,
            scan=abtem.CustomScan(positions_xy),
            detectors=abtem.PixelatedDetector(max_angle="full"),
            lazy=True,
            max_batch=max(1, n * n // args.threads),
        )
        if args.threads == 1:
            np.asarray(measurement.compute(scheduler="synchronous").array)
        else:
            np.asarray(measurement.compute(scheduler="threads", num_workers=args.threads).array)

    ours()
    reference()  # warm-up: FFT plans, numba JIT, caches
    t_ours = best_of(args.repeats, ours)
    t_ref = best_of(args.repeats, reference)
    count = n * n
    print(
        f"case: SrTiO3 3x3x21 cells, 240x240 px, 42 slices, {count} positions, "
        f"{args.threads} thread(s), torch {torch.__version__}, abTEM {abtem.__version__}"
    )
    print(f"ptyscope: {t_ours:7.3f} s  ({t_ours / count * 1e3:6.1f} ms per position)")
    print(f"abTEM:    {t_ref:7.3f} s  ({t_ref / count * 1e3:6.1f} ms per position)")
    print(f"speed-up of ptyscope over abTEM: {t_ref / t_ours:.2f}x")


if __name__ == "__main__":
    main()
