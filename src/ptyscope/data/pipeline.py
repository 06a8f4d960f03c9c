"""``ptyscope preprocess``: detector file -> calibrated, corrected HDF5 dataset + PNG panel.

Steps, in order (each can be switched off in the config): read (lazily) -> repair hot and
dead pixels -> find the bright-field disk and calibrate the detector (centre, and mrad per
pixel from the known semiangle) -> remove the descan -> crop and bin -> solve the scan
rotation and transpose by CoM curl minimisation -> write. The panel shows the PACBED with
the fitted disk, a virtual bright field, the rotation curve and the iCoM phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ptyscope.config import PreprocessConfig
from ptyscope.io.datafile import write_dataset
from ptyscope.report.preprocess_figure import preprocess_figure

from .bad_pixels import find_bad_pixels, repair_bad_pixels
from .bright_field import BrightFieldDisk, calibrate_detector, find_bf_disk
from .dataset import Dataset4D
from .descan import correct_descan, measure_descan
from .direct import center_of_mass, com_to_scan_frame, icom_phase, virtual_images
from .preprocess import estimate_dose
from .readers import read_4dstem
from .scan_rotation import ScanRotationFit, find_scan_rotation_dataset, with_scan_rotation

__all__ = ["PreprocessReport", "run_preprocess"]


@dataclass
class PreprocessReport:
    """What preprocessing found, for the command's summary (also stored as metadata)."""

    output: Path
    figure: Path
    lines: list[str] = field(default_factory=list)


def _base_dir_path(path: Path, base_dir: Path) -> Path:
    return path if path.is_absolute() else base_dir / path


def run_preprocess(config: PreprocessConfig, base_dir: Path = Path()) -> PreprocessReport:
    """Run a preprocessing config; write the dataset and the panel; return a summary.

    Relative paths, the input's and the outputs', are taken from ``base_dir`` (the
    config's folder), as in every ptyscope config.
    """
    steps = config.steps
    source = _base_dir_path(config.input.path, base_dir)
    options = config.input.reader_options()
    if steps.calibrate_from_bf_disk and "detector_pixel_mrad" not in options:
        # Provisional: the bright-field disk sets the real pixel size below.
        options["detector_pixel_inv_ang"] = (1.0, 1.0)
    dataset = read_4dstem(source, config.input.format, **options)
    output = _base_dir_path(config.output, base_dir)
    figure_path = _base_dir_path(config.figure or config.output.with_suffix(".png"), base_dir)
    report = PreprocessReport(output, figure_path)
    say = report.lines.append
    say(f"read {source}: scan {dataset.scan_shape}, detector {dataset.detector_shape}")

    if steps.repair_bad_pixels:
        bad = find_bad_pixels(dataset)
        say(f"bad pixels: {int(bad.hot.sum())} hot, {int(bad.dead.sum())} dead, repaired")
        if bad.mask.any():
            dataset = repair_bad_pixels(dataset, bad)

    disk = find_bf_disk(dataset.mean_pattern())
    if steps.calibrate_from_bf_disk:
        semiangle = dataset.calibration.semiangle_mrad
        if semiangle is None:
            raise ValueError(
                "input.semiangle_mrad is needed to calibrate the detector from the "
                "bright-field disk (or set steps.calibrate_from_bf_disk = false and give "
                "input.detector_pixel_mrad)"
            )
        dataset, disk = calibrate_detector(dataset, semiangle, disk)
        say(
            f"BF disk: centre ({disk.center_px[0]:.2f}, {disk.center_px[1]:.2f}) px, radius "
            f"{disk.radius_px:.2f} px -> {semiangle / disk.radius_px:.4f} mrad/px"
        )

    if steps.correct_descan:
        model = measure_descan(dataset, steps.descan_order, disk)
        dataset = correct_descan(dataset, model)
        disk = find_bf_disk(dataset.mean_pattern())
        say(f"descan: order {steps.descan_order} model removed")

    dataset = _crop_and_bin(dataset, config)
    disk = find_bf_disk(dataset.mean_pattern())
    curve: ScanRotationFit | None = None
    if steps.find_scan_rotation:
        fit = find_scan_rotation_dataset(dataset)
        dataset = with_scan_rotation(dataset, fit)
        curve = fit
        say(
            f"scan rotation: {fit.rotation_deg:.2f}°, transpose "
            f"{'yes' if fit.transpose else 'no'} (relative curl "
            f"{min(fit.min_relative_curl):.3g}; sign evidence {fit.sign_evidence:.2f})"
        )

    dose = estimate_dose(dataset)
    say(
        f"dose: {dose.dose_e_per_ang2:.4g} e/Å² ({dose.electrons_per_pattern:.4g} e per "
        "pattern, counted electrons only)"
    )
    dataset = replace(
        dataset,
        metadata={
            **dataset.metadata,
            "source_file": str(source),
            "preprocessing": "; ".join(report.lines),
        },
    )
    write_dataset(output, dataset)
    _panel(dataset, disk, curve, figure_path)
    return report


def _crop_and_bin(dataset: Dataset4D, config: PreprocessConfig) -> Dataset4D:
    steps = config.steps
    if steps.detector_max_angle_mrad is not None:
        cy, cx = dataset.detector_center_px
        pixel = dataset.calibration.detector_pixel_mrad
        half_y = math.floor(steps.detector_max_angle_mrad / pixel[0])
        half_x = math.floor(steps.detector_max_angle_mrad / pixel[1])
        rows = slice(max(0, round(cy) - half_y), min(dataset.shape[2], round(cy) + half_y + 1))
        cols = slice(max(0, round(cx) - half_x), min(dataset.shape[3], round(cx) + half_x + 1))
        dataset = dataset.crop_detector(rows, cols)
    if steps.bin_detector > 1:
        dataset = dataset.bin_detector(steps.bin_detector)
    if steps.bin_scan > 1:
        dataset = dataset.bin_scan(steps.bin_scan)
    return dataset


def _panel(
    dataset: Dataset4D, disk: BrightFieldDisk, fit: ScanRotationFit | None, path: Path
) -> None:
    cal = dataset.calibration
    semiangle = cal.semiangle_mrad or disk.radius_px * cal.detector_pixel_mrad[0]
    bright = virtual_images(dataset, {"bf": (0.0, semiangle)})["bf"]
    com = center_of_mass(dataset)
    scan_com = com_to_scan_frame(com, cal.scan_rotation_deg, cal.scan_transpose)
    phase = icom_phase(scan_com, cal.scan_step_ang)  # array spacing is (step_y, step_x)
    angles = np.linspace(-180, 180, 361)
    curves: dict[str, np.ndarray] = {}
    best, transpose = cal.scan_rotation_deg, cal.scan_transpose
    if fit is not None:
        angles = fit.angles_deg
        curves = {"no transpose": fit.relative_curl[0], "transpose": fit.relative_curl[1]}
    preprocess_figure(
        path,
        pacbed=dataset.mean_pattern(),
        disk_center_px=disk.center_px,
        disk_radius_px=disk.radius_px,
        bright_field=bright,
        rotation_deg=angles,
        curl=curves,
        best_rotation_deg=best,
        best_transpose=transpose,
        icom_phase=phase,
        scan_step_ang=cal.scan_step_ang,
    )
