"""Starting a run from another reconstruction's probe and object (``[init] probe_file`` /
``object_file``): resampling, placement, the checks, and a continued reconstruction."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ptyscope.config import InitConfig
from ptyscope.io.foreign import read_object, read_probe
from ptyscope.physics.constants import wavelength_ang
from ptyscope.physics.grids import Grid
from ptyscope.physics.probe import build_probe
from ptyscope.reconstruction.engine import Engine, EngineSettings
from ptyscope.reconstruction.forward import PropagatorCache
from ptyscope.reconstruction.initial import (
    import_object,
    import_probe,
    initialise,
    resample_object,
    resample_probe,
)
from ptyscope.reconstruction.parameters import GroupSettings, PtychoParameters
from ptyscope.reconstruction.setup import ReconstructionSetup

FIXTURES = Path(__file__).resolve().parents[1] / "io" / "fixtures"
PTYRAD = FIXTURES / "ptyrad_model.hdf5"
PY4DSTEM = FIXTURES / "py4dstem_mixed_multislice.h5"


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(np.vdot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- resampling -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape_a", "pixel_a", "shape_b", "pixel_b"),
    [
        ((40, 40), (0.15, 0.15), (42, 42), (0.1428571, 0.1428571)),  # same window, finer
        ((48, 40), (0.15, 0.18), (40, 48), (0.18, 0.15)),  # anisotropic pixels
    ],
)
def test_resampled_probe_is_the_probe_built_on_the_new_grid(
    shape_a: tuple[int, int],
    pixel_a: tuple[float, float],
    shape_b: tuple[int, int],
    pixel_b: tuple[float, float],
) -> None:
    aberrations = {"defocus": 40.0, "C12": 15.0, "phi12": 0.4}  # astigmatism: no symmetry
    a = build_probe(Grid(shape_a, pixel_a), 300e3, 20.0, aberrations, num_modes=2).numpy()
    b = build_probe(Grid(shape_b, pixel_b), 300e3, 20.0, aberrations, num_modes=2).numpy()
    there = resample_probe(a, pixel_a, shape_b, pixel_b)
    back = resample_probe(b, pixel_b, shape_a, pixel_a)
    assert there.shape == b.shape and there.dtype == np.complex64
    assert _ncc(there[0], b[0]) > 0.9999
    assert _ncc(back[0], a[0]) > 0.9999
    assert float((np.abs(there) ** 2).sum()) == pytest.approx(1.0, rel=1e-5)
    powers = (np.abs(there) ** 2).sum(axis=(1, 2))
    assert powers[1] / powers[0] == pytest.approx(0.1, rel=0.02)  # the modes' ratio kept
    swapped = there[0].T if there.shape[1] == there.shape[2] else there[0, ::-1, ::-1]
    assert _ncc(swapped, b[0]) < 0.99  # and the test can tell a wrong orientation


def test_a_probe_in_a_larger_window_loses_only_its_wrapped_tails() -> None:
    """Windows of different size: the probes differ by what wraps around the smaller one."""
    a = build_probe(Grid((64, 64), (0.15, 0.15)), 300e3, 20.0, {"defocus": 40.0}).numpy()
    b = build_probe(Grid((40, 44), (0.18, 0.17)), 300e3, 20.0, {"defocus": 40.0}).numpy()
    assert _ncc(resample_probe(a, (0.15, 0.15), (40, 44), (0.18, 0.17))[0], b[0]) > 0.99


def test_same_grid_probe_is_only_normalised() -> None:
    probe = build_probe(Grid((32, 32), (0.2, 0.2)), 300e3, 20.0, {"defocus": 30.0}).numpy() * 7
    out = resample_probe(probe, (0.2, 0.2), (32, 32), (0.2 * (1 + 1e-8),) * 2)
    assert np.allclose(out, probe / 7, atol=1e-7)


@pytest.mark.filterwarnings("ignore:the probe puts")  # it wraps: that is the point
def test_a_probe_the_new_window_cuts_off_is_refused() -> None:
    wide = build_probe(Grid((96, 96), (0.1, 0.1)), 300e3, 25.0, {"defocus": 300.0}).numpy()
    with pytest.raises(ValueError, match=r"init.probe_file 'x.h5': only \d+% .* not meaningful"):
        resample_probe(wide, (0.1, 0.1), (24, 24), (0.1, 0.1), name="init.probe_file 'x.h5'")


def test_resampled_object_samples_the_same_specimen() -> None:
    def phase(y: np.ndarray, x: np.ndarray) -> np.ndarray:  # smooth, in Å, vacuum at the edges
        envelope = np.exp(-((y - 6.0) ** 2 + (x - 5.0) ** 2) / (2 * 2.5**2))
        return 0.3 * np.sin(2 * np.pi * y / 3.1) * np.cos(2 * np.pi * x / 2.3) * envelope

    pixel_a, pixel_b = (0.2, 0.2), (0.17, 0.23)
    ya, xa = np.mgrid[0:60, 0:50] * np.array(pixel_a)[:, None, None]
    obj = np.exp(1j * phase(ya, xa))[None, None]
    centres_a = np.array([[20.0, 15.0], [30.0, 25.0]])  # px on grid a
    centres_b = np.array([[10.0, 12.0], [21.76, 20.7]])  # the same points on grid b...
    centres_b += np.array([[5.0, 3.0]])  # ...of a grid whose corner is elsewhere
    out, coverage = resample_object(obj, pixel_a, centres_a, (50, 40), pixel_b, centres_b)
    assert coverage == 1.0 and out.shape == (1, 1, 50, 40)
    # grid b pixel i lies at (i - mean_b) * pixel_b + mean_a * pixel_a [Å]
    rows = (np.arange(50) - centres_b[:, 0].mean()) * pixel_b[0] + centres_a[:, 0].mean() * 0.2
    cols = (np.arange(40) - centres_b[:, 1].mean()) * pixel_b[1] + centres_a[:, 1].mean() * 0.2
    expected = np.exp(1j * phase(rows[:, None], cols[None, :]))
    inner = (slice(8, 42), slice(8, 32))
    # band-limited to grid b's Nyquist: what remains is the function's content beyond it
    assert np.abs(out[0, 0][inner] - expected[inner]).max() < 2e-3
    shifted = np.exp(1j * phase(rows[:, None] + 0.2, cols[None, :]))  # one pixel of a off
    assert np.abs(shifted[inner] - expected[inner]).max() > 2e-2
    moved = resample_object(obj, pixel_a, centres_a, (50, 40), pixel_b, centres_b + 7)
    assert np.allclose(moved[0][:, :, 7:, 7:], out[:, :, :-7, :-7], atol=1e-6)  # by the scan


def test_same_pixels_shift_the_object_by_whole_pixels() -> None:
    rng = np.random.default_rng(0)
    obj = np.exp(1j * rng.random((2, 3, 20, 30)))
    out, coverage = resample_object(
        obj, (0.3, 0.3), np.array([[10.0, 10.0]]), (25, 25), (0.3, 0.3), np.array([[13.2, 6.9]])
    )
    # foreign (10, 10) -> ours (13, 7): our pixel i holds foreign i - (3, -3)
    assert np.array_equal(out[:, :, 3:23, 0:25], obj[:, :, 0:20, 3:28].astype(np.complex64))
    assert np.all(out[:, :, :3] == 1) and np.all(out[:, :, 23:] == 1)
    assert coverage == 1.0


# -- importing into a run -----------------------------------------------------------------


def _setup(
    centres_px: np.ndarray,
    *,
    shape: tuple[int, int] = (60, 60),
    modes: int = 2,
    slices: int = 2,
    states: int = 1,
    pixel: float = 0.35,
    window: int = 24,
    thickness: float = 2.5,
) -> ReconstructionSetup:
    """A run's initial state on a given grid (what ``prepare`` makes from data)."""
    params = PtychoParameters(
        torch.ones((states, slices, *shape), dtype=torch.complex64),
        torch.ones((modes, window, window), dtype=torch.complex64) / math.sqrt(modes * window**2),
        torch.as_tensor(centres_px, dtype=torch.float32),
        torch.zeros(2),
        thickness,
    )
    ky, kx = Grid((window, window), (pixel, pixel)).frequencies()
    cache = PropagatorCache(ky, kx, wavelength_ang(80e3))
    measured = torch.zeros((len(centres_px), window, window))
    return ReconstructionSetup(params, measured, cache, (pixel, pixel), (0.0, 0.0), None)


