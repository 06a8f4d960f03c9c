"""Quantum Detectors Merlin (Medipix3) ``.mib`` files.

Layout (see References): a ``.mib`` file is a sequence of frames, each an ASCII header
followed by the pixel data; there is no file header. The frame header is a comma-separated
list that starts with ``MQ1`` and is padded with NUL bytes to its stated size:

====  ===========================================================================
 1    header ID ``MQ1``
 2    sequence number of the frame (from 1)
 3    header size = offset of the pixel data [bytes]: ``00384`` for one chip,
      ``00768`` for four
 4    number of chips
 5    number of pixel columns (x, width)
 6    number of pixel rows (y, height)
 7    pixel type: ``U01``, ``U08``, ``U16``, ``U32``, ``U64`` (processed data, unsigned
      big-endian integers of that many bits) or ``R64`` (raw detector words)
 8    sensor layout (``1x1``, ``2x2``, ``Nx1``, ``2x2G``, ``Nx1G``, with leading spaces)
 9    chip select (hexadecimal)
 10   time stamp
 11   shutter (exposure) time [s]
 12   counter (0 or 1)
 13   colour mode (0 monochrome, 1 colour)
 14   gain mode (0 SLGM, 1 LGM, 2 HGM, 3 SHGM)
 15+  eight thresholds [keV], then 28 DAC values per chip, then the extension
      ``MQ1A``, an extended time stamp, the shutter time ``<n>ns`` and the counter depth
      [bits]
====  ===========================================================================

Pixel data are stored row by row (rows × columns = field 6 × field 5). The counter depth
(1, 6, 12 or 24 bits) is stored in the 'U' formats as ``U08`` (1 and 6 bits), ``U16``
(12 bits) and ``U32`` (24 bits), all big-endian; these are memory-mapped through a
structured dtype ``[("header", "S<size>"), ("data", ">u2", (rows, cols))]``, so reading
is lazy and ``data`` keeps the stored big-endian dtype. The raw ``R64`` format packs the
counters into 64-bit detector words whose bit and byte order no vendor document
available to us describes; it is refused with ``NotImplementedError`` (as are ``U01`` and
sensor layouts other than the assembled 'U' frames). Rows are returned as stored;
RosettaSciIO flips them (axis −2) for display, ptyscope leaves orientation to the
calibration (``scan_rotation_deg``, ``scan_transpose``).

MIB files do not record the scan shape. Pass ``scan_shape``, or keep the companion
``.hdr`` acquisition header (same stem): with a line trigger its ``Frames per Trigger
(Number)`` is the scan width and ``Frames in Acquisition (Number)`` the frame count.

References
----------
Quantum Detectors, *MerlinEM User Manual*, frame header description, as transcribed field
by field in the ePSIC (Diamond Light Source) ``mib_props`` parser documentation,
https://github.com/ePSIC-DLS/mib_props (README, ``src/mib_header_MQ1.h``: fields 1-14,
thresholds, 28 DACs per chip, the ``MQ1A`` extension with the counter depth; 54 fields in
a 384-byte single-chip header, 138 in a 768-byte quad header). RosettaSciIO user guide,
"Quantum Detector" (https://hyperspy.org/rosettasciio/user_guide/supported_formats/
quantumdetector.html): ``.hdr`` companion, navigation shape from the line trigger;
processed 1- and 6-bit data are stored as ``U08``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptyscope.data.dataset import Dataset4D
from ptyscope.io.atomic import atomic_path

from ._common import (
    build_calibration,
    check_frame_count,
    check_whole_frames,
    file_size,
    parse_scan_shape,
    reject_unknown_options,
)

__all__ = [
    "MibHeader",
    "parse_hdr_file",
    "parse_mib_header",
    "read_mib",
    "write_mib",
]

#: Stored dtype of the processed ('U') pixel types: unsigned big-endian integers.
PIXEL_DTYPES: dict[str, np.dtype[Any]] = {
    "U08": np.dtype("u1"),
    "U16": np.dtype(">u2"),
    "U32": np.dtype(">u4"),
    "U64": np.dtype(">u8"),
}
#: Pixel type in which the Merlin software saves each counter depth [bits].
PIXEL_TYPE_FOR_DEPTH: dict[int, str] = {1: "U08", 6: "U08", 12: "U16", 24: "U32"}
#: Pixel types of the format that ptyscope refuses (packing not verified).
_UNSUPPORTED_TYPES = ("U01", "R64")
_MAGIC = b"MQ1,"
_DAC_FIELDS = 28  # per chip: DAC format + 27 values


@dataclass(frozen=True)
class MibHeader:
    """One parsed Merlin frame header (module docstring for the fields).

    Attributes
    ----------
    sequence_number:
        Frame number in the acquisition (from 1).
    header_bytes:
        Size of the header = offset of the pixel data in the frame [bytes].
    num_chips:
        Number of Medipix3 chips.
    width_px, height_px:
        Columns and rows of the stored frame.
    pixel_type:
        ``"U08"``, ``"U16"``, ``"U32"``, ``"U64"``, ``"U01"`` or ``"R64"``.
    sensor_layout:
        E.g. ``"1x1"``, ``"2x2"``, ``"Nx1"`` (spaces stripped).
    chip_select, timestamp:
        As stored, or ``None`` when the header ends early.
    shutter_time_s:
        Exposure [s], or ``None``.
    counter, colour_mode, gain_mode:
        As stored, or ``None``.
    thresholds_kev:
        The threshold energies [keV] (empty when absent).
    extended_timestamp:
        Time stamp of the ``MQ1A`` extension, or ``None``.
    shutter_time_ns:
        Exposure [ns] from the extension, or ``None``.
    counter_depth_bits:
        Counter depth (1, 6, 12 or 24) from the extension, or ``None``.
    """

    sequence_number: int
    header_bytes: int
    num_chips: int
    width_px: int
    height_px: int
    pixel_type: str
    sensor_layout: str = ""
    chip_select: str | None = None
    timestamp: str | None = None
    shutter_time_s: float | None = None
    counter: int | None = None
    colour_mode: int | None = None
    gain_mode: int | None = None
    thresholds_kev: tuple[float, ...] = ()
    extended_timestamp: str | None = None
    shutter_time_ns: int | None = None
    counter_depth_bits: int | None = None

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(rows, columns) of the stored frame."""
        return self.height_px, self.width_px

    def pixel_dtype(self, path: str | os.PathLike[str] = "<header>") -> np.dtype[Any]:
        """Stored dtype of the pixels.

        Raises
        ------
        NotImplementedError
            For the raw ``R64`` format and for ``U01`` (layouts not verified).
        """
        if self.pixel_type in PIXEL_DTYPES:
            return PIXEL_DTYPES[self.pixel_type]
        depth = f"counter depth {self.counter_depth_bits} bits, " if self.counter_depth_bits else ""
        raise NotImplementedError(
            f"{os.fspath(path)!r}: MIB pixel type {self.pixel_type!r} ({depth}"
            f"{self.num_chips} chip(s)) is not supported: its packing is not documented in a "
            "source ptyscope could verify. Save the data in a processed 'U' format "
            "(U08/U16/U32) from the Merlin software, or convert it with LiberTEM or "
            "RosettaSciIO first"
        )

    @property
    def frame_bytes(self) -> int:
        """Size of one frame: header plus pixel data [bytes] (processed formats)."""
        return self.header_bytes + self.width_px * self.height_px * self.pixel_dtype().itemsize


