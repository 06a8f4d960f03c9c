"""Exports of results (EMD 1.0, NumPy + JSON, TIFF) and atoms (extxyz, CIF), read back."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ptyscope.io import export as export_module
from ptyscope.io.export import (
    EMD_ROOT,
    EMD_VERSION,
    IMAGEJ_ANGSTROM,
    NPY_SIDECAR,
    export_atoms,
    export_result,
    read_result_arrays,
)
from ptyscope.io.export_command import export, export_atoms_command


def write_tiny_result(path: Path, *, states: int = 2, slices: int = 2, modes: int = 2) -> Path:
    """A real result file (``write_result``): 4 x 4 positions of simulated SrTiO3, one
    iteration, ``states`` object states, ``slices`` slices and ``modes`` probe modes."""
    from ptyscope.reconstruction.engine import Engine, EngineSettings
    from ptyscope.reconstruction.parameters import GroupSettings
    from ptyscope.reconstruction.results import write_result
    from ptyscope.reconstruction.setup import prepare
    from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG as A
    from ptyscope.simulation.specimens import srtio3_slab
    from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings, simulate_4dstem

    sim = simulate_4dstem(
        srtio3_slab((3, 3), A),
        ProbeSettings(300e3, 22.0, {"defocus": 20.0}),
        ScanSettings((4, 4), (0.8, 0.8), origin_ang=(3.0, 3.0)),
        sampling_ang=0.2,
        slice_thickness_ang=A,
        window_ang=4.0,
        seed=0,
    )
    setup = prepare(
        sim.dataset,
        num_slices=slices,
        slice_thickness_ang=A / slices,
        num_states=states,
        num_modes=modes,
        defocus_ang=20.0,
        tilt_mrad=(1.5, -2.5),
    )
    settings = EngineSettings(
        iterations=1,
        groups={"object": GroupSettings(lr=1e-2), "probe": GroupSettings(lr=1e-2)},
        guard=False,
    )
    engine = Engine(setup.params, setup.measured, setup.cache, settings)
    engine.run()
    write_result(path, setup, engine, energy_ev=300e3, semiangle_mrad=22.0, config_text="[data]")
    return path


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)  # the engine's own generators are seeded; this is belt and braces
    return write_tiny_result(tmp_path_factory.mktemp("result") / "run.h5")


def test_read_result_arrays_matches_the_file(result: Path) -> None:
    arrays = read_result_arrays(result)
    with h5py.File(result, "r") as handle:
        assert np.array_equal(arrays.object, handle["object"][()])
        assert np.array_equal(arrays.probe, handle["probe"][()])
        assert arrays.pixel_size_ang == tuple(handle["object"].attrs["pixel_size_ang"])
        assert arrays.tilt_mrad == pytest.approx((1.5, -2.5))
    assert arrays.object.shape[:2] == (2, 2) and arrays.probe.shape[0] == 2
    assert arrays.total_thickness_ang == pytest.approx(2 * arrays.slice_thickness_ang)


# -- EMD 1.0 ------------------------------------------------------------------------------


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_emd_layout_is_emd_1_0(result: Path, tmp_path: Path) -> None:
    """The layout emdfile 0.0.16 writes and reads (emdfile/utils.py, classes/array.py)."""
    arrays = read_result_arrays(result)
    path = tmp_path / "run.emd"
    assert export_result(result, path, to="emd") == [path]
    with h5py.File(path, "r") as handle:
        assert handle.attrs["emd_group_type"] == "file"
        assert (handle.attrs["version_major"], handle.attrs["version_minor"]) == EMD_VERSION
        assert EMD_VERSION == (1, 0)
        assert re.fullmatch(r"[0-9a-f-]{36}", handle.attrs["UUID"])
        assert handle.attrs["authoring_program"].startswith("ptyscope")
        roots = [k for k in handle if handle[k].attrs.get("emd_group_type") == "root"]
        assert roots == [EMD_ROOT]
        root = handle[EMD_ROOT]
        assert root.attrs["python_class"] == "Root"
        for name in ("object", "probe", "positions"):
            node = root[name]
            assert node.attrs["emd_group_type"] == "array"
            assert node.attrs["python_class"] == "Array"
            assert "units" in node["data"].attrs
            assert [k for k in node if k.startswith("dim")] == [
                f"dim{n}" for n in range(node["data"].ndim)
            ]
        obj = root["object"]
        assert obj["data"].dtype == np.complex64
        assert np.array_equal(obj["data"][()], arrays.object)
        dy, dx = arrays.pixel_size_ang
        oy, ox = arrays.origin_ang
        assert np.allclose(obj["dim1"][()], [0.0, arrays.slice_thickness_ang])
        assert np.allclose(obj["dim2"][()], [oy, oy + dy]) and obj["dim2"].attrs["units"] == "A"
        assert np.allclose(obj["dim3"][()], [ox, ox + dx]) and obj["dim3"].attrs["name"] == "x"
        assert obj["dim0"].attrs["units"] == "pixels"
        probe = root["probe"]
        ny = arrays.probe.shape[1]
        assert np.array_equal(probe["data"][()], arrays.probe)
        assert np.allclose(probe["dim1"][()], [-(ny // 2) * dy, -(ny // 2 - 1) * dy])
        assert np.array_equal(root["positions/data"][()], arrays.positions_ang)
        meta = root["metadatabundle/ptyscope"]
        assert root["metadatabundle"].attrs["emd_group_type"] == "metadatabundle"
        assert meta.attrs["emd_group_type"] == "metadata"
        assert meta["energy_ev"][()] == 300e3 and _text(meta["energy_ev"].attrs["type"]) == "number"
        assert np.allclose(meta["tilt_mrad"][()], arrays.tilt_mrad)
        assert _text(meta["tilt_mrad"].attrs["type"]) == "array"
        assert meta["software"][()].decode().startswith("ptyscope")


def test_emd_reads_back_with_emdfile(result: Path, tmp_path: Path) -> None:
    emdfile = pytest.importorskip("emdfile")
    arrays = read_result_arrays(result)
    path = tmp_path / "run.emd"
    export_result(result, path, to="emd")
    root = emdfile.read(str(path))
    obj = root.tree("object")
    assert np.array_equal(obj.data, arrays.object)
    assert obj.dim_units[2] == "A" and obj.dim_names[3] == "x"
    y0, dy = arrays.origin_ang[0], arrays.pixel_size_ang[0]
    assert np.allclose(obj.dims[2][:2], [y0, y0 + dy])
    assert np.array_equal(root.tree("probe").data, arrays.probe)
    assert np.array_equal(root.tree("positions").data, arrays.positions_ang)
    assert root.metadata["ptyscope"]["energy_ev"] == 300e3


def test_an_interrupted_emd_export_leaves_no_file(
    result: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise OSError("refused")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="refused"):
        export_result(result, tmp_path / "run.emd", to="emd")
    assert list(tmp_path.iterdir()) == []


# -- NumPy + JSON -------------------------------------------------------------------------


def test_npy_export_round_trips_exactly(result: Path, tmp_path: Path) -> None:
    arrays = read_result_arrays(result)
    folder = tmp_path / "npy"
    written = export_result(result, folder, to="npy")
    assert written[-1] == folder / NPY_SIDECAR  # the sidecar last: it marks completeness
    obj = np.load(folder / "object.npy")
    assert obj.dtype == np.complex64 and np.array_equal(obj, arrays.object)
    assert np.array_equal(np.load(folder / "probe.npy"), arrays.probe)
    assert np.array_equal(np.load(folder / "positions_ang.npy"), arrays.positions_ang)
    assert np.array_equal(np.load(folder / "state_weights.npy"), arrays.state_weights)
    meta = json.loads((folder / NPY_SIDECAR).read_text("utf-8"))
    assert meta["units"]["length"] == "Å"
    assert meta["pixel_size_ang"] == list(arrays.pixel_size_ang)
    assert meta["tilt_mrad"] == pytest.approx([1.5, -2.5])
    assert meta["slice_thickness_ang"] == arrays.slice_thickness_ang
    assert meta["total_thickness_ang"] == pytest.approx(arrays.total_thickness_ang)
    assert meta["energy_ev"] == 300e3
    assert meta["exported_by"].startswith("ptyscope ")
    assert meta["arrays"]["object"]["axes"] == ["state", "slice", "y", "x"]
    assert meta["arrays"]["probe"]["shape"] == list(arrays.probe.shape)
    assert "(..., y, x)" in meta["conventions"]["axes"]


# -- TIFF ---------------------------------------------------------------------------------


def _imagej_unit(description: str) -> str:
    """The ``unit`` ImageJ reads: java.util.Properties unescapes \\uXXXX."""
    match = re.search(r"^unit=(.*)$", description, re.M)
    assert match is not None, description
    return re.sub(r"\\u([0-9A-Fa-f]{4})", lambda m: chr(int(m.group(1), 16)), match.group(1))


def test_tiff_export_is_float32_in_angstrom(result: Path, tmp_path: Path) -> None:
    import tifffile

    arrays = read_result_arrays(result)
    folder = tmp_path / "tiff"
    names = [p.name for p in export_result(result, folder, to="tiff")]
    assert names == ["phase.tif", "phase_sum.tif", "amplitude.tif", "probe_intensity.tif"]
    dy, dx = arrays.pixel_size_ang
    expected = {
        "phase.tif": np.angle(arrays.object),
        "amplitude.tif": np.abs(arrays.object),
        "phase_sum.tif": (
            arrays.state_weights[:, None, None] * np.angle(arrays.object).astype(np.float64).sum(1)
        ).sum(0),
        "probe_intensity.tif": np.abs(arrays.probe) ** 2,
    }
    for name, values in expected.items():
        with tifffile.TiffFile(folder / name) as tif:
            data = tif.asarray()
            assert data.dtype == np.float32
            assert np.array_equal(data, values.astype(np.float32)), name
            page = tif.pages[0]
            description = page.tags["ImageDescription"].value
            assert description.startswith("ImageJ=")
            assert IMAGEJ_ANGSTROM == "\\u00C5" and _imagej_unit(description) == "Å"
            xres = page.tags["XResolution"].value
            yres = page.tags["YResolution"].value
            assert xres[1] / xres[0] == pytest.approx(dx, rel=1e-6)  # pixel = 1 / resolution
            assert yres[1] / yres[0] == pytest.approx(dy, rel=1e-6)
            if name in ("phase.tif", "amplitude.tif"):
                assert tif.series[0].axes == "TZYX"
                assert tif.imagej_metadata["spacing"] == pytest.approx(arrays.slice_thickness_ang)
                assert tif.imagej_metadata["Labels"][1] == "state 0 slice 1"


# -- atoms --------------------------------------------------------------------------------


@pytest.fixture
def tomography_file(tmp_path: Path) -> Path:
    from ptyscope.tomography import pipeline

    rng = np.random.default_rng(3)
    result = pipeline.TomographyResult(
        volume=rng.random((6, 8, 10)),
        voxel_ang=0.5,
        origin_ang=(1.25, -2.0),
        euler_nominal_deg=np.zeros((3, 3)),
        euler_deg=np.zeros((3, 3)),
        shifts_start_ang=np.zeros((3, 2)),
        shifts_ang=np.zeros((3, 2)),
        projections=rng.random((3, 8, 10)),
        weights=np.ones((3, 8, 10)),
        positions_ang=rng.random((5, 3)) * 3,
        labels=np.array([0, 1, 1, 0, 1]),
    )
    path = tmp_path / "tomography.h5"
    pipeline._write(path, result, '[atoms]\nsymbols = ["Au", "Pd"]\n', history=[])
    return path


@pytest.mark.parametrize("suffix", [".xyz", ".extxyz", ".cif"])
def test_tomography_atoms_round_trip_through_ase(tomography_file: Path, suffix: str) -> None:
    with h5py.File(tomography_file, "r") as handle:
        positions = handle["atoms/positions_ang"][()]
        labels = handle["atoms/labels"][()]
    out = export_atoms(tomography_file, tomography_file.with_name(f"atoms{suffix}"))
    atoms = ase.io.read(out)
    assert atoms.get_chemical_symbols() == [["Au", "Pd"][k] for k in labels]
    if suffix == ".cif":  # relative to the volume's corner, the cell's origin (5 decimals)
        assert np.allclose(atoms.get_positions(), positions, atol=1e-3)
    else:  # the scan frame of tomo's atoms.xyz: + (origin_x, origin_y, 0)
        expected = positions + np.array([-2.0, 1.25, 0.0])
        assert np.allclose(atoms.get_positions(), expected, atol=1e-6)
    assert np.allclose(atoms.cell.lengths(), [10 * 0.5, 8 * 0.5, 6 * 0.5], atol=1e-5)
    assert bool(atoms.pbc.all()) == (suffix == ".cif")


def test_atoms_symbols_option_and_errors(tomography_file: Path, tmp_path: Path) -> None:
    out = export_atoms(tomography_file, tmp_path / "a.xyz", symbols=["Fe", "Pt"])
    assert set(ase.io.read(out).get_chemical_symbols()) == {"Fe", "Pt"}
    with pytest.raises(ValueError, match="symbols has 1 entries"):
        export_atoms(tomography_file, tmp_path / "b.xyz", symbols=["Fe"])
    with pytest.raises(ValueError, match="chemical symbols"):
        export_atoms(tomography_file, tmp_path / "b.xyz", symbols=["Fe", "Xx"])
    with pytest.raises(ValueError, match="output must end in one of"):
        export_atoms(tomography_file, tmp_path / "b.pdb")


def test_columns_round_trip_and_cif_needs_a_cell(tmp_path: Path) -> None:
    table = tmp_path / "columns.csv"
    table.write_text(
        "label,y_ang,x_ang,sigma_y_ang,sigma_x_ang\n"
        "Sr,1.0,2.0,0.1,0.1\nTiO,2.9525,3.9525,0.1,0.1\nO,1.0,3.9525,0.1,0.1\n"
    )
    atoms = ase.io.read(export_atoms(table, tmp_path / "columns.xyz"))
    assert atoms.get_chemical_symbols() == ["Sr", "Ti", "O"]
    assert list(atoms.arrays["column"]) == ["Sr", "TiO", "O"]
    assert np.allclose(atoms.get_positions()[1], [3.9525, 2.9525, 0.0])  # ase is (x, y, z)
    with pytest.raises(ValueError, match="needs a periodic cell"):
        export_atoms(table, tmp_path / "columns.cif")


# -- the commands ---------------------------------------------------------------------------


def test_export_command_defaults_beside_the_result(result: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run.h5"
    copy.write_bytes(result.read_bytes())
    runner = CliRunner()
    outcome = runner.invoke(export, [str(copy), "--to", "emd"])
    assert outcome.exit_code == 0, outcome.output
    assert f"wrote {tmp_path / 'run.emd'}" in outcome.output
    outcome = runner.invoke(export, [str(copy), "--to", "npy", "-o", str(tmp_path / "n")])
    assert outcome.exit_code == 0 and (tmp_path / "n" / NPY_SIDECAR).exists()
    outcome = runner.invoke(export, [str(copy), "--to", "png"])
    assert outcome.exit_code != 0 and "'png' is not one of" in outcome.output


def test_export_command_reports_a_file_that_is_not_a_result(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = "ptyscope-data"
    outcome = CliRunner().invoke(export, [str(path), "--to", "npy"])
    assert outcome.exit_code == 1
    assert "is not a ptyscope result file" in outcome.output


def test_export_atoms_command(tomography_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "atoms.cif"
    outcome = CliRunner().invoke(
        export_atoms_command, [str(tomography_file), "-o", str(out), "--symbols", "Fe, Pt"]
    )
    assert outcome.exit_code == 0, outcome.output
    assert set(ase.io.read(out).get_chemical_symbols()) == {"Fe", "Pt"}


def test_export_rejects_unknown_formats(result: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"to must be one of \['emd', 'npy', 'tiff'\]"):
        export_result(result, tmp_path / "x", to="png")  # type: ignore[arg-type]
    assert export_module.EXPORT_FORMATS == ("emd", "npy", "tiff")