def _ptyrad_meta() -> dict[str, object]:
    return json.loads((FIXTURES / "ptyrad_model.json").read_text())


def test_ptyrad_object_lands_where_its_positions_say() -> None:
    meta = _ptyrad_meta()
    centres = np.array(meta["probe_centres_px"])
    setup = _setup(centres + np.array([3.0, 5.0]))  # the same scan, 3 px down, 5 px right
    import_object(setup, PTYRAD)
    obj = setup.params.object.detach().numpy()
    _, z, y, x = meta["mark_index"]  # type: ignore[misc]
    value = obj[0, z, y + 3, x + 5]
    assert np.angle(value) == pytest.approx(meta["mark_phase_rad"], abs=1e-5)
    assert abs(value) == pytest.approx(meta["mark_amplitude"], abs=1e-5)
    foreign = read_object(PTYRAD).object
    assert np.array_equal(obj[:, :, 3:50, 5:52], foreign)  # copied exactly, whole pixels
    assert np.all(obj[:, :, :3] == 1) and np.all(obj[:, :, 50:] == 1)  # vacuum elsewhere


def test_ptyrad_probe_becomes_the_runs_probe() -> None:
    setup = _setup(np.array(_ptyrad_meta()["probe_centres_px"]))
    import_probe(setup, PTYRAD)
    assert np.array_equal(setup.params.probe.detach().numpy(), read_probe(PTYRAD).probe)


