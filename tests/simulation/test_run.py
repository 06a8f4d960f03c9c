"""``ptyscope simulate``: config validation, the Python API and the command line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.io import write
from click.testing import CliRunner

from ptyscope.cli import main
from ptyscope.config import ConfigError, SimulationConfig, TiltConfig, load_config
from ptyscope.io.datafile import read_dataset, read_ground_truth
from ptyscope.simulation.potential import specimen_grid
from ptyscope.simulation.run import (
    build_specimen,
    phonon_displacements,
    run_simulation,
    snapshot_displacements,
    tilt_from_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "simulate_srtio3.toml"

SMALL = """
output = "small.h5"
seed = 3
[specimen]
kind = "srtio3_slab"
repeat_xy = [1, 1]
thickness_ang = 7.8
[scan]
shape = [2, 3]
step_ang = [0.9, 0.8]
[sampling]
pixel_ang = 0.12
slice_thickness_ang = 1.9525
[tilt]
tilt_x_mrad = 3.0
[phonons]
model = "harmonic"
configs = 2
[acquisition]
dose_e_per_ang2 = 5e4
"""


def test_example_config_validates() -> None:
    config = load_config(EXAMPLE, SimulationConfig)
    assert config.specimen.kind == "srtio3_slab"
    assert config.probe.energy_ev == 300e3
    assert config.phonons.model == "harmonic"
    series = load_config(EXAMPLE.with_name("simulate_tilt_series.toml"), SimulationConfig)
    assert series.tilt_series is not None
    assert series.specimen.kind == "ordered_alloy_cluster"


def test_config_errors_name_the_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[specimen]\nkind = "srtio3_slab"\nthicknes_ang = 5\n[probe]\nenergy_ev = -3\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, SimulationConfig)
    message = str(info.value)
    assert "specimen.thicknes_ang" in message
    assert "unknown key 'thicknes_ang' in [specimen]; did you mean 'thickness_ang'?" in message
    assert "probe.energy_ev" in message
    assert "-3" in message
    path.write_text("[specimen\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, SimulationConfig)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.toml", SimulationConfig)
    path.write_text('[specimen]\nkind = "file"\n')
    with pytest.raises(ConfigError, match="needs path"):
        load_config(path, SimulationConfig)


def test_tilt_map_from_gradient() -> None:
    positions = np.stack(np.meshgrid([0.0, 1.0, 2.0], [0.0, 2.0], indexing="ij"), axis=-1)
    config = TiltConfig(
        tilt_x_mrad=1.0,
        tilt_y_mrad=-2.0,
        gradient_x_mrad_per_ang=(0.5, 0.0),  # θ_x grows along x
        gradient_y_mrad_per_ang=(0.0, 0.25),  # θ_y grows along y
    )
    tilt = tilt_from_config(config, positions)
    assert tilt.shape == (3, 2, 2)
    # Scan centre (y, x) = (1, 1): at (y, x) = (2, 2): θ_y = −2 + 0.25, θ_x = 1 + 0.5.
    np.testing.assert_allclose(tilt[2, 1], (-1.75, 1.5))
    np.testing.assert_allclose(tilt[0, 0], (-2.25, 0.5))
    uniform = tilt_from_config(TiltConfig(tilt_x_mrad=4.0), positions)
    np.testing.assert_allclose(uniform, (0.0, 4.0))


def test_harmonic_phonons_of_a_slab_use_the_bloch_sampler(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, SMALL), SimulationConfig)
    specimen = build_specimen(config.specimen)
    assert specimen.repeat == (1, 1, 2)
    displacements, truth = phonon_displacements(
        config.phonons, specimen, np.random.default_rng(0), tmp_path
    )
    assert displacements is not None
    assert displacements.shape == (2, len(specimen.atoms), 3)
    frequencies = truth["dispersion"]["frequencies_thz"]
    assert frequencies.shape[1] == 15  # 5 atoms x 3 branches
    np.testing.assert_allclose(frequencies[0, :3], 0.0, atol=1e-6)  # acoustic modes at Γ
    assert frequencies[0, 3:].min() > 1.0  # optical modes do not vanish at Γ


def test_snapshots_give_minimum_image_displacements(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, SMALL), SimulationConfig)
    reference = build_specimen(config.specimen).atoms
    frame = reference.copy()
    frame.positions[0] += (0.05, -0.02, 0.01)
    frame.positions[1, 0] += reference.cell[0, 0] - 0.03  # wrapped across the cell in x
    displacements = snapshot_displacements(reference, [frame])
    np.testing.assert_allclose(displacements[0, 0], (0.05, -0.02, 0.01), atol=1e-12)
    assert displacements[0, 1, 0] == pytest.approx(-0.03)
    write(tmp_path / "md.traj", [frame, reference])
    with pytest.raises(ValueError, match="snapshot 0 must hold"):
        snapshot_displacements(reference, [frame[:-1]])


def test_run_simulation_writes_data_and_ground_truth(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, SMALL), SimulationConfig)
    path = run_simulation(config, output=tmp_path / "out.h5", progress=False)
    dataset = read_dataset(path)
    assert dataset.scan_shape == (2, 3)
    counts = dataset.data.sum(axis=(2, 3))
    expected = 5e4 * 0.9 * 0.8  # electrons per pattern
    assert np.abs(counts - expected).max() < 6 * np.sqrt(expected)
    truth = read_ground_truth(path)
    np.testing.assert_allclose(truth["tilt_mrad"], (0.0, 3.0))
    assert truth["displacements_ang"].shape == (2, 10, 3)
    assert truth["phonons"]["model"] == "harmonic"
    assert truth["potential"]["slices_vang"].shape[0] == 4


def test_a_config_can_switch_the_band_limit_off(tmp_path: Path) -> None:
    # TOML has no null: "off" is stored as None. Without a band limit the detector keeps
    # the whole window, so the pixel a reconstruction infers from the patterns,
    # 1 / (detector pixels x reciprocal pixel), is the simulation's own grid pixel; with
    # the default 2/3 band limit it is about 3/2 of it (the crop is rounded to pixels).
    for fraction, even, low, high in (('"off"', True, 1.0, 1.0), ("0.6667", False, 1.45, 1.6)):
        text = SMALL.replace(
            "pixel_ang = 0.12",
            f"pixel_ang = 0.12\nwindow_ang = 6.1\nantialias_fraction = {fraction}",
        )
        config = load_config(_write(tmp_path, text), SimulationConfig)
        assert (config.sampling.antialias_fraction is None) == even
        atoms = build_specimen(config.specimen).atoms
        grid_pixel = np.array(specimen_grid(atoms, 0.12, even=even).pixel_size_ang)
        dataset = read_dataset(run_simulation(config, output=tmp_path / "out.h5", progress=False))
        detector = np.array(dataset.data.shape[2:])
        inferred = 1.0 / (detector * np.array(dataset.calibration.detector_pixel_inv_ang))
        ratio = inferred / grid_pixel
        assert np.all((ratio >= low - 1e-9) & (ratio <= high + 1e-9)), ratio
    bad = _write(
        tmp_path, SMALL.replace("pixel_ang = 0.12", 'pixel_ang = 0.12\nantialias_fraction = "none"')
    )
    with pytest.raises(ConfigError, match=r"sampling\.antialias_fraction.*'none'"):
        load_config(bad, SimulationConfig)


def test_cli_simulate(tmp_path: Path) -> None:
    config = _write(tmp_path, SMALL)
    runner = CliRunner()
    result = runner.invoke(main, ["simulate", str(config), "-o", str(tmp_path / "c.h5"), "-q"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    assert read_dataset(tmp_path / "c.h5").scan_shape == (2, 3)
    bad = tmp_path / "bad.toml"
    bad.write_text('[specimen]\nkind = "moon"\n')
    result = runner.invoke(main, ["simulate", str(bad)])
    assert result.exit_code != 0
    assert "specimen.kind" in result.output
    assert "Traceback" not in result.output


def test_cli_simulate_writes_the_configs_output_beside_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Like every path in a ptyscope config, whatever the working directory; -o, a
    # command-line path, stays relative to the working directory.
    folder = tmp_path / "project"
    folder.mkdir()
    config = _write(folder, SMALL.replace('"small.h5"', '"data/sim.h5"'))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(main, ["simulate", str(config), "-q"])
    assert result.exit_code == 0, result.output
    assert read_dataset(folder / "data" / "sim.h5").scan_shape == (2, 3)
    assert list(elsewhere.iterdir()) == []


def test_file_specimen_paths_are_relative_to_the_config(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    config = load_config(_write(tmp_path, SMALL), SimulationConfig)
    atoms = build_specimen(config.specimen).atoms
    write(folder / "cell.xyz", atoms, format="extxyz")
    text = SMALL.replace(
        'kind = "srtio3_slab"', 'kind = "file"\npath = "cell.xyz"\nrepeat = [1, 1, 1]'
    )
    path = folder / "sim.toml"
    path.write_text(text)
    loaded = load_config(path, SimulationConfig)
    specimen = build_specimen(loaded.specimen, folder)
    np.testing.assert_allclose(specimen.atoms.positions, atoms.positions)
    shutil.rmtree(folder)


def _write(folder: Path, text: str) -> Path:
    path = folder / "sim.toml"
    path.write_text(text)
    return path


def test_tomography_examples_validate() -> None:
    import tomllib

    from ptyscope.config import ReconstructionConfig, TomographyConfig

    tomo = load_config(EXAMPLE.with_name("tomo.toml"), TomographyConfig)
    assert tomo.atoms.symbols == ("Cu", "Au")
    assert tomo.reconstruction.template.name == "tomo_tilt.toml"
    text = EXAMPLE.with_name("tomo_tilt.toml").read_text()
    template = ReconstructionConfig.model_validate(
        {"data": {"path": "tilt.h5"}} | tomllib.loads(text)
    )
    assert template.object.slices * template.object.slice_thickness_ang == 24.0
