"""The forked metadata check that keeps a damaged HDF5 file from crashing or hanging ptyscope.

The fuzzer (benchmarks/fuzz_readers.py, seed 7) found three files on which HDF5 2.0.0
itself segfaults or loops; they are in tests/fuzz/corpus and must be refused here, with a
message naming the file, in well under the time limit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptyscope.data.formats._common import DataFormatError
from ptyscope.data.readers import read_4dstem
from ptyscope.io import hdf5_guard

CORPUS = Path(__file__).parents[1] / "fuzz" / "corpus"
#: The inputs that crashed (SIGSEGV) or hung the HDF5 library in the parent process.
LIBRARY_FAILURES = [
    CORPUS / "ptyscope-h5" / "1b931d968bd0.h5",
    CORPUS / "ptyscope-h5" / "29b634546ee4.h5",
    CORPUS / "emd" / "c25869f0260b.emd",
]


@pytest.fixture(autouse=True)
def _fresh_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hdf5_guard, "_checked", {})
    monkeypatch.delenv("PTYSCOPE_HDF5_GUARD", raising=False)
    monkeypatch.delenv("PTYSCOPE_HDF5_GUARD_TIMEOUT_S", raising=False)


def _healthy(path: Path) -> Path:
    with h5py.File(path, "w") as handle:
        handle.attrs["note"] = "a text attribute"
        group = handle.create_group("scan")
        group.create_dataset("data", data=np.ones((2, 3, 4, 4), np.float32))
        group.create_dataset("label", data="variable-length text", dtype=h5py.string_dtype())
    return path


def _count_forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    forks: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(hdf5_guard.os, "fork", counting_fork)
    return forks


def test_a_healthy_file_passes_once_and_is_not_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _healthy(tmp_path / "scan.h5")
    forks = _count_forks(monkeypatch)
    with hdf5_guard.open_untrusted_hdf5(path) as handle:
        assert handle["scan/data"].shape == (2, 3, 4, 4)
    hdf5_guard.check_hdf5_metadata(path)
    assert len(forks) == 1
    # A rewritten file is a new file.
    time.sleep(0.01)
    _healthy(path)
    hdf5_guard.check_hdf5_metadata(path)
    assert len(forks) == 2


@pytest.mark.parametrize("source", LIBRARY_FAILURES, ids=lambda p: p.name)
def test_files_that_crash_or_hang_the_library_are_refused_quickly(
    source: Path, tmp_path: Path
) -> None:
    path = tmp_path / f"case{source.suffix}"
    path.write_bytes(source.read_bytes())
    start = time.monotonic()
    with pytest.raises(DataFormatError) as caught:
        read_4dstem(
            path,
            scan_shape=(2, 3),
            energy_ev=300e3,
            scan_step_ang=0.5,
            detector_pixel_inv_ang=0.05,
        )
    assert str(caught.value).startswith(f"{str(path)!r} is a damaged HDF5 file: its groups")
    assert time.monotonic() - start < 5.0


def test_a_child_killed_by_a_signal_refuses_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _healthy(tmp_path / "scan.h5")
    monkeypatch.setattr(
        hdf5_guard, "_read_everything", lambda _: os.kill(os.getpid(), signal.SIGSEGV)
    )
    with pytest.raises(DataFormatError) as caught:
        hdf5_guard.check_hdf5_metadata(path)
    message = str(caught.value)
    assert repr(str(path)) in message
    assert "crashed the HDF5 library (signal 11, SIGSEGV)" in message
    # The verdict is kept: the next open is refused without a new child.
    forks = _count_forks(monkeypatch)
    with pytest.raises(DataFormatError, match="signal 11"):
        hdf5_guard.open_untrusted_hdf5(path)
    assert forks == []


def test_a_child_that_hangs_is_killed_at_the_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _healthy(tmp_path / "scan.h5")
    monkeypatch.setattr(hdf5_guard, "_read_everything", lambda _: time.sleep(60))
    monkeypatch.setenv("PTYSCOPE_HDF5_GUARD_TIMEOUT_S", "0.5")
    start = time.monotonic()
    with pytest.raises(DataFormatError, match=r"did not finish within 0\.5 s"):
        hdf5_guard.check_hdf5_metadata(path)
    assert time.monotonic() - start < 5.0


def test_the_guard_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _healthy(tmp_path / "scan.h5")
    monkeypatch.setenv("PTYSCOPE_HDF5_GUARD", "0")
    forks = _count_forks(monkeypatch)
    hdf5_guard.check_hdf5_metadata(path)
    assert forks == []


@pytest.mark.parametrize("value", ["soon", "0", "-1"])
def test_a_bad_time_limit_names_the_variable(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _healthy(tmp_path / "scan.h5")
    monkeypatch.setenv("PTYSCOPE_HDF5_GUARD_TIMEOUT_S", value)
    with pytest.raises(
        ValueError,
        match=f"PTYSCOPE_HDF5_GUARD_TIMEOUT_S must be a positive number of seconds, got '{value}'",
    ):
        hdf5_guard.check_hdf5_metadata(path)


def _running(pid: int) -> bool:
    """Whether ``pid`` is alive (a zombie waiting for its reaper is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_child_does_not_outlive_a_killed_parent(tmp_path: Path) -> None:
    path = _healthy(tmp_path / "scan.h5")
    pid_file = tmp_path / "child.pid"
    script = (
        "import os, time\n"
        "from pathlib import Path\n"
        "from ptyscope.io import hdf5_guard\n"
        "def hang(_):\n"
        f"    Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
        "    time.sleep(120)\n"
        "hdf5_guard._read_everything = hang\n"
        f"hdf5_guard.check_hdf5_metadata({str(path)!r})\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the check never started its child"
            assert parent.poll() is None, "the parent ended before its child started"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child), "the checking process outlived its killed parent"


@pytest.mark.parametrize(
    "command", [["view"], ["export", "--to", "npy"], ["analyze", "columns"]], ids=" ".join
)
def test_result_commands_refuse_a_damaged_result_file(command: list[str], tmp_path: Path) -> None:
    # Before the guard reached the result readers, `ptyscope view` segfaulted (SIGSEGV,
    # 29b634546ee4) or hung (1b931d968bd0) on these. A process of its own, so that a
    # regression fails this test instead of killing the test run.
    path = tmp_path / "result.h5"
    path.write_bytes(LIBRARY_FAILURES[1].read_bytes())
    done = subprocess.run(
        [sys.executable, "-m", "ptyscope.cli", *command, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"Error: {str(path)!r} is a damaged HDF5 file" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
