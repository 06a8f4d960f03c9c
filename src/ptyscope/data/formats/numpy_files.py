"""NumPy ``.npy`` and ``.npz`` files holding 4D-STEM data.

Layout: the NumPy format (NEP 1, "A simple file format for NumPy arrays",
https://numpy.org/neps/nep-0001-npy-format.html): a header with dtype, shape and order,
then the raw array. ``.npz`` is a zip archive of ``.npy`` members. Arrays are read as
(scan_y, scan_x, det_y, det_x), or as a 3D stack (frames, det_y, det_x) in scan order (x
fastest) together with the ``scan_shape`` option.

``.npy`` files are memory-mapped: nothing is read until a block is used. Members of an
``.npz`` archive cannot be memory-mapped and are read into memory. Neither format records a
calibration: pass it as options (see :mod:`ptyscope.data.formats._common`).

Files are untrusted (:mod:`ptyscope.data.formats._common`): the header is parsed as a
literal (never unpickled; object and structured dtypes are refused), and its shape and
dtype are checked against the bytes the file holds before anything is mapped or allocated.
An ``.npz`` member is read only when it is stored or DEFLATE-compressed, not encrypted,
and the size it declares is at most the stored size (stored) or 1032 times it (DEFLATE).
"""

from __future__ import annotations

import ast
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

import numpy as np

from ptyscope.data.dataset import Dataset4D

from ._common import (
    MAX_DEFLATE_RATIO,
    DataFormatError,
    build_calibration,
    check_real_dtype,
    file_size,
    frames_to_4d,
    reject_unknown_options,
    require_data,
)

__all__ = ["NpyHeader", "read_npy", "read_npy_header", "read_npz"]

_MAGIC = b"\x93NUMPY"
#: Format version -> (bytes of the header-length field, header encoding) (NEP 1).
_VERSIONS = {(1, 0): (2, "latin1"), (2, 0): (4, "latin1"), (3, 0): (4, "utf8")}
#: Longest header parsed [bytes]; numpy's own limit (``max_header_size``).
_MAX_HEADER_BYTES = 10_000
_CHUNK_BYTES = 2**20
#: What a damaged zip archive raises from :mod:`zipfile` and :mod:`zlib`.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    OverflowError,
    NotImplementedError,
    RuntimeError,
    zlib.error,
    struct.error,
)


