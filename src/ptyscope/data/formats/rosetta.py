"""Formats read through RosettaSciIO (optional dependency, ``pip install 'ptyscope[io]'``).

RosettaSciIO (``rsciio``) reads many vendor formats; ptyscope uses it for Gatan
DigitalMicrograph ``.dm3``/``.dm4``, NanoMegas ``.blo`` block files, Thermo Fisher Velox
``.emd`` files and HyperSpy ``.hspy``/``.zspy``. It is imported only when such a file is
read.

Interface (RosettaSciIO API documentation, https://hyperspy.org/rosettasciio/api/):
``rsciio.<plugin>.file_reader(filename, lazy=True)`` returns a list of dictionaries, one per
signal, with ``"data"`` (a numpy or dask array), ``"axes"`` (one dictionary per array axis
with ``"index_in_array"``, ``"size"``, ``"scale"``, ``"offset"``, ``"units"`` and, for
signals, ``"navigate"``), ``"metadata"`` and ``"original_metadata"``. ptyscope takes the
one 4D signal (navigation axes first, as the array is stored), and reads the calibration
where the file has it:

* scan step from the navigation axes' ``scale`` in nm, µm, pm or Å → Å;
* detector pixel from the signal axes' ``scale`` in 1/nm, 1/Å or 1/pm → Å⁻¹, or in
  mrad / rad → mrad (then k = α/λ);
* beam energy from ``metadata["Acquisition_instrument"]["TEM"]["beam_energy"]`` [keV] and
  the semiangle from ``...["convergence_angle"]`` [mrad] (HyperSpy metadata conventions,
  https://hyperspy.org/hyperspy-doc/current/reference/metadata.html).

Options override the file's values. Axes without recognised units are left to the options.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from ptyscope.data.dataset import Dataset4D

from ._common import build_calibration, check_real_dtype, frames_to_4d, reject_unknown_options

__all__ = ["ROSETTA_PLUGINS", "calibration_from_axes", "read_rosetta"]

#: File extension -> RosettaSciIO plugin module (``rsciio.<name>``).
ROSETTA_PLUGINS: dict[str, str] = {
    ".dm3": "digitalmicrograph",
    ".dm4": "digitalmicrograph",
    ".blo": "blockfile",
    ".emd": "emd",
    ".hspy": "hspy",
    ".zspy": "zspy",
}

_INSTALL_HINT = (
    "RosettaSciIO is needed to read {what}; install it with  pip install 'ptyscope[io]'  "
    "(or  pip install rosettasciio)"
)

#: Length units -> Å.
_LENGTH_TO_ANG = {"Å": 1.0, "A": 1.0, "ang": 1.0, "nm": 10.0, "µm": 1e4, "um": 1e4, "pm": 1e-2}
#: Reciprocal length units -> Å⁻¹.
_INV_LENGTH_TO_INV_ANG = {
    "1/Å": 1.0,
    "1/A": 1.0,
    "Å^-1": 1.0,
    "A^-1": 1.0,
    "1/nm": 0.1,
    "nm^-1": 0.1,
    "1 / nm": 0.1,
    "1/pm": 100.0,
}
#: Angle units -> mrad.
_ANGLE_TO_MRAD = {"mrad": 1.0, "rad": 1e3, "µrad": 1e-3, "urad": 1e-3}


def _import_plugin(plugin: str, what: str) -> Any:
    try:
        return importlib.import_module(f"rsciio.{plugin}")
    except ImportError as error:
        if error.name is not None and not error.name.startswith("rsciio"):
            raise  # rsciio is installed but one of its own dependencies is missing
        raise ImportError(_INSTALL_HINT.format(what=what)) from error


def _pair(values: list[float | None]) -> tuple[float, float] | None:
    if len(values) != 2:
        return None
    first, second = values
    if first is None or second is None or first <= 0 or second <= 0:
        return None
    return first, second


def _scaled(axis: dict[str, Any], table: dict[str, float]) -> float | None:
    units = str(axis.get("units") or "").strip()
    factor = table.get(units)
    scale = axis.get("scale")
    if factor is None or scale is None:
        return None
    return abs(float(scale)) * factor


def calibration_from_axes(axes: list[dict[str, Any]], metadata: dict[str, Any]) -> dict[str, Any]:
    """Calibration values found in a RosettaSciIO signal dictionary (module docstring).

    Parameters
    ----------
    axes:
        The signal's ``"axes"`` in array order: two scan axes then two detector axes (4D),
        or one frame axis then two detector axes (3D).
    metadata:
        The signal's ``"metadata"``.

    Returns
    -------
    dict
        Any of ``energy_ev``, ``scan_step_ang``, ``detector_pixel_inv_ang``,
        ``detector_pixel_mrad``, ``semiangle_mrad``; absent when not recorded.
    """
    ordered = sorted(axes, key=lambda axis: int(axis.get("index_in_array", 0)))
    found: dict[str, Any] = {}
    if len(ordered) == 4:
        scan = _pair([_scaled(axis, _LENGTH_TO_ANG) for axis in ordered[:2]])
        if scan is not None:
            found["scan_step_ang"] = scan
    if len(ordered) in (3, 4):
        inv = _pair([_scaled(axis, _INV_LENGTH_TO_INV_ANG) for axis in ordered[-2:]])
        mrad = _pair([_scaled(axis, _ANGLE_TO_MRAD) for axis in ordered[-2:]])
        if inv is not None:
            found["detector_pixel_inv_ang"] = inv
        elif mrad is not None:
            found["detector_pixel_mrad"] = mrad
    tem = metadata.get("Acquisition_instrument", {}).get("TEM", {})
    energy_kev = tem.get("beam_energy")
    if isinstance(energy_kev, int | float) and energy_kev > 0:
        found["energy_ev"] = float(energy_kev) * 1e3
    semiangle = tem.get("convergence_angle")
    if isinstance(semiangle, int | float) and semiangle > 0:
        found["semiangle_mrad"] = float(semiangle)
    return found


def read_rosetta(
    path: str | os.PathLike[str],
    *,
    plugin: str | None = None,
    scan_shape: Any = None,
    **calibration: Any,
) -> Dataset4D:
    """Read a 4D-STEM signal through RosettaSciIO, lazily where the plugin allows.

    Parameters
    ----------
    path:
        The file.
    plugin:
        RosettaSciIO plugin name (``rsciio.<plugin>``); default from the extension
        (:data:`ROSETTA_PLUGINS`).
    scan_shape:
        (scan_y, scan_x): required when the file holds a stack of frames (3D), checked for
        a 4D signal.
    **calibration:
        Calibration options; they override what the file records.

    Returns
    -------
    Dataset4D
        ``data`` is the array RosettaSciIO returns with ``lazy=True`` (dask or memmap).

    Raises
    ------
    ImportError
        If RosettaSciIO is not installed (the message says how to install it).
    """
    reject_unknown_options("rosettasciio", calibration, ["plugin", "scan_shape"])
    suffix = Path(path).suffix.lower()
    name = plugin or ROSETTA_PLUGINS.get(suffix)
    if name is None:
        raise ValueError(
            f"no RosettaSciIO plugin is known for {suffix!r} ({os.fspath(path)!r}); pass "
            f"plugin=<name> (known: {ROSETTA_PLUGINS})"
        )
    module = _import_plugin(name, f"{suffix} files ({os.fspath(path)!r})")
    signals = module.file_reader(os.fspath(path), lazy=True)
    shapes = [tuple(getattr(s.get("data"), "shape", ())) for s in signals]
    usable = [s for s, shape in zip(signals, shapes, strict=True) if len(shape) == 4]
    if not usable and scan_shape is not None:
        usable = [s for s, shape in zip(signals, shapes, strict=True) if len(shape) == 3]
    if len(usable) != 1:
        raise ValueError(
            f"{os.fspath(path)!r} holds {len(signals)} signal(s) of shapes {shapes}; expected "
            "exactly one 4D (scan_y, scan_x, det_y, det_x) signal, or one 3D stack with "
            "scan_shape"
        )
    signal = usable[0]
    check_real_dtype(path, signal["data"].dtype, "the signal")
    data = frames_to_4d(path, signal["data"], scan_shape, "the signal")
    found = calibration_from_axes(list(signal.get("axes", [])), dict(signal.get("metadata", {})))
    cal = build_calibration(path, calibration, found)
    metadata: dict[str, str | float | int] = {
        "source_file": str(Path(path)),
        "source_format": f"rosettasciio:{name}",
    }
    return Dataset4D(data, cal, metadata=metadata)
