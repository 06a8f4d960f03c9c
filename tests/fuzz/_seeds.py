"""Small valid files of every fuzzed format: the seeds the fuzzer and the property tests mutate.

Each seed is a case: a mapping from file name to file content. Single-file formats use one
file (``case.npy``, ``case.h5``, ...); EMPAD cases hold ``scan.raw`` and ``scan.xml`` (the
XML names the raw file), Merlin cases with an acquisition header hold ``scan.mib`` and
``scan.hdr``. Every seed is read without error by its target in
:mod:`tests.fuzz._contract` with the options given there (scan shape (2, 3) or from the
companion file, the calibration of ``CAL``).
"""

from __future__ import annotations

import functools
import io
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from ptyscope.data.dataset import Calibration, Dataset4D
from ptyscope.data.formats.empad import write_empad_raw
from ptyscope.data.formats.merlin import write_mib
from ptyscope.io.datafile import write_dataset, write_tilt_series

__all__ = ["Case", "seeds"]

#: File name -> content.
Case = dict[str, bytes]

_SCAN = (2, 3)


def _counts(shape: tuple[int, ...], high: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, size=shape, dtype=np.int64)


def _npy_bytes(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version, allow_pickle=False)
    return buffer.getvalue()


def _npy() -> list[Case]:
    data = _counts((*_SCAN, 4, 4), 1000).astype(np.uint16)
    return [
        {"case.npy": _npy_bytes(data)},
        {"case.npy": _npy_bytes(data.reshape(6, 4, 4).astype(np.float32))},
        {"case.npy": _npy_bytes(np.asfortranarray(data.astype(">f8")), version=(2, 0))},
        {"case.npy": _npy_bytes(data.astype(np.int8), version=(3, 0))},
    ]


def _npz() -> list[Case]:
    data = _counts((*_SCAN, 4, 4), 1000).astype(np.int32)
    stored, compressed = io.BytesIO(), io.BytesIO()
    np.savez(stored, data=data)
    np.savez_compressed(compressed, data=data.reshape(6, 4, 4), probe=np.ones((4, 4)))
    return [{"case.npz": stored.getvalue()}, {"case.npz": compressed.getvalue()}]


def _h5_bytes(write: Callable[[Path], None]) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "seed.h5"
        write(path)
        return path.read_bytes()


def _hdf5_generic(path: Path) -> None:
    with h5py.File(path, "w") as handle:
        handle.attrs["version_major"] = 1
        handle.create_dataset("experiment/datacube/data", data=_counts((*_SCAN, 4, 4), 4000))
        handle.create_dataset("experiment/datacube/dim1", data=np.arange(2.0))
        handle["experiment/datacube"].attrs["units"] = "counts"


def _hdf5_chunked(path: Path) -> None:
    with h5py.File(path, "w") as handle:
        handle.create_dataset(
            "data",
            data=_counts((*_SCAN, 4, 4), 60000).astype(np.uint16),
            chunks=(1, 3, 4, 4),
            compression="gzip",
        )


def _small_dataset() -> Dataset4D:
    calibration = Calibration(300e3, (0.4, 0.5), (0.05, 0.05), semiangle_mrad=20.0)
    data = _counts((*_SCAN, 4, 4), 100).astype(np.float32)
    return Dataset4D(data, calibration, metadata={"instrument": "sim", "frames": 6})


def _ptyscope_file(path: Path) -> None:
    truth = {"atoms": {"numbers": np.array([8, 22, 38])}, "thickness_ang": 7.8, "note": "x"}
    write_dataset(path, _small_dataset(), truth, config_text="[probe]\n")


def _ptyscope_positions(path: Path) -> None:
    dataset = _small_dataset()
    positions = np.zeros((*_SCAN, 2))
    write_dataset(path, Dataset4D(dataset.data, dataset.calibration, positions))


def _ptyscope_series(path: Path) -> None:
    write_tilt_series(path, [_small_dataset()], np.zeros((1, 3)), {"volume": np.ones((2, 2))})