def test_py4dstem_probe_is_resampled_to_the_runs_pixels() -> None:
    meta = json.loads((FIXTURES / "py4dstem_mixed_multislice.json").read_text())
    centres = np.array(meta["positions_px"]) * 0.35 / 0.3  # the same scan on 0.3 Å pixels
    setup = _setup(centres + 6, pixel=0.3, window=28)  # a 8.4 Å window, 8.4 Å in the file
    import_probe(setup, PY4DSTEM)
    import_object(setup, PY4DSTEM)
    probe = setup.params.probe.detach().numpy()
    assert probe.shape == (2, 28, 28)
    assert float((np.abs(probe) ** 2).sum()) == pytest.approx(1.0, rel=1e-5)
    original = read_probe(PY4DSTEM).probe
    back = resample_probe(probe, (0.3, 0.3), (24, 24), (0.35, 0.35))
    assert _ncc(back[0], original[0]) > 0.999  # 8.4 Å windows: nothing is lost either way
    obj = setup.params.object.detach().numpy()
    assert obj.shape == (1, 2, 60, 60) and not np.allclose(obj, 1)


def test_modes_and_slices_must_match() -> None:
    centres = np.array(_ptyrad_meta()["probe_centres_px"])
    with pytest.raises(ValueError, match=r"2 modes, this run has probe.modes = 1: set probe"):
        import_probe(_setup(centres, modes=1), PTYRAD)
    with pytest.raises(ValueError, match=r"2 slices, this run has object.slices = 3: set object"):
        import_object(_setup(centres, slices=3), PTYRAD)


