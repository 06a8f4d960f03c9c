"""Export results to formats other tools read: EMD 1.0 HDF5, NumPy + JSON, TIFF, ase files.

:func:`export_result` converts a reconstruction result file
(:mod:`ptyscope.reconstruction.results`) to one of

``"emd"``
    One HDF5 file in the EMD 1.0 layout (https://emdatasets.com/format/) that emdfile and
    py4DSTEM read (``emdfile.read``, ``py4DSTEM.read``): file attributes
    ``emd_group_type = "file"``, ``version_major = 1``, ``version_minor = 0``; one root
    group :data:`EMD_ROOT` (``emd_group_type = "root"``) holding EMD Arrays ``object``
    (complex64 states × slices × y × x), ``probe`` (complex64 modes × y × x) and
    ``positions`` (float64 N × 2, [Å]); each Array is a group with ``data`` (attribute
    ``units``) and one ``dim<n>`` dataset per axis (first two values of a linear
    calibration, attributes ``name`` and ``units``; "A" is Å). The root's metadata
    bundle holds the run's energy, tilt, thickness and geometry. The arrays keep
    ptyscope's axis order: axis −2 is y (rows), which py4DSTEM calls "x" (docs/conventions.md).
``"npy"``
    A folder with one ``.npy`` per array (``object``, ``probe``, ``positions_ang``,
    ``nominal_positions_ang``, ``state_weights``) and ``metadata.json``: units, axis
    order, pixel size, origin, tilt, thickness, energy, the ptyscope version.
``"tiff"``
    A folder of float32 ImageJ hyperstacks: ``phase.tif`` (angle(O) per state and
    slice), ``phase_sum.tif`` (Σ over slices, weighted mean over states), ``amplitude.tif``
    (|O|) and ``probe_intensity.tif`` (|P_m|² per mode). The pixel size is in the
    resolution tags and the ImageJ description carries ``unit=\\u00C5`` (escaped as
    ImageJ itself writes it), so ImageJ and Fiji show Å; ``spacing`` is Δz.

:func:`export_atoms` writes atoms found by ptyscope (the 3D atoms of ``ptyscope tomo``'s
``tomography.h5``, or the 2D columns of ``ptyscope analyze columns``' ``columns.csv``)
to files ase reads: extended XYZ (``.xyz``, ``.extxyz``) or CIF (``.cif``).

Every file is written to a temporary name and renamed (:mod:`ptyscope.io.atomic`); in a
folder, ``metadata.json`` (npy) is written last, so its presence marks a complete export.
"""

from __future__ import annotations

import csv
import json
import os
import tomllib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ase
import ase.io
import h5py
import numpy as np
from ase.data import chemical_symbols

from ptyscope import __version__
from ptyscope.io.atomic import atomic_path
from ptyscope.io.hdf5_guard import open_untrusted_hdf5

__all__ = [
    "EMD_ROOT",
    "EMD_VERSION",
    "EXPORT_FORMATS",
    "NPY_SIDECAR",
    "ResultArrays",
    "export_atoms",
    "export_result",
    "read_result_arrays",
]

ExportFormat = Literal["emd", "npy", "tiff"]
#: The formats :func:`export_result` writes.
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("emd", "npy", "tiff")
#: EMD (major, minor) version written.
EMD_VERSION = (1, 0)
#: Name of the EMD root group of an exported result.
EMD_ROOT = "ptyscope_reconstruction"
#: The JSON sidecar of an ``npy`` export.
NPY_SIDECAR = "metadata.json"
#: ImageJ's own escape of "Å" in a TIFF description (java.util.Properties syntax).
IMAGEJ_ANGSTROM = "\\u00C5"
_ATOM_FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".cif": "cif"}


