"""What the tutorial scripts share: running a ``ptyscope`` command and publishing figures.

The scripts import it from their own folder (Python puts a script's folder on its path).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path


def ptyscope(*args: str, cwd: Path) -> float:
    """Run one ``ptyscope`` command (with this Python) in ``cwd``; return its seconds."""
    print(f"\n$ ptyscope {' '.join(args)}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ptyscope.cli", *args], cwd=cwd, check=True)
    return time.perf_counter() - start


def publish(figures: Path, summary: Path, copy_to: Path | None) -> None:
    """Copy the figures (``*.png``) and the summary to ``copy_to`` when given; say where."""
    if copy_to is not None:
        copy_to.mkdir(parents=True, exist_ok=True)
        for path in [*figures.glob("*.png"), summary]:
            shutil.copy(path, copy_to / path.name)
    print(f"\nwrote {summary} and {figures}")
