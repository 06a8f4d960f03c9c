"""Describe data and result files without loading their arrays (``ptyscope info``).

Files are untrusted: ``.npy`` headers are parsed without unpickling
(:func:`ptyscope.data.formats.numpy_files.read_npy_header`), HDF5 files are walked along
hard links only and a bounded depth (:func:`ptyscope.io.datafile.walk_hdf5`), and whatever
a damaged file raises becomes a ``ValueError`` naming it.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import h5py
import numpy as np

from ptyscope.data.formats.numpy_files import read_npy_header
from ptyscope.io.datafile import walk_hdf5
from ptyscope.io.hdf5_guard import open_untrusted_hdf5

__all__ = ["KNOWN_SUFFIXES", "ArrayInfo", "FileSummary", "describe_file"]

#: File types ``describe_file`` understands (HDF5 is also recognised by its signature).
KNOWN_SUFFIXES: dict[str, str] = {
    ".npy": "NumPy array",
    ".npz": "NumPy archive",
    ".h5": "HDF5",
    ".hdf5": "HDF5",
    ".hdf": "HDF5",
    ".emd": "HDF5 (EMD)",
    ".nxs": "HDF5 (NeXus)",
}


@dataclass(frozen=True)
class ArrayInfo:
    """One array in a file: its path inside the file, shape, dtype and attributes."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def axes(self) -> str | None:
        """Axis reading of a 4D array under ptyscope's convention, else ``None``."""
        if len(self.shape) == 4:
            return "(scan_y, scan_x, det_y, det_x)"
        return None


@dataclass(frozen=True)
class FileSummary:
    """What ``ptyscope info`` reports: the format, arrays, and file-level attributes."""

    path: Path
    format: str
    size_bytes: int
    arrays: list[ArrayInfo]
    attributes: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        """Human-readable multi-line description."""
        lines = [
            f"file:     {self.path}",
            f"format:   {self.format}",
            f"size:     {_human_bytes(self.size_bytes)}",
        ]
        if self.attributes:
            lines.append("attributes:")
            lines.extend(f"  {k} = {_short(v)}" for k, v in sorted(self.attributes.items()))
        else:
            lines.append("attributes: none (calibration must come from the config)")
        lines.append(f"arrays ({len(self.arrays)}):")
        for a in self.arrays:
            axes = f"  {a.axes}" if a.axes else ""
            lines.append(f"  {a.name}: shape {a.shape} {a.dtype}{axes}")
            lines.extend(f"      {k} = {_short(v)}" for k, v in sorted(a.attributes.items()))
        return "\n".join(lines)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _short(value: Any, limit: int = 80) -> str:
    text = str(_plain(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 16 else f"array{value.shape} {value.dtype}"
    if isinstance(value, np.generic):
        return value.item()
    return value


#: What a damaged file raises from numpy, zipfile, zlib or h5py while it is described.
_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    RuntimeError,
    TypeError,
    IndexError,
    OverflowError,
    NotImplementedError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
)


def _npy_header(handle: IO[bytes], where: str) -> tuple[tuple[int, ...], str]:
    header = read_npy_header(handle, where)
    return header.shape, str(header.dtype)


def _describe_npy(path: Path) -> list[ArrayInfo]:
    with open(path, "rb") as handle:
        shape, dtype = _npy_header(handle, repr(str(path)))
    return [ArrayInfo("(array)", shape, dtype)]


def _describe_npz(path: Path) -> list[ArrayInfo]:
    arrays = []
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as handle:
                shape, dtype = _npy_header(handle, f"member {member!r} of {str(path)!r}")
            arrays.append(ArrayInfo(member.removesuffix(".npy"), shape, dtype))
    return arrays


def _describe_hdf5(path: Path) -> tuple[list[ArrayInfo], dict[str, Any]]:
    arrays: list[ArrayInfo] = []
    with open_untrusted_hdf5(path) as handle:
        root_attrs = {k: _plain(v) for k, v in handle.attrs.items()}
        for name, obj in walk_hdf5(handle):
            if isinstance(obj, h5py.Dataset):
                attrs = {k: _plain(v) for k, v in obj.attrs.items()}
                arrays.append(ArrayInfo(name, tuple(obj.shape or ()), str(obj.dtype), attrs))
            elif isinstance(obj, h5py.Group) and obj.attrs:
                for k, v in obj.attrs.items():
                    root_attrs[f"{name}/{k}"] = _plain(v)
    return arrays, root_attrs


def describe_file(path: str | Path) -> FileSummary:
    """Summarise a data or result file without reading its arrays into memory.

    Parameters
    ----------
    path:
        A ``.npy``/``.npz`` file or any HDF5 file (recognised by extension or signature).

    Returns
    -------
    FileSummary

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the format is not recognised (the message lists the known ones) or the file is
        corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path must be an existing file, got {str(path)!r}")
    suffix = path.suffix.lower()
    size = path.stat().st_size
    try:
        if suffix == ".npy":
            return FileSummary(path, KNOWN_SUFFIXES[suffix], size, _describe_npy(path))
        if suffix == ".npz":
            return FileSummary(path, KNOWN_SUFFIXES[suffix], size, _describe_npz(path))
        if suffix in KNOWN_SUFFIXES or h5py.is_hdf5(path):
            arrays, attrs = _describe_hdf5(path)
            return FileSummary(path, KNOWN_SUFFIXES.get(suffix, "HDF5"), size, arrays, attrs)
    except _READ_ERRORS as exc:
        raise ValueError(
            f"{str(path)!r} could not be read as {suffix or 'HDF5'}: {type(exc).__name__}: {exc}"
        ) from None
    known = ", ".join(sorted(KNOWN_SUFFIXES))
    raise ValueError(
        f"path has an unknown format {suffix or '(no extension)'!r}; known formats are {known}"
    )
