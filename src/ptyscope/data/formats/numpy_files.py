"""NumPy ``.npy`` and ``.npz`` files holding 4D-STEM data.

Layout: the NumPy format (NEP 1, "A simple file format for NumPy arrays",
https://numpy.org/neps/nep-0001-npy-format.html): a header with dtype, shape and order,
then the raw array. ``.npz`` is a zip archive of ``.npy`` members. Arrays are read as
(scan_y, scan_x, det_y, det_x), or as a 3D stack (frames, det_y, det_x) in scan order (x
fastest) together with the ``scan_shape`` option.

``.npy`` files are memory-mapped (``numpy.load(mmap_mode="r")``): nothing is read until a
block is used. Members of an ``.npz`` archive cannot be memory-mapped and are read into
memory. Neither format records a calibration: pass it as options (see
:mod:`ptyscope.data.formats._common`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ptyscope.data.dataset import Dataset4D

from ._common import build_calibration, check_real_dtype, frames_to_4d, reject_unknown_options

__all__ = ["read_npy", "read_npz"]


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
    """
    reject_unknown_options("npy", calibration, ["scan_shape"])
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:  # object arrays, malformed headers
        raise ValueError(f"{os.fspath(path)!r} is not a readable .npy array: {error}") from None
    check_real_dtype(path, array.dtype, "the array")
    data = frames_to_4d(path, array, scan_shape, "the array")
    cal = build_calibration(path, calibration)
    return Dataset4D(data, cal, metadata={"source_file": str(Path(path)), "source_format": "npy"})


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
        Name of the member holding the data; default: the only member, else ``"data"``.
    scan_shape:
        (scan_y, scan_x); required for a 3D stack, checked against a 4D array.
    **calibration:
        Calibration options (:mod:`ptyscope.data.formats._common`).

    Returns
    -------
    Dataset4D
        ``data`` is an in-memory numpy array of the stored dtype.
    """
    reject_unknown_options("npz", calibration, ["key", "scan_shape"])
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
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
            raise ValueError(f"key {key!r} is not in {os.fspath(path)!r}; its arrays are {names}")
        try:
            array = archive[key]
        except ValueError as error:  # object arrays need pickle
            raise ValueError(
                f"array {key!r} in {os.fspath(path)!r} is not readable: {error}"
            ) from None
    check_real_dtype(path, array.dtype, f"array {key!r}")
    data = frames_to_4d(path, array, scan_shape, f"array {key!r}")
    cal = build_calibration(path, calibration)
    metadata: dict[str, str | float | int] = {
        "source_file": str(Path(path)),
        "source_format": "npz",
        "source_key": key,
    }
    return Dataset4D(data, cal, metadata=metadata)
