"""Probes and objects read from files PtyRAD 1.0.0 and py4DSTEM 0.14.18 wrote themselves.

The fixtures come from tiny real reconstructions in those packages
(``tools/make_foreign_fixtures.py``); each ``<name>.json`` records what was set there and,
for py4DSTEM, samples of the package's own views of its arrays (``probe_centered``,
``object``) that the reader must reproduce.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from ptyscope.io.foreign import (
    FOREIGN_FORMATS,
    ForeignObject,
    ForeignProbe,
    detect_format,
    read_object,
    read_probe,
)

FIXTURES = Path(__file__).parent / "fixtures"
FILES = {
    "ptyrad_model": ("ptyrad_model.hdf5", "ptyrad"),
    "py4dstem_singleslice": ("py4dstem_singleslice.h5", "py4dstem"),
    "py4dstem_mixed_multislice": ("py4dstem_mixed_multislice.h5", "py4dstem"),
}


def _fixture(name: str) -> tuple[Path, dict[str, Any]]:
    path = FIXTURES / FILES[name][0]
    return path, json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(FILES))
def test_fixtures_are_small_and_recognised(name: str) -> None:
    path, meta = _fixture(name)
    assert path.stat().st_size < 200_000
    assert detect_format(path) == FILES[name][1]
    assert meta["package"] in ("ptyrad 1.0.0", "py4DSTEM 0.14.18")


@pytest.mark.parametrize("name", sorted(FILES))
def test_probe_shape_pixel_size_centre_and_power(name: str) -> None:
    path, meta = _fixture(name)
    probe = read_probe(path)
    assert isinstance(probe, ForeignProbe) and probe.source == FILES[name][1]
    n = meta["probe_window"]
    assert probe.probe.dtype == np.complex64
    assert probe.probe.shape == (meta["probe_modes"], *n)
    assert probe.pixel_size_ang == pytest.approx(tuple(meta["pixel_size_ang"]), rel=1e-6)
    assert probe.pixel_size_ang == pytest.approx((0.35, 0.35), rel=1e-6)  # as set
    assert float((np.abs(probe.probe) ** 2).sum()) == pytest.approx(1.0, rel=1e-5)
    # centred on (ny//2, nx//2) as ptyscope's probes are (py4DSTEM's is corner-centred)
    first = np.abs(probe.probe[0]) ** 2
    assert np.unravel_index(int(first.argmax()), first.shape) == (n[0] // 2, n[1] // 2)


def test_ptyrad_probe_keeps_the_mode_powers_set() -> None:
    path, meta = _fixture("ptyrad_model")
    powers = (np.abs(read_probe(path).probe) ** 2).sum(axis=(1, 2))
    assert powers == pytest.approx(meta["probe_mode_power"], abs=1e-5)


@pytest.mark.parametrize("name", ["py4dstem_singleslice", "py4dstem_mixed_multislice"])
def test_py4dstem_probe_equals_its_own_centred_probe(name: str) -> None:
    path, meta = _fixture(name)
    probe = read_probe(path).probe
    for (y, x), values in zip(meta["sample_pixels"], meta["probe_centered_samples"], strict=True):
        expected = np.array([complex(re, im) for re, im in values])
        assert probe[:, y, x] == pytest.approx(expected, abs=2e-6)


@pytest.mark.parametrize("name", sorted(FILES))
def test_object_shape_positions_and_thickness(name: str) -> None:
    path, meta = _fixture(name)
    obj = read_object(path)
    assert isinstance(obj, ForeignObject) and obj.object.dtype == np.complex64
    shape = tuple(meta["object_shape"])
    if name == "ptyrad_model":  # (omode, Nz, Ny, Nx)
        assert obj.object.shape == shape
        centres = meta["probe_centres_px"]
    else:  # (Px, Py) or (slices, Px, Py)
        assert obj.object.shape == (1, meta["slices"], *shape[-2:])
        centres = meta["positions_px"]
    assert obj.pixel_size_ang == pytest.approx((0.35, 0.35), rel=1e-6)
    assert obj.probe_centres_px is not None
    assert obj.probe_centres_px == pytest.approx(np.array(centres), abs=1e-5)
    expected_dz = meta["slice_thickness_ang"]
    if expected_dz is None:
        assert obj.slice_thickness_ang is None
    else:
        assert obj.slice_thickness_ang == pytest.approx(2.5, rel=1e-6)
    assert obj.state_weights.sum() == pytest.approx(1.0)


def test_ptyrad_object_holds_the_value_set() -> None:
    path, meta = _fixture("ptyrad_model")
    value = read_object(path).object[tuple(meta["mark_index"])]
    assert np.angle(value) == pytest.approx(meta["mark_phase_rad"], abs=1e-5)
    assert abs(value) == pytest.approx(meta["mark_amplitude"], abs=1e-5)


@pytest.mark.parametrize("name", ["py4dstem_singleslice", "py4dstem_mixed_multislice"])
def test_py4dstem_object_equals_its_own_object(name: str) -> None:
    path, meta = _fixture(name)
    obj = read_object(path).object[0]  # (slices, ny, nx)
    for (y, x), values in zip(meta["sample_pixels"], meta["object_samples"], strict=True):
        expected = np.array([complex(re, im) for re, im in values])
        assert obj[:, y, x] == pytest.approx(expected, abs=1e-6)


def test_ptyscope_result_reads_as_written(tmp_path: Path) -> None:
    from .test_export import write_tiny_result

    path = write_tiny_result(tmp_path / "run.h5", states=2, slices=2, modes=2)
    assert detect_format(path) == "ptyscope"
    probe, obj = read_probe(path), read_object(path)
    with h5py.File(path, "r") as handle:
        stored = handle["probe"][()]
        scale = np.sqrt((np.abs(stored.astype(np.complex128)) ** 2).sum())
        assert probe.probe == pytest.approx(stored / scale, abs=1e-6)
        assert np.array_equal(obj.object, handle["object"][()])
        origin = handle["object"].attrs["origin_ang"]
        pixel = handle["object"].attrs["pixel_size_ang"]
        centres = (handle["positions_ang"][()] - origin) / pixel
    assert obj.probe_centres_px == pytest.approx(centres)
    assert obj.state_weights.shape == (2,)


# -- errors ---------------------------------------------------------------------------------


def test_unrecognised_and_damaged_files_are_named(tmp_path: Path) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["data"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"other\.h5' is not a ptyscope, PtyRAD .* or py4DSTEM"):
        read_probe(other)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="is not a readable HDF5 file"):
        read_object(text)
    with pytest.raises(ValueError, match="result file not found"):
        read_probe(tmp_path / "missing.h5")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"\x80")
    with pytest.raises(ValueError, match=r"use PtyRAD's model_\*\.hdf5"):
        read_probe(checkpoint)


def test_an_explicit_format_must_fit_the_file() -> None:
    path, _ = _fixture("ptyrad_model")
    with pytest.raises(ValueError, match="must hold exactly one py4DSTEM reconstruction"):
        read_object(path, "py4dstem")
    other, _ = _fixture("py4dstem_singleslice")
    with pytest.raises(ValueError, match="is not a complete ptyrad result"):
        read_probe(other, "ptyrad")
    with pytest.raises(ValueError, match="file_format must be 'auto' or one of"):
        read_probe(path, "abtem")  # type: ignore[arg-type]
    assert FOREIGN_FORMATS == ("ptyscope", "ptyrad", "py4dstem")


def test_a_transposed_py4dstem_reconstruction_is_refused(tmp_path: Path) -> None:
    path, _ = _fixture("py4dstem_singleslice")
    copy = tmp_path / "transposed.h5"
    shutil.copyfile(path, copy)
    with h5py.File(copy, "r+") as handle:
        (node,) = [g for g in handle.values()]
        item = node["ptychographic_reconstruction/metadatabundle/preprocess_metadata"]
        item["data_transpose"][()] = True
    for reader in (read_probe, read_object):
        with pytest.raises(ValueError, match="data_transpose = True"):
            reader(copy)


def test_ptyrad_object_without_positions_still_reads(tmp_path: Path) -> None:
    path, meta = _fixture("ptyrad_model")
    copy = tmp_path / "model.hdf5"
    shutil.copyfile(path, copy)
    with h5py.File(copy, "r+") as handle:
        del handle["model_attributes/crop_pos"]
    obj = read_object(copy)
    assert obj.probe_centres_px is None
    assert obj.object.shape == tuple(meta["object_shape"])
