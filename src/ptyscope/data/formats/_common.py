"""Option handling and checks shared by the format readers.

Calibration options
-------------------
A file rarely records everything :class:`~ptyscope.data.dataset.Calibration` needs, so every
reader accepts the missing pieces as keyword options (units in the names):

``energy_ev``
    Beam energy [eV] (required unless the file records it).
``scan_step_ang``
    (y, x) step between scan points [Å], or one number for both (required).
``detector_pixel_inv_ang`` or ``detector_pixel_mrad``
    (y, x) size of one detector pixel in reciprocal space [Å⁻¹] or in angle [mrad], or one
    number for both (one of the two is required). Angles convert with k = α/λ.
``semiangle_mrad``, ``defocus_ang``, ``scan_rotation_deg``, ``scan_origin_ang``,
``scan_transpose``, ``detector_center_px``
    Optional, as in :class:`~ptyscope.data.dataset.Calibration`.

A value passed as an option overrides the value the file records.

Untrusted files
---------------
Readers treat every file as untrusted. A file that does not match its format raises
:class:`DataFormatError` (a ``ValueError``) or another ``ValueError`` whose message names
the file and what is wrong; a companion file that a file names but that is missing raises
``FileNotFoundError``. Nothing is unpickled, and no array is allocated from sizes a header
states before they are checked against the bytes the file really holds: uncompressed data
are memory-mapped within the file, compressed data are read only when the size they
declare is at most the DEFLATE limit (:data:`MAX_DEFLATE_RATIO`) times their stored size.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ptyscope._validation import require_positive_pair
from ptyscope.data.dataset import Calibration
from ptyscope.physics.constants import wavelength_ang

__all__ = [
    "CALIBRATION_OPTIONS",
    "MAX_DEFLATE_RATIO",
    "DataFormatError",
    "MissingCalibrationError",
    "build_calibration",
    "check_frame_count",
    "check_real_dtype",
    "check_whole_frames",
    "file_size",
    "finite_or_none",
    "frames_to_4d",
    "parse_scan_shape",
    "reject_unknown_options",
    "require_data",
]

#: Largest expansion of DEFLATE (zip, gzip, HDF5 gzip filter): 1032 output bytes per input
#: byte (RFC 1951 stored length codes: 258 bytes per 2 bits at best).
MAX_DEFLATE_RATIO = 1032


class DataFormatError(ValueError):
    """A file does not match its format: malformed, truncated or inconsistent.

    The message names the file and what is wrong.
    """


class MissingCalibrationError(ValueError):
    """The file lacks calibration values that were not given as options.

    ``missing`` lists them: "energy_ev", "scan_step_ang", "detector_pixel".
    """

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


#: Keyword options every reader accepts for the calibration a file lacks (module docstring).
CALIBRATION_OPTIONS: tuple[str, ...] = (
    "energy_ev",
    "scan_step_ang",
    "detector_pixel_inv_ang",
    "detector_pixel_mrad",
    "semiangle_mrad",
    "defocus_ang",
    "scan_rotation_deg",
    "scan_origin_ang",
    "scan_transpose",
    "detector_center_px",
)

#: Required calibration: (names in messages, how to pass it).
_REQUIRED_HELP = {
    "energy_ev": ("energy_ev", "energy_ev=<beam energy [eV]>"),
    "scan_step_ang": ("scan_step_ang", "scan_step_ang=<(y, x) scan step [Å]>"),
    "detector_pixel": (
        "detector pixel size",
        "detector_pixel_inv_ang=<(y, x) pixel size [Å⁻¹]> or "
        "detector_pixel_mrad=<(y, x) pixel size [mrad]>",
    ),
}


def reject_unknown_options(
    reader: str, options: Mapping[str, Any], format_options: Iterable[str]
) -> None:
    """Raise ``TypeError`` naming any option that is neither a format nor a calibration one.

    Parameters
    ----------
    reader:
        Name of the format, used in the message.
    options:
        The keyword options left over after the reader took its own.
    format_options:
        The reader's own option names (listed in the message).
    """
    unknown = sorted(set(options) - set(CALIBRATION_OPTIONS))
    if unknown:
        own = ", ".join(format_options) or "none"
        raise TypeError(
            f"the {reader!r} reader got unknown option(s) {', '.join(unknown)}; its options "
            f"are {own} and the calibration options {', '.join(CALIBRATION_OPTIONS)}"
        )


def build_calibration(
    path: str | os.PathLike[str],
    options: Mapping[str, Any],
    found: Mapping[str, Any] | None = None,
) -> Calibration:
    """Combine the calibration a file records with the options the caller passed.

    Parameters
    ----------
    path:
        The file being read (named in error messages).
    options:
        Calibration options (module docstring); ``None`` values are ignored. They
        override ``found``.
    found:
        Calibration values read from the file, with the same names.

    Returns
    -------
    Calibration
        The validated calibration; ``detector_pixel_mrad`` is converted to Å⁻¹ with
        k = α/λ at the beam energy.

    Raises
    ------
    ValueError
        If ``energy_ev``, ``scan_step_ang`` or the detector pixel size is neither in the
        file nor among the options (the message names the missing options), if both
        detector pixel options are given, or if a value is invalid.
    """
    given = {key: value for key, value in options.items() if value is not None}
    if "detector_pixel_inv_ang" in given and "detector_pixel_mrad" in given:
        raise ValueError(
            "give the detector pixel size as detector_pixel_inv_ang [Å⁻¹] or as "
            f"detector_pixel_mrad [mrad], not both (got {given['detector_pixel_inv_ang']!r} "
            f"and {given['detector_pixel_mrad']!r})"
        )
    values = {key: value for key, value in (found or {}).items() if value is not None}
    if "detector_pixel_inv_ang" in given or "detector_pixel_mrad" in given:
        values.pop("detector_pixel_inv_ang", None)
        values.pop("detector_pixel_mrad", None)
    values.update(given)

    missing = [key for key in ("energy_ev", "scan_step_ang") if key not in values]
    if "detector_pixel_inv_ang" not in values and "detector_pixel_mrad" not in values:
        missing.append("detector_pixel")
    if missing:
        names = ", ".join(_REQUIRED_HELP[key][0] for key in missing)
        wanted = "; ".join(_REQUIRED_HELP[key][1] for key in missing)
        raise MissingCalibrationError(
            f"{os.fspath(path)!r} does not record the calibration {names}; pass it as "
            f"option(s): {wanted}",
            missing,
        )

    mrad = values.pop("detector_pixel_mrad", None)
    if mrad is not None:
        alpha_mrad = require_positive_pair("detector_pixel_mrad", mrad, "mrad")
        lam = wavelength_ang(float(values["energy_ev"]))
        values["detector_pixel_inv_ang"] = (
            1e-3 * alpha_mrad[0] / lam,
            1e-3 * alpha_mrad[1] / lam,
        )
    return Calibration(**values)


def parse_scan_shape(value: Any, name: str = "scan_shape") -> tuple[int, int]:
    """Return ``value`` as a (scan_y, scan_x) pair of integers >= 1.

    Raises
    ------
    ValueError
        Naming ``name``, the rule and the value received.
    """
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 1 for v in pair
    ):
        raise ValueError(f"{name} must be two integers (scan_y, scan_x) >= 1, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_real_dtype(path: str | os.PathLike[str], dtype: Any, what: str) -> None:
    """Raise ``ValueError`` unless ``dtype`` is a real integer or floating type.

    Parameters
    ----------
    path:
        The file (named in the message).
    dtype:
        The stored dtype.
    what:
        Which array of the file, e.g. ``"array"`` or ``"dataset '/data'"``.
    """
    dt = np.dtype(dtype)
    if dt.kind not in "uif":
        raise ValueError(
            f"{what} in {os.fspath(path)!r} has dtype {dt}; 4D-STEM data must be real "
            "integer or floating-point counts"
        )


def check_whole_frames(
    path: str | os.PathLike[str], size_bytes: int, frame_bytes: int, layout: str
) -> int:
    """Return the number of frames in a file of fixed-size frames.

    Parameters
    ----------
    path:
        The file (named in the message).
    size_bytes:
        Size of the file [bytes].
    frame_bytes:
        Size of one frame including any per-frame header or footer [bytes].
    layout:
        Description of one frame for the message, e.g. ``"130 x 128 float32"``.

    Raises
    ------
    ValueError
        If the file is empty or its size is not a whole number of frames (truncated or of
        another layout).
    """
    if size_bytes == 0:
        raise ValueError(f"{os.fspath(path)!r} is empty (expected frames of {layout})")
    if size_bytes % frame_bytes:
        raise ValueError(
            f"{os.fspath(path)!r} is truncated or not of the expected layout: its size "
            f"{size_bytes} bytes is not a multiple of the frame size {frame_bytes} bytes "
            f"({layout}); it holds {size_bytes // frame_bytes} whole frames and "
            f"{size_bytes % frame_bytes} bytes more"
        )
    return size_bytes // frame_bytes


def check_frame_count(
    path: str | os.PathLike[str],
    n_frames: int,
    frame_shape: tuple[int, ...],
    scan_shape: tuple[int, int],
    source: str = "scan_shape",
) -> None:
    """Raise ``ValueError`` unless ``n_frames`` equals scan_y × scan_x.

    ``source`` says where the scan shape came from (``"scan_shape"`` for the option, or
    the companion file it was read from).
    """
    needed = scan_shape[0] * scan_shape[1]
    if n_frames != needed:
        frame = " x ".join(str(n) for n in frame_shape)
        raise ValueError(
            f"{os.fspath(path)!r} holds {n_frames} frames of {frame}; {source} "
            f"{scan_shape} needs {needed}"
        )


def frames_to_4d(path: str | os.PathLike[str], array: Any, scan_shape: Any, what: str) -> Any:
    """View a 4D array, or a 3D stack of frames plus a scan shape, as 4D.

    Parameters
    ----------
    path:
        The file (named in messages).
    array:
        numpy array or memmap, 4D (scan_y, scan_x, det_y, det_x) or 3D
        (frames, det_y, det_x) in scan order (fast axis x).
    scan_shape:
        ``None`` or (scan_y, scan_x); required for a 3D stack, checked for a 4D array.
    what:
        Which array of the file, for messages.

    Returns
    -------
    The 4D array; a reshaped memmap stays a memmap (no data are read).
    """
    shape = tuple(int(n) for n in array.shape)
    require_data(path, shape, what)
    if len(shape) == 4:
        if scan_shape is not None:
            wanted = parse_scan_shape(scan_shape)
            if shape[:2] != wanted:
                raise ValueError(
                    f"{what} in {os.fspath(path)!r} has scan shape {shape[:2]} "
                    f"(array shape {shape}), but scan_shape {wanted} was given"
                )
        return array
    if len(shape) == 3:
        if scan_shape is None:
            raise ValueError(
                f"{what} in {os.fspath(path)!r} is a stack of {shape[0]} frames of "
                f"{shape[1]} x {shape[2]}; pass scan_shape=(scan_y, scan_x) to arrange them"
            )
        wanted = parse_scan_shape(scan_shape)
        check_frame_count(path, shape[0], shape[1:], wanted)
        return array.reshape(*wanted, *shape[1:])
    raise ValueError(
        f"{what} in {os.fspath(path)!r} has shape {shape}; expected 4D (scan_y, scan_x, "
        "det_y, det_x) or 3D (frames, det_y, det_x) with scan_shape"
    )


def require_data(path: str | os.PathLike[str], shape: tuple[int, ...], what: str) -> None:
    """Raise :class:`DataFormatError` if an array of ``shape`` holds no values.

    Parameters
    ----------
    path:
        The file (named in the message).
    shape:
        The array's shape as the file declares it.
    what:
        Which array of the file, e.g. ``"the array"``.
    """
    if any(n == 0 for n in shape):
        raise DataFormatError(f"{what} in {os.fspath(path)!r} has shape {shape} and holds no data")


def file_size(path: str | os.PathLike[str]) -> int:
    """Size of ``path`` [bytes]."""
    return Path(path).stat().st_size


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` if it is a finite number, else ``None`` (for optional metadata)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
