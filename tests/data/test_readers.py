"""Detector-format readers: registry, round trips, hand-built layouts, laziness, clear errors."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import ptyscope.data.readers as readers
from ptyscope.data.dataset import Calibration, Dataset4D
from ptyscope.data.formats.empad import parse_empad_xml, write_empad_raw
from ptyscope.data.formats.merlin import parse_mib_header, write_mib
from ptyscope.data.formats.rosetta import calibration_from_axes
from ptyscope.data.readers import known_formats, read_4dstem, register_reader
from ptyscope.io.datafile import write_dataset, write_tilt_series
from ptyscope.physics.constants import wavelength_ang

CAL: dict[str, Any] = {
    "energy_ev": 300e3,
    "scan_step_ang": (0.4, 0.5),
    "detector_pixel_inv_ang": (0.05, 0.04),
}


def _counts(shape: tuple[int, ...], high: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, size=shape, dtype=np.int64)


# ---------------------------------------------------------------------------- registry
def test_unknown_extension_and_format_list_the_known_formats(tmp_path: Path) -> None:
    odd = tmp_path / "scan.xyz"
    odd.write_bytes(b"?")
    with pytest.raises(ValueError, match=r"extension '\.xyz'; known formats: npy \(\.npy\).*mib"):
        read_4dstem(odd, **CAL)
    with pytest.raises(ValueError, match=r"format must be one of: npy.*empad.*; got 'tiff'"):
        read_4dstem(odd, format="tiff", **CAL)
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        read_4dstem(tmp_path / "missing.npy", **CAL)


def test_register_reader_by_extension_and_reader_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "_READERS", dict(readers._READERS))
    calls: list[Path] = []

    def read_custom(path: Path, **options: Any) -> Dataset4D:
        calls.append(Path(path))
        return Dataset4D(np.zeros((1, 1, 2, 2)), Calibration(**options))

    register_reader("custom", ["CUS", ".cus2"], read_custom)
    assert known_formats()["custom"] == (".cus", ".cus2")
    path = tmp_path / "a.CUS"
    path.write_bytes(b"")
    assert read_4dstem(path, **CAL).shape == (1, 1, 2, 2)
    assert read_4dstem(path, format=read_custom, **CAL).shape == (1, 1, 2, 2)
    assert calls == [path, path]
    with pytest.raises(ValueError, match=r"extension\(s\) \['\.npy'\] belong to the 'npy'"):
        register_reader("other", [".npy"], read_custom)
    with pytest.raises(ValueError, match="'custom' is registered already"):
        register_reader("custom", [".cus3"], read_custom)
    register_reader("other", [".npy"], read_custom, replace=True)
    assert ".npy" not in known_formats()["npy"]


# ------------------------------------------------------------------------- calibration
def test_missing_calibration_names_the_options(tmp_path: Path) -> None:
    path = tmp_path / "d.npy"
    np.save(path, np.zeros((2, 2, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"d\.npy' does not record the calibration energy_ev"):
        read_4dstem(path, scan_step_ang=0.4, detector_pixel_inv_ang=0.05)
    with pytest.raises(ValueError, match=r"detector_pixel_inv_ang=.* or detector_pixel_mrad="):
        read_4dstem(path, energy_ev=300e3, scan_step_ang=0.4)
    with pytest.raises(ValueError, match="not both"):
        read_4dstem(path, **CAL, detector_pixel_mrad=1.0)
    with pytest.raises(ValueError, match="scan_step_ang must be > 0"):
        read_4dstem(path, **{**CAL, "scan_step_ang": -0.4})
    with pytest.raises(TypeError, match=r"unknown option.*dataset_pth.*scan_shape"):
        read_4dstem(path, dataset_pth="/x", **CAL)


def test_detector_pixel_in_mrad_converts_with_the_wavelength(tmp_path: Path) -> None:
    path = tmp_path / "d.npy"
    np.save(path, np.zeros((2, 2, 4, 4), dtype=np.float32))
    ds = read_4dstem(
        path,
        energy_ev=300e3,
        scan_step_ang=0.4,
        detector_pixel_mrad=(1.0, 2.0),
        semiangle_mrad=21.4,
        scan_rotation_deg=12.0,
    )
    lam = wavelength_ang(300e3)  # 0.019687 Å
    assert ds.calibration.detector_pixel_inv_ang == pytest.approx((1e-3 / lam, 2e-3 / lam))
    assert ds.calibration.detector_pixel_mrad == pytest.approx((1.0, 2.0))
    assert ds.calibration.semiangle_mrad == 21.4
    assert ds.calibration.scan_rotation_deg == 12.0


def test_a_transposed_scan_is_set_from_the_reconstruction_config(tmp_path: Path) -> None:
    from ptyscope.config import DataConfig

    path = tmp_path / "d.npy"
    np.save(path, np.zeros((2, 3, 4, 4), dtype=np.float32))
    options = {"energy_ev": 300e3, "scan_step_ang": (0.4, 0.5), "detector_pixel_mrad": (1.0, 1.0)}
    plain = read_4dstem(path, **DataConfig(path=path, **options).reader_options())
    mirrored = DataConfig(path=path, scan_transpose=True, **options)
    flipped = read_4dstem(path, **mirrored.reader_options())
    assert not plain.calibration.scan_transpose and flipped.calibration.scan_transpose
    # Scan index (i, j) moves by (i·0.4, j·0.5) Å along (y, x), transposed by (j·0.5, i·0.4).
    assert plain.positions_ang()[1, 2] == pytest.approx((0.4, 1.0))
    assert flipped.positions_ang()[1, 2] == pytest.approx((1.0, 0.4))


# ----------------------------------------------------------------------------- NumPy
def test_npy_round_trip_is_lazy_and_exact(tmp_path: Path) -> None:
    data = _counts((3, 4, 6, 5), 1000).astype(np.uint16)
    path = tmp_path / "scan.npy"
    np.save(path, data)
    ds = read_4dstem(path, **CAL, semiangle_mrad=20.0)
    assert isinstance(ds.data, np.memmap) and ds.is_lazy
    assert ds.data.dtype == np.uint16
    np.testing.assert_array_equal(ds.data, data)
    assert ds.calibration == Calibration(**CAL, semiangle_mrad=20.0)
    assert ds.metadata["source_format"] == "npy"

    stack = tmp_path / "frames.npy"
    np.save(stack, data.reshape(12, 6, 5))
    ds3 = read_4dstem(stack, scan_shape=(3, 4), **CAL)
    assert isinstance(ds3.data, np.memmap)
    np.testing.assert_array_equal(ds3.data, data)


def test_npy_shape_dtype_and_frame_count_errors(tmp_path: Path) -> None:
    stack = tmp_path / "frames.npy"
    np.save(stack, np.zeros((10, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"frames\.npy' holds 10 frames of 4 x 4; scan_shape"):
        read_4dstem(stack, scan_shape=(3, 4), **CAL)
    with pytest.raises(ValueError, match=r"stack of 10 frames of 4 x 4; pass scan_shape"):
        read_4dstem(stack, **CAL)
    with pytest.raises(ValueError, match=r"scan_shape must be two integers.*got \(3, 0\)"):
        read_4dstem(stack, scan_shape=(3, 0), **CAL)
    cplx = tmp_path / "complex.npy"
    np.save(cplx, np.zeros((2, 2, 4, 4), dtype=np.complex64))
    with pytest.raises(ValueError, match=r"complex\.npy' has dtype complex64; .* must be real"):
        read_4dstem(cplx, **CAL)
    flat = tmp_path / "image.npy"
    np.save(flat, np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"image\.npy' has shape \(4, 4\); expected 4D"):
        read_4dstem(flat, **CAL)
    four = tmp_path / "four.npy"
    np.save(four, np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"scan shape \(2, 3\).*scan_shape \(3, 2\)"):
        read_4dstem(four, scan_shape=(3, 2), **CAL)


def test_npz_picks_the_only_array_or_data_or_key(tmp_path: Path) -> None:
    data = _counts((2, 3, 4, 4), 50).astype(np.int32)
    single = tmp_path / "single.npz"
    np.savez(single, patterns=data)
    np.testing.assert_array_equal(read_4dstem(single, **CAL).data, data)
    several = tmp_path / "several.npz"
    np.savez(several, data=data, probe=np.ones((4, 4)))
    np.testing.assert_array_equal(read_4dstem(several, **CAL).data, data)
    stack = tmp_path / "stack.npz"
    np.savez_compressed(stack, frames=data.reshape(6, 4, 4), dark=np.ones((4, 4)))
    with pytest.raises(ValueError, match=r"holds 2 arrays \['frames', 'dark'\].*key="):
        read_4dstem(stack, **CAL)
    ds = read_4dstem(stack, key="frames", scan_shape=(2, 3), **CAL)
    np.testing.assert_array_equal(ds.data, data)
    assert ds.metadata["source_key"] == "frames"
    with pytest.raises(ValueError, match=r"key 'nope' is not in .*\['frames', 'dark'\]"):
        read_4dstem(stack, key="nope", **CAL)


# ------------------------------------------------------------------------------ HDF5
def test_ptyscope_hdf5_round_trip_is_lazy_and_keeps_calibration(tmp_path: Path) -> None:
    data = _counts((3, 4, 6, 5), 2**16).astype(np.uint16)
    cal = Calibration(**CAL, scan_rotation_deg=10.0, semiangle_mrad=21.4, defocus_ang=50.0)
    path = tmp_path / "sim.h5"
    write_dataset(path, Dataset4D(data, cal, metadata={"instrument": "sim"}))
    ds = read_4dstem(path)
    assert isinstance(ds.data, h5py.Dataset) and ds.is_lazy
    np.testing.assert_array_equal(ds.data[()], data)
    assert ds.data.dtype == np.uint16
    assert ds.calibration == cal
    assert ds.metadata["instrument"] == "sim"
    assert ds.metadata["source_format"] == "ptyscope-data"
    # An option overrides what the file records; the rest is kept.
    override = read_4dstem(path, energy_ev=200e3)
    assert override.calibration.energy_ev == 200e3
    assert override.calibration.semiangle_mrad == 21.4

    series = tmp_path / "series.h5"
    write_tilt_series(series, [Dataset4D(data, cal)], np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"tilt series .*read_tilt_series"):
        read_4dstem(series)


def test_any_hdf5_by_dataset_path_or_unique_4d_dataset(tmp_path: Path) -> None:
    data = _counts((2, 3, 5, 4), 4000).astype(np.uint16)
    path = tmp_path / "py4dstem.emd"  # EMD 1.0 layout as written by py4DSTEM / emdfile
    with h5py.File(path, "w") as f:
        f.attrs["version_major"] = 1
        f.create_dataset("experiment/datacube/data", data=data)
        f.create_dataset("experiment/datacube/dim1", data=np.arange(2.0))
        f.create_dataset("experiment/virtual_image/data", data=np.ones((2, 3)))
    ds = read_4dstem(path, **CAL)
    assert isinstance(ds.data, h5py.Dataset) and ds.is_lazy
    np.testing.assert_array_equal(ds.data[()], data)
    assert ds.metadata["source_dataset"] == "/experiment/datacube/data"
    ds.data.file.close()  # the lazy dataset holds the file open (read-only) until closed

    with h5py.File(path, "a") as f:
        f.create_dataset("experiment/datacube2/data", data=np.zeros((1, 1, 2, 2), np.float32))
        f.create_dataset("experiment/stack", data=np.zeros((6, 5, 4)))
        f.create_dataset("experiment/phase", data=np.zeros((2, 2, 2, 2), np.complex64))
    with pytest.raises(ValueError, match=r"holds 3 4D datasets \(/experiment/datacube/data"):
        read_4dstem(path, **CAL)
    chosen = read_4dstem(path, dataset_path="experiment/datacube/data", **CAL)
    np.testing.assert_array_equal(chosen.data[()], data)
    with pytest.raises(ValueError, match=r"'experiment/stack' .* shape \(6, 5, 4\); expected"):
        read_4dstem(path, dataset_path="experiment/stack", **CAL)
    with pytest.raises(ValueError, match=r"'experiment/phase' .* dtype complex64"):
        read_4dstem(path, dataset_path="experiment/phase", **CAL)
    with pytest.raises(ValueError, match="'experiment' names a group"):
        read_4dstem(path, dataset_path="experiment", **CAL)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"broken\.h5' is not a readable HDF5 file"):
        read_4dstem(broken, **CAL)


def test_velox_emd_goes_to_rosettasciio_which_is_optional(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "velox.emd"
    with h5py.File(path, "w") as f:
        f.create_dataset("Version", data=[b'{"version": "0.2", "format": "Velox"}'])
        f.create_dataset("Data/Image/1/Data", data=np.zeros((4, 4, 6)))
    monkeypatch.setitem(sys.modules, "rsciio", None)  # as if RosettaSciIO were not installed
    with pytest.raises(ImportError, match=r"pip install 'ptyscope\[io\]'"):
        read_4dstem(path, **CAL)


# ----------------------------------------------------------------------------- EMPAD
def _empad_xml(
    path: Path, raw_name: str, acquire: tuple[int, int], search: tuple[int, int]
) -> None:
    blocks = "".join(
        f'<scan_parameters mode="{mode}"><scan_size>1.0</scan_size>'
        f"<scan_resolution_y>{ny}</scan_resolution_y>"
        f"<scan_resolution_x>{nx}</scan_resolution_x></scan_parameters>"
        for mode, (ny, nx) in (("search", search), ("acquire", acquire))
    )
    path.write_text(
        f'<root name="test"><raw_file filename="{raw_name}"/>{blocks}'
        "<iom_measurements><high_voltage>200000.0</high_voltage></iom_measurements></root>"
    )


def test_empad_raw_layout_130_by_128_float32_without_metadata_rows(tmp_path: Path) -> None:
    data = _counts((3, 5, 128, 128), 2**20).astype(np.float32) - 7.5
    # Hand-built file: each frame is 130 x 128 little-endian float32, the last 2 rows metadata.
    frames = np.full((3, 5, 130, 128), 99.0, dtype="<f4")
    frames[:, :, :128, :] = data
    raw = tmp_path / "scan_x5_y3.raw"
    raw.write_bytes(frames.tobytes())
    ds = read_4dstem(raw, **CAL)  # scan shape from the file name scan_x<nx>_y<ny>
    assert isinstance(ds.data, np.memmap) and ds.is_lazy
    assert ds.shape == (3, 5, 128, 128) and ds.data.dtype == np.float32
    np.testing.assert_array_equal(ds.data, data)  # byte-exact, metadata rows dropped

    written = tmp_path / "written.raw"
    write_empad_raw(written, data)
    frames[:, :, 128:, :] = 0.0
    assert written.read_bytes() == frames.tobytes()
    back = read_4dstem(written, scan_shape=(3, 5), **CAL)
    np.testing.assert_array_equal(back.data, data)


def test_empad_scan_shape_and_energy_from_the_xml(tmp_path: Path) -> None:
    data = _counts((2, 3, 128, 128), 100).astype(np.float32)
    raw = tmp_path / "scan_x3_y2.raw"
    write_empad_raw(raw, data)
    xml = tmp_path / "acquisition_0001.xml"
    _empad_xml(xml, raw.name, acquire=(2, 3), search=(64, 64))
    info = parse_empad_xml(xml)
    assert info.scan_shapes == {"search": (64, 64), "acquire": (2, 3)}
    assert info.raw_filename == raw.name and info.energy_ev == 200e3
    by_raw = read_4dstem(raw, scan_step_ang=0.4, detector_pixel_inv_ang=0.05)
    by_xml = read_4dstem(xml, scan_step_ang=0.4, detector_pixel_inv_ang=0.05)
    for ds in (by_raw, by_xml):
        np.testing.assert_array_equal(ds.data, data)
        assert ds.calibration.energy_ev == 200e3
        assert ds.metadata["source_xml"] == str(xml)
    # Data taken with the "search" settings: the block matching the file is used.
    _empad_xml(xml, raw.name, acquire=(64, 64), search=(2, 3))
    assert read_4dstem(xml, **CAL).scan_shape == (2, 3)
    _empad_xml(xml, raw.name, acquire=(64, 64), search=(32, 32))
    with pytest.raises(ValueError, match=r"holds 6 frames of 128 x 128, but its XML .*search"):
        read_4dstem(xml, **CAL)
    (tmp_path / "other.raw").write_bytes(b"")
    xml.write_text('<root><raw_file filename="other_missing.raw"/></root>')
    with pytest.raises(FileNotFoundError, match=r"other_missing\.raw"):
        read_4dstem(xml, **CAL)


def test_empad_truncated_file_and_wrong_frame_count(tmp_path: Path) -> None:
    raw = tmp_path / "scan.raw"
    write_empad_raw(raw, np.zeros((2, 2, 128, 128), dtype=np.float32))
    with pytest.raises(ValueError, match=r"scan\.raw' holds 4 frames of 128 x 128; scan_shape"):
        read_4dstem(raw, scan_shape=(3, 2), **CAL)
    with pytest.raises(ValueError, match=r"scan shape .* is unknown.*pass scan_shape"):
        read_4dstem(raw, **CAL)
    with open(raw, "r+b") as handle:
        handle.truncate(4 * 130 * 128 * 4 - 100)
    with pytest.raises(ValueError, match=r"truncated.*not a multiple of the frame size 66560"):
        read_4dstem(raw, scan_shape=(2, 2), **CAL)
    with pytest.raises(ValueError, match=r"shape \(scan_y, scan_x, 128, 128\)"):
        write_empad_raw(raw, np.zeros((2, 2, 64, 64)))


# ---------------------------------------------------------------------------- Merlin
@pytest.mark.parametrize(
    ("depth", "pixel_type", "dtype"),
    [(1, "U08", "u1"), (6, "U08", "u1"), (12, "U16", ">u2"), (24, "U32", ">u4")],
)
def test_mib_round_trip_at_each_counter_depth(
    tmp_path: Path, depth: int, pixel_type: str, dtype: str
) -> None:
    data = _counts((3, 4, 16, 24), 2**depth, seed=depth)
    data[0, 0, 0, 0] = 2**depth - 1  # the largest count survives
    path = tmp_path / f"scan_{depth}.mib"
    write_mib(path, data, counter_depth=depth, exposure_s=5e-4)
    header = parse_mib_header(path.read_bytes()[:384], path)
    assert (header.pixel_type, header.counter_depth_bits, header.header_bytes) == (
        pixel_type,
        depth,
        384,
    )
    assert header.frame_shape == (16, 24) and header.shutter_time_ns == 500_000
    ds = read_4dstem(path, scan_shape=(3, 4), **CAL)
    assert isinstance(ds.data, np.memmap) and ds.is_lazy
    assert ds.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(ds.data, data)
    assert ds.metadata["mib_counter_depth_bits"] == depth
    np.testing.assert_allclose(ds.mean_pattern(), data.mean(axis=(0, 1)))


def test_mib_hand_built_frames_and_quad_header(tmp_path: Path) -> None:
    # One frame as the Merlin software writes it: ASCII header padded to 384 bytes, then
    # rows x cols big-endian uint16. 3 rows x 2 columns: field 5 = columns, field 6 = rows.
    header = (
        b"MQ1,000001,00384,01,00002,00003,U16,   1x1,01,2020-05-18 16:51:49.971626,"
        b"0.001000,0,0,0,1.000000E+1,0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0,"
        b"0.000000E+0,0.000000E+0,0.000000E+0,3RX,175,511,511,511,511,511,511,511,125,"
        b"255,125,125,100,100,68,30,128,4,255,144,0,0,0,255,255,MQ1A,"
        b"2020-05-18T14:51:49.971626178Z,1000000ns,12,"
    ).ljust(384, b"\x00")
    pixels = np.array([[1, 2], [3, 4], [4095, 0]], dtype=">u2")
    path = tmp_path / "hand.mib"
    path.write_bytes((header + pixels.tobytes()) * 2)
    parsed = parse_mib_header(header, path)
    assert parsed.thresholds_kev[0] == 10.0 and parsed.counter_depth_bits == 12
    assert parsed.shutter_time_s == 1e-3 and parsed.shutter_time_ns == 1_000_000
    ds = read_4dstem(path, scan_shape=(1, 2), **CAL)
    np.testing.assert_array_equal(ds.data[0, 1], pixels)

    quad = tmp_path / "quad.mib"
    frames = _counts((2, 512, 512), 4096).astype(np.uint16)
    write_mib(quad, frames, counter_depth=12)
    head = parse_mib_header(quad.read_bytes()[:768], quad)
    assert (head.header_bytes, head.num_chips, head.sensor_layout) == (768, 4, "2x2")
    np.testing.assert_array_equal(read_4dstem(quad, scan_shape=(1, 2), **CAL).data[0], frames)


def test_mib_scan_shape_from_the_hdr_file(tmp_path: Path) -> None:
    data = _counts((2, 3, 8, 8), 64)
    path = tmp_path / "acq.mib"
    write_mib(path, data, counter_depth=6)
    with pytest.raises(ValueError, match=r"holds 6 frames of 8 x 8; MIB files do not record"):
        read_4dstem(path, **CAL)
    (tmp_path / "acq.hdr").write_text(
        "HDR,\t\nTime and Date Stamp (day, mnth, yr, hr, min, s):\t18/05/2020 16:51:48\n"
        "Frames in Acquisition (Number):\t6\nFrames per Trigger (Number):\t3\nEnd\t\n"
    )
    ds = read_4dstem(path, **CAL)
    assert ds.scan_shape == (2, 3)
    np.testing.assert_array_equal(ds.data, data)


def test_mib_corrupt_inputs_fail_clearly(tmp_path: Path) -> None:
    path = tmp_path / "scan.mib"
    write_mib(path, _counts((4, 8, 8), 4096), counter_depth=12)
    good = path.read_bytes()
    frame = 384 + 8 * 8 * 2
    with pytest.raises(ValueError, match=r"scan\.mib' holds 4 frames of 8 x 8; scan_shape"):
        read_4dstem(path, scan_shape=(2, 3), **CAL)
    path.write_bytes(good[:-10])
    with pytest.raises(ValueError, match=rf"truncated.*multiple of the frame size {frame}"):
        read_4dstem(path, scan_shape=(2, 2), **CAL)
    path.write_bytes(b"XQ1" + good[3:])
    with pytest.raises(ValueError, match=r"scan\.mib' has a malformed .* expected b'MQ1,'"):
        read_4dstem(path, scan_shape=(2, 2), **CAL)
    path.write_bytes(good.replace(b",00008,00008,U16,", b",00008,0000x,U16,", 1))
    with pytest.raises(ValueError, match=r"field 6 \(pixel rows\) must be an integer, got '0000x'"):
        read_4dstem(path, scan_shape=(2, 2), **CAL)
    path.write_bytes(good.replace(b",U16,", b",Q16,", 1))
    with pytest.raises(ValueError, match=r"field 7 \(pixel type\) must be like 'U08'.*'Q16'"):
        read_4dstem(path, scan_shape=(2, 2), **CAL)
    path.write_bytes(good.replace(b"ns,12,", b"ns,24,", 1))
    with pytest.raises(ValueError, match="counter depth 24 bits does not fit pixel type U16"):
        read_4dstem(path, scan_shape=(2, 2), **CAL)
    path.write_bytes(good[: 3 * frame] + b"junk" + good[3 * frame + 4 :])  # wrong frame stride
    with pytest.raises(ValueError, match=r"malformed .* it starts with b'junk"):
        read_4dstem(path, scan_shape=(2, 2), **CAL)
    path.write_bytes(good.replace(b",U16,", b",R64,", 1))
    with pytest.raises(NotImplementedError, match=r"pixel type 'R64' .* not supported"):
        read_4dstem(path, scan_shape=(2, 2), **CAL)
    with pytest.raises(
        ValueError, match=r"frame 0 has counts in \[64, 64\]; .* 6 bits holds \[0, 63\]"
    ):
        write_mib(path, np.full((1, 2, 2), 64), counter_depth=6)
    with pytest.raises(ValueError, match="counter_depth must be one of"):
        write_mib(path, np.zeros((1, 2, 2), dtype=int), counter_depth=8)


# ----------------------------------------------------------------------- RosettaSciIO
def _fake_rsciio(monkeypatch: pytest.MonkeyPatch, signal: dict[str, Any]) -> None:
    package = types.ModuleType("rsciio")
    plugin = types.ModuleType("rsciio.digitalmicrograph")

    def file_reader(filename: str, lazy: bool = False) -> list[dict[str, Any]]:
        assert lazy
        return [{"data": np.zeros((3, 3)), "axes": [], "metadata": {}}, signal]

    plugin.file_reader = file_reader  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rsciio", package)
    monkeypatch.setitem(sys.modules, "rsciio.digitalmicrograph", plugin)


def test_rosettasciio_signal_and_calibration_from_its_axes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _counts((2, 3, 4, 4), 10).astype(np.float32)
    axes: list[dict[str, Any]] = [
        {"index_in_array": 0, "size": 2, "scale": 0.04, "offset": 0, "units": "nm"},
        {"index_in_array": 1, "size": 3, "scale": 0.05, "offset": 0, "units": "nm"},
        {"index_in_array": 2, "size": 4, "scale": 0.5, "offset": 0, "units": "1/nm"},
        {"index_in_array": 3, "size": 4, "scale": 0.4, "offset": 0, "units": "1/nm"},
    ]
    metadata = {"Acquisition_instrument": {"TEM": {"beam_energy": 200.0, "convergence_angle": 25}}}
    _fake_rsciio(monkeypatch, {"data": data, "axes": axes, "metadata": metadata})
    path = tmp_path / "scan.dm4"
    path.write_bytes(b"")
    ds = read_4dstem(path)
    np.testing.assert_array_equal(ds.data, data)
    cal = ds.calibration
    assert cal.energy_ev == pytest.approx(200e3) and cal.semiangle_mrad == 25
    assert cal.scan_step_ang == pytest.approx((0.4, 0.5))
    assert cal.detector_pixel_inv_ang == pytest.approx((0.05, 0.04))
    assert read_4dstem(path, energy_ev=300e3).calibration.energy_ev == 300e3

    in_mrad = [{**a, "units": "mrad"} if a["index_in_array"] >= 2 else a for a in axes]
    found = calibration_from_axes(in_mrad, {})
    assert found == {"scan_step_ang": pytest.approx((0.4, 0.5)), "detector_pixel_mrad": (0.5, 0.4)}
    assert calibration_from_axes([{**a, "units": ""} for a in axes], {}) == {}


def test_rosettasciio_missing_is_a_clear_import_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rsciio", None)
    path = tmp_path / "scan.dm4"
    path.write_bytes(b"")
    with pytest.raises(ImportError, match=r"RosettaSciIO is needed to read \.dm4.*ptyscope\[io\]"):
        read_4dstem(path, **CAL)


# -------------------------------------------------------------------------- laziness
def test_opening_large_sparse_files_reads_nothing(tmp_path: Path) -> None:
    """A 272 MB EMPAD file and a 134 MB MIB file (sparse: no disk used) open instantly."""
    raw = tmp_path / "big.raw"
    with open(raw, "wb") as handle:
        handle.truncate(64 * 64 * 130 * 128 * 4)
    start = time.perf_counter()
    empad = read_4dstem(raw, scan_shape=(64, 64), **CAL)
    assert time.perf_counter() - start < 1.0
    assert isinstance(empad.data, np.memmap) and empad.nbytes == 64 * 64 * 128 * 128 * 4
    np.testing.assert_array_equal(empad.data[40, 17], np.zeros((128, 128), np.float32))

    mib = tmp_path / "big.mib"
    write_mib(mib, np.zeros((1, 256, 256), dtype=np.uint16), counter_depth=12)
    one = mib.read_bytes()
    frames = 32 * 32
    with open(mib, "r+b") as handle:
        handle.truncate(frames * len(one))
        handle.seek((frames - 1) * len(one))
        handle.write(one[:384])  # a valid header where the last frame starts
    start = time.perf_counter()
    merlin = read_4dstem(mib, scan_shape=(32, 32), **CAL)
    assert time.perf_counter() - start < 1.0
    assert isinstance(merlin.data, np.memmap) and merlin.shape == (32, 32, 256, 256)
    np.testing.assert_array_equal(merlin.data[31, 31], np.zeros((256, 256)))
