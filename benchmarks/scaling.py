"""How the cost of an iteration grows with the problem.

Starting from the PtyRAD case (256 patterns of 98×98, 20 slices, 1 mode, batch 32), one
size is varied at a time: scan positions, slices, probe modes × object states (full batch,
as mixed objects need), and detector pixels. Each point runs in a fresh process
(``peers/run_ptyscope.py``), one after another; the table gives the median time of the
iterations after the first, the time per pattern, and the memory the iterations added to
the process (peak RSS − the RSS once data and parameters were in place: activations,
gradients, optimiser moments, the guard's copy).

    python benchmarks/scaling.py [--threads 2] [--iterations 3] [--only slices]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cases import case_files, variant  # noqa: E402

#: (section, label, run_ptyscope.py arguments)
POINTS: list[tuple[str, str, list[str]]] = [
    ("patterns", "64", ["--data", "variant:8:98"]),
    ("patterns", "256", []),
    ("patterns", "1024", ["--data", "variant:32:98"]),
    ("slices", "5", ["--slices", "5"]),
    ("slices", "10", ["--slices", "10"]),
    ("slices", "20", []),
    ("slices", "40", ["--slices", "40"]),
    ("modes×states (full batch)", "1×1", ["--batch", "full", "--chunk", "32"]),
    ("modes×states (full batch)", "2×1", ["--batch", "full", "--chunk", "32", "--modes", "2"]),
    ("modes×states (full batch)", "4×1", ["--batch", "full", "--chunk", "32", "--modes", "4"]),
    ("modes×states (full batch)", "1×2", ["--batch", "full", "--chunk", "32", "--states", "2"]),
    (
        "modes×states (full batch)",
        "2×2",
        ["--batch", "full", "--chunk", "32", "--modes", "2", "--states", "2"],
    ),
    (
        "modes×states (full batch)",
        "4×4",
        ["--batch", "full", "--chunk", "32", "--modes", "4", "--states", "4"],
    ),
    ("detector", "64²", ["--data", "variant:16:64"]),
    ("detector", "98²", []),
    ("detector", "128²", ["--data", "variant:16:128"]),
]


def _arguments(extra: list[str]) -> list[str]:
    out = []
    for item in extra:
        if item.startswith("variant:"):
            _, scan, detector = item.split(":")
            item = str(variant(int(scan), int(detector)))
        out.append(item)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--only", default=None, help="one section: patterns, slices, ...")
    args = parser.parse_args()
    _, npz = case_files()
    print(f"{'':28} {'point':>6} {'s/it':>8} {'ms/pattern':>11} {'added [MiB]':>11}")
    for section, label, extra in POINTS:
        if args.only and not section.startswith(args.only):
            continue
        command = [
            sys.executable,
            str(HERE / "peers" / "run_ptyscope.py"),
            str(npz),
            "--iterations",
            str(args.iterations),
            "--threads",
            str(args.threads),
            *_arguments(extra),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{section:28} {label:>6} failed: {done.stderr.strip().splitlines()[-1]}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        seconds = statistics.median(row["seconds_per_iteration"][1:])
        patterns = row["settings"]["patterns"]
        added = row["peak_rss_mib"] - row["rss_before_iterations_mib"]
        print(
            f"{section:28} {label:>6} {seconds:>8.2f} {1e3 * seconds / patterns:>11.2f} "
            f"{added:>11.0f}"
        )


if __name__ == "__main__":
    main()
