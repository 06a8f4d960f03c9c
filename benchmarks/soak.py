"""Soak test: many small simulations and reconstructions back to back in one process.

Issue 11, item 7 (long runs under load). Each run is one small ``ptyscope simulate`` job
(SrTiO3 slab, harmonic phonons, a 2 mrad tilt, Poisson noise) followed by one small
``ptyscope reconstruct`` job (3 slices, 2 probe modes, fitted tilt and positions,
checkpoints and the HTML report), both through the Python API behind the commands: the
config is written as TOML, read with ``load_config`` and passed to ``run_simulation`` or
``run_reconstruction``. Every job works in a fresh temporary folder that is deleted
afterwards; the reconstructions all read one dataset simulated once at the start.

After each run the script collects garbage, asks glibc to hand its free pages back
(``malloc_trim``, so that the RSS follows live memory rather than the allocator's free
lists; ``--no-trim`` turns it off) and records the resident set size (VmRSS), the open file
descriptors, the live matplotlib figures, the OS threads, the number of objects the garbage
collector tracks and the time. A failed job is counted, with its exception text, and the
soak goes on. The summary compares the RSS after the warm-up runs with the RSS at the end
and fits a least-squares slope over the runs after the warm-up; to find a leak, run one
kind alone (``--kinds reconstruct``) and watch which column grows.

    python benchmarks/soak.py [--runs 50] [--warmup 5] [--out soak.json] [--device cpu]
                              [--kinds simulate,reconstruct] [--threads N] [--no-trim]
                              [--tracemalloc]

Exit status 1 when the RSS grew by 5 % or more after the warm-up, when file descriptors or
matplotlib figures accumulated, or when any job failed. Not part of the test suite (a full
soak takes several minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from ptyscope.config import ReconstructionConfig, SimulationConfig, load_config
from ptyscope.reconstruction.run import run_reconstruction
from ptyscope.simulation.run import run_simulation

#: RSS growth after the warm-up [fraction] at which the soak fails.
MAX_GROWTH = 0.05
KINDS = ("simulate", "reconstruct")
MIB = 1024.0 * 1024.0

#: ``ptyscope simulate`` config: SrTiO3 2x2 cells x 3 (11.7 Å), 300 kV, 22 mrad, 60 Å
#: underfocus, 10x10 positions at 0.45 Å, 0.1 Å pixels, 8 Å probe window.
SIMULATION_TOML = """\
output = "data.h5"
seed = {seed}
[specimen]
kind = "srtio3_slab"
repeat_xy = [2, 2]
thickness_ang = 11.7
[probe]
energy_ev = 300e3
semiangle_mrad = 22.0
defocus_ang = 60.0
[scan]
shape = [10, 10]
step_ang = [0.45, 0.45]
origin_ang = [2.0, 2.0]
[sampling]
pixel_ang = 0.1
slice_thickness_ang = 1.9525
window_ang = 8.0
[tilt]
tilt_x_mrad = 2.0
[phonons]
model = "harmonic"
configs = 2
temperature_k = 300.0
[acquisition]
source_sigma_ang = 0.2
dose_e_per_ang2 = 1e6
"""

#: ``ptyscope reconstruct`` config for a dataset as above (``data``: its absolute path);
#: 8 iterations, batches of 32, the probe fitted from iteration 3, tilt and positions from 4.
RECONSTRUCTION_TOML = """\
[data]
path = "{data}"
[probe]
defocus_ang = 60.0
modes = 2
start = 3
[object]
slices = 3
slice_thickness_ang = 3.9
[propagator]
tilt_x_mrad = 1.0
fit_tilt = "global"
tilt_start = 4
align_every = 4
[positions]
fit = true
start = 4
[optimization]
iterations = 8
batch_size = 32
seed = {seed}
checkpoint_every = 4
[output]
path = "reconstruction.h5"
"""


@dataclass
class Sample:
    """What the process holds after a run (run 0: before the first), garbage collected."""

    run: int
    rss_mib: float
    #: RSS before ``malloc_trim`` (includes the allocator's free pages).
    rss_untrimmed_mib: float
    fds: int
    figures: int
    threads: int
    gc_objects: int
    seconds: dict[str, float] = field(default_factory=dict)
    heap_mib: float | None = None
    cuda_mib: float | None = None


@dataclass
class Failure:
    run: int
    kind: str
    error: str


@dataclass
class Soak:
    """Everything one soak measured; ``samples[0]`` is the start."""

    samples: list[Sample] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    #: Open descriptors (fd -> target) after the warm-up and at the end.
    fds_after_warmup: dict[int, str] = field(default_factory=dict)
    fds_end: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


# --------------------------------------------------------------------------- probes


def _status_field(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{name} not found in /proc/self/status (Linux only)")


def rss_mib() -> float:
    """Resident set size of this process [MiB] (VmRSS from /proc/self/status)."""
    return _status_field("VmRSS") / 1024.0


def trim_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``; no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def open_fds() -> dict[int, str]:
    """Open file descriptors of this process and what each points to."""
    targets = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            targets[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the descriptor listdir itself used, closed by now
            continue
    return targets


def sample(run: int, device: torch.device, trim: bool) -> Sample:
    """Collect garbage and measure the process."""
    gc.collect()
    untrimmed = rss_mib()
    if trim:
        trim_heap()
    heap = tracemalloc.get_traced_memory()[0] / MIB if tracemalloc.is_tracing() else None
    cuda = torch.cuda.memory_allocated(device) / MIB if device.type == "cuda" else None
    return Sample(
        run=run,
        rss_mib=rss_mib(),
        rss_untrimmed_mib=untrimmed,
        fds=len(open_fds()),
        figures=len(plt.get_fignums()),
        threads=_status_field("Threads"),
        gc_objects=len(gc.get_objects()),
        heap_mib=heap,
        cuda_mib=cuda,
    )


# --------------------------------------------------------------------------- jobs


def simulate(folder: Path, seed: int, device: torch.device) -> Path:
    """One ``ptyscope simulate`` job in ``folder``; returns the data file."""
    path = folder / "simulate.toml"
    path.write_text(SIMULATION_TOML.format(seed=seed))
    config = load_config(path, SimulationConfig)
    return run_simulation(
        config,
        config_text=path.read_text(),
        base_dir=folder,
        output=folder / config.output,
        device=device,
        progress=False,
    )


def reconstruct(folder: Path, data: Path, seed: int, device: torch.device) -> Path:
    """One ``ptyscope reconstruct`` job in ``folder``, HTML report included; returns the
    report page."""
    path = folder / "reconstruct.toml"
    path.write_text(RECONSTRUCTION_TOML.format(data=data, seed=seed))
    config = load_config(path, ReconstructionConfig)
    run = run_reconstruction(
        config,
        config_text=path.read_text(),
        base_dir=folder,
        device=device,
        progress=False,
        output=folder / config.output.path,
        write_html_report=True,
    )
    if run.report is None or not run.report.is_file():
        raise RuntimeError(f"no report page written (got {run.report})")
    return run.report


def in_fresh_folder(job: Callable[[Path, int], object], run: int) -> None:
    """Run ``job(folder, run)`` in a new temporary folder and delete the folder afterwards."""
    with tempfile.TemporaryDirectory(prefix="ptyscope-soak-") as name:
        job(Path(name), run)
    if Path(name).exists():
        raise RuntimeError(f"temporary folder {name} survived its deletion")


def describe(exc: Exception) -> str:
    """``Type: message (at file:line)`` of the innermost frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


