"""EMPAD (Electron Microscope Pixel Array Detector, Cornell / Thermo Fisher) raw files.

Layout (verified, see References): an acquisition is a ``.raw`` file and an ``.xml`` file.
The ``.raw`` file is a bare sequence of frames, no file header. Each frame is 130 rows ×
128 columns of little-endian float32 values: 128 × 128 detector pixels followed by two
rows (2 × 128 values) of per-frame metadata, which are not data. Frames follow the scan,
x (fast) within y (slow), so the file is a C-order (scan_y, scan_x, 130, 128) array.

The ``.xml`` file names the raw file (``<raw_file filename="scan_x256_y256.raw"/>``) and
holds the scan size as ``<scan_parameters mode="acquire">`` (and a second block with
``mode="search"``) with children ``<scan_resolution_x>`` and ``<scan_resolution_y>``; older
software wrote ``<pix_x>`` / ``<pix_y>`` under the root, and a series (no scan) has
``<type>series</type>``. Which of "acquire" and "search" applies is not recorded: some files
were taken with the "search" settings, so the block whose size matches the raw file is
used ("acquire" when both match). The software names the raw file ``scan_x<nx>_y<ny>.raw``,
which gives the scan size when no XML is found. The beam energy is read from
``<iom_measurements><high_voltage>`` [V]; the scan step and the detector calibration are
not reliably recorded (the field of view needs software-version-specific corrections), so
pass ``scan_step_ang`` and the detector pixel size as options.

The 4D data are a ``numpy.memmap`` of shape (scan_y, scan_x, 130, 128) sliced to
``[..., :128, :]``: a view, still a memmap, nothing read until used.

References
----------
RosettaSciIO user guide, "EMPAD format (XML & RAW)",
https://hyperspy.org/rosettasciio/user_guide/supported_formats/empad.html (two files, the
XML names the raw file). py4DSTEM issue #720, "EMPAD file import with non-square R
dimensions" (maintainer: EMPAD frames are 130 × 128, rows (scan_y, scan_x, 130, 128)).
RosettaSciIO pull requests #495 and #520 and issue #513 (EMPAD v1.2.2 XML: two
``scan_parameters`` blocks, "search" and "acquire"; raw file name ``scan_x<nx>_y<ny>.raw``;
output shape [scan_y, scan_x, height, width]). LiberTEM issue #1617 ("search" block
matching the raw file). M. W. Tate et al., "High dynamic range pixel array detector for
scanning transmission electron microscopy", Microsc. Microanal. 22, 237 (2016) (the
128 × 128 detector).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

import numpy as np

from ptyscope.data.dataset import Dataset4D
from ptyscope.io.atomic import atomic_path

from ._common import (
    DataFormatError,
    build_calibration,
    check_frame_count,
    check_whole_frames,
    file_size,
    finite_or_none,
    parse_scan_shape,
    reject_unknown_options,
)

__all__ = [
    "EMPAD_DETECTOR_SHAPE",
    "EMPAD_RAW_FRAME_SHAPE",
    "EmpadXml",
    "parse_empad_xml",
    "read_empad",
    "write_empad_raw",
]

#: Detector pixels of one frame (rows, columns).
EMPAD_DETECTOR_SHAPE = (128, 128)
#: Stored rows and columns of one frame: the detector plus two metadata rows.
EMPAD_RAW_FRAME_SHAPE = (130, 128)
_DTYPE = np.dtype("<f4")
_FRAME_BYTES = EMPAD_RAW_FRAME_SHAPE[0] * EMPAD_RAW_FRAME_SHAPE[1] * _DTYPE.itemsize
_LAYOUT = "130 x 128 little-endian float32: 128 x 128 pixels + 2 metadata rows"
_NAME_PATTERN = re.compile(r"scan_x(\d+)_y(\d+)", re.IGNORECASE)
#: Largest EMPAD XML file read [bytes] (real ones are a few kB).
_MAX_XML_BYTES = 2**20
#: Deepest element nesting accepted in an EMPAD XML file (real ones: 3 levels).
_MAX_XML_DEPTH = 32


@dataclass(frozen=True)
class EmpadXml:
    """What ptyscope uses from an EMPAD ``.xml`` file.

    Attributes
    ----------
    path:
        The XML file.
    raw_filename:
        The raw file it names (base name), or ``None``.
    scan_shapes:
        Candidate (scan_y, scan_x) by source: ``"acquire"``, ``"search"`` (the
        ``scan_parameters`` modes) or ``"pix"`` (older ``pix_x``/``pix_y``).
    is_series:
        The acquisition is a series of frames without a scan.
    energy_ev:
        Beam energy from ``iom_measurements/high_voltage`` [eV], if recorded.
    """

    path: Path
    raw_filename: str | None
    scan_shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    is_series: bool = False
    energy_ev: float | None = None


def _int_text(element: ET.Element | None) -> int | None:
    """A scan size >= 1 from an element's text, else ``None``."""
    if element is None or element.text is None:
        return None
    try:
        value = int(float(element.text.strip()))
    except (ValueError, OverflowError):  # not a number, or inf
        return None
    return value if value >= 1 else None


