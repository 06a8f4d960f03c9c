"""HDF5 files: ptyscope's own data file, and any HDF5 file holding a 4D dataset.

ptyscope data files (:mod:`ptyscope.io.datafile`, recognised by the root attribute
``format == "ptyscope-data"``) are read by :func:`ptyscope.io.datafile.read_dataset` with
``lazy=True``: calibration, positions and metadata as written, and ``data`` the open
``h5py.Dataset`` ``/dataset/data``, read a block of scan rows at a time. Calibration
options override the stored values. Tilt-series files hold several datasets; read them
with :func:`ptyscope.io.datafile.read_tilt_series`.

Any other HDF5 file is read from the dataset at ``dataset_path``; without it the file
must hold exactly one 4D dataset, which is used (the error lists the candidates
otherwise). This covers EMD 1.0 files written by py4DSTEM / emdfile, whose 4D-STEM array
sits at paths such as ``<root>/<name>/datacube/data`` (EMD 1.0 specification,
https://emdatasets.com/format/; py4DSTEM documentation, https://py4dstem.readthedocs.io).
The array is taken as stored, in C order, as (scan_y, scan_x, det_y, det_x): py4DSTEM
names these axes (Rx, Ry, Qx, Qy) because it calls array axis 0 "x" (docs/conventions.md,
Axes), so its files need no transpose. Such files carry no calibration that ptyscope reads:
pass it as options (:mod:`ptyscope.data.formats._common`).

``.emd`` files written by Thermo Fisher Velox are HDF5 too, but store their data in their
own layout; they are recognised by the root dataset ``Version`` whose JSON ``format`` is
``"Velox"`` or ``"DevelopersKit"`` (as RosettaSciIO documents and checks) and handed to
the RosettaSciIO bridge (:mod:`ptyscope.data.formats.rosetta`).

Files are untrusted (:mod:`ptyscope.io.datafile` describes the safeguards): errors h5py
raises on a damaged file become a ``ValueError`` naming the file, the search for 4D
datasets walks hard links only, at most 64 groups deep, and the small ``Version`` dataset
of a Velox file is read only when it is one short string.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ptyscope.data.dataset import Dataset4D
from ptyscope.io.datafile import (
    FORMAT_NAME,
    hdf5_text,
    plain_attribute,
    read_array,
    read_dataset,
    untrusted_hdf5,
    walk_hdf5,
)
from ptyscope.io.hdf5_guard import check_hdf5_metadata

from ._common import (
    build_calibration,
    check_real_dtype,
    parse_scan_shape,
    reject_unknown_options,
    require_data,
)
from .rosetta import read_rosetta

__all__ = ["find_4d_datasets", "is_velox_emd", "read_emd", "read_hdf5"]

_HDF5_OPTIONS = ("dataset_path", "scan_shape")
#: Longest ``Version`` text of a Velox file that is parsed [bytes].
_MAX_VERSION_BYTES = 2**16


def _open(path: str | os.PathLike[str]) -> h5py.File:
    check_hdf5_metadata(path)
    try:
        return h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        raise ValueError(f"{os.fspath(path)!r} is not a readable HDF5 file: {error}") from None


def find_4d_datasets(handle: h5py.Group) -> list[tuple[str, tuple[int, ...], np.dtype[Any]]]:
    """All 4D datasets below ``handle``: (path, shape, dtype), in visiting order.

    Walks hard links only (:func:`ptyscope.io.datafile.walk_hdf5`); datasets of types
    numpy cannot represent are skipped.
    """
    found: list[tuple[str, tuple[int, ...], np.dtype[Any]]] = []
    for name, item in walk_hdf5(handle):
        if isinstance(item, h5py.Dataset) and item.ndim == 4:
            try:
                dtype = item.dtype
            except TypeError:  # no numpy equivalent
                continue
            found.append(("/" + name, tuple(int(n) for n in item.shape), dtype))
    return found


def is_velox_emd(handle: h5py.File) -> bool:
    """True for a Thermo Fisher Velox ``.emd`` file (root ``Version`` JSON, module doc).

    ``Version`` is read only when it is a single string of at most 64 KiB.
    """
    version = handle.get("Version")
    if not isinstance(version, h5py.Dataset) or version.shape not in ((), (1,)):
        return False
    try:
        if version.dtype.kind not in "SOU" or version.dtype.itemsize > _MAX_VERSION_BYTES:
            return False
        raw = read_array(version)
        text = plain_attribute(raw.flat[0] if isinstance(raw, np.ndarray) else raw)
        if not isinstance(text, str) or len(text) > _MAX_VERSION_BYTES:
            return False
        info = json.loads(text)
    except (ValueError, TypeError, RecursionError):  # not JSON, or nested too deep
        return False
    return isinstance(info, dict) and info.get("format") in ("Velox", "DevelopersKit")


def read_hdf5(
    path: str | os.PathLike[str],
    *,
    dataset_path: str | None = None,
    scan_shape: Any = None,
    **calibration: Any,
) -> Dataset4D:
    """Read 4D-STEM data from an HDF5 file, lazily.

    Parameters
    ----------
    path:
        A ptyscope data file, or any HDF5 file with a 4D dataset.
    dataset_path:
        Path of the 4D dataset (scan_y, scan_x, det_y, det_x) inside the file. Default: the
        ptyscope layout for ptyscope files, else the only 4D dataset in the file.
    scan_shape:
        Optional (scan_y, scan_x), checked against the dataset.
    **calibration:
        Calibration options (:mod:`ptyscope.data.formats._common`); they override what a
        ptyscope file records.

    Returns
    -------
    Dataset4D
        ``data`` is an open, read-only ``h5py.Dataset``.
    """
    reject_unknown_options("hdf5", calibration, _HDF5_OPTIONS)
    handle = _open(path)
    try:
        with untrusted_hdf5(path):
            own = dataset_path is None and hdf5_text(handle, "format") == FORMAT_NAME
            kind = hdf5_text(handle, "kind")
            if not own:
                return _read_any(path, handle, dataset_path, scan_shape, calibration)
    except BaseException:
        handle.close()
        raise
    handle.close()
    if kind == "tilt_series":
        raise ValueError(
            f"{os.fspath(path)!r} is a ptyscope tilt series (several 4D datasets); read it "
            "with ptyscope.io.datafile.read_tilt_series"
        )
    dataset = read_dataset(path, lazy=True)
    _check_scan_shape(path, dataset.shape, scan_shape)
    if any(value is not None for value in calibration.values()):
        found = asdict(dataset.calibration)
        dataset = replace(dataset, calibration=build_calibration(path, calibration, found))
    dataset.metadata.setdefault("source_file", str(Path(path)))
    dataset.metadata.setdefault("source_format", FORMAT_NAME)
    return dataset


def read_emd(
    path: str | os.PathLike[str],
    *,
    dataset_path: str | None = None,
    scan_shape: Any = None,
    **calibration: Any,
) -> Dataset4D:
    """Read an ``.emd`` file: Velox files through RosettaSciIO, others as plain HDF5.

    Parameters are those of :func:`read_hdf5` (Velox files: those of
    :func:`ptyscope.data.formats.rosetta.read_rosetta`).
    """
    with _open(path) as handle, untrusted_hdf5(path):
        velox = is_velox_emd(handle)
    if velox:
        if dataset_path is not None:
            raise ValueError(
                f"{os.fspath(path)!r} is a Velox EMD file, read through RosettaSciIO, which "
                "does not take dataset_path"
            )
        return read_rosetta(path, scan_shape=scan_shape, **calibration)
    return read_hdf5(path, dataset_path=dataset_path, scan_shape=scan_shape, **calibration)


def _check_scan_shape(path: str | os.PathLike[str], shape: tuple[int, ...], scan: Any) -> None:
    if scan is not None and shape[:2] != parse_scan_shape(scan):
        raise ValueError(
            f"the dataset in {os.fspath(path)!r} has scan shape {shape[:2]}, but scan_shape "
            f"{parse_scan_shape(scan)} was given"
        )


def _read_any(
    path: str | os.PathLike[str],
    handle: h5py.File,
    dataset_path: str | None,
    scan_shape: Any,
    calibration: dict[str, Any],
) -> Dataset4D:
    if dataset_path is None:
        candidates = find_4d_datasets(handle)
        if len(candidates) != 1:
            listing = ", ".join(f"{p} {s} {d}" for p, s, d in candidates) or "none"
            raise ValueError(
                f"{os.fspath(path)!r} holds {len(candidates)} 4D datasets ({listing}); pass "
                "dataset_path=<path inside the file> to choose the 4D-STEM data"
            )
        dataset_path = candidates[0][0]
    item = handle.get(dataset_path)
    if not isinstance(item, h5py.Dataset):
        kind = "nothing" if item is None else "a group"
        raise ValueError(
            f"dataset_path {dataset_path!r} names {kind} in {os.fspath(path)!r}; expected a "
            "4D dataset (scan_y, scan_x, det_y, det_x)"
        )
    what = f"dataset {dataset_path!r}"
    check_real_dtype(path, item.dtype, what)
    if item.ndim != 4:
        raise ValueError(
            f"{what} in {os.fspath(path)!r} has shape {item.shape}; expected 4D (scan_y, "
            "scan_x, det_y, det_x)"
        )
    require_data(path, tuple(int(n) for n in item.shape), what)
    _check_scan_shape(path, item.shape, scan_shape)
    cal = build_calibration(path, calibration)
    metadata: dict[str, str | float | int] = {
        "source_file": str(Path(path)),
        "source_format": "hdf5",
        "source_dataset": dataset_path,
    }
    return Dataset4D(item, cal, metadata=metadata)