class NpyHeader(NamedTuple):
    """The header of a ``.npy`` array.

    Attributes
    ----------
    shape:
        Array shape.
    fortran_order:
        The data are stored in Fortran (column-major) order.
    dtype:
        Stored dtype.
    offset:
        Size of the header = offset of the data [bytes].
    """

    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype[Any]
    offset: int

    @property
    def nbytes(self) -> int:
        """Size of the data the header declares [bytes]."""
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_header(handle: IO[bytes], where: str) -> NpyHeader:
    """Parse a ``.npy`` header without trusting it (NEP 1, versions 1.0, 2.0 and 3.0).

    The header dictionary is parsed as a Python literal of at most 10 000 bytes; the
    dtype must be a type string (structured dtypes are refused here, object dtypes by the
    callers' dtype check). Nothing is unpickled.

    Parameters
    ----------
    handle:
        Binary file object positioned at the start of the array.
    where:
        The array for messages, e.g. ``"'/data/scan.npy'"`` or
        ``"member 'data.npy' of '/data/scan.npz'"``.

    Returns
    -------
    NpyHeader

    Raises
    ------
    DataFormatError
        Naming ``where`` and what is wrong.

    Examples
    --------
    >>> import io, numpy as np
    >>> buffer = io.BytesIO()
    >>> np.save(buffer, np.zeros((2, 3), dtype=np.uint16))
    >>> _ = buffer.seek(0)
    >>> read_npy_header(buffer, "the buffer")[:2]
    ((2, 3), False)
    """

    def bad(problem: str) -> DataFormatError:
        return DataFormatError(f"{where} is not a readable .npy array: {problem}")

    start = handle.read(8)
    if len(start) < 8 or not start.startswith(_MAGIC):
        raise bad(f"it starts with {start!r}, expected the magic b'\\x93NUMPY' and a version")
    version = (start[6], start[7])
    if version not in _VERSIONS:
        raise bad(f"format version {version[0]}.{version[1]} is not 1.0, 2.0 or 3.0")
    width, encoding = _VERSIONS[version]
    field = handle.read(width)
    if len(field) < width:
        raise bad("the file ends inside the header")
    length = int.from_bytes(field, "little")
    if length > _MAX_HEADER_BYTES:
        raise bad(
            f"its header claims {length} bytes; headers of up to {_MAX_HEADER_BYTES} are read"
        )
    raw = handle.read(length)
    if len(raw) < length:
        raise bad(f"the file ends inside the header ({len(raw)} of {length} bytes)")
    try:
        header = ast.literal_eval(raw.decode(encoding))
    except (UnicodeDecodeError, SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        # MemoryError and RecursionError: the parser's own limits on nesting, not allocations
        raise bad(f"its header is not a Python literal: {raw[:80]!r}") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise bad(
            f"its header must be a dict of 'descr', 'fortran_order' and 'shape', got {raw[:80]!r}"
        )
    shape, order, descr = header["shape"], header["fortran_order"], header["descr"]
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise bad(f"its shape must be a tuple of integers >= 0, got {shape!r}")
    if not isinstance(order, bool):
        raise bad(f"its fortran_order must be True or False, got {order!r}")
    if not isinstance(descr, str):
        raise bad(
            f"its dtype {descr!r} is structured; 4D-STEM data must be real integer or "
            "floating-point counts"
        )
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError, SyntaxError) as error:
        raise bad(f"its dtype {descr!r} is not a NumPy dtype ({error})") from None
    return NpyHeader(shape, order, dtype, 8 + width + length)


def _check_header(path: str | os.PathLike[str], header: NpyHeader, what: str) -> None:
    check_real_dtype(path, header.dtype, what)
    require_data(path, header.shape, what)


def read_npy(
    path: str | os.PathLike[str], *, scan_shape: Any = None, **calibration: Any
) -> Dataset4D:
    """Read a ``.npy`` array lazily (memory-mapped).

    Parameters
    ----------
    path:
        The ``.npy`` file: 4D (scan_y, scan_x, det_y, det_x) or 3D (frames, det_y, det_x).
    scan_shape:
        (scan_y, scan_x); required for a 3D stack, checked against a 4D array.
    **calibration:
        Calibration options (:mod:`ptyscope.data.formats._common`).

    Returns
    -------
    Dataset4D
        ``data`` is a read-only ``numpy.memmap`` of the stored dtype.

    Raises
    ------
    ValueError
        A malformed header, a dtype other than real numbers (object arrays included:
        nothing is unpickled), no data, or a file shorter than its header declares.
    """
    reject_unknown_options("npy", calibration, ["scan_shape"])
    where = repr(os.fspath(path))
    with open(path, "rb") as handle:
        header = read_npy_header(handle, where)
    _check_header(path, header, "the array")
    size = file_size(path)
    if header.offset + header.nbytes > size:
        raise DataFormatError(
            f"{where} is truncated: its header declares shape {header.shape} of "
            f"{header.dtype} = {header.nbytes} bytes, but the file holds "
            f"{max(size - header.offset, 0)} bytes after the {header.offset}-byte header"
        )
    order: Literal["C", "F"] = "F" if header.fortran_order else "C"
    array = np.memmap(
        path, dtype=header.dtype, mode="r", offset=header.offset, shape=header.shape, order=order
    )
    data = frames_to_4d(path, array, scan_shape, "the array")
    cal = build_calibration(path, calibration)
    return Dataset4D(data, cal, metadata={"source_file": str(Path(path)), "source_format": "npy"})


