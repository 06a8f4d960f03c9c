"""Fuzz the 4D-STEM file readers with mutated files and check the untrusted-file contract.

Issue 11, item 6. Every fuzz target (``tests/fuzz/_contract.py``: ``npy``, ``npz``,
``hdf5``, ``ptyscope-h5``, ``emd``, ``empad-raw``, ``empad-xml``, ``mib``, ``mib-hdr``,
``inspect``) starts from small valid seed files (``tests/fuzz/_seeds.py``) and reads
``--budget`` mutants of them:

* random byte changes (set, bit flip, "interesting" bytes), biased to the first 1 KiB
  where the headers are;
* truncation at a random offset, extension (random bytes, a repeated slice), splicing two
  seeds, random garbage (with and without the format's magic bytes), an empty file;
* header-field mutations that keep the rest of the file valid: the ``.npy`` header dict
  (shape, dtype, order, header length, version), ``.npz`` members (re-zipped with valid
  CRCs) and zip directory fields, HDF5 attributes, dataset shapes and dtypes, links and
  groups (written through h5py), Merlin MIB header fields and ``.hdr`` values, EMPAD XML
  values, attributes, entities and raw-file sizes;
* two to four of these stacked.

Each input runs in a worker process under an address-space limit (``RLIMIT_AS``: the
worker's size before the input plus ``--memory-mib``; a fresh worker every 1000 inputs)
and a time limit (``--timeout``), so an unbounded allocation, a hang or an interpreter
crash is caught and counted. The contract itself (what a reader may raise, how much it
may allocate) is checked by ``tests/fuzz/_contract.py``. A contract violation is a
*crash*; its *signature* is the exception type, the innermost ptyscope function and the
innermost frame (or "hang", "worker died"). The smallest inputs of each signature are
saved to ``tests/fuzz/corpus/<target>/<sha1 prefix>.<ext>`` (a folder of the same name for
the multi-file targets; files over 64 KiB gzip-compressed, ``.gz`` appended), where
``tests/fuzz/test_corpus.py`` replays them.

    python benchmarks/fuzz_readers.py [--budget 3000] [--seed 0] [--targets npy,mib]
                                      [--workers 2] [--timeout 5] [--memory-mib 1024]
                                      [--corpus tests/fuzz/corpus] [--no-save]
                                      [--keep-per-signature 1] [--json figures.json]

Deterministic for a given seed and budget (inputs are generated in order from one random
generator per target). Exit status 1 when any input violated the contract. Not part of
the test suite: the default budget takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import math
import multiprocessing
import os
import queue
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from tests.fuzz._contract import TARGETS, Outcome  # noqa: E402
from tests.fuzz._seeds import Case, seeds, zip_members  # noqa: E402

Rng = np.random.Generator
T = TypeVar("T")

# ------------------------------------------------------------------- interesting values
_INTS = [0, 1, 2, 3, 6, 7, -1, -2, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32]
_INTS += [2**63 - 1, 2**63, 2**64, 10**12, 10**18, 10**30, 10**100]
_TOKENS = [str(v) for v in _INTS] + [
    "00000",
    "-0",
    "+3",
    "1_0",
    "0x10",
    "1e400",
    "-1e400",
    "1e18",
    "inf",
    "nan",
    "2.5",
    "",
    " ",
    "x",
    "9" * 5000,
    "1" * 40,
]
_BYTES = [0x00, 0xFF, 0x7F, 0x80, 0x01, ord("9"), ord(","), ord("-"), ord("\n"), ord("<")]
_MAGIC = {
    ".npy": b"\x93NUMPY\x01\x00",
    ".npz": b"PK\x03\x04",
    ".h5": b"\x89HDF\r\n\x1a\n",
    ".emd": b"\x89HDF\r\n\x1a\n",
    ".mib": b"MQ1,",
    ".raw": b"",
    ".xml": b"<root>",
    ".hdr": b"HDR,\t\n",
}


def _token(rng: Rng) -> str:
    return str(_TOKENS[int(rng.integers(len(_TOKENS)))])


def _pick(rng: Rng, items: Sequence[T]) -> T:
    return items[int(rng.integers(len(items)))]


# ------------------------------------------------------------------- byte-level mutators
def _offset(rng: Rng, size: int) -> int:
    if size == 0:
        return 0
    head = min(size, 1024)
    return int(rng.integers(head)) if rng.random() < 0.6 else int(rng.integers(size))


def flip(data: bytes, rng: Rng) -> bytes:
    out = bytearray(data)
    if not out:
        return bytes(rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8))
    for _ in range(int(rng.integers(1, 17))):
        at = _offset(rng, len(out))
        choice = rng.random()
        if choice < 0.4:
            out[at] = int(rng.integers(256))
        elif choice < 0.7:
            out[at] ^= 1 << int(rng.integers(8))
        else:
            out[at] = _pick(rng, _BYTES)
    return bytes(out)


def truncate(data: bytes, rng: Rng) -> bytes:
    return data[: _offset(rng, len(data))]


def extend(data: bytes, rng: Rng) -> bytes:
    if rng.random() < 0.5 or not data:
        return data + bytes(rng.integers(0, 256, size=int(rng.integers(1, 4096)), dtype=np.uint8))
    start = int(rng.integers(len(data)))
    piece = data[start : start + int(rng.integers(1, 70000))]
    at = int(rng.integers(len(data) + 1))
    return data[:at] + piece + data[at:]


def garbage(ext: str, rng: Rng) -> bytes:
    body = bytes(rng.integers(0, 256, size=int(rng.integers(0, 8192)), dtype=np.uint8))
    return _MAGIC.get(ext, b"") + body if rng.random() < 0.5 else body


def splice(data: bytes, other: bytes, rng: Rng) -> bytes:
    return data[: int(rng.integers(len(data) + 1))] + other[int(rng.integers(len(other) + 1)) :]


# ------------------------------------------------------------------------ .npy headers
_DESCRS = [
    "'<u2'",
    "'<f4'",
    "'>f8'",
    "'|u1'",
    "'|O'",
    "'<c8'",
    "'|b1'",
    "'<f2'",
    "'V8'",
    "'|V0'",
    "'<U4'",
    "'|S0'",
    "'<M8[s]'",
    "'<m8[D]'",
    "[('a', '<f4')]",
    "[('a', '|O')]",
    "('<f4', (1000000,))",
    "('<u2', (65536, 65536))",
    "'<f4' * 3",
    "'zz'",
    "1",
    "None",
]


def _shape_text(rng: Rng) -> str:
    choice = rng.random()
    if choice < 0.1:
        return _pick(rng, ["None", "'2'", "(2, 3, 'a')", "(2.5, 3)", "[2, 3, 4, 4]", "()", "(,)"])
    ndim = int(_pick(rng, [0, 1, 2, 3, 3, 4, 4, 4, 5, 32, 33, 70]))
    dims = [str(_pick(rng, _INTS)) if rng.random() < 0.5 else str(int(rng.integers(1, 8)))]
    dims += [
        str(_pick(rng, _INTS)) if rng.random() < 0.3 else str(int(rng.integers(1, 8)))
        for _ in range(ndim - 1)
    ]
    if ndim == 0:
        return "()"
    return "(" + ", ".join(dims) + ("," if ndim == 1 else "") + ")"


def _npy_parts(data: bytes) -> tuple[bytes, str, bytes] | None:
    if len(data) < 10 or not data.startswith(b"\x93NUMPY"):
        return None
    major = data[6]
    width = 2 if major == 1 else 4
    length = int.from_bytes(data[8 : 8 + width], "little")
    start = 8 + width
    header = data[start : start + length].decode("latin-1")
    return data[:8], header, data[start + length :]


def mutate_npy(data: bytes, rng: Rng) -> bytes:
    parts = _npy_parts(data)
    if parts is None:
        return flip(data, rng)
    prefix, header, body = parts
    fields = {
        "descr": re.search(r"'descr': ([^,]+(?:\([^)]*\))?[^,]*),", header),
        "fortran_order": re.search(r"'fortran_order': (\w+)", header),
        "shape": re.search(r"'shape': (\([^)]*\))", header),
    }
    descr = fields["descr"].group(1) if fields["descr"] else "'<f4'"
    order = fields["fortran_order"].group(1) if fields["fortran_order"] else "False"
    shape = fields["shape"].group(1) if fields["shape"] else "(2, 3, 4, 4)"
    what = rng.random()
    if what < 0.45:
        shape = _shape_text(rng)
    elif what < 0.7:
        descr = _pick(rng, _DESCRS)
    elif what < 0.8:
        order = _pick(rng, ["True", "False", "1", "None", "'yes'"])
    elif what < 0.9:
        shape, descr = _shape_text(rng), _pick(rng, _DESCRS)
    text = f"{{'descr': {descr}, 'fortran_order': {order}, 'shape': {shape}, }}"
    if rng.random() < 0.1:
        text = _pick(rng, ["{}", "[1, 2]", "{'descr': '<f4'}", "x" * 70000, text[:-3], "{" * 500])
    raw = text.encode("latin-1", errors="replace")
    major = prefix[6]
    if rng.random() < 0.1:
        major = int(_pick(rng, [1, 2, 3, 0, 4, 255]))
    width = 2 if major == 1 else 4
    pad = -(len(prefix) - 2 + 2 + width + len(raw) + 1) % 64
    raw = raw + b" " * pad + b"\n"
    length = len(raw)
    if rng.random() < 0.1:
        length = int(_pick(rng, [0, 1, len(raw) - 1, len(raw) + 1, 2**16 - 1, 2**32 - 1]))
    length %= 1 << (8 * width)
    head = prefix[:6] + bytes([major, prefix[7]]) + length.to_bytes(width, "little")
    if rng.random() < 0.2:
        body = truncate(body, rng) if rng.random() < 0.5 else extend(body, rng)
    return head + raw + body


# ------------------------------------------------------------------------------ .npz
_ZIP_FIELDS = {  # (signature, offset of field, size of field) in local and central headers
    "local_flags": (b"PK\x03\x04", 6, 2),
    "local_method": (b"PK\x03\x04", 8, 2),
    "local_csize": (b"PK\x03\x04", 18, 4),
    "local_usize": (b"PK\x03\x04", 22, 4),
    "local_namelen": (b"PK\x03\x04", 26, 2),
    "local_extralen": (b"PK\x03\x04", 28, 2),
    "central_flags": (b"PK\x01\x02", 8, 2),
    "central_method": (b"PK\x01\x02", 10, 2),
    "central_csize": (b"PK\x01\x02", 20, 4),
    "central_usize": (b"PK\x01\x02", 24, 4),
    "central_offset": (b"PK\x01\x02", 42, 4),
    "end_entries": (b"PK\x05\x06", 10, 2),
    "end_cd_size": (b"PK\x05\x06", 12, 4),
    "end_cd_offset": (b"PK\x05\x06", 16, 4),
}


def _zip_field(data: bytes, rng: Rng) -> bytes:
    signature, offset, size = _ZIP_FIELDS[_pick(rng, sorted(_ZIP_FIELDS))]
    spots = [m.start() for m in re.finditer(re.escape(signature), data)]
    if not spots:
        return flip(data, rng)
    at = _pick(rng, spots) + offset
    values = [0, 1, 8, 12, 14, 99, 2**15, 2 ** (8 * size) - 1, 2 ** (8 * size - 1)]
    value = int(_pick(rng, values)) if rng.random() < 0.7 else int(rng.integers(2 ** (8 * size)))
    out = bytearray(data)
    out[at : at + size] = (value % 2 ** (8 * size)).to_bytes(size, "little")
    return bytes(out)


def _npz_members(data: bytes) -> dict[str, bytes] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except Exception:
        return None


def mutate_npz(data: bytes, rng: Rng) -> bytes:
    members = _npz_members(data)
    if members is None or rng.random() < 0.3:
        return _zip_field(data, rng)
    names = list(members)
    name = _pick(rng, names)
    what = rng.random()
    if what < 0.5:
        members[name] = mutate_npy(members[name], rng)
    elif what < 0.65:
        members[name] = _pick(rng, [flip, truncate, extend])(members[name], rng)
    elif what < 0.8:
        new = _pick(rng, ["data", "data.NPY", "../data.npy", "/abs.npy", "", "a" * 300, "é.npy"])
        members[new] = members.pop(name)
    elif what < 0.9:
        members["data.npy"] = b"\x80\x04\x95" + b"pickle" * 10  # a pickle, not an array
    else:
        for index in range(int(rng.integers(2, 300))):
            members[f"m{index}.npy"] = members[name]
    method = zipfile.ZIP_DEFLATED if rng.random() < 0.5 else zipfile.ZIP_STORED
    try:
        return zip_members(members, method)
    except Exception:
        return data


# ------------------------------------------------------------------------------ HDF5
_STR = h5py.string_dtype()


def _attr_values(rng: Rng) -> Any:
    return _pick(
        rng,
        [
            "ptyscope-data",
            np.bytes_(b"ptyscope-data"),
            np.array(["ptyscope-data", "x"], dtype=_STR),
            np.bytes_(b"\xff\xfe\xfa"),
            np.array([b"\xff", b"\x80"]),
            "tilt_series",
            "4dstem",
            "",
            "x" * 5000,
            10**18,
            -1,
            "2",
            np.float64("nan"),
            np.float64("inf"),
            -1.0,
            0.0,
            1e308,
            np.arange(3.0),
            np.zeros(0),
            np.array([[1.0, 2.0]]),
            np.complex128(1j),
            np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
            np.bool_(True),
            np.array([2, 2**62], dtype=np.int64),
            np.uint64(2**64 - 1),
        ],
    )


def _h5_objects(handle: h5py.File) -> list[tuple[str, Any]]:
    """(name, object) below the root along hard links, each once (no recursion)."""
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()
    stack: list[tuple[str, h5py.Group]] = [("", handle)]
    while stack:
        prefix, group = stack.pop()
        for name in group:
            if not isinstance(group.get(name, getlink=True), h5py.HardLink):
                continue
            item = group.get(name)
            address = h5py.h5o.get_info(item.id).addr if item is not None else None
            if address is None or address in seen:
                continue
            seen.add(address)
            found.append((prefix + name, item))
            if isinstance(item, h5py.Group):
                stack.append((prefix + name + "/", item))
    return found


def _h5_op(handle: h5py.File, rng: Rng) -> None:
    objects = _h5_objects(handle)
    names = [name for name, _ in objects]
    groups = ["/", *(name for name, item in objects if isinstance(item, h5py.Group))]
    datasets = [name for name, item in objects if isinstance(item, h5py.Dataset)]
    what = rng.random()
    if what < 0.3:  # an attribute with an odd value
        where = handle[_pick(rng, groups + datasets)]
        existing = list(where.attrs)
        common = ["format", "kind", "format_version", "energy_ev", "scan_step_ang"]
        name = _pick(rng, existing + common) if existing and rng.random() < 0.7 else None
        where.attrs[name or _pick(rng, common)] = _attr_values(rng)
    elif what < 0.5 and datasets:  # replace a dataset by one of another shape or dtype
        name = _pick(rng, datasets)
        old = handle[name]
        shape = tuple(int(n) for n in old.shape or ())
        if math.prod(shape) > 2**20:  # a replaced huge declared dataset: write small ones
            shape = (2, 3, 4, 4)
        del handle[name]
        kind = int(rng.integers(9))
        if kind == 0:  # huge declared shape, no chunk written
            big = tuple(int(_pick(rng, [2**20, 2**31, 10**6, 7])) for _ in shape or (1,))
            handle.create_dataset(name, shape=big, dtype=old.dtype, chunks=(1,) * len(big))
        elif kind == 1:
            handle.create_dataset(name, data=np.zeros(shape[:-1] or (3,), dtype=np.float32))
        elif kind == 2:
            handle.create_dataset(name, data=np.zeros((0, *shape[1:]), dtype=np.uint16))
        elif kind == 3:
            dtype = np.dtype(_pick(rng, ["c8", "S4", "?", "f2", "i1"]))
            handle.create_dataset(name, data=np.zeros(shape, dtype=dtype))
        elif kind == 4:
            compound = np.dtype([("a", "i4"), ("b", "f8")])
            handle.create_dataset(name, shape=shape, dtype=compound)
        elif kind == 5:
            handle.create_dataset(name, shape=shape, dtype=_STR)
        elif kind == 6:
            handle.create_dataset(name, data=1.5)  # scalar
        elif kind == 7:
            handle.create_dataset(
                name, shape=shape, dtype="<u2", external=[("missing.bin", 0, h5py.h5f.UNLIMITED)]
            )
        else:
            handle.create_dataset(name, shape=shape, dtype=h5py.enum_dtype({"a": 0}, "u1"))
    elif what < 0.65 and names:  # delete an object
        del handle[_pick(rng, names)]
    elif what < 0.75:  # links: dangling, loops, external
        parent = handle[_pick(rng, groups)]
        link = _pick(rng, ["data", "Version", "calibration", "loop", "x"])
        if link in parent:
            del parent[link]
        parent[link] = _pick(
            rng,
            [
                h5py.SoftLink("/nowhere"),
                h5py.SoftLink(f"{parent.name}/{link}"),
                h5py.ExternalLink("missing.h5", "/data"),
                h5py.ExternalLink("case.h5", "/"),
                handle["/"],
            ],
        )
    elif what < 0.85:  # odd extras readers might visit
        extra = _pick(
            rng,
            [
                "Version",
                "dataset/scan_positions_ang",
                "ground_truth/big",
                "tilt_series/euler_deg",
                "experiment/extra4d",
            ],
        )
        if extra in handle:
            del handle[extra]
        kind = int(rng.integers(5))
        if kind == 0:
            handle.create_dataset(extra, shape=(2**31,), dtype="f8", chunks=(1024,))
        elif kind == 1:
            handle.create_dataset(extra, shape=(2**20, 2**20, 2), dtype="f8", chunks=(1, 1, 2))
        elif kind == 2:
            handle.create_dataset(extra, data=[b"[" * 200000])
        elif kind == 3:
            handle.create_dataset(extra, data=np.array(['{"format": "Velox"}'], dtype=_STR))
        else:
            handle.create_dataset(extra, shape=(2, 3, 4, 4), dtype="f4")
    else:  # deep nesting
        group = handle.require_group("ground_truth")
        for index in range(int(_pick(rng, [10, 70, 70, 70, 1200]))):
            group = group.create_group(f"g{index % 2}")


def mutate_hdf5(data: bytes, rng: Rng) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "case.h5"
        path.write_bytes(data)
        try:
            with h5py.File(path, "r+") as handle:
                for _ in range(int(rng.integers(1, 4))):
                    try:
                        _h5_op(handle, rng)
                    except Exception:
                        continue
        except Exception:
            return flip(data, rng)
        return path.read_bytes()


# ------------------------------------------------------------------------------ Merlin
def mutate_mib(data: bytes, rng: Rng) -> bytes:
    starts = [m.start() for m in re.finditer(rb"MQ1,", data)]
    if not starts:
        return flip(data, rng)
    start = _pick(rng, [starts[0], starts[-1], _pick(rng, starts)])
    end = data.find(b"\x00", start)
    end = end if end != -1 else min(len(data), start + 384)
    stop = end
    while stop < len(data) and data[stop] == 0:
        stop += 1
    fields = data[start:end].split(b",")
    what = rng.random()
    index = int(_pick(rng, [1, 2, 3, 4, 5, 6, 6, 2, 4, 5, int(rng.integers(len(fields)))]))
    index = min(index, len(fields) - 1)
    if what < 0.6:
        fields[index] = _token(rng).encode("ascii")
    elif what < 0.7:
        fields[index] = _pick(rng, [b"U01", b"R64", b"U64", b"U99", b"UAB", b"Q16", b"U1"])
    elif what < 0.78:
        fields[index] = bytes([int(rng.integers(128, 256))]) * 3
    elif what < 0.86:
        del fields[index:]
    elif what < 0.93 and b"MQ1A" in fields:
        at = fields.index(b"MQ1A") + int(rng.integers(1, 4))
        if at < len(fields):
            fields[at] = _pick(rng, [b"0", b"99", b"-1", b"xns", b"ns", b"10" * 30 + b"ns"])
    else:
        fields.insert(index, _token(rng).encode("ascii"))
    text = b",".join(fields)
    padded_size = stop - start
    if rng.random() < 0.8:
        text = text[:padded_size].ljust(padded_size, b"\x00")
    return data[:start] + text + data[stop:]


def mutate_hdr(data: bytes, rng: Rng) -> bytes:
    lines = data.split(b"\n")
    keys = [
        b"Frames in Acquisition (Number)",
        b"Frames per Trigger (Number)",
        b"ScanX",
        b"ScanY",
    ]
    what = rng.random()
    if what < 0.7:
        key = _pick(rng, keys)
        value = _token(rng).encode("ascii")
        lines = [line for line in lines if not line.startswith(key)]
        lines.insert(1, key + b":\t" + value)
    elif what < 0.85:
        lines.insert(int(rng.integers(len(lines) + 1)), bytes([0xFF, 0xFE]) + b"\t\x80")
    else:
        lines = lines[: int(rng.integers(len(lines) + 1))]
    return b"\n".join(lines)


# ------------------------------------------------------------------------------- EMPAD
_XML_ELEMENTS = [
    "scan_resolution_x",
    "scan_resolution_y",
    "pix_x",
    "pix_y",
    "high_voltage",
    "type",
]
_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE root [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
    + ']><root><type>&j;</type><raw_file filename="scan.raw"/></root>'
)


def mutate_xml(data: bytes, rng: Rng) -> bytes:
    text = data.decode("utf-8", errors="replace")
    what = rng.random()
    if what < 0.5:
        element = _pick(rng, _XML_ELEMENTS)
        value = _pick(rng, [*_TOKENS[:-2], "series", "1e5", "-3", "-2"])
        pattern = re.compile(rf"<{element}>[^<]*</{element}>")
        if pattern.search(text):
            matches = list(pattern.finditer(text))
            match = _pick(rng, matches)
            text = text[: match.start()] + f"<{element}>{value}</{element}>" + text[match.end() :]
        else:
            text = text.replace("</root>", f"<{element}>{value}</{element}></root>")
    elif what < 0.62:
        name = _pick(rng, ["", "scan.xml", "../scan.raw", "/dev/zero", ".", "x" * 300, "scan.raw"])
        text = re.sub(r'filename="[^"]*"', f'filename="{name}"', text)
    elif what < 0.7:
        text = text.replace('mode="acquire"', f'mode="{_pick(rng, ["search", "", "x"])}"')
    elif what < 0.78:
        element = _pick(rng, [*_XML_ELEMENTS, "raw_file", "scan_parameters"])
        text = re.sub(rf"<{element}[ >].*?</{element}>|<{element}[^>]*/>", "", text, count=1)
    elif what < 0.84:
        return _LAUGHS.encode()
    elif what < 0.9:
        depth = int(_pick(rng, [100, 20000]))
        return ("<root>" + "<a>" * depth + "</a>" * depth + "</root>").encode()
    else:
        return data + bytes([0xFF, 0xFE, 0x00])
    return text.encode("utf-8")


def mutate_raw(data: bytes, rng: Rng) -> bytes:
    frame = 130 * 128 * 4
    if rng.random() < 0.5:
        frames = int(_pick(rng, [0, 1, 3, 4, 6, 9]))
        return (data * (frames // 2 + 1))[: frames * frame]
    return _pick(rng, [truncate, extend, flip])(data, rng)


# -------------------------------------------------------------------- case generation
_HEADER_MUTATORS: dict[str, Callable[[bytes, Rng], bytes]] = {
    ".npy": mutate_npy,
    ".npz": mutate_npz,
    ".h5": mutate_hdf5,
    ".emd": mutate_hdf5,
    ".mib": mutate_mib,
    ".hdr": mutate_hdr,
    ".xml": mutate_xml,
    ".raw": mutate_raw,
}


def _one(name: str, data: bytes, others: list[bytes], rng: Rng) -> tuple[bytes, str]:
    ext = Path(name).suffix
    what = rng.random()
    if what < 0.4:
        return _HEADER_MUTATORS[ext](data, rng), "header"
    if what < 0.62:
        return flip(data, rng), "flip"
    if what < 0.76:
        return truncate(data, rng), "truncate"
    if what < 0.85:
        return extend(data, rng), "extend"
    if what < 0.91:
        return splice(data, _pick(rng, others), rng), "splice"
    if what < 0.97:
        return garbage(ext, rng), "garbage"
    return b"", "empty"


def make_case(target: str, pool: list[Case], rng: Rng) -> tuple[Case, str]:
    """One mutant of a random seed of ``target``; returns the case and the mutation name."""
    case = dict(_pick(rng, pool))
    names = sorted(case)
    if len(names) > 1 and rng.random() < 0.05:  # the companion file is missing
        del case[_pick(rng, [n for n in names if n != TARGETS[target].entry])]
        return case, "no-sidecar"
    name = _pick(rng, names)
    others = [c[name] for c in pool if name in c]
    if rng.random() < 0.15:
        steps = []
        for _ in range(int(rng.integers(2, 5))):
            name = _pick(rng, sorted(case))
            case[name], step = _one(name, case[name], others, rng)
            steps.append(step)
        return case, "stacked"
    case[name], step = _one(name, case[name], others, rng)
    return case, step


def case_digest(case: Case) -> str:
    digest = hashlib.sha1()
    for name in sorted(case):
        digest.update(name.encode() + b"\0" + case[name] + b"\0")
    return digest.hexdigest()


# ---------------------------------------------------------------------------- workers
_INPUTS_PER_WORKER = 1000
_GZIP_ABOVE_BYTES = 2**16


def _vm_size() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _worker(conn: Connection, memory_bytes: int) -> None:
    warnings.simplefilter("ignore")
    sys.unraisablehook = lambda _: None  # h5py's "Exception ignored" noise on damaged files
    from tests.fuzz._contract import run_case

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    base = Path(tempfile.mkdtemp(prefix="fuzz-readers-"))
    conn.send("ready")
    try:
        while True:
            message = conn.recv()
            if message is None:
                break
            target, case = message
            folder = base / "case"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            for name, content in case.items():
                (folder / name).write_bytes(content)
            start = time.perf_counter()
            # The same address-space margin for every input, whatever the worker holds.
            resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + memory_bytes, hard))
            try:
                outcome = run_case(TARGETS[target], folder)
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
            conn.send((outcome, time.perf_counter() - start))
    finally:
        shutil.rmtree(base, ignore_errors=True)


class _Worker:
    def __init__(self, memory_bytes: int) -> None:
        self.memory_bytes = memory_bytes
        self.start()

    def start(self) -> None:
        """Start a worker and wait until it has imported everything (not timed per input)."""
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, self.memory_bytes))
        self.process.daemon = True
        self.process.start()
        self.used = 0
        child.close()
        if not self.conn.poll(600.0) or self.conn.recv() != "ready":
            raise RuntimeError("a fuzz worker did not start within 600 s")

    def run(self, target: str, case: Case, timeout: float) -> tuple[Outcome, float]:
        self.used += 1
        if self.used > _INPUTS_PER_WORKER:  # a fresh interpreter now and then: no drift
            self.stop()
            self.start()
        self.conn.send((target, case))
        if not self.conn.poll(timeout):
            self.process.kill()
            self.process.join()
            self.start()
            return Outcome("violation", "Timeout", "", f"hang (> {timeout:g} s)", 0), timeout
        try:
            result: tuple[Outcome, float] = self.conn.recv()
        except (EOFError, ConnectionError):
            self.process.join()
            code = self.process.exitcode
            self.start()
            what = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            return Outcome("violation", "WorkerDied", "", f"worker died ({what})", 0), 0.0
        return result

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


# ---------------------------------------------------------------------------- fuzzing
@dataclass
class TargetFigures:
    """Counts for one target."""

    inputs: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    mutations: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    peak_bytes: int = 0
    signature_counts: Counter[str] = field(default_factory=Counter)
    crashes: dict[str, list[tuple[int, str, Case, Outcome]]] = field(
        default_factory=lambda: defaultdict(list)
    )


def _cases(targets: list[str], budget: int, seed: int) -> Iterator[tuple[str, Case, str]]:
    for target in targets:
        rng = np.random.default_rng([seed, list(TARGETS).index(target)])
        pool = seeds(target)
        for _ in range(budget):
            case, mutation = make_case(target, pool, rng)
            yield target, case, mutation


def fuzz(args: argparse.Namespace) -> dict[str, TargetFigures]:
    """Run every target's budget of inputs through the worker pool."""
    figures = {target: TargetFigures() for target in args.targets}
    work: queue.Queue[tuple[str, Case, str] | None] = queue.Queue(maxsize=4 * args.workers)
    lock = threading.Lock()
    total = budget_total = args.budget * len(args.targets)
    done = [0]
    started = time.perf_counter()

    failures: list[BaseException] = []

    def consume() -> None:
        worker = None
        try:
            worker = _Worker(args.memory_mib * 2**20)
            while (item := work.get()) is not None:
                target, case, mutation = item
                outcome, seconds = worker.run(target, case, args.timeout)
                size = sum(len(c) for c in case.values())
                with lock:
                    fig = figures[target]
                    fig.inputs += 1
                    fig.kinds[outcome.kind] += 1
                    fig.errors[outcome.error or "(none)"] += 1
                    fig.mutations[mutation] += 1
                    fig.seconds += seconds
                    if outcome.kind != "violation":  # numpy traces failed allocations too
                        fig.peak_bytes = max(fig.peak_bytes, outcome.peak_bytes)
                    if outcome.kind == "violation":
                        fig.signature_counts[outcome.signature] += 1
                        fig.crashes[outcome.signature].append((size, mutation, case, outcome))
                        fig.crashes[outcome.signature].sort(key=lambda item: item[0])
                        del fig.crashes[outcome.signature][max(args.keep_per_signature, 1) :]
                    done[0] += 1
                    if done[0] % 500 == 0:
                        rate = done[0] / (time.perf_counter() - started)
                        print(f"  {done[0]}/{total} inputs ({rate:.0f}/s)", file=sys.stderr)
        except BaseException as error:  # reported by the main thread
            failures.append(error)
        finally:
            if worker is not None:
                worker.stop()

    def put(item: tuple[str, Case, str] | None) -> None:
        while True:
            if failures:
                raise RuntimeError("a fuzzing thread failed; the run is incomplete") from failures[
                    0
                ]
            with contextlib.suppress(queue.Full):
                work.put(item, timeout=1.0)
                return

    threads = [threading.Thread(target=consume, daemon=True) for _ in range(args.workers)]
    for thread in threads:
        thread.start()
    for item in _cases(args.targets, args.budget, args.seed):
        put(item)
    for _ in threads:
        put(None)
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError("a fuzzing thread failed; the run is incomplete") from failures[0]
    assert sum(f.inputs for f in figures.values()) == budget_total
    return figures