@dataclass(frozen=True)
class ResultArrays:
    """The arrays and calibration of a reconstruction result file.

    Attributes
    ----------
    object:
        complex64 (states, slices, ny, nx) transmission functions.
    probe:
        complex64 (modes, ny, nx), centred on (ny//2, nx//2).
    positions_ang, nominal_positions_ang:
        float64 (N, 2): fitted and nominal (y, x) probe positions [Å] in the scan frame.
    state_weights:
        float64 (states,).
    pixel_size_ang:
        (dy, dx) [Å] of the object and probe pixels.
    origin_ang:
        (y, x) [Å] of object pixel (0, 0) in the scan frame.
    tilt_mrad:
        (θ_y, θ_x) [mrad], the mean over positions when a tilt map was fitted.
    slice_thickness_ang, energy_ev, semiangle_mrad:
        Δz [Å], beam energy [eV] and convergence semiangle [mrad].
    iterations, software:
        Iterations run and the writing software ("ptyscope X.Y").
    """

    object: np.ndarray
    probe: np.ndarray
    positions_ang: np.ndarray
    nominal_positions_ang: np.ndarray
    state_weights: np.ndarray
    pixel_size_ang: tuple[float, float]
    origin_ang: tuple[float, float]
    tilt_mrad: tuple[float, float]
    slice_thickness_ang: float
    energy_ev: float
    semiangle_mrad: float
    iterations: int
    software: str

    @property
    def total_thickness_ang(self) -> float:
        """Slices × Δz [Å]."""
        return self.slice_thickness_ang * int(self.object.shape[1])


def read_result_arrays(path: str | os.PathLike[str]) -> ResultArrays:
    """Read a reconstruction result file (:mod:`ptyscope.reconstruction.results`).

    Raises ``ValueError`` naming the file when it is not a readable ptyscope result.
    """
    where = os.fspath(path)
    try:
        with open_untrusted_hdf5(path) as handle:
            if handle.attrs.get("format") != "ptyscope-result":
                raise ValueError(
                    f"{where!r} is not a ptyscope result file (root attribute format = "
                    f"{handle.attrs.get('format')!r}, expected 'ptyscope-result')"
                )
            obj = handle["object"]
            attrs = handle.attrs
            pixel = tuple(float(v) for v in obj.attrs["pixel_size_ang"])
            origin = tuple(float(v) for v in obj.attrs.get("origin_ang", (0.0, 0.0)))
            result = ResultArrays(
                object=np.asarray(obj[()], dtype=np.complex64),
                probe=np.asarray(handle["probe"][()], dtype=np.complex64),
                positions_ang=np.asarray(handle["positions_ang"][()], dtype=np.float64),
                nominal_positions_ang=np.asarray(
                    handle["nominal_positions_ang"][()], dtype=np.float64
                ),
                state_weights=np.asarray(handle["state_weights"][()], dtype=np.float64),
                pixel_size_ang=(pixel[0], pixel[1]),
                origin_ang=(origin[0], origin[1]),
                tilt_mrad=(float(attrs["tilt_y_mrad"]), float(attrs["tilt_x_mrad"])),
                slice_thickness_ang=float(attrs["slice_thickness_ang"]),
                energy_ev=float(attrs["energy_ev"]),
                semiangle_mrad=float(attrs["semiangle_mrad"]),
                iterations=int(attrs["iterations"]),
                software=str(attrs.get("software", "ptyscope")),
            )
    except (OSError, KeyError) as exc:
        raise ValueError(f"cannot read the result file {where!r} ({exc})") from None
    if result.object.ndim != 4 or result.probe.ndim != 3:
        raise ValueError(
            f"{where!r}: object must be (states, slices, ny, nx) and probe (modes, ny, nx), "
            f"got {result.object.shape} and {result.probe.shape}"
        )
    return result


