"""Preflight: one test per class of bad input, asserting the message names the parameter,
the rule and the value; and good inputs pass (the checks are not always failing).

The dataset is synthetic and tiny: a 5 x 5 scan of 24 x 24 Poisson patterns of a
bright-field disk at 300 kV, 22 mrad, dk = 0.125 Å⁻¹ (8 Å probe window, disk radius
8.9 px), with a weak dark field.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ptyscope.config import (
    ConfigError,
    ReconstructionConfig,
    SimulationConfig,
    load_config,
)
from ptyscope.data.checks import Issue, PreflightError, PreflightWarning, check_dataset
from ptyscope.data.dataset import Calibration, Dataset4D
from ptyscope.physics.constants import wavelength_ang
from ptyscope.reconstruction.preflight import (
    check_reconstruction,
    check_simulation,
    probe_diameter_ang,
)

ENERGY_EV = 300e3
ALPHA_MRAD = 22.0
DK_INV_ANG = 0.125
DETECTOR = 24
SCAN = (5, 5)


def patterns(
    seed: int = 0, radius_px: float | None = None, bright: float = 100.0, dark: float = 0.5
) -> np.ndarray:
    """float32 (5, 5, 24, 24) Poisson counts of a disk centred on pixel (12, 12)."""
    if radius_px is None:
        radius_px = ALPHA_MRAD * 1e-3 / wavelength_ang(ENERGY_EV) / DK_INV_ANG
    y, x = np.indices((DETECTOR, DETECTOR)) - DETECTOR // 2
    mean = np.where(np.hypot(y, x) <= radius_px, bright, dark)
    rng = np.random.default_rng(seed)
    return rng.poisson(mean, size=(*SCAN, DETECTOR, DETECTOR)).astype(np.float32)


def setup(
    array: np.ndarray | None = None, **sections: dict[str, Any]
) -> tuple[ReconstructionConfig, Dataset4D]:
    """A config as its TOML would give it and the dataset the reader would return (the
    config's calibration overrides applied)."""
    raw: dict[str, Any] = {key: dict(value) for key, value in sections.items()}
    raw.setdefault("data", {}).setdefault("path", "scan.npy")
    config = ReconstructionConfig.model_validate(raw)
    options = config.data
    energy = options.energy_ev or ENERGY_EV
    dk = (DK_INV_ANG, DK_INV_ANG)
    if options.detector_pixel_mrad is not None:
        lam = wavelength_ang(energy)
        dk = (
            options.detector_pixel_mrad[0] * 1e-3 / lam,
            options.detector_pixel_mrad[1] * 1e-3 / lam,
        )
    calibration = Calibration(
        energy,
        options.scan_step_ang or (0.4, 0.4),
        dk,
        semiangle_mrad=options.semiangle_mrad or ALPHA_MRAD,
    )
    return config, Dataset4D(patterns() if array is None else array, calibration)


def failure(config: ReconstructionConfig, dataset: Dataset4D) -> str:
    with pytest.raises(PreflightError) as info:
        check_reconstruction(config, dataset)
    return str(info.value)


def line_with(message: str, parameter: str) -> str:
    """The one line of the message that names ``parameter``."""
    lines = [line for line in message.splitlines() if f"- {parameter}" in line]
    assert len(lines) == 1, message
    return lines[0]


# ----------------------------------------------------------------- good inputs pass
def test_good_config_and_dataset_pass_without_warnings() -> None:
    config, dataset = setup(
        data={"energy_ev": 300e3, "semiangle_mrad": 22.0, "scan_step_ang": [0.4, 0.4]},
        probe={"defocus_ang": 20.0, "modes": 3},
        object={"slices": 4, "slice_thickness_ang": 5.0},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_reconstruction(config, dataset) == []
    assert check_dataset(dataset) == []


def test_dark_subtraction_noise_is_not_negative_counts() -> None:
    """Zero-mean read noise around zero (an integrating detector) passes."""
    rng = np.random.default_rng(3)
    data = patterns() + rng.normal(0.0, 0.3, (*SCAN, DETECTOR, DETECTOR)).astype(np.float32)
    data -= 0.5  # the dark field's mean: now zero on average outside the disk
    assert data.min() < -1.0  # plenty of negative values
    config, dataset = setup(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_reconstruction(config, dataset) == []


def test_good_simulation_config_passes() -> None:
    config = SimulationConfig.model_validate(
        {
            "specimen": {"kind": "srtio3_slab", "thickness_ang": 40.0},
            "probe": {"energy_ev": 300e3, "semiangle_mrad": 22.0, "defocus_ang": 50.0},
            "scan": {"step_ang": [0.4, 0.4]},
            "sampling": {"pixel_ang": 0.1, "window_ang": 16.0},
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_simulation(config) == []


# ----------------------------------------------------------------- the data's values
def test_nan_is_refused_with_count_and_first_scan_index() -> None:
    data = patterns()
    data[1, 2, 5, 6] = np.nan
    data[3, 0, 0, 0] = np.nan
    message = failure(*setup(data))
    line = line_with(message, "data 'scan.npy' patterns")
    assert "must hold only finite values (no NaN or Inf)" in line
    assert "got 2 NaN and 0 Inf values in 2 patterns, first at scan (i, j) = (1, 2)" in line


def test_lazy_data_are_checked_block_by_block(tmp_path: Path) -> None:
    """An HDF5 dataset read one scan row at a time: counts and first index span blocks."""
    import h5py

    data = patterns()
    data[3, 1, 0, 0] = np.nan
    data[4, 2, 0, 0] = np.nan
    with h5py.File(tmp_path / "scan.h5", "w") as handle:
        handle["data"] = data
    with h5py.File(tmp_path / "scan.h5") as handle:
        lazy = Dataset4D(handle["data"], setup()[1].calibration)
        (issue,) = check_dataset(lazy, name="scan.h5", max_bytes=1)
    assert str(issue).startswith(
        "scan.h5 patterns must hold only finite values (no NaN or Inf), got 2 NaN and 0 Inf "
        "values in 2 patterns, first at scan (i, j) = (3, 1)"
    )


def test_inf_is_refused() -> None:
    data = patterns()
    data[0, 4, 12, 12] = np.inf
    line = line_with(failure(*setup(data)), "data 'scan.npy' patterns")
    assert "got 0 NaN and 1 Inf values in 1 pattern, first at scan (i, j) = (0, 4)" in line


def test_wrapped_negative_counts_are_refused() -> None:
    data = patterns()
    data[2, 3, 0, 5] = -32768.0  # an int16 wrap-around
    line = line_with(failure(*setup(data)), "data 'scan.npy' patterns")
    assert "must not hold values below minus the mean pattern's peak" in line
    assert "1 pattern with such values, first at scan (i, j) = (2, 3), lowest -3.277e+04" in line


def test_over_subtracted_dark_reference_is_refused() -> None:
    data = patterns() - 3.0  # the dark field's mean is 0.5: 2.5 counts too much removed
    line = line_with(failure(*setup(data)), "data 'scan.npy' patterns")
    assert "must average to >= 0 on every detector pixel within noise" in line
    radius = ALPHA_MRAD * 1e-3 / wavelength_ang(ENERGY_EV) / DK_INV_ANG
    y, x = np.indices((DETECTOR, DETECTOR)) - DETECTOR // 2
    dark_pixels = int((np.hypot(y, x) > radius).sum())
    assert f"got {dark_pixels} pixels below, e.g. pixel" in line  # every dark-field pixel
    assert "with mean -2." in line


def test_all_zero_patterns_are_refused() -> None:
    data = patterns()
    data[0, 3] = 0.0
    data[4, 4] = 0.0
    line = line_with(failure(*setup(data)), "data 'scan.npy' patterns")
    assert "must not be all zero (a dropped frame or a blanked beam)" in line
    assert "got 2 all-zero patterns of 25, first at scan (i, j) = (0, 3)" in line


def test_empty_patterns_at_very_low_dose_are_only_a_warning() -> None:
    """At ~3 counts per pattern counting statistics leave ~5% of patterns empty."""
    data = np.random.default_rng(5).poisson(3.0 / DETECTOR**2, (*SCAN, DETECTOR, DETECTOR))
    data[0, 0] = 0  # at least one empty pattern, whatever the draw
    issues = check_dataset(Dataset4D(data.astype(np.float32), setup()[1].calibration))
    (issue,) = [i for i in issues if "all zero" in i.rule]
    assert issue.severity == "warning"
    assert "counting statistics leave about" in str(issue)


# ----------------------------------------------------------------- shapes
def test_scan_positions_that_do_not_match_the_scan_are_refused() -> None:
    config, dataset = setup()
    dataset.scan_positions_ang = np.zeros((4, 5, 2))  # one scan row short
    line = line_with(failure(config, dataset), "data 'scan.npy' scan_positions_ang")
    assert "must have shape (scan_y, scan_x, 2) = (5, 5, 2)" in line
    assert "got shape (4, 5, 2)" in line


@pytest.mark.parametrize(
    ("key", "value"), [("scan_step_ang", [0.5, 0.5]), ("scan_transpose", True)]
)
def test_a_scan_override_that_explicit_positions_would_ignore_is_refused(
    key: str, value: object
) -> None:
    config, dataset = setup(data={key: value})
    dataset.scan_positions_ang = dataset.positions_ang()  # the file records positions
    line = line_with(failure(config, dataset), f"data.{key}")
    assert "has no effect when the file records explicit scan positions" in line
    assert line.endswith(f"got {tuple(value) if isinstance(value, list) else value}")


def test_config_scan_shape_that_does_not_match_the_data_is_refused() -> None:
    line = line_with(failure(*setup(data={"scan_shape": [4, 6]})), "data.scan_shape")
    assert "must match the data's scan (scan_y, scan_x) = (5, 5), got (4, 6)" in line


# ----------------------------------------------------------------- calibration vs detector
def test_bright_field_disk_that_does_not_fit_is_refused() -> None:
    # 45 mrad: the disk (radius 18 px) overflows the 24 px detector (11.5 px of room).
    line = line_with(failure(*setup(data={"semiangle_mrad": 45.0})), "data.semiangle_mrad")
    assert "must give a bright-field disk that fits on the 24x24 detector" in line
    assert "its radius α/(λ·dk) is (18.29, 18.29) px" in line
    assert "object pixel 1/(N·dk) = (0.3333, 0.3333) Å must be <= λ/(2α) = 0.2187 Å" in line
    assert line.endswith(
        "got 45 mrad; a semiangle or detector pixel in the wrong units, or a detector "
        "cropped inside the disk"
    )


def test_detector_pixel_inconsistent_with_the_measured_disk_is_refused() -> None:
    """A detector pixel 1.5x too large: the disk on the data is 1.5x the expected size."""
    lam = wavelength_ang(ENERGY_EV)
    mrad = 1.5 * DK_INV_ANG * lam * 1e3
    message = failure(*setup(data={"detector_pixel_mrad": [mrad, mrad]}))
    line = line_with(message, "calibration.semiangle_mrad with data.detector_pixel_mrad")
    assert "must put the bright-field disk where the mean pattern shows it" in line
    assert "must lie within [0.8, 1.25]" in line
    assert f"got 22 mrad with ({mrad:.4g}, {mrad:.4g}) mrad: α/(λ·dk) = 5.96 px expected" in line


def test_window_too_small_for_the_defocused_probe_is_refused() -> None:
    config, dataset = setup(probe={"defocus_ang": 200.0})
    line = line_with(failure(config, dataset), "probe.defocus_ang")
    diameter = probe_diameter_ang(ENERGY_EV, ALPHA_MRAD, 200.0)
    assert diameter == pytest.approx(2 * 200 * math.tan(0.022) + 1.22 * 0.019687 / 0.022, 1e-4)
    assert "must leave the probe inside the probe window 1/dk" in line
    assert "= 8 Å (the probe's diameter 2·|Δf|·tan α + 1.22·λ/α" in line
    assert f"is {diameter:.4g} Å" in line
    assert "got 200 Å" in line


def test_thick_object_counts_in_the_probe_size() -> None:
    """In focus at the entrance, but 20 slices of 10 Å spread the probe beyond 8 Å."""
    config, dataset = setup(object={"slices": 20, "slice_thickness_ang": 10.0})
    line = line_with(failure(config, dataset), "probe.defocus_ang")
    assert "over the object's depth z ∈ [0, 190] Å is 9.453 Å" in line


# ----------------------------------------------------------------- units that look wrong
def test_scan_step_in_the_wrong_units_is_refused() -> None:
    line = line_with(failure(*setup(data={"scan_step_ang": [40, 40]})), "data.scan_step_ang")
    assert "must be at most the probe window 8 Å" in line
    assert "got (40, 40) Å; if it is in pm: 40 pm = 0.4 Å" in line


def test_energy_in_kev_is_refused() -> None:
    message = failure(*setup(data={"energy_ev": 300}))
    line = line_with(message, "data.energy_ev")
    assert "must be >= 1000 eV" in line
    assert "got 300 eV; it looks like keV: 300 keV = 300000 eV" in line
    assert message.count("\n  - ") == 1  # no follow-on errors from the wrong wavelength


def test_semiangle_in_radians_is_refused() -> None:
    line = line_with(failure(*setup(data={"semiangle_mrad": 0.025})), "data.semiangle_mrad")
    assert "must be >= 0.1 mrad" in line
    assert "got 0.025 mrad; it looks like radians: 0.025 rad = 25 mrad" in line


def test_calibration_from_the_file_is_named_as_such() -> None:
    config, dataset = setup()
    dataset.calibration = Calibration(300.0, (0.4, 0.4), (DK_INV_ANG, DK_INV_ANG), 0, (0, 0), 22)
    assert "- calibration.energy_ev must be >= 1000 eV" in failure(config, dataset)


def test_every_error_is_listed_one_per_line() -> None:
    data = patterns()
    data[0, 0, 0, 0] = np.nan
    config, dataset = setup(
        data,
        data={"scan_step_ang": [40, 40]},
        object={"states": 26},
        optimization={"batch_size": "full"},
    )
    message = failure(config, dataset)
    assert message.startswith("reconstruction of 'scan.npy': 3 problem(s) to fix before")
    for parameter in ("data 'scan.npy' patterns", "data.scan_step_ang", "object.states"):
        line_with(message, parameter)


def test_unusual_values_are_warnings_not_errors() -> None:
    config, dataset = setup(data={"scan_step_ang": [1.5, 1.5]}, propagator={"tilt_x_mrad": 150.0})
    with pytest.warns(PreflightWarning) as record:
        issues = check_reconstruction(config, dataset)
    texts = [str(issue) for issue in issues]
    assert [str(w.message) for w in record] == texts
    assert any(t.startswith("data.scan_step_ang should be below the probe diameter") for t in texts)
    assert any(t.startswith("propagator.tilt_x_mrad should be within ±100 mrad") for t in texts)
    assert all(isinstance(issue, Issue) and issue.severity == "warning" for issue in issues)


def test_a_fitted_tilt_with_thick_planes_is_warned_about_with_the_spacing_to_use() -> None:
    def planes_warnings(**propagator: Any) -> list[str]:
        config, dataset = setup(
            probe={"defocus_ang": 20.0},
            object={"slices": 5, "slice_thickness_ang": 16.4},
            propagator=propagator,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PreflightWarning)
            issues = check_reconstruction(config, dataset)
        return [str(i) for i in issues if i.parameter == "propagator.plane_spacing_ang"]

    (text,) = planes_warnings(fit_tilt="global")
    assert text.startswith("propagator.plane_spacing_ang should keep the planes at most 9 Å")
    assert "got 1 plane(s) 16.4 Å apart" in text
    assert "set propagator.plane_spacing_ang = 4 (5 planes per slice" in text
    (text,) = planes_warnings(fit_tilt="map", substeps=1)
    # 2 planes 8.2 Å apart (the validated APP runs), the fixed propagator: no warning
    assert planes_warnings(fit_tilt="global", substeps=2) == []
    assert planes_warnings(fit_tilt="global", plane_spacing_ang=4.1) == []
    assert planes_warnings(fit_tilt="off") == []


def test_lbfgs_with_an_object_projection_is_warned_about() -> None:
    def lbfgs_warnings(**obj: Any) -> list[str]:
        config, dataset = setup(
            probe={"defocus_ang": 20.0}, object=obj, optimization={"optimizer": "lbfgs"}
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PreflightWarning)
            issues = check_reconstruction(config, dataset)
        return [str(i) for i in issues if i.parameter.startswith("object.")]

    (text,) = lbfgs_warnings()  # amplitude_limit is on by default
    assert text.startswith("object.amplitude_limit should be off with optimization.optimizer")
    assert "got object.amplitude_limit = true" in text
    (text,) = lbfgs_warnings(amplitude_limit=False, positive_phase=True)
    assert "got object.positive_phase = true" in text
    assert lbfgs_warnings(amplitude_limit=False) == []


def test_simulation_unit_traps_are_refused() -> None:
    config = SimulationConfig.model_validate(
        {
            "specimen": {"kind": "srtio3_slab"},
            "probe": {"energy_ev": 300, "semiangle_mrad": 0.025},
            "scan": {"step_ang": [40, 40]},
            "sampling": {"window_ang": 16.0, "slice_thickness_ang": 0.2},
        }
    )
    with pytest.raises(PreflightError) as info:
        check_simulation(config)
    message = str(info.value)
    assert "probe.energy_ev must be >= 1000 eV" in line_with(message, "probe.energy_ev")
    assert "0.025 rad = 25 mrad" in line_with(message, "probe.semiangle_mrad")
    assert "40 pm = 0.4 Å" in line_with(message, "scan.step_ang")
    assert "got 0.2 Å" not in message  # 0.2 Å slices are thin, not wrong


def test_simulation_grid_must_sample_the_probe() -> None:
    config = SimulationConfig.model_validate(
        {"specimen": {"kind": "srtio3_slab"}, "sampling": {"pixel_ang": 0.5}}
    )
    with pytest.raises(PreflightError) as info:
        check_simulation(config)
    line = line_with(str(info.value), "sampling.pixel_ang")
    assert "must be <= f·λ/(2α) = 0.2983 Å" in line and "got 0.5 Å" in line


# ----------------------------------------------------------------- unknown keys
@pytest.mark.parametrize(
    ("toml", "where", "value"),
    [
        ('[data]\npath = "a.npy"\n[optimisation]\niterations = 10\n', "optimisation", "10"),
        (
            '[data]\npath = "a.npy"\n[optimization]\niteratons = 10\n',
            "optimization.iteratons",
            "10",
        ),
        ('[data]\npath = "a.npy"\nenergy_kev = 300\n', "data.energy_kev", "300"),
    ],
)
def test_unknown_key_names_the_section_and_key(
    tmp_path: Path, toml: str, where: str, value: str
) -> None:
    path = tmp_path / "run.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, ReconstructionConfig)
    message = str(info.value)
    assert str(path) in message
    line = next(line for line in message.splitlines() if line.strip().startswith(where + ":"))
    assert "not permitted" in line or "unknown" in line  # the rule
    assert value in line  # the value received


def test_a_hot_pixel_does_not_pass_for_the_bright_field_disk() -> None:
    data = patterns()
    data[:, :, 2, 20] = 1e5  # a hot pixel in the dark field of every frame
    config, dataset = setup(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_reconstruction(config, dataset) == []


def test_off_centre_optical_axis_is_refused() -> None:
    config, dataset = setup()
    dataset.calibration = Calibration(
        ENERGY_EV,
        (0.4, 0.4),
        (DK_INV_ANG, DK_INV_ANG),
        semiangle_mrad=22.0,
        detector_center_px=(9.0, 12.0),
    )
    line = line_with(failure(config, dataset), "calibration.detector_center_px")
    assert "must be (12, 12) within 0.5 px (the optical axis must be at the detector's" in line
    assert "got (9, 12); run ptyscope preprocess" in line