def _velox(path: Path) -> None:
    with h5py.File(path, "w") as handle:
        handle.create_dataset("Version", data=[b'{"version": "0.2", "format": "Velox"}'])
        handle.create_dataset("Data/Image/1/Data", data=np.zeros((4, 4, 6)))


def _empad() -> list[Case]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scan.raw"
        write_empad_raw(path, _counts((1, 2, 128, 128), 100).astype(np.float32))
        content = path.read_bytes()
    xml = (
        b'<root name="seed"><raw_file filename="scan.raw"/>'
        b'<scan_parameters mode="search"><scan_resolution_y>64</scan_resolution_y>'
        b"<scan_resolution_x>64</scan_resolution_x></scan_parameters>"
        b'<scan_parameters mode="acquire"><scan_resolution_y>1</scan_resolution_y>'
        b"<scan_resolution_x>2</scan_resolution_x></scan_parameters>"
        b"<iom_measurements><high_voltage>200000.0</high_voltage></iom_measurements></root>"
    )
    old = (
        b'<root><raw_file filename="scan.raw"/><pix_x>2</pix_x><pix_y>1</pix_y>'
        b"<type>scan</type></root>"
    )
    return [{"scan.raw": content, "scan.xml": xml}, {"scan.raw": content, "scan.xml": old}]


def _mib_bytes(depth: int, shape: tuple[int, ...]) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "seed.mib"
        write_mib(path, _counts(shape, 2**depth, seed=depth), counter_depth=depth)
        return path.read_bytes()


def _mib() -> list[Case]:
    return [
        {"case.mib": _mib_bytes(12, (6, 8, 8))},
        {"case.mib": _mib_bytes(6, (*_SCAN, 4, 6))},
        {"case.mib": _mib_bytes(24, (6, 2, 2))},
        {"case.mib": _mib_bytes(12, (6, 1, 257))},  # quad (768-byte) headers
    ]


_HDR = (
    "HDR,\t\nTime and Date Stamp (day, mnth, yr, hr, min, s):\t18/05/2020 16:51:48\n"
    "Chip ID:\tW529_F5,-,-,-\nFrames in Acquisition (Number):\t6\n"
    "Frames per Trigger (Number):\t3\nEnd\t\n"
)


def _mib_hdr() -> list[Case]:
    scan_xy = _HDR.replace("Chip ID", "ScanX:\t3\nScanY:\t2\nChip ID")
    return [
        {"scan.mib": _mib_bytes(12, (6, 8, 8)), "scan.hdr": _HDR.encode()},
        {"scan.mib": _mib_bytes(6, (6, 3, 5)), "scan.hdr": scan_xy.encode()},
    ]


@functools.cache
def _all() -> dict[str, list[Case]]:
    npy, npz = _npy(), _npz()
    hdf5 = [{"case.h5": _h5_bytes(_hdf5_generic)}, {"case.h5": _h5_bytes(_hdf5_chunked)}]
    own = [
        {"case.h5": _h5_bytes(writer)}
        for writer in (_ptyscope_file, _ptyscope_positions, _ptyscope_series)
    ]
    emd = [{"case.emd": _h5_bytes(_velox)}, {"case.emd": hdf5[0]["case.h5"]}]
    empad = _empad()
    inspect = [*npy[:2], *npz, *hdf5[:1], own[0]]
    return {
        "npy": npy,
        "npz": npz,
        "hdf5": hdf5,
        "ptyscope-h5": own,
        "emd": emd,
        "empad-raw": empad,
        "empad-xml": empad,
        "mib": _mib(),
        "mib-hdr": _mib_hdr(),
        "inspect": inspect,
    }


def seeds(target: str) -> list[Case]:
    """The valid seed cases of a fuzz target (copies; a name of ``_contract.TARGETS``)."""
    return [dict(case) for case in _all()[target]]


def zip_members(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    """An ``.npz``-style zip archive of the given members (valid CRCs)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()
