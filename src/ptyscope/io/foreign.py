"""Probes and objects from PtyRAD, py4DSTEM and ptyscope results, in ptyscope's conventions.

:func:`read_probe` and :func:`read_object` return what a run needs to start from another
reconstruction (``[init] probe_file`` / ``object_file``, wired in
:mod:`ptyscope.reconstruction.initial`):

* probe: complex64 (modes, ny, nx) in real space, centred on pixel (ny//2, nx//2),
  normalised to Σ|ψ|² = 1 over all modes (ptyscope's convention: the engine scales the
  predicted intensities by the mean measured counts), the modes' relative powers kept;
* object: complex64 (states, slices, ny, nx) transmission functions, with the probe
  centres of the foreign run on its grid when the file has them, so the object can be
  placed on another grid;
* pixel sizes (dy, dx) in Å; arrays (..., y, x).

The layouts, read from the packages' source and checked on files they wrote
(``tools/make_foreign_fixtures.py``):

PtyRAD 1.0 (``model_iterNNNN.hdf5`` of ``ptyrad.io.save.save_results``)
    ``optimizable_tensors/probe`` complex (pmode, Ny, Nx), centred on N//2 (PtyRAD
    builds it as fftshift(ifft2(ifftshift(·)))); ``optimizable_tensors/obja`` and
    ``objp`` float (omode, Nz, Ny, Nx), O = obja·exp(i·objp); ``model_attributes/dx``
    [Å] (square pixels); ``model_attributes/crop_pos`` (N, 2) integer top-left corners
    of the probe windows on the object and ``optimizable_tensors/probe_pos_shifts``
    (N, 2) sub-pixel shifts, so a probe centre is crop_pos + shifts + Npix//2;
    ``model_attributes/omode_occu`` the object-mode weights; ``slice_thickness`` [Å].
    PtyRAD arrays are (y, x) like ptyscope's; its propagator is exp(iΔz·√(k² − q²)),
    the same sign as ptyscope's exp(−iπλΔz q²).
py4DSTEM 0.14 (``py4DSTEM.save`` of a ptychography class: an EMD 1.0 file)
    ``<root>/<name>/_probe_emd/data``: complex (Sx, Sy) or (modes, Sx, Sy),
    corner-centred (py4DSTEM's ``probe_centered`` is its fftshift);
    ``<root>/<name>/_object_emd/data``: (Px, Py), or (slices, Px, Py) for the multislice
    classes; complex, or the phase when ``object_type`` is "potential" (O = exp(i·V));
    ``metadatabundle/preprocess_metadata``: ``sampling`` (2,) [Å], ``positions_px``
    (N, 2) probe centres on the object grid, ``data_transpose``;
    ``instantiation_metadata``: ``object_type``, ``slice_thicknesses``. py4DSTEM calls
    array axis 0 "x": it is ptyscope's y (docs/conventions.md), so no transpose.
ptyscope (``reconstruction.results``)
    ``object``, ``probe`` as they are; probe centres (positions_ang − origin_ang)/pixel.

Files are untrusted: whatever h5py raises on a damaged file becomes a ``ValueError``
naming the file and the missing or malformed entry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from ptyscope.io.hdf5_guard import check_hdf5_metadata

__all__ = [
    "FOREIGN_FORMATS",
    "ForeignObject",
    "ForeignProbe",
    "detect_format",
    "read_object",
    "read_probe",
]

ForeignFormat = Literal["ptyscope", "ptyrad", "py4dstem"]
#: Formats :func:`read_probe` and :func:`read_object` understand.
FOREIGN_FORMATS: tuple[ForeignFormat, ...] = ("ptyscope", "ptyrad", "py4dstem")


@dataclass(frozen=True)
class ForeignProbe:
    """A probe read from a result file.

    Attributes
    ----------
    probe:
        complex64 (modes, ny, nx), centred on (ny//2, nx//2), Σ|ψ|² = 1 over all modes.
    pixel_size_ang:
        (dy, dx) [Å].
    source:
        The format read ("ptyscope", "ptyrad" or "py4dstem").
    path:
        The file read.
    """

    probe: np.ndarray
    pixel_size_ang: tuple[float, float]
    source: ForeignFormat
    path: Path


@dataclass(frozen=True)
class ForeignObject:
    """An object read from a result file.

    Attributes
    ----------
    object:
        complex64 (states, slices, ny, nx) transmission functions.
    pixel_size_ang:
        (dy, dx) [Å].
    probe_centres_px:
        float64 (N, 2): (y, x) probe centres of that run on this object's grid [px], or
        ``None`` when the file has none.
    state_weights:
        float64 (states,), summing to 1.
    slice_thickness_ang:
        Δz [Å], or ``None`` when unknown or not uniform.
    source, path:
        The format and the file read.
    """

    object: np.ndarray
    pixel_size_ang: tuple[float, float]
    probe_centres_px: np.ndarray | None
    state_weights: np.ndarray
    slice_thickness_ang: float | None
    source: ForeignFormat
    path: Path


def detect_format(path: str | os.PathLike[str]) -> ForeignFormat:
    """Which kind of result ``path`` is: "ptyscope", "ptyrad" or "py4dstem".

    Raises ``ValueError`` naming the file when it is none of them.
    """
    where = os.fspath(path)
    with _open(path) as handle:
        if handle.attrs.get("format") == "ptyscope-result":
            return "ptyscope"
        if "optimizable_tensors" in handle and "model_attributes" in handle:
            return "ptyrad"
        if _text(handle.attrs.get("emd_group_type")) == "file" and _py4dstem_nodes(handle):
            return "py4dstem"
    raise ValueError(
        f"{where!r} is not a ptyscope, PtyRAD (model_*.hdf5) or py4DSTEM ptychography "
        "result: it has none of the root attribute format = 'ptyscope-result', the "
        "groups optimizable_tensors and model_attributes, or an EMD tree with _probe_emd "
        "and _object_emd"
    )


def read_probe(
    path: str | os.PathLike[str], file_format: ForeignFormat | Literal["auto"] = "auto"
) -> ForeignProbe:
    """The probe of a ptyscope, PtyRAD or py4DSTEM result, in ptyscope's conventions.

    Parameters
    ----------
    path:
        The result file.
    file_format:
        "auto" (:func:`detect_format`), "ptyscope", "ptyrad" or "py4dstem".
    """
    kind = _kind(path, file_format)
    with _open(path) as handle:
        try:
            if kind == "ptyscope":
                probe = np.asarray(handle["probe"][()])
                pixel = _pair(handle["probe"].attrs["pixel_size_ang"])
            elif kind == "ptyrad":
                probe = np.asarray(handle["optimizable_tensors/probe"][()])
                pixel = _ptyrad_pixel(handle)
            else:
                node = _py4dstem_node(handle, path)
                _refuse_transposed(node, path)
                probe = np.fft.fftshift(np.asarray(node["_probe_emd/data"][()]), axes=(-2, -1))
                pixel = _pair(_metadata(node, "preprocess_metadata", "sampling"))
        except (KeyError, OSError, TypeError) as exc:
            raise _malformed(path, kind, exc) from None
    if probe.ndim == 2:
        probe = probe[None]
    if probe.ndim != 3 or not np.iscomplexobj(probe):
        raise ValueError(
            f"{os.fspath(path)!r}: the {kind} probe must be complex (modes, ny, nx), got "
            f"{probe.dtype} {probe.shape}"
        )
    power = float((np.abs(probe.astype(np.complex128)) ** 2).sum())
    if not np.isfinite(power) or power <= 0:
        raise ValueError(f"{os.fspath(path)!r}: the {kind} probe has no intensity ({power})")
    unit = (probe / np.sqrt(power)).astype(np.complex64)
    return ForeignProbe(unit, pixel, kind, Path(path))


def read_object(
    path: str | os.PathLike[str], file_format: ForeignFormat | Literal["auto"] = "auto"
) -> ForeignObject:
    """The object of a ptyscope, PtyRAD or py4DSTEM result, in ptyscope's conventions.

    Parameters
    ----------
    path:
        The result file.
    file_format:
        "auto" (:func:`detect_format`), "ptyscope", "ptyrad" or "py4dstem".
    """
    kind = _kind(path, file_format)
    with _open(path) as handle:
        try:
            if kind == "ptyscope":
                obj, pixel, centres, weights, dz = _ptyscope_object(handle)
            elif kind == "ptyrad":
                obj, pixel, centres, weights, dz = _ptyrad_object(handle)
            else:
                obj, pixel, centres, weights, dz = _py4dstem_object(handle, path)
        except (KeyError, OSError, TypeError) as exc:
            raise _malformed(path, kind, exc) from None
    if obj.ndim != 4 or obj.shape[0] != weights.size:
        raise ValueError(
            f"{os.fspath(path)!r}: the {kind} object must be (states, slices, ny, nx) with "
            f"one weight per state, got {obj.shape} and {weights.size} weights"
        )
    if centres is not None and (centres.ndim != 2 or centres.shape[1] != 2):
        raise ValueError(
            f"{os.fspath(path)!r}: the {kind} probe positions must be (N, 2), got {centres.shape}"
        )
    total = float(weights.sum())
    weights = weights / total if total > 0 else np.full(weights.size, 1.0 / weights.size)
    return ForeignObject(
        np.asarray(obj, dtype=np.complex64), pixel, centres, weights, dz, kind, Path(path)
    )


# ---------------------------------------------------------------------------------------
# Per format.


Read = tuple[np.ndarray, tuple[float, float], np.ndarray | None, np.ndarray, float | None]


def _ptyscope_object(handle: h5py.File) -> Read:
    dataset = handle["object"]
    obj = np.asarray(dataset[()])
    pixel = _pair(dataset.attrs["pixel_size_ang"])
    origin = np.asarray(dataset.attrs.get("origin_ang", (0.0, 0.0)), dtype=np.float64)
    positions = np.asarray(handle["positions_ang"][()], dtype=np.float64)
    centres = (positions - origin) / np.asarray(pixel)
    weights = np.asarray(handle["state_weights"][()], dtype=np.float64).ravel()
    dz = float(handle.attrs["slice_thickness_ang"])
    return obj, pixel, centres, weights, dz


def _ptyrad_pixel(handle: h5py.File) -> tuple[float, float]:
    dx = float(np.asarray(handle["model_attributes/dx"][()]).ravel()[0])
    return (dx, dx)  # PtyRAD's pixels are square


def _ptyrad_object(handle: h5py.File) -> Read:
    tensors = handle["optimizable_tensors"]
    amplitude = np.asarray(tensors["obja"][()], dtype=np.float64)
    phase = np.asarray(tensors["objp"][()], dtype=np.float64)
    if amplitude.shape != phase.shape:
        raise ValueError(f"PtyRAD obja {amplitude.shape} and objp {phase.shape} differ in shape")
    obj = amplitude * np.exp(1j * phase)
    attributes = handle["model_attributes"]
    centres = None
    if "crop_pos" in attributes:
        corners = np.asarray(attributes["crop_pos"][()], dtype=np.float64)
        if "probe_pos_shifts" in tensors:
            corners = corners + np.asarray(tensors["probe_pos_shifts"][()], dtype=np.float64)
        window = np.asarray(tensors["probe"].shape[-2:])
        centres = corners + window // 2  # PtyRAD centres its probe on Npix//2
    weights = np.ones(obj.shape[0])
    if "omode_occu" in attributes:
        weights = np.asarray(attributes["omode_occu"][()], dtype=np.float64).ravel()
    dz = None
    for key in ("optimizable_tensors/slice_thickness", "model_attributes/slice_thickness"):
        if key in handle:
            dz = float(np.asarray(handle[key][()]).ravel()[0])
            break
    return obj, _ptyrad_pixel(handle), centres, weights, dz


def _py4dstem_nodes(handle: h5py.File) -> list[h5py.Group]:
    """Groups of an EMD file holding a py4DSTEM ptychography reconstruction."""
    found = []
    for root in handle.values():
        if not isinstance(root, h5py.Group) or _text(root.attrs.get("emd_group_type")) != "root":
            continue
        for node in root.values():
            if isinstance(node, h5py.Group) and "_probe_emd" in node and "_object_emd" in node:
                found.append(node)
    return found


def _py4dstem_node(handle: h5py.File, path: str | os.PathLike[str]) -> h5py.Group:
    nodes = _py4dstem_nodes(handle)
    if len(nodes) != 1:
        names = [node.name for node in nodes]
        raise ValueError(
            f"{os.fspath(path)!r} must hold exactly one py4DSTEM reconstruction, found "
            f"{len(nodes)}: {names}"
        )
    node = nodes[0]
    kind = _text(node.attrs.get("python_class", ""))
    if any(word in kind for word in ("Tomography", "Magnetic")):
        raise ValueError(
            f"{os.fspath(path)!r}: py4DSTEM {kind} results are not supported (their object "
            "is not a stack of transmission functions)"
        )
    return node


def _refuse_transposed(node: h5py.Group, path: str | os.PathLike[str]) -> None:
    if bool(_metadata(node, "preprocess_metadata", "data_transpose", default=False)):
        raise ValueError(
            f"{os.fspath(path)!r}: py4DSTEM reconstructed it with data_transpose = True (the "
            "patterns transposed against the scan): its probe and object are in a mirrored "
            "frame; reconstruct again without the transpose, or transpose the data"
        )


def _py4dstem_object(handle: h5py.File, path: str | os.PathLike[str]) -> Read:
    node = _py4dstem_node(handle, path)
    _refuse_transposed(node, path)
    data = np.asarray(node["_object_emd/data"][()])
    if _text(_metadata(node, "instantiation_metadata", "object_type", default="complex")) == (
        "potential"
    ):
        data = np.exp(1j * data.astype(np.float64))
    kind = _text(node.attrs.get("python_class", ""))
    if data.ndim == 2:
        obj = data[None, None]
    elif data.ndim == 3 and "Multislice" in kind:
        obj = data[None]
    else:
        raise ValueError(
            f"{os.fspath(path)!r}: a py4DSTEM {kind or 'object'} of shape {data.shape} is "
            "neither one slice (Px, Py) nor a multislice stack (slices, Px, Py)"
        )
    pixel = _pair(_metadata(node, "preprocess_metadata", "sampling"))
    centres = _metadata(node, "preprocess_metadata", "positions_px", default=None)
    if centres is not None:
        centres = np.asarray(centres, dtype=np.float64)
    thickness = _metadata(node, "instantiation_metadata", "slice_thicknesses", default=None)
    dz = None
    if thickness is not None:
        values = np.atleast_1d(np.asarray(thickness, dtype=np.float64))
        if values.size and np.allclose(values, values[0], rtol=1e-6):
            dz = float(values[0])
    return obj, pixel, centres, np.ones(1), dz


# ---------------------------------------------------------------------------------------
# Helpers.


def _kind(
    path: str | os.PathLike[str], file_format: ForeignFormat | Literal["auto"]
) -> ForeignFormat:
    if file_format == "auto":
        return detect_format(path)
    if file_format not in FOREIGN_FORMATS:
        raise ValueError(
            f"file_format must be 'auto' or one of {list(FOREIGN_FORMATS)}, got {file_format!r}"
        )
    return file_format


def _open(path: str | os.PathLike[str]) -> h5py.File:
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise ValueError(f"result file not found: {where!r}")
    if Path(where).suffix.lower() == ".pt":
        raise ValueError(
            f"{where!r}: PyTorch checkpoints (.pt) are not read; use PtyRAD's model_*.hdf5"
        )
    check_hdf5_metadata(where)
    try:
        return h5py.File(where, "r")
    except OSError as exc:
        raise ValueError(f"{where!r} is not a readable HDF5 file ({exc})") from None


def _malformed(path: str | os.PathLike[str], kind: str, exc: BaseException) -> ValueError:
    return ValueError(f"{os.fspath(path)!r} is not a complete {kind} result ({exc})")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return _text(value.item())
    return "" if value is None else str(value)


def _pair(value: Any) -> tuple[float, float]:
    values = np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()
    if values.size == 1:
        values = np.repeat(values, 2)
    if values.size != 2 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"a pixel size must be one or two positive numbers [Å], got {value!r}")
    return (float(values[0]), float(values[1]))


_MISSING = object()


def _metadata(node: h5py.Group, bundle: str, key: str, default: Any = _MISSING) -> Any:
    """One item of an emdfile Metadata group of ``node`` (emdfile's encodings: strings as
    bytes, ``None`` as ``"_None"``, tuples of arrays as numbered datasets)."""
    group = node.get(f"metadatabundle/{bundle}")
    if group is None or key not in group:
        if default is _MISSING:
            raise KeyError(f"metadatabundle/{bundle}/{key}")
        return default
    item = group[key]
    kind = _text(item.attrs.get("type", ""))
    if kind == "None":
        return None if default is _MISSING else default
    if isinstance(item, h5py.Group):
        return np.stack([np.asarray(item[str(i)][()]) for i in range(len(item))])
    value = item[()]
    if kind == "string":
        text = _text(value)
        return None if text == "_None" else text
    return value