def _bad_header(path: str | os.PathLike[str], message: str) -> ValueError:
    return ValueError(f"{os.fspath(path)!r} has a malformed Merlin MIB frame header: {message}")


def _int_field(path: str | os.PathLike[str], fields: list[str], index: int, name: str) -> int:
    try:
        text = fields[index]
    except IndexError:
        raise _bad_header(
            path, f"it has {len(fields)} fields; field {index + 1} ({name}) is missing"
        ) from None
    try:
        value = int(text)
    except ValueError:
        raise _bad_header(
            path, f"field {index + 1} ({name}) must be an integer, got {text!r}"
        ) from None
    if value < 0:
        raise _bad_header(path, f"field {index + 1} ({name}) must be >= 0, got {value}")
    return value


def _maybe(fields: list[str], index: int, kind: type[Any]) -> Any:
    try:
        return kind(fields[index])
    except (IndexError, ValueError):
        return None


def parse_mib_header(raw: bytes, path: str | os.PathLike[str] = "<header>") -> MibHeader:
    """Parse one Merlin frame header.

    Parameters
    ----------
    raw:
        The header bytes (at least up to the pixel-type field; NUL padding allowed).
    path:
        The file, named in error messages.

    Returns
    -------
    MibHeader

    Raises
    ------
    ValueError
        If the header does not start with ``MQ1,``, is not ASCII, or a required field
        (1-7) is missing or malformed; the message names the field and the value.

    Examples
    --------
    >>> h = parse_mib_header(b"MQ1,000001,00384,01,00256,00128,U16,   1x1,01,x,0.001")
    >>> h.frame_shape, h.pixel_type, h.frame_bytes
    ((128, 256), 'U16', 65920)
    """
    if not raw.startswith(_MAGIC):
        raise _bad_header(path, f"it starts with {raw[:16]!r}, expected b'MQ1,'")
    try:
        text = raw.split(b"\x00", 1)[0].decode("ascii")
    except UnicodeDecodeError as error:
        raise _bad_header(path, f"it is not ASCII text ({error})") from None
    fields = [item.strip() for item in text.split(",")]
    while fields and fields[-1] == "":
        fields.pop()
    header_bytes = _int_field(path, fields, 2, "header size [bytes]")
    num_chips = _int_field(path, fields, 3, "number of chips")
    width = _int_field(path, fields, 4, "pixel columns")
    height = _int_field(path, fields, 5, "pixel rows")
    if header_bytes < len(_MAGIC) or width == 0 or height == 0:
        raise _bad_header(
            path,
            f"header size {header_bytes} bytes and frame {height} rows x {width} columns must "
            "be positive",
        )
    if len(fields) < 7 or fields[6] not in (*PIXEL_DTYPES, *_UNSUPPORTED_TYPES):
        found = fields[6] if len(fields) > 6 else None
        raise _bad_header(
            path,
            "field 7 (pixel type) must be like 'U08', 'U16', 'U32', 'U64', 'U01' or 'R64', "
            f"got {found!r}",
        )
    thresholds = tuple(
        v for v in (_maybe(fields, i, float) for i in range(14, 22)) if v is not None
    )
    extension: dict[str, Any] = {}
    if "MQ1A" in fields:
        at = fields.index("MQ1A")
        extension["extended_timestamp"] = _maybe(fields, at + 1, str)
        ns = fields[at + 2] if len(fields) > at + 2 else ""
        extension["shutter_time_ns"] = _maybe([ns.removesuffix("ns")], 0, int)
        extension["counter_depth_bits"] = _maybe(fields, at + 3, int)
    header = MibHeader(
        sequence_number=_int_field(path, fields, 1, "sequence number"),
        header_bytes=header_bytes,
        num_chips=num_chips,
        width_px=width,
        height_px=height,
        pixel_type=fields[6],
        sensor_layout=_maybe(fields, 7, str) or "",
        chip_select=_maybe(fields, 8, str),
        timestamp=_maybe(fields, 9, str),
        shutter_time_s=_maybe(fields, 10, float),
        counter=_maybe(fields, 11, int),
        colour_mode=_maybe(fields, 12, int),
        gain_mode=_maybe(fields, 13, int),
        thresholds_kev=thresholds,
        **extension,
    )
    depth = header.counter_depth_bits
    if depth is not None and header.pixel_type in PIXEL_DTYPES:
        bits = 8 * PIXEL_DTYPES[header.pixel_type].itemsize
        if not 1 <= depth <= bits:
            raise _bad_header(
                path,
                f"counter depth {depth} bits does not fit pixel type {header.pixel_type} "
                f"({bits} bits)",
            )
    return header


