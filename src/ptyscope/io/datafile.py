"""The ptyscope HDF5 data file: 4D-STEM datasets or tilt series, with ground truth.

Simulations write it and the data readers read it, so a simulated dataset and a converted
experimental one are interchangeable. Layout (format version 1)::

    /                     attrs: format="ptyscope-data", format_version, software, created,
                          kind = "4dstem" | "tilt_series"
    /config               attr "text": the config that produced the file (optional)
    /dataset/             (kind "4dstem") one Dataset4D:
        data                  (scan_y, scan_x, det_y, det_x), chunked by scan row
        scan_positions_ang    (scan_y, scan_x, 2) (y, x) [Å] (optional)
        calibration           attrs: Calibration fields (pairs stored as (y, x) arrays)
        metadata              attrs
    /tilt_series/         (kind "tilt_series")
        euler_deg             (tilts, 3) ZYZ Euler angles [deg] of each tilt
        tilt_000/ ...         one Dataset4D group per tilt, as /dataset above
    /ground_truth/        nested groups: arrays as datasets, scalars and strings as attrs

Every write goes through a temporary file and an atomic rename: an interrupted write
never leaves a truncated file behind.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import h5py
import numpy as np

from ptyscope import __version__
from ptyscope.data.dataset import Calibration, Dataset4D

from .atomic import atomic_path

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GroundTruth",
    "plain_attribute",
    "read_dataset",
    "read_ground_truth",
    "read_tilt_series",
    "write_dataset",
    "write_tilt_series",
]

FORMAT_NAME = "ptyscope-data"
FORMAT_VERSION = 1

#: Nested ground truth: arrays, numbers, strings, or further mappings.
GroundTruth = Mapping[str, Any]


def _write_header(handle: h5py.File, kind: str, config_text: str | None) -> None:
    handle.attrs["format"] = FORMAT_NAME
    handle.attrs["format_version"] = FORMAT_VERSION
    handle.attrs["software"] = f"ptyscope {__version__}"
    handle.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    handle.attrs["kind"] = kind
    if config_text is not None:
        handle.create_group("config").attrs["text"] = config_text


def _write_dataset_group(group: h5py.Group, dataset: Dataset4D) -> None:
    _, scan_x, det_y, det_x = dataset.shape
    target = group.create_dataset(
        "data", shape=dataset.shape, dtype=dataset.dtype, chunks=(1, scan_x, det_y, det_x)
    )
    for rows, block in dataset.iter_scan_rows():  # lazy sources are copied block by block
        target[rows] = block
    if dataset.scan_positions_ang is not None:
        group.create_dataset("scan_positions_ang", data=dataset.scan_positions_ang)
    calibration = group.create_group("calibration")
    for item in fields(Calibration):
        value = getattr(dataset.calibration, item.name)
        if value is not None:
            calibration.attrs[item.name] = np.asarray(value, dtype=np.float64)
    metadata = group.create_group("metadata")
    for key, value in dataset.metadata.items():
        metadata.attrs[key] = value


def _read_dataset_group(group: h5py.Group, lazy: bool = False) -> Dataset4D:
    attrs = group["calibration"].attrs
    kwargs: dict[str, Any] = {}
    for item in fields(Calibration):
        if item.name in attrs:
            value = np.asarray(attrs[item.name], dtype=np.float64)
            kwargs[item.name] = float(value) if value.ndim == 0 else tuple(value.tolist())
    positions = group["scan_positions_ang"][()] if "scan_positions_ang" in group else None
    metadata = {key: plain_attribute(value) for key, value in group["metadata"].attrs.items()}
    data = group["data"] if lazy else group["data"][()]
    return Dataset4D(data, Calibration(**kwargs), positions, metadata)


def plain_attribute(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (bytes decoded, numpy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write_tree(group: h5py.Group, tree: GroundTruth) -> None:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            _write_tree(group.create_group(key), value)
        elif isinstance(value, str | int | float | np.generic) or (
            isinstance(value, tuple) and len(value) <= 8
        ):
            group.attrs[key] = value
        else:
            array = np.asarray(value)
            if array.dtype.kind == "U":
                group.attrs[key] = [str(v) for v in array.ravel()]
            elif array.dtype.kind not in "biufc":
                raise TypeError(
                    f"ground truth entry {key!r} must be an array of numbers or strings, a "
                    f"number, a string or a mapping; got {type(value).__name__}"
                )
            else:
                group.create_dataset(key, data=array, compression="gzip", compression_opts=1)


def _read_tree(group: h5py.Group) -> dict[str, Any]:
    tree: dict[str, Any] = {key: plain_attribute(value) for key, value in group.attrs.items()}
    for key, item in group.items():
        tree[key] = _read_tree(item) if isinstance(item, h5py.Group) else item[()]
    return tree


def write_dataset(
    path: str | os.PathLike[str],
    dataset: Dataset4D,
    ground_truth: GroundTruth | None = None,
    *,
    config_text: str | None = None,
) -> None:
    """Write one 4D-STEM dataset (and its ground truth) atomically.

    Parameters
    ----------
    path:
        Target file; replaced atomically if it exists.
    dataset:
        The data and calibration.
    ground_truth:
        Nested mapping of arrays (datasets) and numbers/strings (attributes), e.g.
        ``{"atoms": {"positions_ang": ..., "numbers": ...}, "tilt_mrad": (0.0, 5.0)}``.
    config_text:
        The config (e.g. TOML text) that produced the data, stored verbatim.
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        _write_header(handle, "4dstem", config_text)
        _write_dataset_group(handle.create_group("dataset"), dataset)
        if ground_truth is not None:
            _write_tree(handle.create_group("ground_truth"), ground_truth)


