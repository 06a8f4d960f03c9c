"""A run killed with SIGKILL resumes from its last checkpoint and ends bit-identical.

The kills land where they hurt most, by fault injection (:mod:`ptyscope._faults`): in the
middle of an iteration (gradients half accumulated) and in the middle of a checkpoint
write (bytes of the new checkpoint on the disk, not yet renamed); and once from outside,
at a random moment. Each resumed run is compared with one uninterrupted run, bit for bit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ._runs import COMMAND, ITERATIONS, cli, read_arrays, write_case

KILLED = -signal.SIGKILL


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The uninterrupted run, in its own process like the interrupted ones."""
    config = write_case(tmp_path_factory.mktemp("whole"))
    done = cli(config)
    assert done.returncode == 0, done.stderr
    return read_arrays(config.parent / "rec.h5")


def _assert_identical(result: Path, reference: dict[str, np.ndarray]) -> None:
    resumed = read_arrays(result)
    for key, expected in reference.items():
        assert np.array_equal(resumed[key], expected), f"{key} differs after resuming"
    assert len(resumed["loss"]) == ITERATIONS


def _checkpoint_iteration(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["iteration"])


def test_killed_mid_iteration_resumes_bit_identically(
    tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    config = write_case(tmp_path)
    # 4 mini-batches per iteration: the 14th gradient pass is iteration 3's second batch.
    killed = cli(config, fault="iteration:14")
    assert killed.returncode == KILLED, killed.stderr
    assert not (tmp_path / "rec.h5").exists()
    assert _checkpoint_iteration(tmp_path / "rec.ckpt.pt") == 3

    resumed = cli(config, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_identical(tmp_path / "rec.h5", reference)


def test_killed_mid_checkpoint_write_keeps_the_previous_checkpoint(
    tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    config = write_case(tmp_path)
    killed = cli(config, fault="checkpoint_write:5")  # writing the checkpoint after it 5
    assert killed.returncode == KILLED, killed.stderr
    partial = list(tmp_path.glob(".rec.ckpt.pt.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # the half-written one
    assert _checkpoint_iteration(tmp_path / "rec.ckpt.pt") == 4  # the last complete one

    resumed = cli(config, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_identical(tmp_path / "rec.h5", reference)
    assert not list(tmp_path.glob(".*.tmp")), "the stale temporary file was not removed"


def _kill_at_a_random_moment(config: Path, seed: int, longest_delay_s: float) -> int | None:
    """Start the run, SIGKILL it a random delay after its first checkpoint appears, and
    return the iteration of the checkpoint it left (None if it ended before the kill)."""
    checkpoint = config.parent / "rec.ckpt.pt"
    process = subprocess.Popen(
        [*COMMAND, str(config), "-q", "--no-report"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(random.Random(seed).uniform(0.0, longest_delay_s))
    process.send_signal(signal.SIGKILL)
    if process.wait(timeout=60) != KILLED:
        return None
    return _checkpoint_iteration(checkpoint)


def test_killed_from_outside_at_a_random_moment(
    tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    # The kill must land inside the iterations. On a fast, quiet machine the 8 tiny
    # iterations can all pass within the delay; then the attempt is repeated with half
    # the longest delay, in a fresh folder.
    for attempt in range(6):
        folder = tmp_path / f"attempt{attempt}"
        config = write_case(folder)
        found = _kill_at_a_random_moment(config, os.getpid() + attempt, 0.2 / 2**attempt)
        if found is not None and found < ITERATIONS:
            break
    assert found is not None, "the run ended before it could be killed"
    assert 1 <= found < ITERATIONS

    resumed = cli(config, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_identical(folder / "rec.h5", reference)


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    config = write_case(tmp_path, iterations=2)
    assert cli(config).returncode == 0
    config.write_text(config.read_text().replace("slices = 2", "slices = 3"))
    refused = cli(config, "--resume")
    assert refused.returncode != 0
    message = refused.stderr + refused.stdout
    assert "other settings" in message and "object.slices: checkpoint 2, config 3" in message
    assert "Traceback" not in message


def test_a_corrupt_checkpoint_is_refused_with_its_name(tmp_path: Path) -> None:
    config = write_case(tmp_path, iterations=2)
    assert cli(config).returncode == 0
    checkpoint = tmp_path / "rec.ckpt.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # truncated by something else
    refused = cli(config, "--resume")
    message = refused.stderr + refused.stdout
    assert refused.returncode != 0
    assert "rec.ckpt.pt" in message and "unreadable" in message and "Traceback" not in message
