"""A small reconstruction, as a config file and as a subprocess (shared by the tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from ptyscope.io.datafile import write_dataset
from tests.reconstruction._data import A, srtio3

COMMAND = (sys.executable, "-m", "ptyscope.cli", "reconstruct")

#: 8×8 scan of 2-cell SrTiO3: 64 patterns, 4 mini-batches of 16 per iteration.
ITERATIONS = 8


def write_case(
    folder: Path,
    *,
    seed: int = 0,
    iterations: int = ITERATIONS,
    batch_size: str = "16",
    checkpoint_every: int = 1,
    output: str = "rec.h5",
) -> Path:
    """Write the data and a ``run.toml`` into ``folder`` (by default 16 patterns per batch,
    a checkpoint every iteration; ``batch_size`` as TOML, e.g. ``'"full"'``)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.h5"
    if not data.exists():
        write_dataset(data, srtio3(2, scan_shape=8).dataset)
    config = folder / "run.toml"
    config.write_text(
        f"""
[data]
path = "data.h5"

[probe]
defocus_ang = 60.0
start = 1

[object]
slices = 2
slice_thickness_ang = {A}

[positions]
fit = true
start = 2

[optimization]
iterations = {iterations}
batch_size = {batch_size}
checkpoint_every = {checkpoint_every}
device = "cpu"
seed = {seed}

[output]
path = "{output}"
"""
    )
    return config


def cli(config: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """``ptyscope reconstruct CONFIG --quiet --no-report ARGS`` in a fresh process."""
    env = {key: value for key, value in os.environ.items() if key != "PTYSCOPE_FAULT"}
    if fault is not None:
        env["PTYSCOPE_FAULT"] = fault
    return subprocess.run(
        [*COMMAND, str(config), "--quiet", "--no-report", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def read_arrays(result: Path) -> dict[str, np.ndarray]:
    """The fitted arrays of a result file (everything a rerun must reproduce)."""
    with h5py.File(result, "r") as handle:
        return {
            "object": handle["object"][()],
            "probe": handle["probe"][()],
            "positions_ang": handle["positions_ang"][()],
            "loss": handle["history/loss"][()],
            "tilt_x_mrad": handle["history/tilt_x_mrad"][()],
        }