def write_tilt_series(
    path: str | os.PathLike[str],
    datasets: Sequence[Dataset4D],
    euler_deg: np.ndarray,
    ground_truth: GroundTruth | None = None,
    *,
    config_text: str | None = None,
) -> None:
    """Write a tilt series: one Dataset4D per tilt and its ZYZ Euler angles [deg]."""
    angles = np.asarray(euler_deg, dtype=np.float64)
    if angles.shape != (len(datasets), 3):
        raise ValueError(
            f"euler_deg must have shape (tilts, 3) = ({len(datasets)}, 3), got {angles.shape}"
        )
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        _write_header(handle, "tilt_series", config_text)
        series = handle.create_group("tilt_series")
        series.attrs["euler_convention"] = "intrinsic ZYZ (phi, theta, psi), active, degrees"
        series.create_dataset("euler_deg", data=angles)
        for index, dataset in enumerate(datasets):
            _write_dataset_group(series.create_group(f"tilt_{index:03d}"), dataset)
        if ground_truth is not None:
            _write_tree(handle.create_group("ground_truth"), ground_truth)


def _open_checked(path: str | os.PathLike[str], kind: str) -> h5py.File:
    if not os.path.exists(path):
        raise FileNotFoundError(f"path does not exist: {os.fspath(path)!r}")
    handle = h5py.File(path, "r")
    found = plain_attribute(handle.attrs.get("format", ""))
    if found != FORMAT_NAME:
        handle.close()
        raise ValueError(
            f"{os.fspath(path)!r} is not a ptyscope data file (format attribute {found!r}, "
            f"expected {FORMAT_NAME!r})"
        )
    version = int(handle.attrs.get("format_version", 0))
    if version > FORMAT_VERSION:
        handle.close()
        raise ValueError(
            f"{os.fspath(path)!r} has format_version {version}; this ptyscope reads up to "
            f"{FORMAT_VERSION} (upgrade ptyscope)"
        )
    found_kind = plain_attribute(handle.attrs.get("kind", ""))
    if found_kind != kind:
        handle.close()
        raise ValueError(f"{os.fspath(path)!r} holds kind {found_kind!r}, expected {kind!r}")
    return handle


def read_dataset(path: str | os.PathLike[str], *, lazy: bool = False) -> Dataset4D:
    """Read the 4D-STEM dataset of a ptyscope data file (kind ``"4dstem"``).

    With ``lazy=True`` the patterns stay on disk: ``data`` is the open, read-only
    ``h5py.Dataset`` (the file closes when the dataset is garbage-collected), read a block
    of scan rows at a time by :class:`Dataset4D`'s methods.
    """
    if lazy:
        handle = _open_checked(path, "4dstem")
        return _read_dataset_group(handle["dataset"], lazy=True)
    with _open_checked(path, "4dstem") as handle:
        return _read_dataset_group(handle["dataset"])


def read_tilt_series(path: str | os.PathLike[str]) -> tuple[list[Dataset4D], np.ndarray]:
    """Read a tilt series: the datasets and their (tilts, 3) ZYZ Euler angles [deg]."""
    with _open_checked(path, "tilt_series") as handle:
        series = handle["tilt_series"]
        angles = series["euler_deg"][()]
        datasets = [_read_dataset_group(series[f"tilt_{i:03d}"]) for i in range(len(angles))]
        return datasets, angles


def read_ground_truth(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the ground-truth tree of a data file of either kind (empty if it has none)."""
    kind = _file_kind(path)
    with _open_checked(path, kind) as handle:
        return _read_tree(handle["ground_truth"]) if "ground_truth" in handle else {}


def _file_kind(path: str | os.PathLike[str]) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"path does not exist: {os.fspath(path)!r}")
    with h5py.File(path, "r") as handle:
        return str(plain_attribute(handle.attrs.get("kind", "")))
