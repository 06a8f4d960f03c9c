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

Reading treats files as untrusted (here and for the other HDF5 readers, which use the
helpers below): the errors h5py raises on a damaged file become a
:class:`~ptyscope.data.formats._common.DataFormatError` naming the file
(:func:`untrusted_hdf5`); groups are walked without recursion, along hard links only, at
most :data:`MAX_HDF5_DEPTH` deep and :data:`MAX_HDF5_OBJECTS` objects
(:func:`walk_hdf5`); a dataset is read into memory only when the bytes it declares are at
most the DEFLATE limit times the bytes it stores (:func:`read_array`), so a header that
declares a huge shape with no data behind it allocates nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from typing import Any

import h5py
import numpy as np

from ptyscope import __version__
from ptyscope.data.dataset import Calibration, Dataset4D
from ptyscope.data.formats._common import MAX_DEFLATE_RATIO, DataFormatError

from .atomic import atomic_path
from .hdf5_guard import open_untrusted_hdf5

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_HDF5_DEPTH",
    "MAX_HDF5_OBJECTS",
    "GroundTruth",
    "hdf5_text",
    "plain_attribute",
    "read_array",
    "read_dataset",
    "read_ground_truth",
    "read_tilt_series",
    "untrusted_hdf5",
    "walk_hdf5",
    "write_dataset",
    "write_tilt_series",
]

FORMAT_NAME = "ptyscope-data"
FORMAT_VERSION = 1
#: Deepest group nesting walked in an HDF5 file (ptyscope and EMD files nest 2-4 deep).
MAX_HDF5_DEPTH = 64
#: Most objects (groups, datasets) walked in one HDF5 file.
MAX_HDF5_OBJECTS = 100_000
#: Bytes a small dataset may declare without storing them (fill values) [bytes].
_FILL_ALLOWANCE = 2**16
#: Calibration fields a data file must record.
_REQUIRED_CALIBRATION = ("energy_ev", "scan_step_ang", "detector_pixel_inv_ang")

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


def _member(group: h5py.Group, name: str, kind: type[Any]) -> Any:
    """``group[name]`` if it is a ``kind`` (group or dataset), else a DataFormatError."""
    item = group.get(name)
    if not isinstance(item, kind):
        found = "nothing" if item is None else type(item).__name__
        where = f"{group.name.rstrip('/')}/{name}"
        raise DataFormatError(
            f"{group.file.filename!r} is not a complete ptyscope data file: {where} is "
            f"{found}, expected a{'n' if kind is h5py.Dataset else ''} {kind.__name__}"
        )
    return item


def _calibration_value(path: str, name: str, value: Any) -> float | tuple[float, ...]:
    array = np.asarray(value)
    if array.dtype.kind not in "biuf" or array.ndim > 1 or array.size not in (1, 2):
        raise DataFormatError(
            f"{path!r} records the calibration {name} as {_short_repr(value)}; expected a "
            "number or a (y, x) pair"
        )
    floats = array.astype(np.float64)
    return float(floats) if floats.ndim == 0 else tuple(floats.tolist())


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_dataset_group(group: h5py.Group, lazy: bool = False) -> Dataset4D:
    path = group.file.filename
    where = group.name.rstrip("/")
    data = _member(group, "data", h5py.Dataset)
    shape = tuple(int(n) for n in data.shape or ())
    if len(shape) != 4 or 0 in shape or data.dtype.kind not in "uif":
        raise DataFormatError(
            f"{path!r}: {where}/data has shape {shape} and dtype {data.dtype}; expected real "
            "numbers of shape (scan_y, scan_x, det_y, det_x)"
        )
    attrs = _member(group, "calibration", h5py.Group).attrs
    kwargs: dict[str, Any] = {}
    for item in fields(Calibration):
        if item.name in attrs:
            kwargs[item.name] = _calibration_value(path, item.name, attrs[item.name])
    missing = [name for name in _REQUIRED_CALIBRATION if name not in kwargs]
    if missing:
        raise DataFormatError(
            f"{path!r} lacks the calibration {', '.join(missing)} ({where}/calibration attributes)"
        )
    try:
        calibration = Calibration(**kwargs)
    except ValueError as error:
        raise DataFormatError(f"{path!r} records an invalid calibration: {error}") from None
    positions = None
    if "scan_positions_ang" in group:
        stored = _member(group, "scan_positions_ang", h5py.Dataset)
        if stored.shape != (*shape[:2], 2) or stored.dtype.kind not in "iuf":
            raise DataFormatError(
                f"{path!r}: {where}/scan_positions_ang has shape {stored.shape} and dtype "
                f"{stored.dtype}; expected real numbers of shape {(*shape[:2], 2)}"
            )
        positions = np.asarray(read_array(stored), dtype=np.float64)
    metadata_group = group.get("metadata")
    metadata = (
        {key: plain_attribute(value) for key, value in metadata_group.attrs.items()}
        if isinstance(metadata_group, h5py.Group)
        else {}
    )
    return Dataset4D(data if lazy else read_array(data), calibration, positions, metadata)


