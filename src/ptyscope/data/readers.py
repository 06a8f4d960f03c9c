"""Read 4D-STEM data from detector and file formats: one entry point, one registry.

:func:`read_4dstem` picks a reader by ``format=`` (a registered name or a reader function)
or by the file's extension, and returns a :class:`~ptyscope.data.dataset.Dataset4D` whose
data stay on disk where the format allows (``numpy.memmap`` or ``h5py.Dataset``).

Built-in formats
----------------
================  ===================================  ========================================
name              extensions                           reader
================  ===================================  ========================================
``npy``           ``.npy``                             :func:`.formats.numpy_files.read_npy`
``npz``           ``.npz``                             :func:`.formats.numpy_files.read_npz`
``hdf5``          ``.h5``, ``.hdf5``, ``.hdf``,        :func:`.formats.hdf5_any.read_hdf5`
                  ``.nxs``                             (ptyscope files, any 4D dataset)
``emd``           ``.emd``                             :func:`.formats.hdf5_any.read_emd`
                                                       (EMD 1.0 / py4DSTEM; Velox: rsciio)
``empad``         ``.raw``, ``.xml``                   :func:`.formats.empad.read_empad`
``mib``           ``.mib``                             :func:`.formats.merlin.read_mib`
``rosettasciio``  ``.dm3``, ``.dm4``, ``.blo``,        :func:`.formats.rosetta.read_rosetta`
                  ``.hspy``, ``.zspy``                 (optional extra ``ptyscope[io]``)
================  ===================================  ========================================

Every reader takes the calibration its file lacks as keyword options with units in their
names (``energy_ev``, ``scan_step_ang``, ``detector_pixel_inv_ang`` or
``detector_pixel_mrad``, ``semiangle_mrad``, ...; see :mod:`ptyscope.data.formats._common`)
plus its own options (``scan_shape``, ``dataset_path``, ``key``, ...). A missing required
calibration raises a ``ValueError`` naming the option to pass.

Files are treated as untrusted: a malformed, truncated or lying file raises a
``ValueError`` (:class:`~ptyscope.data.formats._common.DataFormatError` or another) whose
message names the file and what is wrong; nothing is unpickled, and nothing is allocated
from sizes a header states before they are checked against the bytes the file holds
(:mod:`ptyscope.data.formats._common`, "Untrusted files"). ``benchmarks/fuzz_readers.py``
fuzzes every built-in reader against this contract.

Examples
--------
>>> import tempfile, pathlib, numpy as np
>>> path = pathlib.Path(tempfile.mkdtemp()) / "scan.npy"
>>> np.save(path, np.zeros((2, 3, 8, 8), dtype=np.float32))
>>> ds = read_4dstem(path, energy_ev=300e3, scan_step_ang=0.5, detector_pixel_mrad=1.0)
>>> ds.shape, ds.is_lazy
((2, 3, 8, 8), True)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptyscope.data.dataset import Dataset4D

from .formats.empad import read_empad
from .formats.hdf5_any import read_emd, read_hdf5
from .formats.merlin import read_mib
from .formats.numpy_files import read_npy, read_npz
from .formats.rosetta import read_rosetta

__all__ = [
    "ReaderEntry",
    "ReaderFunction",
    "format_for_path",
    "get_reader",
    "known_formats",
    "read_4dstem",
    "register_reader",
]

#: A reader: ``reader(path, **options) -> Dataset4D``.
ReaderFunction = Callable[..., Dataset4D]


@dataclass(frozen=True)
class ReaderEntry:
    """A registered format: its name, file extensions (lower case, with the dot) and reader."""

    name: str
    extensions: tuple[str, ...]
    function: ReaderFunction


_READERS: dict[str, ReaderEntry] = {}


def _normalise_extension(extension: str) -> str:
    ext = extension.strip().lower()
    if not ext or ext == ".":
        raise ValueError(f"extensions must be non-empty, like '.mib', got {extension!r}")
    return ext if ext.startswith(".") else "." + ext


def register_reader(
    name: str,
    extensions: Sequence[str],
    function: ReaderFunction,
    *,
    replace: bool = False,
) -> None:
    """Register a reader under ``name`` for files ending in ``extensions``.

    Parameters
    ----------
    name:
        Format name, used as ``read_4dstem(..., format=name)``; stored lower case.
    extensions:
        File extensions (``".ext"`` or ``"ext"``, case-insensitive; may be empty).
    function:
        ``function(path, **options) -> Dataset4D``.
    replace:
        Allow replacing an existing name, and taking over extensions registered to
        another format.

    Raises
    ------
    ValueError
        If ``name`` is taken or an extension belongs to another format (unless
        ``replace``), or an extension is empty.
    TypeError
        If ``function`` is not callable.
    """
    if not callable(function):
        raise TypeError(f"function must be callable, got {function!r}")
    key = name.strip().lower()
    if not key:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if key in _READERS and not replace:
        raise ValueError(f"a reader named {key!r} is registered already (pass replace=True)")
    exts = tuple(dict.fromkeys(_normalise_extension(ext) for ext in extensions))
    for other in list(_READERS.values()):
        if other.name == key:
            continue
        clash = set(exts) & set(other.extensions)
        if clash and not replace:
            raise ValueError(
                f"extension(s) {sorted(clash)} belong to the {other.name!r} reader already "
                "(pass replace=True to take them over)"
            )
        if clash:
            kept = tuple(ext for ext in other.extensions if ext not in clash)
            _READERS[other.name] = ReaderEntry(other.name, kept, other.function)
    _READERS[key] = ReaderEntry(key, exts, function)


def known_formats() -> dict[str, tuple[str, ...]]:
    """Registered format names and their extensions."""
    return {entry.name: entry.extensions for entry in _READERS.values()}


def _describe_formats() -> str:
    return "; ".join(
        f"{name} ({', '.join(exts) or 'by name only'})" for name, exts in known_formats().items()
    )


def format_for_path(path: str | os.PathLike[str]) -> str:
    """The registered format whose extension ends the file name (longest match).

    Raises
    ------
    ValueError
        If no registered extension matches; the message lists the known formats.
    """
    name = Path(path).name.lower()
    best: tuple[int, str] | None = None
    for entry in _READERS.values():
        for ext in entry.extensions:
            if name.endswith(ext) and (best is None or len(ext) > best[0]):
                best = (len(ext), entry.name)
    if best is None:
        suffix = Path(path).suffix or "(none)"
        raise ValueError(
            f"cannot tell the format of {os.fspath(path)!r} from its extension {suffix!r}; "
            f"known formats: {_describe_formats()}. Pass format=<name>"
        )
    return best[1]


def get_reader(format: str | ReaderFunction) -> ReaderFunction:
    """The reader for a format name, or ``format`` itself if it is a reader function.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known formats.
    """
    if callable(format):
        return format
    entry = _READERS.get(str(format).strip().lower())
    if entry is None:
        raise ValueError(f"format must be one of: {_describe_formats()}; got {format!r}")
    return entry.function


def read_4dstem(
    path: str | os.PathLike[str],
    format: str | ReaderFunction | None = None,
    **options: Any,
) -> Dataset4D:
    """Read a 4D-STEM dataset from any registered format.

    Parameters
    ----------
    path:
        The data file.
    format:
        A registered format name (:func:`known_formats`) or a reader function; default:
        chosen by the file's extension.
    **options:
        Calibration options (``energy_ev``, ``scan_step_ang``, ``detector_pixel_inv_ang``
        or ``detector_pixel_mrad``, ...) and the reader's own options (``scan_shape``,
        ``dataset_path``, ``key``, ``xml_path``, ``hdr_path``, ``plugin``).

    Returns
    -------
    Dataset4D
        Data (scan_y, scan_x, det_y, det_x), lazy where the format allows, with its
        calibration; ``metadata["source_file"]`` and ``["source_format"]`` say where it
        came from.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Unknown format or extension (listing the known ones), missing calibration (naming
        the option), or a file that does not match its format (naming the file and what
        was expected).
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"path does not exist: {os.fspath(path)!r}")
    reader = get_reader(format if format is not None else format_for_path(path))
    return reader(path, **options)


register_reader("npy", [".npy"], read_npy)
register_reader("npz", [".npz"], read_npz)
register_reader("hdf5", [".h5", ".hdf5", ".hdf", ".nxs"], read_hdf5)
register_reader("emd", [".emd"], read_emd)
register_reader("empad", [".raw", ".xml"], read_empad)
register_reader("mib", [".mib"], read_mib)
register_reader("rosettasciio", [".dm3", ".dm4", ".blo", ".hspy", ".zspy"], read_rosetta)
