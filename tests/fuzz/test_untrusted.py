"""Hostile files, one per safeguard: no unpickling, no allocation sized by a lying header."""

from __future__ import annotations

import io
import pickle
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from ptyscope.data.dataset import Calibration, Dataset4D
from ptyscope.data.formats.empad import write_empad_raw
from ptyscope.data.formats.hdf5_any import is_velox_emd
from ptyscope.data.formats.merlin import write_mib
from ptyscope.data.readers import read_4dstem
from ptyscope.io.datafile import read_dataset, read_ground_truth, write_dataset
from ptyscope.io.inspect import describe_file
from tests.fuzz._contract import CAL
from tests.fuzz._seeds import seeds

_MIB = 2**20


class _Touch:
    """Unpickling this creates ``marker``: proof that a reader ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return Path.touch, (self.marker,)


def _peak(function: Callable[[], Any]) -> tuple[BaseException | None, int]:
    """Run ``function``; return what it raised and its peak traced allocation [bytes]."""
    tracemalloc.start()
    try:
        function()
    except Exception as error:
        return error, tracemalloc.get_traced_memory()[1]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return None, peak


def _object_array(marker: Path) -> np.ndarray:
    array = np.empty((2, 3, 4, 4), dtype=object)
    array[...] = 0
    array[0, 0, 0, 0] = _Touch(marker)
    return array


def test_object_npy_is_refused_without_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.npy"
    np.save(path, _object_array(marker), allow_pickle=True)
    assert path.read_bytes().count(b"touch") == 1  # the payload is there

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a reader called pickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    with pytest.raises(ValueError, match=r"evil\.npy' has dtype object; .* real"):
        read_4dstem(path, **CAL)
    archive = tmp_path / "evil.npz"
    np.savez(archive, data=_object_array(marker))
    with pytest.raises(ValueError, match=r"evil\.npz.* has dtype object"):
        read_4dstem(archive, **CAL)
    assert describe_file(path).arrays[0].dtype == "object"  # described, never loaded
    assert not marker.exists()


def test_npy_header_claiming_a_huge_array_is_refused_before_mapping(tmp_path: Path) -> None:
    path = tmp_path / "liar.npy"
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000, 256, 256), }"
    header = header.ljust(118) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(64))
    error, peak = _peak(lambda: read_4dstem(path, **CAL))
    assert isinstance(error, ValueError) and "liar.npy' is truncated" in str(error)
    assert "shape (1000000, 1000000, 256, 256)" in str(error) and peak < _MIB


def test_npz_member_declaring_more_than_it_holds_is_refused(tmp_path: Path) -> None:
    member = io.BytesIO()
    np.save(member, np.zeros((2, 3, 4, 4), dtype=np.float32))
    lying = member.getvalue().replace(b"(2, 3, 4, 4)", b"(2000, 3000, 4000, 4)")
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.npy", lying)
    error, peak = _peak(lambda: read_4dstem(path, **CAL))
    assert isinstance(error, ValueError) and "liar.npz" in str(error)
    assert "declares shape (2000, 3000, 4000, 4)" in str(error) and peak < _MIB


def test_mib_header_claiming_a_huge_frame_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "liar.mib"
    write_mib(path, np.zeros((6, 8, 8), dtype=np.uint16), counter_depth=12)
    content = path.read_bytes()
    path.write_bytes(content.replace(b",00008,00008,U16,", b",99999999,99999999,U16,"))
    error, peak = _peak(lambda: read_4dstem(path, scan_shape=(2, 3), **CAL))
    assert isinstance(error, ValueError) and "liar.mib' is truncated" in str(error)
    assert peak < _MIB


def test_mib_hdr_claiming_a_huge_scan_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scan.mib"
    write_mib(path, np.zeros((6, 8, 8), dtype=np.uint16), counter_depth=12)
    (tmp_path / "scan.hdr").write_text(
        "HDR,\t\nFrames in Acquisition (Number):\t1000000000000\n"
        "Frames per Trigger (Number):\t1000000\nEnd\t\n"
    )
    error, peak = _peak(lambda: read_4dstem(path, **CAL))
    assert isinstance(error, ValueError) and peak < _MIB
    assert "scan.mib' holds 6 frames of 8 x 8; the scan in" in str(error)
    assert "(1000000, 1000000) needs 1000000000000" in str(error)
    (tmp_path / "scan.hdr").write_text("HDR,\t\nScanX:\t-2\nScanY:\t-3\nEnd\t\n")
    with pytest.raises(ValueError, match=r"scan\.mib' holds 6 frames .* no \.hdr file with"):
        read_4dstem(path, **CAL)


def test_empad_xml_claiming_a_huge_scan_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "scan.raw"
    write_empad_raw(raw, np.zeros((1, 2, 128, 128), dtype=np.float32))
    xml = tmp_path / "scan.xml"
    xml.write_text(
        '<root><raw_file filename="scan.raw"/><scan_parameters mode="acquire">'
        "<scan_resolution_x>1e9</scan_resolution_x><scan_resolution_y>1e400"
        "</scan_resolution_y></scan_parameters><pix_x>1000000000</pix_x>"
        "<pix_y>1000000000</pix_y></root>"
    )
    error, peak = _peak(lambda: read_4dstem(xml, **CAL))
    assert isinstance(error, ValueError) and peak < _MIB
    assert "scan.raw' holds 2 frames of 128 x 128, but its XML" in str(error)
    assert "pix (1000000000, 1000000000)" in str(error)


def test_empad_xml_entities_and_deep_nesting_are_refused(tmp_path: Path) -> None:
    case = seeds("empad-xml")[0]
    for name, content in case.items():
        (tmp_path / name).write_bytes(content)
    xml = tmp_path / "scan.xml"
    laughs = "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 9))
    xml.write_text(
        f'<!DOCTYPE root [<!ENTITY e0 "ha">{laughs}]><root><type>&e8;</type>'
        '<raw_file filename="scan.raw"/></root>'
    )
    error, peak = _peak(lambda: read_4dstem(xml, **CAL))
    assert isinstance(error, ValueError) and peak < _MIB
    assert "scan.xml' is not an EMPAD XML file: it declares a document type" in str(error)
    xml.write_text("<root>" + "<a>" * 50 + "</a>" * 50 + "</root>")
    with pytest.raises(ValueError, match="nest deeper than 32 levels"):
        read_4dstem(xml, **CAL)


def test_hdf5_datasets_declaring_more_than_they_store_are_not_read(tmp_path: Path) -> None:
    path = tmp_path / "liar.h5"
    data = np.zeros((2, 3, 4, 4), np.float32)
    write_dataset(path, Dataset4D(data, Calibration(**CAL)))
    with h5py.File(path, "a") as handle:
        # No data written: fill values only, which is allowed for small arrays ...
        handle.create_dataset("dataset/scan_positions_ang", shape=(2, 3, 2), dtype="f8")
        # ... but not for one declaring 8 TiB.
        handle.create_dataset(
            "ground_truth/volume", shape=(2**20, 2**20), dtype="f4", chunks=(64, 64)
        )
    assert read_dataset(path).scan_positions_ang is not None
    error, peak = _peak(lambda: read_ground_truth(path))
    assert isinstance(error, ValueError) and peak < _MIB
    assert "liar.h5': dataset /ground_truth/volume declares shape (1048576, 1048576)" in str(error)
    assert "stores 0 bytes; it is not read" in str(error)


def test_hdf5_deep_nesting_and_link_loops_are_walked_safely(tmp_path: Path) -> None:
    path = tmp_path / "deep.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("a/data", data=np.zeros((2, 3, 4, 4), np.uint16))
        handle["a/loop"] = handle["/"]  # a hard link back to the root
        handle["a/soft"] = h5py.SoftLink("/a")
        group = handle.create_group("deep")
        for _ in range(70):
            group = group.create_group("g")
    with pytest.raises(ValueError, match=r"deep\.h5' nests groups more than 64 deep"):
        read_4dstem(path, **CAL)
    assert read_4dstem(path, dataset_path="/a/data", **CAL).shape == (2, 3, 4, 4)
    with h5py.File(path, "a") as handle:
        del handle["deep"]
    ds = read_4dstem(path, **CAL)  # the loop and the soft link list /a/data once
    assert ds.metadata["source_dataset"] == "/a/data"
    ds.data.file.close()


def test_velox_version_is_read_only_when_small(tmp_path: Path) -> None:
    path = tmp_path / "odd.emd"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("Version", data=[b"[" * 100_000])
    with h5py.File(path, "r") as handle:
        assert not is_velox_emd(handle)  # JSON nested too deep: not Velox, no RecursionError
    with h5py.File(path, "w") as handle:
        handle.create_dataset("Version", shape=(2**40,), dtype="S8", chunks=(1024,))
    with h5py.File(path, "r") as handle:
        error, peak = _peak(lambda: is_velox_emd(handle))
    assert error is None and peak < _MIB