def _write(path: Path, content: bytes) -> None:
    """Write a corpus file; files over 64 KiB gzip-compressed, with ``.gz`` appended."""
    if len(content) > _GZIP_ABOVE_BYTES:
        path = path.with_name(path.name + ".gz")
        content = gzip.compress(content, mtime=0)
    path.write_bytes(content)


def save_corpus(figures: dict[str, TargetFigures], folder: Path) -> list[Path]:
    """Write the kept crashing inputs; returns the paths written."""
    written = []
    for target, fig in figures.items():
        entry = TARGETS[target].entry
        for crashes in fig.crashes.values():
            for _, _, case, _ in crashes:
                digest = case_digest(case)[:12]
                base = folder / target
                base.mkdir(parents=True, exist_ok=True)
                if entry is None:
                    ((name, content),) = case.items()
                    path = base / f"{digest}{Path(name).suffix}"
                    _write(path, content)
                else:
                    path = base / digest
                    path.mkdir(exist_ok=True)
                    for name, content in case.items():
                        _write(path / name, content)
                written.append(path)
    return written


def report(figures: dict[str, TargetFigures]) -> str:
    """The figures as text tables."""
    lines = [
        f"{'target':<12} {'inputs':>7} {'accepted':>8} {'refused':>8} {'crashes':>8} "
        f"{'unique':>6} {'ms/input':>8} {'peak alloc':>10}",
    ]
    for target, fig in figures.items():
        ms = 1e3 * fig.seconds / max(fig.inputs, 1)
        lines.append(
            f"{target:<12} {fig.inputs:>7} {fig.kinds['accepted']:>8} {fig.kinds['refused']:>8} "
            f"{fig.kinds['violation']:>8} {len(fig.crashes):>6} {ms:>8.2f} "
            f"{fig.peak_bytes / 2**20:>8.1f} MiB"
        )
    totals = [sum(f.inputs for f in figures.values())]
    totals.append(sum(f.kinds["violation"] for f in figures.values()))
    totals.append(sum(len(f.crashes) for f in figures.values()))
    lines.append(f"{'total':<12} {totals[0]:>7} {'':>8} {'':>8} {totals[1]:>8} {totals[2]:>6}")
    lines.append("(peak alloc: the largest traced allocation of an input that met the contract)")
    lines.append("")
    lines.append("exceptions by type:")
    for target, fig in figures.items():
        parts = ", ".join(f"{name} {count}" for name, count in fig.errors.most_common())
        lines.append(f"  {target:<12} {parts}")
    lines.append("")
    lines.append("mutations:")
    for target, fig in figures.items():
        parts = ", ".join(f"{name} {count}" for name, count in sorted(fig.mutations.items()))
        lines.append(f"  {target:<12} {parts}")
    crashes = [(t, s, c) for t, f in figures.items() for s, c in f.crashes.items()]
    lines.append("")
    lines.append(f"unique crash signatures ({len(crashes)}):")
    for target, signature, kept in crashes:
        size, mutation, _, outcome = kept[0]
        count = figures[target].signature_counts[signature]
        lines.append(f"  [{target}] {signature}  ({count} inputs)")
        lines.append(f"      smallest input {size} bytes ({mutation}): {outcome.message[:160]!r}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=3000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per input")
    parser.add_argument("--memory-mib", type=int, default=1024, help="address space per input")
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "fuzz" / "corpus")
    parser.add_argument("--no-save", action="store_true", help="do not write the corpus")
    parser.add_argument("--keep-per-signature", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {unknown}; known: {', '.join(TARGETS)}")
    # The readers' forked HDF5 check (ptyscope.io.hdf5_guard) must give up before the
    # fuzzer calls the input a hang; the workers inherit this.
    os.environ["PTYSCOPE_HDF5_GUARD_TIMEOUT_S"] = f"{args.timeout / 2:g}"
    start = time.perf_counter()
    figures = fuzz(args)
    elapsed = time.perf_counter() - start
    print(report(figures))
    print(
        f"\n{sum(f.inputs for f in figures.values())} inputs in {elapsed:.0f} s "
        f"({args.workers} workers, seed {args.seed}, budget {args.budget} per target)"
    )
    if not args.no_save:
        written = save_corpus(figures, args.corpus)
        if written:
            print(f"saved {len(written)} crashing inputs under {args.corpus}")
    if args.json is not None:
        summary = {
            target: {
                "inputs": fig.inputs,
                "accepted": fig.kinds["accepted"],
                "refused": fig.kinds["refused"],
                "crashes": fig.kinds["violation"],
                "errors": dict(fig.errors),
                "mutations": dict(fig.mutations),
                "signatures": {
                    signature: {
                        "inputs": fig.signature_counts[signature],
                        "smallest_bytes": kept[0][0],
                        "mutation": kept[0][1],
                        "message": kept[0][3].message,
                    }
                    for signature, kept in fig.crashes.items()
                },
            }
            for target, fig in figures.items()
        }
        args.json.write_text(json.dumps(summary, indent=2))
    return 1 if any(fig.kinds["violation"] for fig in figures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