def export_result(
    result: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    to: ExportFormat,
) -> list[Path]:
    """Export a reconstruction result file to EMD 1.0 HDF5, NumPy + JSON or TIFF.

    Parameters
    ----------
    result:
        A result file of ``ptyscope reconstruct``.
    output:
        ``to="emd"``: the HDF5 file to write (``.emd`` or ``.h5``). ``"npy"`` and
        ``"tiff"``: the folder to write into (created; files of the same names replaced).
    to:
        ``"emd"``, ``"npy"`` or ``"tiff"`` (module docstring).

    Returns
    -------
    list of pathlib.Path
        The files written.

    Examples
    --------
    >>> export_result("run.h5", "run.emd", to="emd")  # doctest: +SKIP
    [PosixPath('run.emd')]
    """
    if to not in EXPORT_FORMATS:
        raise ValueError(f"to must be one of {list(EXPORT_FORMATS)}, got {to!r}")
    arrays = read_result_arrays(result)
    source = Path(result).name
    if to == "emd":
        return [_write_emd(arrays, Path(output), source)]
    if to == "npy":
        return _write_npy(arrays, Path(output), source)
    return _write_tiff(arrays, Path(output))


# ---------------------------------------------------------------------------------------
# Common description.


def _description(arrays: ResultArrays, source: str) -> dict[str, Any]:
    """Calibration and conventions, JSON-ready (the npy sidecar and the EMD metadata)."""
    states, slices = arrays.object.shape[:2]
    return {
        "source": source,
        "software": arrays.software,
        "exported_by": f"ptyscope {__version__}",
        "units": {"length": "Å", "angle": "mrad", "energy": "eV", "phase": "rad"},
        "pixel_size_ang": list(arrays.pixel_size_ang),
        "origin_ang": list(arrays.origin_ang),
        "tilt_mrad": list(arrays.tilt_mrad),
        "slice_thickness_ang": arrays.slice_thickness_ang,
        "total_thickness_ang": arrays.total_thickness_ang,
        "energy_ev": arrays.energy_ev,
        "semiangle_mrad": arrays.semiangle_mrad,
        "iterations": arrays.iterations,
        "states": int(states),
        "slices": int(slices),
        "probe_modes": int(arrays.probe.shape[0]),
        "conventions": {
            "axes": "arrays are (..., y, x): y is axis -2 (rows), x axis -1; every vector "
            "is (y, x); py4DSTEM calls axis -2 'x'",
            "object": "transmission functions O = |O| exp(i phase), complex64 "
            "(states, slices, ny, nx); object pixel (0, 0) lies at origin_ang",
            "probe": "complex64 (modes, ny, nx), centred on (ny//2, nx//2), "
            "sum |P|^2 = 1 over all modes",
            "positions": "(y, x) probe centres [Å] in the scan frame",
            "tilt": "(theta_y, theta_x) [mrad]; a slice at depth z sees the object "
            "displaced by +z tan(theta) (Sha et al. 2022, Eq. 3)",
            "fft": "forward transform exp(-2 pi i k.r), frequencies in 1/Å without 2 pi",
        },
    }


# ---------------------------------------------------------------------------------------
# EMD 1.0.


def _emd_node(group: h5py.Group, name: str, kind: str, python_class: str) -> h5py.Group:
    node = group.create_group(name)
    node.attrs["emd_group_type"] = kind
    node.attrs["python_class"] = python_class
    return node


def _emd_array(
    group: h5py.Group,
    name: str,
    data: np.ndarray,
    units: str,
    dims: Sequence[tuple[str, str, float, float] | None],
) -> None:
    """An EMD Array: ``data`` and ``dim<n>`` = (name, units, first value, step) per axis
    (``None``: pixel indices)."""
    node = _emd_node(group, name, "array", "Array")
    dataset = node.create_dataset("data", data=data)
    dataset.attrs["units"] = units
    for n, dim in enumerate(dims):
        if dim is None:
            vector = node.create_dataset(f"dim{n}", data=np.array([0, 1], dtype=np.int64))
            vector.attrs["name"] = f"dim{n}"
            vector.attrs["units"] = "pixels"
        else:
            label, unit, start, step = dim
            vector = node.create_dataset(f"dim{n}", data=np.array([start, start + step]))
            vector.attrs["name"] = label
            vector.attrs["units"] = unit


