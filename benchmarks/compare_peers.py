"""ptyscope side by side with its peers on the same data and settings, in one run.

The PtyRAD case (``cases.py``: 256 patterns of 98×98, 20 slices, batch 32, Adam on object
and probe) with 1 and 4 probe modes. Each tool runs in its own virtual environment and its
own process (``peers/run_<tool>.py``, one JSON line each); the tools take turns, repeated
``--rounds`` times, so a change in the machine's load hits them alike. Reported per tool:
the median time of the iterations after the first (PtyRAD compiles and allocates in its
first), the peak RSS of the whole process, and the ratios to ptyscope measured in this run.

    bash benchmarks/peers/setup_ptyrad.sh          # once: PtyRAD's own environment
    python benchmarks/compare_peers.py [--modes 1 4] [--iterations 4] [--rounds 2]
    PTYSCOPE_FFTW_PLANNER=patient python benchmarks/compare_peers.py

ptyscope's runner inherits the environment: by default it uses FFTW's transforms where
pyFFTW is installed (plans measured once and kept in the wisdom file),
``PTYSCOPE_FFTW_PLANNER=estimate`` times FFTW's rule-based plans, ``PTYSCOPE_FFT=torch``
torch's
(``ptyscope.physics.fft_backend``).

A peer whose environment is missing is skipped with the command that creates it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cases import case_files  # noqa: E402

#: tool -> (its Python, its runner, how to create its environment)
TOOLS: dict[str, tuple[Path, Path, str]] = {
    "ptyscope": (Path(sys.executable), HERE / "peers" / "run_ptyscope.py", ""),
    "ptyrad": (
        HERE / ".venvs" / "ptyrad" / "bin" / "python",
        HERE / "peers" / "run_ptyrad.py",
        "bash benchmarks/peers/setup_ptyrad.sh",
    ),
}


def run_tool(tool: str, npz: Path, modes: int, iterations: int, threads: int) -> dict[str, float]:
    python, runner, _ = TOOLS[tool]
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [
        str(python),
        str(runner),
        str(npz),
        "--iterations",
        str(iterations),
        "--modes",
        str(modes),
        "--batch",
        "32",
        "--threads",
        str(threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{tool} failed ({done.returncode}):\n{tail}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "seconds": statistics.median(row["seconds_per_iteration"][1:]),
        "peak_mib": row["peak_rss_mib"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    _, npz = case_files()
    tools = []
    for tool, (python, _, setup) in TOOLS.items():
        if python.exists():
            tools.append(tool)
        else:
            print(f"skipping {tool}: no environment at {python}; create it with `{setup}`")
    load = os.getloadavg()[0]
    print(
        f"PtyRAD case, {args.threads} threads, {args.iterations} iterations × {args.rounds} "
        f"rounds per tool, load average {load:.1f} at the start"
    )
    header = (
        f"{'modes':>5} {'tool':>9} {'s/it':>7} {'peak RSS [MiB]':>15} {'time ×':>7} {'memory ×':>9}"
    )
    print(header)
    for modes in args.modes:
        samples: dict[str, list[dict[str, float]]] = {tool: [] for tool in tools}
        for _ in range(args.rounds):
            for tool in tools:
                samples[tool].append(run_tool(tool, npz, modes, args.iterations, args.threads))
        summary = {
            tool: (
                statistics.median(s["seconds"] for s in rows),
                max(s["peak_mib"] for s in rows),
            )
            for tool, rows in samples.items()
        }
        ours = summary["ptyscope"]
        for tool, (seconds, peak) in summary.items():
            print(
                f"{modes:>5} {tool:>9} {seconds:>7.2f} {peak:>15.0f} "
                f"{seconds / ours[0]:>7.2f} {peak / ours[1]:>9.2f}"
            )
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
