"""How close is an iteration to the FFT bound?

A multislice iteration is bound by its FFTs. For B patterns, M probe modes, S object
states and L slices the model needs, per chunk of B patterns (a batch is split into the
engine's chunks, ``ptyscope.reconstruction.chunking``):

    forward:   2(L−1)·B·S·M  (propagate: F, then F⁻¹ after the propagator)
               B·S·M         (far field)
               M + B·M       (sub-pixel probe shift: F of the probe, F⁻¹ per position)
    backward:  the same again (the adjoint of every transform in the chain)
               + (L−1)·B·S·M when the propagator (tilt, thickness) is fitted

This script counts the transforms an iteration actually performs (``torch.fft``'s from
the PyTorch profiler, FFTW's from ``ptyscope.physics.fft_backend.fftw_log``: the batch of
every FFT call), checks them against that formula, times a batched FFT of each shape it
saw in a tight loop with the library that did it (the fastest this machine does that
transform), and reports the bound (count × time per transform) as a fraction of the
measured iteration time. "FFT inside" is the time the iteration spent in its transforms:
FFTW's timed during the measured iterations, ``torch.fft``'s from the profiled one (the
profiler inflates it).

    python benchmarks/fft_bound.py                    # the PtyRAD case, 1 and 4 modes
    python benchmarks/fft_bound.py --modes 1 --threads 2 --iterations 5
    PTYSCOPE_FFTW_PLANNER=patient python benchmarks/fft_bound.py  # FFTW's fastest plans
    PTYSCOPE_FFT=torch python benchmarks/fft_bound.py  # torch's (MKL) transforms
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ptyscope.physics import fft_backend
from ptyscope.reconstruction.chunking import chunk_sizes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import case_files, ptyscope_run


def expected_transforms(
    patterns: int,
    batch: int,
    chunk: int,
    modes: int,
    states: int,
    slices: int,
    fitted_propagator: bool,
) -> int:
    """FFTs of one iteration by the formula in the module docstring (``chunk``: the
    engine's limit on patterns per pass)."""
    total = 0
    for start in range(0, patterns, batch):
        for b in chunk_sizes(min(batch, patterns - start), chunk):
            waves = b * states * modes
            multislice = 2 * (slices - 1) * waves
            per_pass = multislice + waves + modes + b * modes
            total += 2 * per_pass + ((slices - 1) * waves if fitted_propagator else 0)
    return total


#: (library "torch" or "fftw", direction "F" or "F⁻¹", shape of the batched call)
Call = tuple[str, str, tuple[int, ...]]


def profiled_transforms(step: object) -> tuple[Counter[Call], float]:
    """(transforms per call kind, seconds inside ``torch.fft``) of one call of ``step``
    under the profiler (which slows the step down: FFTW's seconds are taken from the
    timed iterations instead, see :func:`measure`)."""
    with (
        profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof,
        fft_backend.fftw_log() as (fftw_counts, _),
    ):
        step()  # type: ignore[operator]
    counts: Counter[Call] = Counter()
    inside = 0.0
    for event in prof.events():
        if event.name != "aten::_fft_c2c":
            continue
        shape = tuple(event.input_shapes[0])
        # _fft_c2c(self, dim, normalization, forward): the 4th argument says which way
        forward = bool(event.concrete_inputs[3]) if event.concrete_inputs else True
        counts[("torch", "F" if forward else "F⁻¹", shape)] += 1
        inside += event.self_cpu_time_total / 1e6
    for (kind, shape), n in fftw_counts.items():
        counts[("fftw", kind, shape)] += n
    return counts, inside


def seconds_per_transform(
    library: str, kind: str, shape: tuple[int, ...], repeats: int = 7
) -> float:
    """Median time of one (ny, nx) transform within a batched call of ``shape``, by the
    library the iteration used for it."""
    x = torch.randn(shape, dtype=torch.complex64)
    out = torch.empty_like(x)
    if library == "fftw":
        transform = fft_backend.fft2 if kind == "F" else fft_backend.ifft2
    else:
        transform = torch.fft.fft2 if kind == "F" else torch.fft.ifft2

    def function(x: torch.Tensor) -> None:
        transform(x, out=out)

    function(x)
    calls = max(1, int(2e7 // max(1, x.numel())))  # ~0.1 s per sample
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function(x)
        samples.append((time.perf_counter() - start) / calls)
    batch = math.prod(shape[:-2])
    return statistics.median(samples) / batch


def measure(npz: Path, modes: int, iterations: int, batch: int) -> dict[str, float]:
    run = ptyscope_run(npz, modes=modes, batch=batch, iterations=iterations + 2)
    engine = run.engine
    engine.guarded_step()  # warm-up: allocations, the cached propagator
    times = []
    with fft_backend.fftw_log() as (_, fftw_seconds):
        for _ in range(iterations):
            start = time.perf_counter()
            engine.guarded_step()
            times.append(time.perf_counter() - start)
    counts, torch_inside = profiled_transforms(engine.guarded_step)
    inside = fftw_seconds[0] / iterations + torch_inside
    params = engine.params
    transforms = sum(n * math.prod(shape[:-2]) for (_, _, shape), n in counts.items())
    formula = expected_transforms(
        params.num_positions,
        batch,
        engine.chunk_limit,
        modes,
        params.num_states,
        params.num_slices,
        False,
    )
    bound = sum(
        n * math.prod(shape[:-2]) * seconds_per_transform(library, kind, shape)
        for (library, kind, shape), n in counts.items()
    )
    iteration = statistics.median(times)
    return {
        "modes": modes,
        "transforms": transforms,
        "formula": formula,
        "bound_s": bound,
        "fft_inside_s": inside,
        "iteration_s": iteration,
        "fraction": bound / iteration,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _, npz = case_files()
    print(
        f"PtyRAD case: 256 patterns of 98×98, 20 slices, batch {args.batch}, Adam; "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"FFTs of the multislice: {fft_backend.BACKEND}"
        + (f" ({fft_backend.PLANNER})" if fft_backend.BACKEND == "fftw" else "")
    )
    print(
        f"{'modes':>5} {'FFTs/it':>9} {'formula':>9} {'bound [s]':>10} "
        f"{'FFT inside [s]':>15} {'iteration [s]':>14} {'of bound':>9}"
    )
    for modes in args.modes:
        row = measure(npz, modes, args.iterations, args.batch)
        print(
            f"{modes:>5} {row['transforms']:>9.0f} {row['formula']:>9.0f} "
            f"{row['bound_s']:>10.3f} {row['fft_inside_s']:>15.3f} "
            f"{row['iteration_s']:>14.3f} {row['fraction']:>8.0%}"
        )


if __name__ == "__main__":
    main()