# --------------------------------------------------------------------------- the soak

HEADER = (
    f"{'run':>4} {'RSS MiB':>8} {'Δ MiB':>7} {'untrim':>7} {'fds':>4} {'figs':>4} "
    f"{'thr':>4} {'objects':>8} {'sim s':>6} {'rec s':>6} fail"
)


def row(s: Sample, start: Sample, failures: int) -> str:
    return (
        f"{s.run:4d} {s.rss_mib:8.1f} {s.rss_mib - start.rss_mib:+7.1f} "
        f"{s.rss_untrimmed_mib:7.1f} {s.fds:4d} {s.figures:4d} {s.threads:4d} "
        f"{s.gc_objects:8d} {s.seconds.get('simulate', 0.0):6.2f} "
        f"{s.seconds.get('reconstruct', 0.0):6.2f} {failures}"
    )


def soak(
    runs: int,
    warmup: int,
    kinds: tuple[str, ...],
    data: Path,
    device: torch.device,
    *,
    trim: bool = True,
    report_every: int = 5,
) -> Soak:
    """``runs`` runs of every job in ``kinds``, measured after each."""
    jobs: dict[str, Callable[[Path, int], object]] = {
        "simulate": lambda folder, run: simulate(folder, run, device),
        "reconstruct": lambda folder, run: reconstruct(folder, data, run, device),
    }
    result = Soak()
    result.samples.append(sample(0, device, trim))
    print(HEADER)
    print(row(result.samples[0], result.samples[0], 0), flush=True)
    begin = time.perf_counter()
    for run in range(1, runs + 1):
        seconds = {}
        for kind in kinds:
            start = time.perf_counter()
            try:
                in_fresh_folder(jobs[kind], run)
            except Exception as exc:
                result.failures.append(Failure(run, kind, describe(exc)))
            seconds[kind] = time.perf_counter() - start
        s = sample(run, device, trim)
        s.seconds = seconds
        result.samples.append(s)
        if run == warmup:
            result.fds_after_warmup = open_fds()
        if run % report_every == 0 or run in (1, warmup, runs):
            print(row(s, result.samples[0], len(result.failures)), flush=True)
    result.seconds = time.perf_counter() - begin
    result.fds_end = open_fds()
    return result


