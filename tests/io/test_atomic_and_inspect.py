"""Atomic writes and file inspection."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from ptyscope.io.atomic import atomic_path
from ptyscope.io.inspect import describe_file


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_describe_npy_reads_header_only(tmp_path: Path) -> None:
    path = tmp_path / "data.npy"
    np.save(path, np.zeros((4, 5, 16, 16), dtype=np.float32))
    summary = describe_file(path)
    assert summary.arrays[0].shape == (4, 5, 16, 16)
    assert summary.arrays[0].dtype == "float32"
    assert "(scan_y, scan_x, det_y, det_x)" in summary.render()
    assert "calibration must come from the config" in summary.render()


def test_describe_npz_and_hdf5(tmp_path: Path) -> None:
    npz = tmp_path / "pack.npz"
    np.savez(npz, data=np.ones((2, 3)), probe=np.ones((8, 8), dtype=np.complex64))
    names = {a.name: a for a in describe_file(npz).arrays}
    assert names["probe"].shape == (8, 8) and names["probe"].dtype == "complex64"

    h5 = tmp_path / "scan.emd"
    with h5py.File(h5, "w") as f:
        f.attrs["energy_ev"] = 300e3
        grp = f.create_group("data/datacube")
        grp.attrs["scan_step_ang"] = 0.4
        ds = grp.create_dataset("array", data=np.zeros((3, 3, 10, 10), dtype=np.uint16))
        ds.attrs["units"] = "counts"
    summary = describe_file(h5)
    assert summary.attributes["energy_ev"] == 300e3
    assert summary.attributes["data/datacube/scan_step_ang"] == 0.4
    arr = summary.arrays[0]
    assert arr.name == "data/datacube/array" and arr.shape == (3, 3, 10, 10)
    assert arr.attributes["units"] == "counts"


def test_describe_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="path must be an existing file"):
        describe_file(tmp_path / "missing.h5")
    odd = tmp_path / "frames.xyz123"
    odd.write_bytes(b"not a known format")
    with pytest.raises(ValueError, match=r"unknown format '\.xyz123'; known formats are .*\.npy"):
        describe_file(odd)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="could not be read"):
        describe_file(broken)
