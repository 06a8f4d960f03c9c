"""Time ptyscope on a benchmark case: the same command line and JSON line as run_ptyrad.py.

    python benchmarks/peers/run_ptyscope.py CASE.npz --iterations K --modes M [--batch 32]

Builds the run from the ptyscope-format twin of the case (the file ``ptyscope_file``
names, beside ``CASE.npz``; both written by ``benchmarks/cases.py``) the way
``ptyscope reconstruct`` does (config → preflight → parameters → engine), with the settings
of :func:`cases.ptyscope_run`, and times each iteration (``Engine.guarded_step``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cases import ptyscope_run


def rss_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process [MiB]."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", type=Path)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--modes", type=int, default=1)
    parser.add_argument("--states", type=int, default=1)
    parser.add_argument("--slices", type=int, default=None)
    parser.add_argument("--batch", default="32", help="patterns per update, or 'full'")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--chunk", type=int, default=None, help="patterns per forward/backward (default: auto)"
    )
    parser.add_argument("--data", type=Path, default=None, help="another dataset (scaling)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import ptyscope

    batch = None if args.batch == "full" else int(args.batch)
    run = ptyscope_run(
        args.case,
        modes=args.modes,
        states=args.states,
        slices=args.slices,
        batch=batch,
        iterations=args.iterations,
        chunk=args.chunk,
        data=args.data,
        device=args.device,
    )
    engine = run.engine
    rss_before = rss_mib("VmRSS")
    seconds, losses = [], []
    for _ in range(args.iterations):
        start = time.perf_counter()
        losses.append(engine.guarded_step())
        seconds.append(time.perf_counter() - start)
    params = engine.params
    print(
        json.dumps(
            {
                "tool": "ptyscope",
                "version": ptyscope.__version__,
                "seconds_per_iteration": seconds,
                "peak_rss_mib": rss_mib("VmHWM"),
                "cuda_peak_mib": (
                    torch.cuda.max_memory_allocated() / 2**20
                    if args.device.startswith("cuda")
                    else None
                ),
                "rss_before_iterations_mib": rss_before,
                "final_loss": losses[-1],
                "settings": {
                    "modes": args.modes,
                    "states": args.states,
                    "slices": params.num_slices,
                    "batch": args.batch,
                    "threads": torch.get_num_threads(),
                    "patterns": params.num_positions,
                    "detector": list(params.probe.shape[1:]),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