def _screen_xml(xml_path: Path, content: bytes) -> None:
    """Refuse document type declarations (entities) and deep nesting before building a tree.

    EMPAD XML files have neither; entity expansion ("billion laughs") and deep nesting are
    how a small file makes a parser allocate much more than its size.
    """

    def refuse(problem: str) -> DataFormatError:
        return DataFormatError(f"{os.fspath(xml_path)!r} is not an EMPAD XML file: {problem}")

    depth = 0

    def doctype(*_: Any) -> None:
        raise refuse("it declares a document type (DTD); EMPAD XML files have none")

    def start(*_: Any) -> None:
        nonlocal depth
        depth += 1
        if depth > _MAX_XML_DEPTH:
            raise refuse(f"its elements nest deeper than {_MAX_XML_DEPTH} levels")

    def end(*_: Any) -> None:
        nonlocal depth
        depth -= 1

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(content, True)
    except expat.ExpatError as error:
        raise refuse(f"it is not well-formed XML ({error})") from None


def parse_empad_xml(path: str | os.PathLike[str]) -> EmpadXml:
    """Parse the parts of an EMPAD ``.xml`` file that ptyscope uses (module docstring).

    The file is untrusted: files over 1 MiB, document type declarations (entities) and
    elements nested more than 32 deep are refused before the tree is built.

    Raises
    ------
    ValueError
        If the file is not well-formed XML, or is refused as above.
    """
    xml_path = Path(path)
    size = file_size(xml_path)
    if size > _MAX_XML_BYTES:
        raise DataFormatError(
            f"{os.fspath(xml_path)!r} is {size} bytes; EMPAD XML files are a few kB and "
            f"ptyscope reads up to {_MAX_XML_BYTES} bytes"
        )
    content = xml_path.read_bytes()
    _screen_xml(xml_path, content)
    try:
        root = ET.fromstring(content)
    except ET.ParseError as error:
        raise ValueError(
            f"{os.fspath(xml_path)!r} is not a readable EMPAD XML file: {error}"
        ) from None
    raw = root.find("raw_file")
    raw_name = os.path.basename((raw.get("filename") or "").strip()) if raw is not None else ""
    shapes: dict[str, tuple[int, int]] = {}
    for block in root.findall("scan_parameters"):
        nx = _int_text(block.find("scan_resolution_x"))
        ny = _int_text(block.find("scan_resolution_y"))
        if nx and ny:
            shapes.setdefault(block.get("mode", "acquire"), (ny, nx))
    pix_x, pix_y = _int_text(root.find("pix_x")), _int_text(root.find("pix_y"))
    if pix_x and pix_y:
        shapes["pix"] = (pix_y, pix_x)
    kind = root.find("type")
    is_series = kind is not None and (kind.text or "").strip() == "series"
    voltage = root.find("iom_measurements/high_voltage")
    energy = finite_or_none(voltage.text) if voltage is not None else None
    return EmpadXml(
        xml_path,
        raw_name or None,
        shapes,
        is_series,
        energy if energy and energy > 0 else None,
    )


def _find_xml(raw_path: Path) -> EmpadXml | None:
    """The XML describing ``raw_path``: same stem, else the one XML beside it naming it."""
    same = raw_path.with_suffix(".xml")
    if same.is_file():
        return parse_empad_xml(same)
    naming = []
    for candidate in sorted(raw_path.parent.glob("*.xml")):
        try:
            info = parse_empad_xml(candidate)
        except ValueError:
            continue
        if info.raw_filename == raw_path.name:
            naming.append(info)
    return naming[0] if len(naming) == 1 else None


def _scan_shape_from_xml(raw_path: Path, info: EmpadXml, n_frames: int) -> tuple[int, int]:
    if not info.scan_shapes:
        what = "a series without a scan" if info.is_series else "no scan size"
        raise ValueError(
            f"{os.fspath(info.path)!r} records {what}; pass scan_shape=(scan_y, scan_x) for "
            f"the {n_frames} frames of {os.fspath(raw_path)!r}"
        )
    matching = {k: s for k, s in info.scan_shapes.items() if s[0] * s[1] == n_frames}
    for mode in ("acquire", "pix", "search"):
        if mode in matching:
            return matching[mode]
    if matching:
        return next(iter(matching.values()))
    listed = ", ".join(f"{mode} {shape}" for mode, shape in info.scan_shapes.items())
    raise ValueError(
        f"{os.fspath(raw_path)!r} holds {n_frames} frames of 128 x 128, but its XML "
        f"{os.fspath(info.path)!r} gives the scan size(s) {listed}, none with {n_frames} "
        "points; pass scan_shape=(scan_y, scan_x)"
    )