def summarise(result: Soak, warmup: int) -> dict[str, object]:
    """RSS, descriptor, figure and failure figures of a soak (after ``warmup`` runs)."""
    samples = result.samples
    start, base, end = samples[0], samples[warmup], samples[-1]
    after = samples[warmup:]
    x = np.array([s.run for s in after], dtype=float)
    slope = float(np.polyfit(x, [s.rss_mib for s in after], 1)[0])
    slope_untrimmed = float(np.polyfit(x, [s.rss_untrimmed_mib for s in after], 1)[0])
    failures: dict[str, list[str]] = {}
    for f in result.failures:
        failures.setdefault(f.kind, []).append(f"run {f.run}: {f.error}")
    seconds_per_kind: dict[str, float] = {}
    for s in samples:
        for kind, t in s.seconds.items():
            seconds_per_kind[kind] = seconds_per_kind.get(kind, 0.0) + t
    new_fds = {
        str(fd): target
        for fd, target in result.fds_end.items()
        if result.fds_after_warmup.get(fd) != target
    }
    return {
        "runs": len(samples) - 1,
        "warmup": warmup,
        "rss_start_mib": start.rss_mib,
        "rss_after_warmup_mib": base.rss_mib,
        "rss_end_mib": end.rss_mib,
        "rss_min_after_warmup_mib": min(s.rss_mib for s in after),
        "rss_max_after_warmup_mib": max(s.rss_mib for s in after),
        "rss_growth": (end.rss_mib - base.rss_mib) / base.rss_mib,
        "rss_slope_mib_per_run": slope,
        "rss_untrimmed_after_warmup_mib": base.rss_untrimmed_mib,
        "rss_untrimmed_end_mib": end.rss_untrimmed_mib,
        "rss_untrimmed_growth": (end.rss_untrimmed_mib - base.rss_untrimmed_mib)
        / base.rss_untrimmed_mib,
        "rss_untrimmed_slope_mib_per_run": slope_untrimmed,
        "fds_start": start.fds,
        "fds_after_warmup": base.fds,
        "fds_end": end.fds,
        "fds_new_after_warmup": new_fds,
        "figures_end": end.figures,
        "threads_after_warmup": base.threads,
        "threads_end": end.threads,
        "gc_objects_after_warmup": base.gc_objects,
        "gc_objects_end": end.gc_objects,
        "seconds_total": result.seconds,
        "seconds_per_kind": seconds_per_kind,
        "failures": failures,
    }


