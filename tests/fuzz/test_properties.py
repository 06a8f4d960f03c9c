"""Property tests: every reader meets the untrusted-file contract on generated inputs.

Hypothesis draws byte edits of the seed files of every target, and header values of each
format (``.npy`` shape and dtype, ``.npz`` members, Merlin header fields and ``.hdr``
values, EMPAD XML values and raw sizes, HDF5 shapes, dtypes and attributes). The contract
(:mod:`tests.fuzz._contract`): data returned, or a ``ValueError`` naming the file, and an
allocation bounded by the file size. Each test draws 100 examples and the search is
derandomised, so the folder runs in well under a minute; the fuzzer
(``benchmarks/fuzz_readers.py``) runs thousands of inputs per format on demand.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.fuzz._contract import TARGETS, run_case
from tests.fuzz._seeds import Case, seeds

_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_HUGE = st.integers(min_value=-3, max_value=2**70)
_DESCRS = ["<u2", "<f4", ">f8", "|u1", "|O", "<c8", "|b1", "<U4", "|V8", "<M8[s]", "<f2"]


def _check(target: str, case: Case) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for name, content in case.items():
            (Path(folder) / name).write_bytes(content)
        outcome = run_case(TARGETS[target], Path(folder))
    assert outcome.kind != "violation", f"{outcome.signature}: {outcome.message}"


def _npy(shape: Any, descr: str, fortran: bool, payload: int) -> bytes:
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran!r}, 'shape': {shape!r}, }}"
    header = text.encode("latin1")
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(payload)


# --------------------------------------------------------------------------- any target
@pytest.mark.parametrize("target", sorted(TARGETS))
@_SETTINGS
@given(data=st.data())
def test_byte_edits_and_truncation(target: str, data: st.DataObject) -> None:
    case = data.draw(st.sampled_from(seeds(target)))
    name = data.draw(st.sampled_from(sorted(case)))
    content = bytearray(case[name])
    at = st.one_of(st.integers(0, min(len(content), 1024) - 1), st.integers(0, len(content) - 1))
    for where, value in data.draw(st.lists(st.tuples(at, st.integers(0, 255)), max_size=8)):
        content[where] = value
    cut = data.draw(st.none() | st.integers(0, len(content)))
    case[name] = bytes(content[:cut])
    _check(target, case)


# --------------------------------------------------------------------------------- NumPy
@_SETTINGS
@given(
    shape=st.lists(_HUGE, max_size=6).map(tuple),
    descr=st.sampled_from(_DESCRS),
    fortran=st.booleans(),
    payload=st.integers(0, 1024),
)
def test_npy_header_values(shape: tuple[int, ...], descr: str, fortran: bool, payload: int) -> None:
    _check("npy", {"case.npy": _npy(shape, descr, fortran, payload)})


@_SETTINGS
@given(
    shape=st.lists(_HUGE, max_size=5).map(tuple),
    descr=st.sampled_from(_DESCRS),
    payload=st.integers(0, 1024),
    compressed=st.booleans(),
    member=st.sampled_from(["data.npy", "data", "frames.npy"]),
)
def test_npz_member_values(
    shape: tuple[int, ...], descr: str, payload: int, compressed: bool, member: str
) -> None:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        archive.writestr(member, _npy(shape, descr, False, payload))
    _check("npz", {"case.npz": buffer.getvalue()})


# -------------------------------------------------------------------------------- Merlin
_FIELD = st.one_of(
    _HUGE.map(str),
    st.sampled_from(["U01", "R64", "U64", "U08", "U32", "U1", "", "nan", "1e400"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters=","), max_size=8),
)


@_SETTINGS
@given(
    index=st.integers(1, 16),
    value=_FIELD,
    last=st.booleans(),
    keep_size=st.booleans(),
    seed=st.integers(0, 3),
)
def test_mib_header_fields(index: int, value: str, last: bool, keep_size: bool, seed: int) -> None:
    content = seeds("mib")[seed]["case.mib"]
    size = int(content[11:16])
    frame = len(content) // 6
    start = frame * 5 if last else 0
    fields = content[start : start + size].rstrip(b"\x00").split(b",")
    fields[index] = value.encode("ascii")
    text = b",".join(fields)
    if keep_size:
        text = text[:size].ljust(size, b"\x00")
    _check("mib", {"case.mib": content[:start] + text + content[start + size :]})


@_SETTINGS
@given(
    frames=st.none() | _HUGE,
    per_trigger=st.none() | _HUGE,
    scan=st.none() | st.tuples(_HUGE, _HUGE),
)
def test_mib_hdr_values(frames: int | None, per_trigger: int | None, scan: Any) -> None:
    lines = ["HDR,\t"]
    if frames is not None:
        lines.append(f"Frames in Acquisition (Number):\t{frames}")
    if per_trigger is not None:
        lines.append(f"Frames per Trigger (Number):\t{per_trigger}")
    if scan is not None:
        lines += [f"ScanY:\t{scan[0]}", f"ScanX:\t{scan[1]}"]
    case = seeds("mib-hdr")[0]
    case["scan.hdr"] = "\n".join([*lines, "End\t"]).encode()
    _check("mib-hdr", case)


# --------------------------------------------------------------------------------- EMPAD
_VALUE = st.one_of(
    _HUGE.map(str),
    st.floats().map(repr),
    st.text(max_size=8),
    st.sampled_from(["series", "1e400", "-inf", "2.5"]),
)


@_SETTINGS
@given(
    values=st.dictionaries(
        st.sampled_from(["scan_resolution_x", "scan_resolution_y", "pix_x", "pix_y", "type"]),
        _VALUE,
    ),
    voltage=_VALUE,
    filename=st.sampled_from(["scan.raw", "", ".", "..", "../scan.raw", "x" * 300, "scan.xml"]),
    frames=st.integers(0, 4),
    entry=st.sampled_from(["empad-raw", "empad-xml"]),
)
def test_empad_xml_values(
    values: dict[str, str], voltage: str, filename: str, frames: int, entry: str
) -> None:
    block = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in values.items() if "resolution" in k)
    rest = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in values.items() if "resolution" not in k)
    xml = (
        f"<root><raw_file filename={quoteattr(filename)}/>"
        f'<scan_parameters mode="acquire">{block}</scan_parameters>{rest}'
        f"<iom_measurements><high_voltage>{escape(voltage)}</high_voltage></iom_measurements>"
        "</root>"
    )
    case = {"scan.raw": bytes(130 * 128 * 4 * frames), "scan.xml": xml.encode("utf-8", "replace")}
    _check(entry, case)


# ---------------------------------------------------------------------------------- HDF5
_ATTRIBUTE = st.one_of(
    st.sampled_from(["ptyscope-data", "4dstem", "tilt_series", ""]),
    st.binary(max_size=6).map(np.bytes_),
    _HUGE.filter(lambda v: -(2**63) <= v < 2**63),
    st.floats(),
    st.lists(st.floats(), max_size=3).map(np.array),
    st.lists(st.sampled_from(["ptyscope-data", "x"]), max_size=3).map(
        lambda v: np.array(v, dtype=h5py.string_dtype())
    ),
)


def _hdf5_case(write: Any) -> Case:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "case.h5"
        try:
            with h5py.File(path, "w") as handle:
                write(handle)
        except (TypeError, ValueError, OSError):
            assume(False)  # h5py cannot write this combination
        return {"case.h5": path.read_bytes()}


@_SETTINGS
@given(
    shape=st.lists(st.integers(0, 2**40), min_size=1, max_size=5).map(tuple),
    dtype=st.sampled_from(["<u2", "<f4", "<c8", "S3", "|b1", "<f2"]),
    format_attr=st.none() | _ATTRIBUTE,
    kind_attr=st.none() | _ATTRIBUTE,
)
def test_hdf5_declared_shapes_and_attributes(
    shape: tuple[int, ...], dtype: str, format_attr: Any, kind_attr: Any
) -> None:
    def write(handle: h5py.File) -> None:
        chunks = None if 0 in shape else (1,) * len(shape)
        handle.create_dataset("entry/data", shape=shape, dtype=dtype, chunks=chunks)
        for name, value in (("format", format_attr), ("kind", kind_attr)):
            if value is not None:
                handle.attrs[name] = value

    _check("hdf5", _hdf5_case(write))


_CALIBRATION = [
    "energy_ev",
    "scan_step_ang",
    "detector_pixel_inv_ang",
    "scan_rotation_deg",
    "semiangle_mrad",
    "detector_center_px",
    "scan_transpose",
]


@_SETTINGS
@given(
    name=st.sampled_from(_CALIBRATION),
    value=_ATTRIBUTE,
    version=st.none() | _ATTRIBUTE,
    drop=st.sampled_from(
        [None, "dataset/metadata", "dataset/calibration", "dataset/data", "dataset"]
    ),
    positions=st.none() | st.lists(st.integers(0, 2**20), min_size=1, max_size=4).map(tuple),
)
def test_ptyscope_file_values(
    name: str, value: Any, version: Any, drop: str | None, positions: Any
) -> None:
    def write(handle: h5py.File) -> None:
        seed = h5py.File(io.BytesIO(seeds("ptyscope-h5")[0]["case.h5"]), "r")
        for key, attr in seed.attrs.items():
            handle.attrs[key] = attr
        seed.copy("dataset", handle)
        if "ground_truth" in seed:
            seed.copy("ground_truth", handle)
        seed.close()
        handle["dataset/calibration"].attrs[name] = value
        if version is not None:
            handle.attrs["format_version"] = version
        if positions is not None:
            handle.create_dataset(
                "dataset/scan_positions_ang", shape=positions, dtype="f8", chunks=True
            )
        if drop is not None:
            del handle[drop]

    _check("ptyscope-h5", _hdf5_case(write))