def _read_member(
    path: str | os.PathLike[str], archive: zipfile.ZipFile, member: str, key: str
) -> np.ndarray:
    """Read one ``.npy`` member of an archive, refusing sizes it does not hold."""
    where = f"array {key!r} (member {member!r}) in {os.fspath(path)!r}"
    info = archive.getinfo(member)
    if not member.endswith(".npy"):
        raise DataFormatError(f"{where} is not a .npy array (its name does not end in .npy)")
    if info.flag_bits & 0x1:
        raise DataFormatError(f"{where} is encrypted; .npz archives are not")
    if info.compress_type == zipfile.ZIP_STORED:
        most = info.compress_size
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        most = MAX_DEFLATE_RATIO * info.compress_size
    else:
        raise DataFormatError(
            f"{where} uses zip compression method {info.compress_type}; .npz archives are "
            "stored or DEFLATE-compressed (methods 0 and 8)"
        )
    if info.compress_size > file_size(path) or info.file_size > most:
        raise DataFormatError(
            f"{where} declares {info.file_size} bytes from {info.compress_size} compressed "
            f"bytes in a {file_size(path)}-byte archive; the zip directory is damaged"
        )
    with archive.open(info) as stream:
        header = read_npy_header(stream, where)
        _check_header(path, header, f"array {key!r}")
        if header.offset + header.nbytes != info.file_size:
            raise DataFormatError(
                f"{where} declares shape {header.shape} of {header.dtype} = {header.nbytes} "
                f"bytes, but the member holds {info.file_size - header.offset} bytes of data"
            )
        array = np.empty(math.prod(header.shape), dtype=header.dtype)
        flat = array.view(np.uint8)
        done = 0
        while done < header.nbytes:
            chunk = stream.read(min(_CHUNK_BYTES, header.nbytes - done))
            if not chunk:
                raise DataFormatError(f"{where} ends after {done} of {header.nbytes} data bytes")
            flat[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            done += len(chunk)
    order: Literal["C", "F"] = "F" if header.fortran_order else "C"
    shaped: np.ndarray = array.reshape(header.shape, order=order)
    return shaped


def read_npz(
    path: str | os.PathLike[str],
    *,
    key: str | None = None,
    scan_shape: Any = None,
    **calibration: Any,
) -> Dataset4D:
    """Read one array of a ``.npz`` archive (into memory).

    Parameters
    ----------
    path:
        The ``.npz`` archive.
    key:
        Name of the member holding the data (without ``.npy``); default: the only member,
        else ``"data"``.
    scan_shape:
        (scan_y, scan_x); required for a 3D stack, checked against a 4D array.
    **calibration:
        Calibration options (:mod:`ptyscope.data.formats._common`).

    Returns
    -------
    Dataset4D
        ``data`` is an in-memory numpy array of the stored dtype.

    Raises
    ------
    ValueError
        A damaged archive, an encrypted or oddly compressed member, a malformed or lying
        ``.npy`` header, a dtype other than real numbers (nothing is unpickled), no data.
    """
    reject_unknown_options("npz", calibration, ["key", "scan_shape"])
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            names = list(members)
            if key is None:
                if len(names) == 1:
                    key = names[0]
                elif "data" in names:
                    key = "data"
                else:
                    raise ValueError(
                        f"{os.fspath(path)!r} holds {len(names)} arrays {names} and none is "
                        "named 'data'; pass key=<name> to choose one"
                    )
            if key not in names:
                raise ValueError(
                    f"key {key!r} is not in {os.fspath(path)!r}; its arrays are {names}"
                )
            array = _read_member(path, archive, members[key], key)
    except DataFormatError:
        raise
    except _ZIP_ERRORS as error:
        if isinstance(error, ValueError) and os.fspath(path) in str(error):
            raise
        raise DataFormatError(
            f"{os.fspath(path)!r} is not a readable .npz (zip) archive: "
            f"{type(error).__name__}: {error}"
        ) from None
    data = frames_to_4d(path, array, scan_shape, f"array {key!r}")
    cal = build_calibration(path, calibration)
    metadata: dict[str, str | float | int] = {
        "source_file": str(Path(path)),
        "source_format": "npz",
        "source_key": key,
    }
    return Dataset4D(data, cal, metadata=metadata)
