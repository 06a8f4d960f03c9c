"""The reconstruction report: figures and index.html from a synthetic result file."""

from __future__ import annotations

import html
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptyscope.report.reconstruction_figures import (
    comparison_figure,
    loss_figure,
    parameter_figure,
    position_corrections_ang,
    probe_power_fractions,
)
from ptyscope.report.reconstruction_report import (
    read_state_images,
    summed_phase,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PIXEL_ANG = (0.4, 0.5)
CONFIG_TEXT = '[physics]\nenergy_ev = 300e3  # [eV]\nnote = "<b>&"\n'
ALWAYS = (
    "object_phase.png",
    "object_amplitude.png",
    "probe_modes.png",
    "loss.png",
    "positions.png",
    "parameters.png",
)


def slice_phases(slices: int, ny: int, nx: int) -> np.ndarray:
    """Known phases (slices, ny, nx) [rad]: slice k is 0.1 (k + 1) times a smooth pattern."""
    y, x = np.mgrid[:ny, :nx]
    pattern = np.sin(2 * np.pi * x / nx) * np.cos(2 * np.pi * y / ny)
    return np.stack([0.1 * (k + 1) * pattern for k in range(slices)])


def make_result(
    path: Path,
    *,
    states: int = 2,
    slices: int = 3,
    modes: int = 3,
    iterations: int = 5,
    ny: int = 24,
    nx: int = 20,
    tilt_map: bool = False,
    optional: bool = True,
    drop: str | None = None,
) -> Path:
    """Write a result file with the layout of ``ptyscope.reconstruction.results``."""
    rng = np.random.default_rng(7)
    phases = slice_phases(slices, ny, nx)
    amplitudes = 1.0 - 0.05 * rng.random((slices, ny, nx))
    obj = np.empty((states, slices, ny, nx), dtype=np.complex64)
    obj[0] = amplitudes * np.exp(1j * phases)
    for s in range(1, states):
        obj[s] = np.exp(1j * (phases + 0.02 * s * rng.standard_normal(phases.shape)))
    probe = rng.standard_normal((modes, 16, 16)) + 1j * rng.standard_normal((modes, 16, 16))
    probe *= np.sqrt(0.5 ** np.arange(modes))[:, None, None]
    nominal = np.stack(np.meshgrid(np.arange(4.0), np.arange(5.0), indexing="ij"), -1)
    nominal = nominal.reshape(-1, 2) * 1.5 + 2.0
    positions = nominal + 0.1 * rng.standard_normal(nominal.shape)
    history = {
        "loss": 1.0 / np.arange(1, iterations + 1) + 0.0123,
        "tilt_x_mrad": np.linspace(0.0, 1.25, iterations),
        "tilt_y_mrad": np.linspace(0.0, -0.5, iterations),
        "slice_thickness_ang": np.linspace(2.0, 2.2, iterations),
        "seconds": np.full(iterations, 0.25),
    }
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = "ptyscope-result"
        handle.attrs["software"] = "ptyscope 0.1.0"
        handle.attrs["device"] = "cpu"
        handle.attrs["tilt_x_mrad"] = 1.25
        handle.attrs["tilt_y_mrad"] = -0.5
        handle.attrs["slice_thickness_ang"] = 2.2
        handle.attrs["total_thickness_ang"] = 2.2 * slices
        handle.attrs["energy_ev"] = 300e3
        handle.attrs["semiangle_mrad"] = 21.4
        handle.attrs["iterations"] = iterations
        datasets = {
            "object": obj,
            "probe": probe.astype(np.complex64),
            "positions_ang": positions,
            "nominal_positions_ang": nominal,
        }
        for name, data in datasets.items():
            if name != drop:
                handle.create_dataset(name, data=data)
        if "object" in handle:
            handle["object"].attrs["pixel_size_ang"] = np.asarray(PIXEL_ANG)
        if "probe" in handle:
            handle["probe"].attrs["pixel_size_ang"] = np.asarray(PIXEL_ANG)
        group = handle.create_group("history")
        for key, values in history.items():
            group.create_dataset(key, data=values)
        if optional:
            handle.create_dataset("state_weights", data=np.full(states, 1.0 / states))
            handle.create_group("config").attrs["text"] = CONFIG_TEXT
        if tilt_map:
            handle.create_dataset("tilt_map_mrad", data=rng.standard_normal((5, 4, 2)))
    return path


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_summed_phase_is_the_sum_of_slice_phases() -> None:
    phases = slice_phases(3, 8, 6)
    np.testing.assert_allclose(summed_phase(0.9 * np.exp(1j * phases)), phases.sum(axis=0))
    # Each slice's phase is wrapped to (-π, π] before the sum.
    wrapped = summed_phase(np.exp(1j * np.full((2, 1, 1), 3.0 * np.pi / 2)))
    np.testing.assert_allclose(wrapped, [[-np.pi]])
    with pytest.raises(ValueError, match="slices, ny, nx"):
        summed_phase(np.ones((4, 4)))


def test_read_state_images_streams_the_known_object(tmp_path: Path) -> None:
    path = make_result(tmp_path / "result.h5", states=1, slices=5)
    with h5py.File(path, "r") as handle:
        obj = handle["object"]
        images = read_state_images(obj, 0, max_slices=3)
        expected_amplitude = np.prod(np.abs(obj[0]), axis=0)
    phases = slice_phases(5, 24, 20)
    np.testing.assert_allclose(images.phase_sum, phases.sum(axis=0), atol=1e-5)
    np.testing.assert_allclose(images.amplitude, expected_amplitude, rtol=1e-5)
    assert images.slice_indices == (0, 2, 4)
    np.testing.assert_allclose(images.phases, phases[[0, 2, 4]], atol=1e-5)


def test_probe_power_fractions_and_position_rms() -> None:
    probe = np.stack([np.full((4, 4), 2.0), np.full((4, 4), 1.0)]).astype(np.complex64)
    np.testing.assert_allclose(probe_power_fractions(probe), [0.8, 0.2])
    shift, rms = position_corrections_ang([[1.0, 4.0], [3.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(shift, [[0.0, 4.0], [3.0, 0.0]])
    assert rms == pytest.approx(np.sqrt(12.5))


def test_report_of_a_mixed_state_run(tmp_path: Path) -> None:
    path = make_result(tmp_path / "run.h5", states=2, modes=3, tilt_map=True)
    truth = {"phase_rad": slice_phases(3, 24, 20).sum(axis=0) + 0.3}
    index = write_report(path, tmp_path / "report", truth=truth)
    assert index == tmp_path / "report" / "index.html"
    expected = (*ALWAYS, "object_states.png", "tilt_map.png", "truth.png")
    for name in expected:
        assert_png(index.parent / name)
    page = index.read_text(encoding="utf-8")
    for name in expected:
        assert f'src="{name}"' in page
    final_loss = 1.0 / 5 + 0.0123
    assert f"{final_loss:.4g}" in page
    assert "1.250, -0.500 mrad" in page
    assert "300 keV" in page and "21.4 mrad" in page
    assert "3 × 2.2 Å" in page and "6.6 Å" in page
    assert "ptyscope 0.1.0" in page and "cpu" in page
    assert "0.25 s" in page
    assert f"<pre>{html.escape(CONFIG_TEXT)}</pre>" in page
    assert "phase error vs truth (RMS)" in page
    assert "weights 0.500, 0.500" in page


def test_report_of_a_single_state_single_mode_single_iteration_run(tmp_path: Path) -> None:
    path = make_result(
        tmp_path / "tiny.h5", states=1, slices=1, modes=1, iterations=1, optional=False
    )
    with h5py.File(path, "a") as handle:
        del handle["positions_ang"]
        handle["positions_ang"] = handle["nominal_positions_ang"][()]  # no corrections
    index = write_report(path, tmp_path / "out")
    for name in ALWAYS:
        assert_png(index.parent / name)
    assert not (index.parent / "object_states.png").exists()
    assert not (index.parent / "truth.png").exists()
    page = index.read_text(encoding="utf-8")
    assert all(f'src="{name}"' in page for name in ALWAYS)
    assert f"{1.0123:.4g}" in page
    assert "100.0 %" in page
    assert "0 Å" in page  # RMS of the position corrections
    assert "no config stored" in page


def test_history_panels_without_history(tmp_path: Path) -> None:
    loss_figure(tmp_path / "loss.png", loss=None)
    parameter_figure(tmp_path / "parameters.png", history={"tilt_x_mrad": [0.5]})
    assert_png(tmp_path / "loss.png")
    assert_png(tmp_path / "parameters.png")


@pytest.mark.parametrize("missing", ["object", "probe", "nominal_positions_ang"])
def test_missing_dataset_is_named_with_the_file(tmp_path: Path, missing: str) -> None:
    path = make_result(tmp_path / "broken.h5", drop=missing)
    with pytest.raises(ValueError, match=rf"broken\.h5.*missing dataset\(s\) {missing}"):
        write_report(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truth_must_sit_on_the_object_grid(tmp_path: Path) -> None:
    path = make_result(tmp_path / "run.h5")
    with pytest.raises(ValueError, match=r"phase_rad.*\(24, 20\).*\(3, 3\)"):
        write_report(path, tmp_path / "out", truth={"phase_rad": np.zeros((3, 3))})
    with pytest.raises(ValueError, match=r"unknown key.*'phase'.*phase_rad"):
        write_report(path, tmp_path / "out", truth={"phase": np.zeros((24, 20))})


def test_comparison_figure_writes_rows_and_rejects_uneven_panels(tmp_path: Path) -> None:
    from matplotlib.image import imread

    rng = np.random.default_rng(0)
    panels = [(label, rng.normal(size=(40, 60))) for label in ("APP", "FPP", "APP", "FPP")]
    path = tmp_path / "compare.png"
    comparison_figure(path, panels, pixel_size_ang=(0.1, 0.1), rows=("0 mrad", "12 mrad"))
    assert imread(path).shape[0] > 100
    with pytest.raises(ValueError, match="3 panels do not fill 2 rows"):
        comparison_figure(path, panels[:3], pixel_size_ang=(0.1, 0.1), rows=("a", "b"))
    with pytest.raises(ValueError, match="at least one"):
        comparison_figure(path, [], pixel_size_ang=(0.1, 0.1))