def read_empad(
    path: str | os.PathLike[str],
    *,
    scan_shape: Any = None,
    xml_path: str | os.PathLike[str] | None = None,
    **calibration: Any,
) -> Dataset4D:
    """Read an EMPAD acquisition lazily (memory-mapped), without the metadata rows.

    Parameters
    ----------
    path:
        The ``.raw`` file, or the ``.xml`` file that names it.
    scan_shape:
        (scan_y, scan_x). Default: from the XML (``xml_path``, else the XML beside the raw
        file with the same stem or naming it), else from a ``scan_x<nx>_y<ny>`` raw name.
    xml_path:
        The XML file, when it is neither ``path`` nor found beside the raw file.
    **calibration:
        Calibration options (:mod:`ptyscope.data.formats._common`); ``energy_ev``
        defaults to the XML's high voltage.

    Returns
    -------
    Dataset4D
        ``data`` is a read-only float32 ``numpy.memmap`` view (scan_y, scan_x, 128, 128).
    """
    reject_unknown_options("empad", calibration, ["scan_shape", "xml_path"])
    given = Path(path)
    info: EmpadXml | None
    if given.suffix.lower() == ".xml":
        info = parse_empad_xml(given)
        if info.raw_filename is None:
            raise ValueError(f"{os.fspath(given)!r} names no raw file (<raw_file filename=...>)")
        raw_path = given.parent / info.raw_filename
        if info.raw_filename in (".", ".."):
            raise DataFormatError(
                f"{os.fspath(given)!r} names the raw file {info.raw_filename!r}, which is not "
                "a file name"
            )
        try:
            exists = raw_path.is_file()
        except OSError as error:  # e.g. a name too long for the file system
            raise DataFormatError(
                f"{os.fspath(given)!r} names the raw file {info.raw_filename[:100]!r}, which "
                f"cannot be opened: {error.strerror}"
            ) from None
        if not exists:
            raise FileNotFoundError(
                f"the raw file {os.fspath(raw_path)!r} named by {os.fspath(given)!r} does not "
                "exist (EMPAD XML files refer to their raw file by name)"
            )
    else:
        raw_path = given
        info = parse_empad_xml(xml_path) if xml_path is not None else _find_xml(raw_path)

    n_frames = check_whole_frames(raw_path, file_size(raw_path), _FRAME_BYTES, _LAYOUT)
    source = "scan_shape"
    if scan_shape is not None:
        scan = parse_scan_shape(scan_shape)
    elif info is not None:
        scan = _scan_shape_from_xml(raw_path, info, n_frames)
        source = f"the scan size in {os.fspath(info.path)!r}"
    elif match := _NAME_PATTERN.search(raw_path.stem):
        scan = (int(match.group(2)), int(match.group(1)))
        source = "the file name's scan size"
    else:
        raise ValueError(
            f"the scan shape of {os.fspath(raw_path)!r} ({n_frames} frames) is unknown: no "
            "EMPAD XML found beside it; pass scan_shape=(scan_y, scan_x) or xml_path"
        )
    check_frame_count(raw_path, n_frames, EMPAD_DETECTOR_SHAPE, scan, source)

    raw = np.memmap(raw_path, dtype=_DTYPE, mode="r", shape=(*scan, *EMPAD_RAW_FRAME_SHAPE))
    data = raw[..., : EMPAD_DETECTOR_SHAPE[0], :]
    found = {"energy_ev": info.energy_ev} if info is not None else {}
    cal = build_calibration(raw_path, calibration, found)
    metadata: dict[str, str | float | int] = {
        "source_file": str(raw_path),
        "source_format": "empad",
    }
    if info is not None:
        metadata["source_xml"] = str(info.path)
    return Dataset4D(data, cal, metadata=metadata)


def write_empad_raw(path: str | os.PathLike[str], data: Any) -> None:
    """Write 4D data as an EMPAD ``.raw`` file (float32, two zero metadata rows per frame).

    Parameters
    ----------
    path:
        Target file; written atomically, scan row by scan row.
    data:
        Array-like (scan_y, scan_x, 128, 128) of real numbers (converted to float32), e.g.
        a numpy array, a memmap or an ``h5py.Dataset``.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "scan_x3_y2.raw"
    >>> write_empad_raw(out, np.ones((2, 3, 128, 128)))
    >>> out.stat().st_size == 2 * 3 * 130 * 128 * 4
    True
    """
    shape = tuple(int(n) for n in data.shape)
    if np.dtype(data.dtype).kind not in "uif":
        raise ValueError(f"data must hold real numbers, got dtype {np.dtype(data.dtype)}")
    if len(shape) != 4 or shape[2:] != EMPAD_DETECTOR_SHAPE:
        raise ValueError(f"data must have shape (scan_y, scan_x, 128, 128) for EMPAD, got {shape}")
    row = np.zeros((shape[1], *EMPAD_RAW_FRAME_SHAPE), dtype=_DTYPE)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        for i in range(shape[0]):
            row[:, : EMPAD_DETECTOR_SHAPE[0], :] = np.asarray(data[i])
            handle.write(row.tobytes())