def verdict(summary: dict[str, Any]) -> list[str]:
    """The reasons the soak failed (empty: it passed)."""
    problems = []
    growth = summary["rss_growth"]
    if growth >= MAX_GROWTH:
        problems.append(f"RSS grew {growth:.1%} after the warm-up (limit {MAX_GROWTH:.0%})")
    if summary["fds_end"] > summary["fds_after_warmup"]:
        problems.append(
            f"open file descriptors grew from {summary['fds_after_warmup']} to "
            f"{summary['fds_end']}: {summary['fds_new_after_warmup']}"
        )
    if summary["figures_end"]:
        problems.append(f"{summary['figures_end']} matplotlib figures left open")
    for kind, errors in summary["failures"].items():
        problems.append(f"{len(errors)} {kind} job(s) failed; first: {errors[0]}")
    return problems


def report(summary: dict[str, Any], problems: list[str]) -> None:
    print(
        f"RSS: start {summary['rss_start_mib']:.1f} MiB, after warm-up "
        f"{summary['rss_after_warmup_mib']:.1f} MiB, end {summary['rss_end_mib']:.1f} MiB "
        f"(after warm-up: {summary['rss_min_after_warmup_mib']:.1f} to "
        f"{summary['rss_max_after_warmup_mib']:.1f}); growth {summary['rss_growth']:+.2%}, "
        f"slope {summary['rss_slope_mib_per_run']:+.3f} MiB/run"
    )
    print(
        f"RSS untrimmed: after warm-up {summary['rss_untrimmed_after_warmup_mib']:.1f} MiB, "
        f"end {summary['rss_untrimmed_end_mib']:.1f} MiB; growth "
        f"{summary['rss_untrimmed_growth']:+.2%}, slope "
        f"{summary['rss_untrimmed_slope_mib_per_run']:+.3f} MiB/run"
    )
    print(
        f"fds: start {summary['fds_start']}, after warm-up {summary['fds_after_warmup']}, "
        f"end {summary['fds_end']}; figures open {summary['figures_end']}; threads "
        f"{summary['threads_after_warmup']} -> {summary['threads_end']}; gc objects "
        f"{summary['gc_objects_after_warmup']} -> {summary['gc_objects_end']}"
    )
    per_kind = ", ".join(f"{k} {t:.0f} s" for k, t in summary["seconds_per_kind"].items())
    print(f"time: {summary['seconds_total']:.0f} s ({per_kind})")
    print("PASS" if not problems else "FAIL:\n  " + "\n  ".join(problems))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="runs (each: every kind once)")
    parser.add_argument("--warmup", type=int, default=5, help="runs before the baseline")
    parser.add_argument("--out", type=Path, default=None, help="JSON file of every sample")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="comma-separated jobs per run (one kind alone tells which one leaks)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    parser.add_argument("--report-every", type=int, default=5, help="table row every N runs")
    parser.add_argument(
        "--no-trim", action="store_true", help="measure without malloc_trim before each RSS"
    )
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also trace the Python heap (slow)"
    )
    args = parser.parse_args()
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--kinds must name some of {', '.join(KINDS)}, got {args.kinds!r}")
    if not 1 <= args.warmup <= args.runs - 2:
        parser.error(f"--warmup must be in [1, runs - 2], got {args.warmup} for {args.runs}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"device {args.device!r} was requested but no CUDA device is available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.tracemalloc:
        tracemalloc.start()
    print(
        f"soak: {args.runs} runs of {' + '.join(kinds)} on {device}, {args.warmup} warm-up, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"malloc_trim {'off' if args.no_trim else 'on'}"
    )
    with tempfile.TemporaryDirectory(prefix="ptyscope-soak-data-") as name:
        data = simulate(Path(name), seed=0, device=device)  # the reconstructions' input
        result = soak(
            args.runs,
            args.warmup,
            kinds,
            data,
            device,
            trim=not args.no_trim,
            report_every=args.report_every,
        )
    summary = summarise(result, args.warmup)
    problems = verdict(summary)
    report(summary, problems)
    if args.out is not None:
        record = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "summary": summary,
            "problems": problems,
            "samples": [asdict(s) for s in result.samples],
            "failures": [asdict(f) for f in result.failures],
        }
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