def plain_attribute(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (bytes decoded, numpy scalars unwrapped).

    Bytes that are not UTF-8 are decoded with replacement characters.
    """
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def hdf5_text(item: h5py.Group | h5py.Dataset, name: str) -> str | None:
    """Attribute ``name`` of ``item`` as text, or ``None`` when absent or not one string.

    A one-element array of strings counts as its string; anything else (numbers, arrays,
    compound values) is ``None``, so comparing the result with a string is always safe.
    """
    if name not in item.attrs:
        return None
    value = item.attrs[name]
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.flat[0]
    value = plain_attribute(value)
    return value if isinstance(value, str) else None


@contextlib.contextmanager
def untrusted_hdf5(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn what h5py raises on a damaged or odd HDF5 file into a DataFormatError.

    ``OSError``, ``KeyError``, ``RuntimeError``, ``TypeError``, ``IndexError``,
    ``OverflowError`` and ``ValueError`` raised inside the block become a
    :class:`~ptyscope.data.formats._common.DataFormatError` naming ``path``; value errors
    that name ``path`` already pass unchanged. Use it around h5py calls only.

    Examples
    --------
    >>> try:
    ...     with untrusted_hdf5("scan.h5"):
    ...         raise KeyError("bad symbol table node signature")
    ... except ValueError as error:
    ...     print(error)
    'scan.h5' is a damaged or unsupported HDF5 file: KeyError: 'bad symbol table node signature'
    """
    try:
        yield
    except (
        OSError,
        KeyError,
        RuntimeError,
        TypeError,
        IndexError,
        OverflowError,
        ValueError,
    ) as error:
        if isinstance(error, ValueError) and os.fspath(path) in str(error):
            raise
        raise DataFormatError(
            f"{os.fspath(path)!r} is a damaged or unsupported HDF5 file: "
            f"{type(error).__name__}: {error}"
        ) from None


def walk_hdf5(
    group: h5py.Group,
    *,
    max_depth: int = MAX_HDF5_DEPTH,
    max_objects: int = MAX_HDF5_OBJECTS,
) -> list[tuple[str, Any]]:
    """The groups and datasets below ``group``, without recursion and without link loops.

    Like ``group.visititems`` (depth first, names in index order), but every child is
    opened from its parent (``visititems`` opens each object by its full path, which
    takes time quadratic in the depth), only hard links are followed (soft and external
    links are skipped) and every object is listed once.

    Parameters
    ----------
    group:
        Where to start (not listed itself).
    max_depth:
        Deepest nesting walked.
    max_objects:
        Most objects listed.

    Returns
    -------
    list of (name, object)
        Names relative to ``group`` (``"a/b/data"``) with the open objects.

    Raises
    ------
    DataFormatError
        If the file nests deeper than ``max_depth`` or holds more than ``max_objects``
        objects (the message names the file).
    """
    path = group.file.filename

    def key(item: Any) -> tuple[int, int]:
        info = h5py.h5o.get_info(item.id)
        return int(info.fileno), int(info.addr)

    seen = {key(group)}
    found: list[tuple[str, Any]] = []
    stack: list[tuple[Iterator[str], h5py.Group, str]] = [(iter(list(group)), group, "")]
    while stack:
        names, parent, prefix = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        if not isinstance(parent.get(name, getlink=True), h5py.HardLink):
            continue
        item = parent.get(name)
        if item is None:  # a hard link to an object that cannot be opened
            continue
        identity = key(item)
        if identity in seen:
            continue
        seen.add(identity)
        if len(seen) > max_objects:
            raise DataFormatError(
                f"{path!r} holds more than {max_objects} objects; ptyscope does not walk it "
                "(pass the path of the dataset where the reader takes one)"
            )
        found.append((prefix + name, item))
        if isinstance(item, h5py.Group):
            if len(stack) >= max_depth:
                raise DataFormatError(
                    f"{path!r} nests groups more than {max_depth} deep ({prefix + name}); "
                    "ptyscope does not walk it (pass the path of the dataset where the "
                    "reader takes one)"
                )
            stack.append((iter(list(item)), item, prefix + name + "/"))
    return found


def read_array(dataset: h5py.Dataset) -> Any:
    """Read a whole dataset into memory, unless it declares more than it can hold.

    Parameters
    ----------
    dataset:
        The dataset.

    Returns
    -------
    numpy.ndarray or scalar
        ``dataset[()]``.

    Raises
    ------
    DataFormatError
        If the dataset declares more bytes than 1032 (the DEFLATE limit) times the bytes
        it stores (at most the file's size) plus 64 KiB, as a damaged or hostile header
        does; nothing is allocated.
    """
    shape = tuple(int(n) for n in dataset.shape or ())
    declared = math.prod(shape) * dataset.dtype.itemsize
    # The stored size comes from the file's chunk index: no more than the file holds.
    stored = min(int(dataset.id.get_storage_size()), os.path.getsize(dataset.file.filename))
    if declared > MAX_DEFLATE_RATIO * stored + _FILL_ALLOWANCE:
        raise DataFormatError(
            f"{dataset.file.filename!r}: dataset {dataset.name} declares shape {shape} of "
            f"{dataset.dtype} = {declared} bytes but stores {stored} bytes; it is not read"
        )
    return dataset[()]


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
    for name, item in walk_hdf5(group):
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node[part]
        if isinstance(item, h5py.Group):
            node[leaf] = {key: plain_attribute(value) for key, value in item.attrs.items()}
        elif isinstance(item, h5py.Dataset):
            node[leaf] = read_array(item)
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
    with untrusted_hdf5(path):
        handle = open_untrusted_hdf5(path)
        try:
            _check_header(path, handle, kind)
        except BaseException:
            handle.close()
            raise
    return handle


def _check_header(path: str | os.PathLike[str], handle: h5py.File, kind: str) -> None:
    found = hdf5_text(handle, "format")
    if found != FORMAT_NAME:
        raise ValueError(
            f"{os.fspath(path)!r} is not a ptyscope data file (format attribute {found!r}, "
            f"expected {FORMAT_NAME!r})"
        )
    stored = np.asarray(handle.attrs.get("format_version", 0))
    if stored.dtype.kind not in "iu" or stored.size != 1:
        raise DataFormatError(
            f"{os.fspath(path)!r} has format_version {_short_repr(stored)}; expected an integer"
        )
    version = int(stored.reshape(()))
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)!r} has format_version {version}; this ptyscope reads up to "
            f"{FORMAT_VERSION} (upgrade ptyscope)"
        )
    found_kind = hdf5_text(handle, "kind")
    if found_kind != kind:
        raise ValueError(f"{os.fspath(path)!r} holds kind {found_kind!r}, expected {kind!r}")