def _emd_metadata(group: h5py.Group, name: str, items: dict[str, Any]) -> None:
    """An EMD Metadata group of numbers, strings and float arrays (emdfile's item types)."""
    bundle = group.require_group("metadatabundle")
    bundle.attrs["emd_group_type"] = "metadatabundle"
    node = _emd_node(bundle, name, "metadata", "Metadata")
    for key, value in items.items():
        if isinstance(value, str):
            item = node.create_dataset(key, data=value.encode("utf-8"))
            kind = "string"
        elif isinstance(value, bool):
            item = node.create_dataset(key, data=value, dtype=bool)
            kind = "bool"
        elif isinstance(value, int | float):
            item = node.create_dataset(key, data=value, dtype=type(value))
            kind = "number"
        else:
            item = node.create_dataset(key, data=np.asarray(value, dtype=np.float64))
            kind = "array"
        item.attrs["type"] = kind.encode("utf-8")


def _write_emd(arrays: ResultArrays, path: Path, source: str) -> Path:
    dy, dx = arrays.pixel_size_ang
    oy, ox = arrays.origin_ang
    ny, nx = arrays.probe.shape[1:]
    description = _description(arrays, source)
    metadata: dict[str, Any] = {
        key: value
        for key, value in description.items()
        if isinstance(value, str | int | float) and not isinstance(value, bool)
    }
    for key in ("pixel_size_ang", "origin_ang", "tilt_mrad"):
        metadata[key] = np.asarray(description[key], dtype=np.float64)
    metadata["state_weights"] = arrays.state_weights
    for key, text in description["conventions"].items():
        metadata[f"convention_{key}"] = text
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs["emd_group_type"] = "file"
        handle.attrs["version_major"] = EMD_VERSION[0]
        handle.attrs["version_minor"] = EMD_VERSION[1]
        handle.attrs["UUID"] = str(uuid.uuid4())
        handle.attrs["authoring_program"] = f"ptyscope {__version__}"
        handle.attrs["authoring_user"] = ""
        root = _emd_node(handle, EMD_ROOT, "root", "Root")
        _emd_metadata(root, "ptyscope", metadata)
        dz = arrays.slice_thickness_ang
        _emd_array(
            root,
            "object",
            arrays.object,
            "transmission",
            [None, ("z", "A", 0.0, dz), ("y", "A", oy, dy), ("x", "A", ox, dx)],
        )
        _emd_array(
            root,
            "probe",
            arrays.probe,
            "sqrt(fraction of the beam)",
            [None, ("y", "A", -(ny // 2) * dy, dy), ("x", "A", -(nx // 2) * dx, dx)],
        )
        _emd_array(root, "positions", arrays.positions_ang, "A", [None, None])
    return path


# ---------------------------------------------------------------------------------------
# NumPy + JSON.


def _save_npy(path: Path, array: np.ndarray) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    return path


def _write_npy(arrays: ResultArrays, folder: Path, source: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "object": (arrays.object, ["state", "slice", "y", "x"], "transmission (complex)"),
        "probe": (arrays.probe, ["mode", "y", "x"], "sqrt(fraction of the beam)"),
        "positions_ang": (arrays.positions_ang, ["position", "yx"], "Å"),
        "nominal_positions_ang": (arrays.nominal_positions_ang, ["position", "yx"], "Å"),
        "state_weights": (arrays.state_weights, ["state"], "1"),
    }
    written = []
    described: dict[str, Any] = {}
    for name, (array, axes, units) in files.items():
        written.append(_save_npy(folder / f"{name}.npy", array))
        described[name] = {
            "file": f"{name}.npy",
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "axes": axes,
            "units": units,
        }
    sidecar = {"format": "ptyscope-export-npy", "format_version": 1}
    sidecar |= _description(arrays, source)
    sidecar["arrays"] = described
    path = folder / NPY_SIDECAR
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return [*written, path]


# ---------------------------------------------------------------------------------------
# TIFF.


def _save_tiff(
    path: Path,
    data: np.ndarray,
    axes: str,
    pixel_size_ang: tuple[float, float],
    labels: list[str] | None = None,
    spacing_ang: float | None = None,
) -> Path:
    """A float32 ImageJ TIFF whose pixels ImageJ shows in Å."""
    import tifffile

    dy, dx = pixel_size_ang
    metadata: dict[str, Any] = {"axes": axes, "unit": IMAGEJ_ANGSTROM}
    if spacing_ang is not None:
        metadata["spacing"] = spacing_ang
    if labels is not None:
        metadata["Labels"] = labels
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            np.ascontiguousarray(data, dtype=np.float32),
            imagej=True,
            resolution=(1.0 / dx, 1.0 / dy),  # pixels per Å, x first (TIFF order)
            metadata=metadata,
        )
    return path


def _write_tiff(arrays: ResultArrays, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    obj = arrays.object
    states, slices = obj.shape[:2]
    pixel = arrays.pixel_size_ang
    stack_axes = "TZYX" if states > 1 else "ZYX"
    labels = [f"state {s} slice {j}" for s in range(states) for j in range(slices)]
    stack_shape = obj.shape if states > 1 else obj.shape[1:]
    phase = np.angle(obj).astype(np.float32)
    weights = arrays.state_weights.reshape(-1, 1, 1)
    phase_sum = (weights * phase.astype(np.float64).sum(axis=1)).sum(axis=0)
    modes = arrays.probe.shape[0]
    dz = arrays.slice_thickness_ang
    return [
        _save_tiff(folder / "phase.tif", phase.reshape(stack_shape), stack_axes, pixel, labels, dz),
        _save_tiff(folder / "phase_sum.tif", phase_sum, "YX", pixel),
        _save_tiff(
            folder / "amplitude.tif",
            np.abs(obj).reshape(stack_shape),
            stack_axes,
            pixel,
            labels,
            dz,
        ),
        _save_tiff(
            folder / "probe_intensity.tif",
            np.abs(arrays.probe) ** 2,
            "TYX",
            pixel,
            [f"mode {m}" for m in range(modes)],
        ),
    ]


# ---------------------------------------------------------------------------------------
# Atoms.


def export_atoms(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    symbols: Sequence[str] | None = None,
) -> Path:
    """Write ptyscope's atoms to a file ase reads: extended XYZ or CIF by the extension.

    Parameters
    ----------
    source:
        ``tomography.h5`` of ``ptyscope tomo`` (3D atoms with species labels; the cell
        is the volume's box; XYZ positions in the scan frame of its ``atoms.xyz``, the
        volume's lateral origin added; CIF positions relative to the box's corner, the
        cell's origin, so no atom wraps), or ``columns.csv`` of ``ptyscope
        analyze columns`` (2D columns at z = 0, no cell; each column gets the first
        chemical symbol of its label, e.g. "TiO" → Ti, and the full label is kept in the
        per-atom array ``column``).
    output:
        ``.xyz`` / ``.extxyz`` (extended XYZ) or ``.cif`` (needs a cell: 3D atoms only).
    symbols:
        Chemical symbol of each species label (0, 1, ...) of a tomography result; default
        the ``[atoms] symbols`` of the config stored in the file.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    target = Path(output)
    fmt = _ATOM_FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise ValueError(f"output must end in one of {sorted(_ATOM_FORMATS)}, got {str(output)!r}")
    path = Path(source)
    if path.suffix.lower() == ".csv":
        atoms = _columns_atoms(path)
    else:
        atoms = _tomography_atoms(path, symbols, in_cell=fmt == "cif")
    if fmt == "cif" and not atoms.cell.rank == 3:
        raise ValueError(
            f"a .cif file needs a periodic cell, and {str(source)!r} has none (2D columns): "
            "write .xyz or .extxyz"
        )
    atoms.pbc = fmt == "cif"
    with atomic_path(target) as tmp:
        ase.io.write(tmp, atoms, format=fmt)
    return target


def _tomography_atoms(path: Path, symbols: Sequence[str] | None, *, in_cell: bool) -> ase.Atoms:
    where = os.fspath(path)
    try:
        with open_untrusted_hdf5(path) as handle:
            if handle.attrs.get("format") != "ptyscope-tomography":
                raise ValueError(
                    f"{where!r} is neither a ptyscope-tomography result nor a columns .csv "
                    f"(format attribute {handle.attrs.get('format')!r})"
                )
            if "atoms" not in handle:
                raise ValueError(f"{where!r} holds no atoms (the run traced none)")
            positions = np.asarray(handle["atoms/positions_ang"][()], dtype=np.float64)
            labels = np.asarray(handle["atoms/labels"][()], dtype=np.int64)
            volume = handle["volume"]
            voxel = float(volume.attrs["voxel_size_ang"])
            origin = [float(v) for v in volume.attrs.get("origin_ang", (0.0, 0.0))]
            shape = volume.shape
            config = str(handle.attrs.get("config", ""))
    except (OSError, KeyError) as exc:
        raise ValueError(f"cannot read atoms from {where!r} ({exc})") from None
    names = list(symbols) if symbols is not None else _config_symbols(config)
    unknown = [s for s in names if s not in chemical_symbols[1:]]
    if not names or unknown:
        raise ValueError(f"symbols must be chemical symbols such as 'Fe', got {names!r}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(
            f"{where!r}: species labels run to {int(labels.max())}, but symbols has "
            f"{len(names)} entries {names}"
        )
    # XYZ: the scan frame, as ``ptyscope tomo`` writes atoms.xyz; CIF: the volume's frame,
    # whose corner is the cell's origin (a CIF cell has no offset; atoms would wrap).
    frame = positions if in_cell else positions + np.array([origin[1], origin[0], 0.0])
    cell = np.array(shape[::-1], dtype=np.float64) * voxel  # (x, y, z) box of the volume
    return ase.Atoms(symbols=[names[k] for k in labels], positions=frame, cell=cell)


def _config_symbols(config_text: str) -> list[str]:
    from ptyscope.config import TomoAtomsConfig

    try:
        config = tomllib.loads(config_text) if config_text else {}
    except tomllib.TOMLDecodeError:
        config = {}
    atoms = config.get("atoms", {})
    symbols = atoms.get("symbols") if isinstance(atoms, dict) else None
    return list(symbols) if symbols else list(TomoAtomsConfig().symbols)


def _columns_atoms(path: Path) -> ase.Atoms:
    where = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ValueError(f"cannot read columns from {where!r} ({exc})") from None
    if not rows or not {"label", "y_ang", "x_ang"} <= set(rows[0]):
        raise ValueError(f"{where!r} must be a columns table with label, y_ang and x_ang columns")
    labels = [row["label"] for row in rows]
    positions = np.array([[float(row["x_ang"]), float(row["y_ang"]), 0.0] for row in rows])
    atoms = ase.Atoms(
        symbols=[_leading_symbol(label, where) for label in labels], positions=positions
    )
    atoms.arrays["column"] = np.array(labels, dtype=str)  # written by extxyz per atom
    return atoms


def _leading_symbol(label: str, where: str) -> str:
    """The chemical symbol a column label starts with ("TiO" → "Ti", "O" → "O")."""
    for size in (2, 1):
        if label[:size] in chemical_symbols[1:]:
            return label[:size]
    raise ValueError(f"{where!r}: column label {label!r} does not start with a chemical symbol")