def test_an_object_smaller_than_the_scan_is_refused() -> None:
    centres = np.array(_ptyrad_meta()["probe_centres_px"])
    spread = (centres - centres.mean(axis=0)) * 6 + 60  # the scan 6 x wider than PtyRAD's
    with pytest.raises(ValueError, match=r"only 36% of this run's scan positions .* smaller"):
        import_object(_setup(spread, shape=(120, 120)), PTYRAD)


def test_several_states_start_from_the_imported_one_with_their_own_phases() -> None:
    centres = np.array(_ptyrad_meta()["probe_centres_px"])
    setup = _setup(centres, states=3)
    import_object(setup, PTYRAD, state_noise_rad=0.02, seed=5)
    obj = setup.params.object.detach().numpy()
    foreign = read_object(PTYRAD).object[0]
    assert np.allclose(np.abs(obj[:, :, :47, :47]), np.abs(foreign)[None], atol=1e-6)
    difference = np.angle(obj[1] / obj[0])
    assert 0.01 < float(difference.std()) < 0.05  # √2 · 0.02 rad, different per state


def test_a_different_slice_thickness_warns() -> None:
    centres = np.array(_ptyrad_meta()["probe_centres_px"])
    with pytest.warns(UserWarning, match=r"2\.5 Å thick, this run's object.slice_thickness_ang"):
        import_object(_setup(centres, thickness=4.0), PTYRAD)


def test_initialise_applies_the_init_section(tmp_path: Path) -> None:
    (tmp_path / "peer").mkdir()
    (tmp_path / "peer" / "model.hdf5").write_bytes(PTYRAD.read_bytes())
    init = InitConfig.model_validate(
        {"probe_file": "peer/model.hdf5", "object_file": "peer/model.hdf5", "format": "ptyrad"}
    )
    setup = _setup(np.array(_ptyrad_meta()["probe_centres_px"]))
    initialise(setup, init, base_dir=tmp_path)
    assert np.array_equal(setup.params.probe.detach().numpy(), read_probe(PTYRAD).probe)
    assert not np.allclose(setup.params.object.detach().numpy(), 1)
    with pytest.raises(ValueError, match=r"init.object_file .* both give the initial object"):
        InitConfig.model_validate({"result": "a.h5", "object_file": "b.h5"})
    InitConfig.model_validate({"result": "a.h5", "object_file": "b.h5", "object": False})