def read_dataset(path: str | os.PathLike[str], *, lazy: bool = False) -> Dataset4D:
    """Read the 4D-STEM dataset of a ptyscope data file (kind ``"4dstem"``).

    With ``lazy=True`` the patterns stay on disk: ``data`` is the open, read-only
    ``h5py.Dataset`` (the file closes when the dataset is garbage-collected), read a block
    of scan rows at a time by :class:`Dataset4D`'s methods.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a ptyscope data file of kind ``"4dstem"``, or is damaged or
        incomplete (the message names the file and what is wrong).
    """
    handle = _open_checked(path, "4dstem")
    try:
        with untrusted_hdf5(path):
            dataset = _read_dataset_group(_member(handle, "dataset", h5py.Group), lazy=lazy)
    except BaseException:
        handle.close()
        raise
    if not lazy:
        handle.close()
    return dataset


def read_tilt_series(path: str | os.PathLike[str]) -> tuple[list[Dataset4D], np.ndarray]:
    """Read a tilt series: the datasets and their (tilts, 3) ZYZ Euler angles [deg]."""
    with _open_checked(path, "tilt_series") as handle, untrusted_hdf5(path):
        series = _member(handle, "tilt_series", h5py.Group)
        stored = _member(series, "euler_deg", h5py.Dataset)
        if stored.ndim != 2 or stored.shape[1] != 3 or stored.dtype.kind not in "iuf":
            raise DataFormatError(
                f"{os.fspath(path)!r}: tilt_series/euler_deg has shape {stored.shape} and dtype "
                f"{stored.dtype}; expected real numbers of shape (tilts, 3)"
            )
        angles = np.asarray(read_array(stored), dtype=np.float64)
        datasets = [
            _read_dataset_group(_member(series, f"tilt_{i:03d}", h5py.Group))
            for i in range(len(angles))
        ]
        return datasets, angles


def read_ground_truth(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the ground-truth tree of a data file of either kind (empty if it has none)."""
    kind = _file_kind(path)
    with _open_checked(path, kind) as handle, untrusted_hdf5(path):
        truth = handle.get("ground_truth")
        return _read_tree(truth) if isinstance(truth, h5py.Group) else {}


def _file_kind(path: str | os.PathLike[str]) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"path does not exist: {os.fspath(path)!r}")
    with untrusted_hdf5(path), open_untrusted_hdf5(path) as handle:
        return hdf5_text(handle, "kind") or ""