def _read_header_at(path: Path, offset: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        start = handle.read(64)
        if not start.startswith(_MAGIC):
            return start
        parts = start.split(b",")
        try:
            size = int(parts[2])
        except (IndexError, ValueError):
            return start
        handle.seek(offset)
        return handle.read(min(max(size, 64), 2**20))  # a corrupt size field reads <= 1 MiB


def parse_hdr_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Key-value pairs of a Merlin ``.hdr`` acquisition header (``Key:<TAB>Value`` lines)."""
    result: dict[str, str] = {}
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        if line.startswith("HDR") or line.startswith("End") or "\t" not in line:
            continue
        key, value = line.split("\t", 1)
        result[key.strip().rstrip(":").strip()] = value.strip()
    return result


def _scan_shape_from_hdr(hdr: dict[str, str]) -> tuple[int, int] | None:
    """The scan (scan_y, scan_x) an ``.hdr`` records, or ``None`` (values must be >= 1)."""
    try:
        if "ScanX" in hdr and "ScanY" in hdr:
            scan = int(hdr["ScanY"]), int(hdr["ScanX"])
            return scan if min(scan) >= 1 else None
        frames = int(hdr["Frames in Acquisition (Number)"])
        per_trigger = int(hdr["Frames per Trigger (Number)"])
    except (KeyError, ValueError):
        return None
    if 1 < per_trigger < frames and frames % per_trigger == 0:
        return frames // per_trigger, per_trigger
    return None


def read_mib(
    path: str | os.PathLike[str],
    *,
    scan_shape: Any = None,
    hdr_path: str | os.PathLike[str] | None = None,
    **calibration: Any,
) -> Dataset4D:
    """Read a Merlin ``.mib`` file lazily (memory-mapped, processed 'U' formats).

    Parameters
    ----------
    path:
        The ``.mib`` file (one file holding all frames of the scan).
    scan_shape:
        (scan_y, scan_x). Default: from the ``.hdr`` file (``hdr_path``, else beside the
        ``.mib`` with the same stem) when it was acquired with a line trigger.
    hdr_path:
        The ``.hdr`` acquisition header, when not beside the ``.mib`` file.
    **calibration:
        Calibration options (:mod:`ptyscope.data.formats._common`); MIB files record none.

    Returns
    -------
    Dataset4D
        ``data`` is a read-only ``numpy.memmap`` (scan_y, scan_x, rows, cols) of the stored
        big-endian unsigned dtype.

    Raises
    ------
    ValueError
        Malformed header, truncated file, frames of differing layout, or a frame count that
        does not match the scan shape (messages name the file and the expectation).
    NotImplementedError
        For raw (``R64``) and ``U01`` files.
    """
    reject_unknown_options("mib", calibration, ["scan_shape", "hdr_path"])
    path = Path(path)
    size = file_size(path)
    if size == 0:
        raise ValueError(f"{os.fspath(path)!r} is empty (expected Merlin MIB frames)")
    first = parse_mib_header(_read_header_at(path, 0), path)
    dtype = first.pixel_dtype(path)
    layout = (
        f"{first.header_bytes}-byte header + {first.height_px} x {first.width_px} "
        f"{first.pixel_type}"
    )
    n_frames = check_whole_frames(path, size, first.frame_bytes, layout)
    last = parse_mib_header(_read_header_at(path, (n_frames - 1) * first.frame_bytes), path)
    if (last.header_bytes, last.frame_shape, last.pixel_type) != (
        first.header_bytes,
        first.frame_shape,
        first.pixel_type,
    ):
        raise ValueError(
            f"{os.fspath(path)!r}: the last frame ({last.header_bytes}-byte header, "
            f"{last.height_px} x {last.width_px} {last.pixel_type}) differs from the first "
            f"({layout}); ptyscope reads files whose frames share one layout"
        )

    source = "scan_shape"
    if scan_shape is not None:
        scan = parse_scan_shape(scan_shape)
    else:
        hdr = Path(hdr_path) if hdr_path is not None else path.with_suffix(".hdr")
        from_hdr = _scan_shape_from_hdr(parse_hdr_file(hdr)) if hdr.is_file() else None
        if from_hdr is None:
            raise ValueError(
                f"{os.fspath(path)!r} holds {n_frames} frames of {first.height_px} x "
                f"{first.width_px}; MIB files do not record the scan shape and no .hdr file "
                "with a line-trigger scan was found: pass scan_shape=(scan_y, scan_x)"
            )
        scan, source = from_hdr, f"the scan in {os.fspath(hdr)!r}"
    check_frame_count(path, n_frames, first.frame_shape, scan, source)

    frame_dtype = np.dtype(
        [("header", f"S{first.header_bytes}"), ("data", dtype, first.frame_shape)]
    )
    frames = np.memmap(path, dtype=frame_dtype, mode="r", shape=(n_frames,))
    data = frames.reshape(scan)["data"]
    metadata: dict[str, str | float | int] = {
        "source_file": str(path),
        "source_format": "mib",
        "mib_pixel_type": first.pixel_type,
        "mib_num_chips": first.num_chips,
        "mib_sensor_layout": first.sensor_layout,
    }
    optional = {
        "mib_counter_depth_bits": first.counter_depth_bits,
        "mib_shutter_time_s": first.shutter_time_s,
        "mib_timestamp": first.timestamp,
    }
    metadata.update({key: value for key, value in optional.items() if value is not None})
    return Dataset4D(data, build_calibration(path, calibration), metadata=metadata)


def _header_text(
    sequence: int, rows: int, cols: int, depth: int, exposure_s: float, stamp: datetime.datetime
) -> bytes:
    quad = rows > 256 or cols > 256
    chips, size, layout = (4, 768, "2x2") if quad else (1, 384, "1x1")
    pixel_type = PIXEL_TYPE_FOR_DEPTH[depth]
    dacs = ["3RX", *["0"] * (_DAC_FIELDS - 1)] * chips
    fields = [
        "MQ1",
        f"{sequence:06d}",
        f"{size:05d}",
        f"{chips:02d}",
        f"{cols:05d}",
        f"{rows:05d}",
        pixel_type,
        f"{layout:>6}",
        "01" if chips == 1 else "0F",
        stamp.strftime("%Y-%m-%d %H:%M:%S.%f"),
        f"{exposure_s:.6f}",
        "0",
        "0",
        "0",
        *["0.0"] * 8,
        *dacs,
        "MQ1A",
        stamp.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z",
        f"{round(exposure_s * 1e9)}ns",
        str(depth),
    ]
    text = (",".join(fields) + ",").encode("ascii")
    if len(text) > size:  # pragma: no cover - fixed-width fields keep it far below
        raise ValueError(f"MIB header of {len(text)} bytes exceeds its size {size}")
    return text.ljust(size, b"\x00")


def write_mib(
    path: str | os.PathLike[str],
    frames: Any,
    counter_depth: int,
    *,
    exposure_s: float = 1e-3,
) -> None:
    """Write frames as a Merlin ``.mib`` file in the processed ('U') format.

    Frames of up to 256 x 256 pixels get a single-chip (384-byte) header, larger ones a
    quad (768-byte) header. Headers carry every field of the module docstring, including
    the ``MQ1A`` extension with the counter depth.

    Parameters
    ----------
    path:
        Target file; written atomically.
    frames:
        Integer array-like (frames, rows, cols) or (scan_y, scan_x, rows, cols), in scan
        order; values in [0, 2**counter_depth).
    counter_depth:
        1, 6, 12 or 24 [bits]; stored as U08, U08, U16 and U32 (big-endian).
    exposure_s:
        Shutter time written to the headers [s].

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "scan.mib"
    >>> write_mib(out, np.zeros((4, 16, 16), dtype=np.uint16), counter_depth=12)
    >>> out.stat().st_size == 4 * (384 + 16 * 16 * 2)
    True
    """
    if counter_depth not in PIXEL_TYPE_FOR_DEPTH:
        raise ValueError(
            f"counter_depth must be one of {sorted(PIXEL_TYPE_FOR_DEPTH)} bits, got "
            f"{counter_depth!r}"
        )
    shape = tuple(int(n) for n in frames.shape)
    if len(shape) not in (3, 4):
        raise ValueError(
            f"frames must have shape (frames, rows, cols) or (scan_y, scan_x, rows, cols), got "
            f"{shape}"
        )
    if np.dtype(frames.dtype).kind not in "ui":
        raise ValueError(
            f"frames must hold integer counts, got dtype {np.dtype(frames.dtype)} (round and "
            "cast them first)"
        )
    rows, cols = shape[-2:]
    stack = frames if len(shape) == 3 else _FlatFrames(frames)
    dtype = PIXEL_DTYPES[PIXEL_TYPE_FOR_DEPTH[counter_depth]]
    limit = 2**counter_depth - 1
    stamp = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        for index in range(int(np.prod(shape[:-2]))):
            frame = np.asarray(stack[index])
            if frame.size and (frame.min() < 0 or frame.max() > limit):
                raise ValueError(
                    f"frame {index} has counts in [{frame.min()}, {frame.max()}]; a counter "
                    f"depth of {counter_depth} bits holds [0, {limit}]"
                )
            handle.write(_header_text(index + 1, rows, cols, counter_depth, exposure_s, stamp))
            handle.write(frame.astype(dtype).tobytes())


class _FlatFrames:
    """Index a (scan_y, scan_x, rows, cols) array-like by flat frame number."""

    def __init__(self, data: Any) -> None:
        self._data = data
        self._scan_x = int(data.shape[1])

    def __getitem__(self, index: int) -> Any:
        return self._data[index // self._scan_x, index % self._scan_x]