# -- a continued reconstruction ---------------------------------------------------------


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, float]:
    """Simulated SrTiO3 (42 px detector) and a 15-iteration first run on its central
    40 x 40 pixels, i.e. on 5 % coarser object pixels, written as a ptyscope result."""
    from ptyscope.reconstruction.results import write_result
    from ptyscope.reconstruction.setup import prepare
    from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG as A
    from ptyscope.simulation.specimens import srtio3_slab
    from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings, simulate_4dstem

    sim = simulate_4dstem(
        srtio3_slab((3, 3), A),
        ProbeSettings(300e3, 22.0, {"defocus": 60.0}),
        ScanSettings((8, 8), (0.5, 0.5), origin_ang=(2.5, 2.5)),
        sampling_ang=0.1,
        slice_thickness_ang=A,
        window_ang=6.0,
        dose_e_per_ang2=1e6,
        seed=1,
    )
    data = sim.dataset
    n = data.detector_shape[0]
    crop = slice(n // 2 - 20, n // 2 + 20)
    setup = prepare(
        data.crop_detector(crop, crop), num_slices=1, slice_thickness_ang=A, defocus_ang=60.0
    )
    engine = Engine(setup.params, setup.measured, setup.cache, _settings(15, probe=True))
    history = engine.run()
    path = tmp_path_factory.mktemp("stage1") / "stage1.h5"
    write_result(path, setup, engine, energy_ev=300e3, semiangle_mrad=22.0)
    return data, path, history.loss[-1]


def _settings(iterations: int, *, probe: bool) -> EngineSettings:
    from ptyscope.reconstruction.constraints import ProbePower

    groups = {"object": GroupSettings(lr=2e-2), "probe": GroupSettings(probe, 0, 1e-2)}
    return EngineSettings(
        iterations=iterations, batch_size=16, groups=groups, constraints=[ProbePower()], guard=False
    )


def _start(
    data: object, defocus_ang: float, probe_from: Path | None, object_from: Path | None
) -> ReconstructionSetup:
    from ptyscope.reconstruction.setup import prepare
    from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG as A

    setup = prepare(data, num_slices=1, slice_thickness_ang=A, defocus_ang=defocus_ang)  # type: ignore[arg-type]
    if probe_from is not None:
        import_probe(setup, probe_from)
    if object_from is not None:
        import_object(setup, object_from)
    return setup


def _start_loss(
    data: object,
    *,
    defocus_ang: float,
    probe_from: Path | None = None,
    object_from: Path | None = None,
) -> float:
    """The loss of the initial state (one full-batch pass, nothing fitted)."""
    setup = _start(data, defocus_ang, probe_from, object_from)
    settings = EngineSettings(iterations=1, groups={}, guard=False)
    return Engine(setup.params, setup.measured, setup.cache, settings).step()


def _fit_object(
    data: object, iterations: int, *, defocus_ang: float, probe_from: Path | None = None
) -> list[float]:
    setup = _start(data, defocus_ang, probe_from, None)
    engine = Engine(setup.params, setup.measured, setup.cache, _settings(iterations, probe=False))
    return list(engine.run().loss)


def test_a_run_continued_from_an_imported_probe_and_object_starts_lower(
    stage_one: tuple[object, Path, float],
) -> None:
    data, path, stage_one_loss = stage_one
    default = _start_loss(data, defocus_ang=60.0)
    continued = _start_loss(data, defocus_ang=0.0, probe_from=path, object_from=path)
    probe_only = _start_loss(data, defocus_ang=0.0, probe_from=path)
    assert continued < 0.4 * probe_only  # the imported object does its part
    assert continued < 0.4 * default  # measured: 257 vs 1079
    assert continued < 1.2 * stage_one_loss  # about where the first run stopped (252)


def test_an_imported_probe_beats_a_wrong_default_probe(
    stage_one: tuple[object, Path, float],
) -> None:
    data, path, _ = stage_one
    wrong = _fit_object(data, 8, defocus_ang=0.0)
    imported = _fit_object(data, 8, defocus_ang=0.0, probe_from=path)
    assert imported[-1] < 0.6 * wrong[-1]  # object-only fits; measured: 265 vs 705


@pytest.mark.filterwarnings("ignore::ptyscope.data.checks.PreflightWarning")  # defocus
def test_build_run_applies_init_probe_and_object_files(
    stage_one: tuple[object, Path, float], tmp_path: Path
) -> None:
    """The config path: ``[init] probe_file / object_file`` of a ``reconstruct`` config."""
    import inspect

    from ptyscope.config import ReconstructionConfig
    from ptyscope.io.datafile import write_dataset
    from ptyscope.reconstruction import run as run_module

    if "initialise(" not in inspect.getsource(run_module.build_run):
        pytest.skip("reconstruction.run.build_run does not call initial.initialise yet")
    data, path, _ = stage_one
    write_dataset(tmp_path / "data.h5", data)  # type: ignore[arg-type]
    (tmp_path / "stage1.h5").write_bytes(path.read_bytes())
    config = ReconstructionConfig.model_validate(
        {
            "data": {"path": "data.h5"},
            "object": {"slice_thickness_ang": 3.905},
            "optimization": {"iterations": 1, "checkpoint_every": None},
            "init": {"probe_file": "stage1.h5", "object_file": "stage1.h5"},
        }
    )
    run = run_module.build_run(config, base_dir=tmp_path)
    expected = _start(data, 0.0, path, path)
    assert torch.equal(run.setup.params.probe.detach(), expected.params.probe.detach())
    assert torch.equal(run.setup.params.object.detach(), expected.params.object.detach())
