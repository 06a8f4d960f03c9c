"""Preprocessing: bad pixels, bright-field disk and detector calibration, descan, dose,
normalisation, PACBED; lazy (memmap, HDF5) data gives the same results as in memory."""

from __future__ import annotations

import math
from dataclasses import replace

import h5py
import numpy as np
import pytest

from ptyscope.data.dataset import Dataset4D
from ptyscope.data.preprocess import (
    calibrate_detector,
    correct_descan,
    disk_centres,
    estimate_dose,
    find_bad_pixels,
    find_bf_disk,
    fit_descan,
    measure_descan,
    normalise,
    pacbed,
    pixel_statistics,
    repair_bad_pixels,
    shift_patterns,
)
from ptyscope.physics.constants import wavelength_ang

from ._simulated import ENERGY_EV, SEMIANGLE_MRAD, A, srtio3, vacuum

SCAN = (16, 16)
STEP = (A / 8, A / 8)  # the 16 x 16 scan covers exactly 2 x 2 unit cells


def _with_data(dataset: Dataset4D, data: np.ndarray) -> Dataset4D:
    return replace(dataset, data=data)


def _bf_radius_px(dataset: Dataset4D) -> float:
    """The true disk radius α / (λ·dk) [px]."""
    dk = dataset.calibration.detector_pixel_inv_ang[0]
    return SEMIANGLE_MRAD * 1e-3 / wavelength_ang(ENERGY_EV) / dk


# ----------------------------------------------------------------------------- bad pixels
HOT = [(35, 30), (44, 37), (5, 50), (12, 33)]  # inside the disk, dark field, far corner
DEAD = [(32, 36), (26, 31)]  # inside the bright-field disk (r = 7.9 px around (32, 32))
FLICKERING = [(30, 35)]  # inside the disk


def _inject_bad_pixels(dataset: Dataset4D) -> np.ndarray:
    rng = np.random.default_rng(11)
    data = np.array(dataset.data, dtype=np.float32)
    mean = data.mean(axis=(0, 1))
    bright = np.percentile(mean, 99)
    for y, x in HOT:  # three times too bright, or 2% of the disk level where it is dark
        data[:, :, y, x] += max(3 * mean[y, x], 0.02 * bright)
    for y, x in DEAD:
        data[:, :, y, x] = 0
    for y, x in FLICKERING:  # right on average, but randomly off or doubled
        data[:, :, y, x] *= rng.choice([0.0, 2.0], size=dataset.scan_shape)
    return data


def _pixel_set(mask: np.ndarray) -> set[tuple[int, int]]:
    return {(int(y), int(x)) for y, x in np.argwhere(mask)}


@pytest.mark.parametrize("dose", [None, 2e4])
def test_find_bad_pixels_finds_exactly_the_injected_ones(dose: float | None) -> None:
    clean = srtio3(SCAN, STEP, dose_e_per_ang2=dose).dataset
    bad = find_bad_pixels(_with_data(clean, _inject_bad_pixels(clean)))
    assert _pixel_set(bad.hot) == set(HOT) | set(FLICKERING)
    assert _pixel_set(bad.dead) == set(DEAD)


@pytest.mark.parametrize("dose", [None, 2e4, 500.0])
def test_no_bad_pixels_in_clean_data(dose: float | None) -> None:
    # 500 e/Å² is < 1 count per pixel per pattern in the disk: zeros and lone counts are
    # Poisson noise, and dark pixels just outside the disk edge are not dead.
    clean = srtio3(SCAN, STEP, dose_e_per_ang2=dose).dataset
    bad = find_bad_pixels(clean)
    assert not bad.mask.any(), _pixel_set(bad.mask)


def test_repair_replaces_bad_pixels_by_their_neighbourhood() -> None:
    clean = srtio3(SCAN, STEP).dataset
    broken = _with_data(clean, _inject_bad_pixels(clean))
    bad = find_bad_pixels(broken)
    repaired = repair_bad_pixels(broken, bad)
    assert repaired.calibration == clean.calibration
    assert repaired.dtype == broken.dtype
    # Good pixels are untouched; bad ones get their neighbours' median. Inside the disk
    # the specimen makes neighbouring pixels differ by a few % of the disk level (its own
    # pixel varies by 5-10% over the scan), so the repair is good to that.
    good = ~bad.mask
    np.testing.assert_array_equal(repaired.data[..., good], broken.data[..., good])
    bright = np.percentile(clean.data.mean(axis=(0, 1)), 99)
    for y, x in HOT + DEAD + FLICKERING:
        error = np.abs(repaired.data[:, :, y, x] - clean.data[:, :, y, x]) / bright
        assert error.mean() < 0.02 and error.max() < 0.06, ((y, x), error.mean(), error.max())


def test_repair_of_counts_keeps_integers_and_uses_valid_neighbours_only() -> None:
    data = np.full((1, 2, 5, 5), 7, dtype=np.uint16)
    data[..., 2, 2] = 60000
    data[..., 2, 3] = 0  # a bad neighbour must not enter the median
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 2] = mask[2, 3] = True
    repaired = repair_bad_pixels(Dataset4D(data, srtio3(SCAN, STEP).dataset.calibration), mask)
    assert repaired.dtype == np.uint16
    np.testing.assert_array_equal(repaired.data, np.full_like(data, 7))


def test_repair_rejects_a_mask_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="detector shape"):
        repair_bad_pixels(srtio3(SCAN, STEP).dataset, np.zeros((3, 3), dtype=bool))


# ----------------------------------------------------------------------------- BF disk
SHIFTS = [(0.0, 0.0), (0.3, -0.45), (-0.27, 0.71), (1.5, 2.25), (-2.13, -0.62)]


def _binned_pacbeds() -> dict[str, Dataset4D]:
    # Window 8a with 2 x 2 binning: a disk of radius 15.9 px whose edge, like that of a
    # real detector, is the pixel-averaged intensity (the unbinned simulated edge is the
    # square of a linear ramp, whose half level is 0.2 px inside α/λ).
    return {
        "vacuum": vacuum((1, 1), window_ang=8 * A, binning=2).dataset,
        "SrTiO3": srtio3((4, 4), (A / 4, A / 4), window_ang=8 * A, binning=2).dataset,
    }


@pytest.mark.parametrize("specimen", ["vacuum", "SrTiO3"])
def test_find_bf_disk_centre_within_0p1_px_and_radius_within_1_percent(specimen: str) -> None:
    dataset = _binned_pacbeds()[specimen]
    pattern = dataset.mean_pattern()
    centre = np.asarray(dataset.detector_center_px)
    radius = _bf_radius_px(dataset)
    for shift in SHIFTS:
        disk = find_bf_disk(shift_patterns(pattern, np.asarray(shift)))
        error = np.asarray(disk.center_px) - centre - shift
        assert np.abs(error).max() < 0.1, (shift, error)
        assert abs(disk.radius_px / radius - 1) < 0.01, (shift, disk.radius_px, radius)


def test_find_bf_disk_on_an_area_sampled_hard_disk() -> None:
    # Pixel values = covered fraction of a hard disk of radius 12 px (8 x 8 supersampling).
    n, sub = 64, 8
    y, x = (np.mgrid[: n * sub, : n * sub] + 0.5) / sub - 0.5
    for cy, cx in [(30.3, 33.6), (31.77, 32.05)]:
        covered = ((y - cy) ** 2 + (x - cx) ** 2 < 12.0**2).astype(float)
        disk = find_bf_disk(covered.reshape(n, sub, n, sub).mean(axis=(1, 3)))
        assert np.allclose(disk.center_px, (cy, cx), atol=0.05)
        assert disk.radius_px == pytest.approx(12.0, rel=0.005)


def test_find_bf_disk_rejects_a_flat_pattern() -> None:
    with pytest.raises(ValueError, match="no bright-field disk"):
        find_bf_disk(np.ones((32, 32)))


def test_calibrate_detector_recovers_centre_and_pixel_size() -> None:
    truth = _binned_pacbeds()["SrTiO3"]
    data = shift_patterns(np.asarray(truth.data), np.broadcast_to([1.3, -0.7], (4, 4, 2)))
    wrong = replace(truth.calibration, detector_center_px=None, detector_pixel_inv_ang=0.5)
    calibrated, disk = calibrate_detector(Dataset4D(data, wrong))
    cy, cx = truth.detector_center_px
    assert calibrated.detector_center_px == pytest.approx((cy + 1.3, cx - 0.7), abs=0.1)
    dk_true = truth.calibration.detector_pixel_inv_ang[0]
    assert calibrated.calibration.detector_pixel_inv_ang[0] == pytest.approx(dk_true, rel=0.01)
    assert disk.pixel_mrad(SEMIANGLE_MRAD) == pytest.approx(
        truth.calibration.detector_pixel_mrad[0], rel=0.01
    )
    with pytest.raises(ValueError, match="semiangle_mrad"):
        calibrate_detector(Dataset4D(data, replace(wrong, semiangle_mrad=None)))


# ----------------------------------------------------------------------------- descan
def _injected_descan(order: int) -> np.ndarray:
    """(16, 16, 2) shifts [px]: 4-5 px across the scan, a plane or a quadratic."""
    i, j = np.indices(SCAN, dtype=np.float64)
    shifts = np.stack([0.8 + 0.2 * i - 0.07 * j, -1.1 + 0.05 * i + 0.25 * j], axis=-1)
    if order == 2:
        shifts += np.stack([0.01 * i * j, -0.012 * i**2 + 0.008 * j**2], axis=-1)
    return shifts


def test_shift_patterns_moves_content_and_preserves_counts() -> None:
    y, x = np.indices((32, 32))
    pattern = np.exp(-((y - 11.5) ** 2 + (x - 21.0) ** 2) / (2 * 2.0**2))
    shifts = np.array([[2.25, -3.5]])
    for method in ("fourier", "bilinear"):
        moved = shift_patterns(pattern[None], shifts, method)[0]
        centroid = np.array([(moved * y).sum(), (moved * x).sum()]) / moved.sum()
        assert centroid == pytest.approx([11.5 + 2.25, 21.0 - 3.5], abs=1e-4)
        # Fourier: exact; bilinear: the Gaussian's far tail leaves the detector.
        tolerance = 1e-12 if method == "fourier" else 1e-6
        assert moved.sum() == pytest.approx(pattern.sum(), rel=tolerance)
    with pytest.raises(ValueError, match="method"):
        shift_patterns(pattern[None], shifts, "nearest")


@pytest.mark.parametrize("specimen", ["vacuum", "SrTiO3"])
@pytest.mark.parametrize("order", [1, 2])
def test_descan_is_measured_and_removed_to_0p1_px(specimen: str, order: int) -> None:
    truth = vacuum(SCAN).dataset if specimen == "vacuum" else srtio3(SCAN, STEP).dataset
    centre = np.asarray(truth.detector_center_px)
    injected = _injected_descan(order)
    descanned = _with_data(truth, shift_patterns(np.asarray(truth.data), injected))

    model = measure_descan(descanned, order=order)
    # The DPC signal of SrTiO3 moves the disk centroid by up to 0.15 px; over whole unit
    # cells it averages out of the fit.
    assert np.abs(model.centres_px(SCAN) - centre - injected).max() < 0.1

    corrected = correct_descan(descanned, model, target_px=(30.0, 33.0))
    assert corrected.detector_center_px == (30.0, 33.0)
    # The corrected data are the original patterns moved to the new centre.
    expected = shift_patterns(np.asarray(truth.data), np.broadcast_to((-2.0, 1.0), (*SCAN, 2)))
    assert np.abs(corrected.data - expected).max() < 0.02 * expected.max()
    # The disk is centred: the refitted model is flat at the target ...
    refit = measure_descan(corrected, order=order).centres_px(SCAN)
    assert np.abs(refit - (30.0, 33.0)).max() < 0.1
    if specimen == "vacuum":  # ... and, in vacuum, every single pattern is.
        for pattern in corrected.data.reshape(-1, *corrected.detector_shape)[::17]:
            disk = find_bf_disk(pattern)
            assert np.abs(np.asarray(disk.center_px) - (30.0, 33.0)).max() < 0.1
    np.testing.assert_allclose(
        corrected.data.sum(axis=(2, 3)), truth.data.sum(axis=(2, 3)), rtol=1e-5
    )


def test_fit_descan_validates_its_input() -> None:
    with pytest.raises(ValueError, match="order"):
        fit_descan(np.zeros((4, 4, 2)), order=3)
    with pytest.raises(ValueError, match="shape"):
        fit_descan(np.zeros((4, 4)))


# ----------------------------------------------------------------------------- dose
def test_estimate_dose_recovers_the_simulated_dose() -> None:
    dose = 2e4
    dataset = srtio3(SCAN, STEP, dose_e_per_ang2=dose).dataset
    estimate = estimate_dose(dataset)
    # Poisson: 1.2e6 electrons in all, 0.1%; the detector misses < 1% (the band limit).
    assert estimate.dose_e_per_ang2 == pytest.approx(dose, rel=0.01)
    assert estimate.dose_e_per_ang2 <= dose * 1.003
    assert estimate.electrons_per_pattern == pytest.approx(dose * STEP[0] * STEP[1], rel=0.01)
    gained = estimate_dose(_with_data(dataset, dataset.data * 2.5), counts_per_electron=2.5)
    assert gained.dose_e_per_ang2 == pytest.approx(estimate.dose_e_per_ang2, rel=1e-6)
    assert gained.mean_counts_per_pattern == pytest.approx(2.5 * estimate.mean_counts_per_pattern)
    with pytest.raises(ValueError, match="counts_per_electron"):
        estimate_dose(dataset, counts_per_electron=0)


def test_normalise_by_mean_total_and_per_pattern() -> None:
    dataset = srtio3(SCAN, STEP, dose_e_per_ang2=2e4).dataset
    totals = dataset.data.sum(axis=(2, 3), dtype=np.float64)
    scaled = normalise(dataset)
    sums = scaled.data.sum(axis=(2, 3), dtype=np.float64)
    assert sums.mean() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(sums, totals / totals.mean(), rtol=1e-5)
    assert scaled.metadata["normalisation_counts"] == pytest.approx(totals.mean())
    np.testing.assert_allclose(
        normalise(dataset, per_pattern=True).data.sum(axis=(2, 3)), 1.0, rtol=1e-5
    )


def test_pacbed_of_a_region() -> None:
    dataset = srtio3(SCAN, STEP).dataset
    data = np.asarray(dataset.data, dtype=np.float64)
    np.testing.assert_allclose(pacbed(dataset), data.mean(axis=(0, 1)), rtol=1e-12)
    region = pacbed(dataset, slice(3, 9), slice(2, 5), max_bytes=1)
    np.testing.assert_allclose(region, data[3:9, 2:5].mean(axis=(0, 1)), rtol=1e-12)
    with pytest.raises(ValueError, match="unit-step"):
        pacbed(dataset, slice(0, 8, 2))


# ----------------------------------------------------------------------------- laziness
@pytest.mark.parametrize("storage", ["memmap", "hdf5"])
def test_lazy_data_gives_the_in_memory_results(storage: str, tmp_path: object) -> None:
    memory = _with_data(srtio3(SCAN, STEP).dataset, _inject_bad_pixels(srtio3(SCAN, STEP).dataset))
    data = np.asarray(memory.data)
    if storage == "memmap":
        lazy_data: object = np.memmap(
            f"{tmp_path}/data.bin", dtype=data.dtype, mode="w+", shape=data.shape
        )
        lazy_data[...] = data  # type: ignore[index]
    else:
        lazy_data = h5py.File(f"{tmp_path}/data.h5", "w").create_dataset("data", data=data)
    lazy = _with_data(memory, lazy_data)
    assert lazy.is_lazy
    one_row = data[0].nbytes  # blocks of one scan row
    mem_stats, lazy_stats = pixel_statistics(memory), pixel_statistics(lazy, one_row)
    np.testing.assert_allclose(lazy_stats.mean, mem_stats.mean, rtol=1e-12)
    np.testing.assert_allclose(lazy_stats.std, mem_stats.std, rtol=1e-9, atol=1e-15)
    bad = find_bad_pixels(lazy, max_bytes=one_row)
    np.testing.assert_array_equal(bad.mask, find_bad_pixels(memory).mask)
    np.testing.assert_array_equal(
        repair_bad_pixels(lazy, bad, max_bytes=one_row).data,
        repair_bad_pixels(memory, bad).data,
    )
    np.testing.assert_allclose(
        normalise(lazy, max_bytes=one_row).data, normalise(memory).data, rtol=1e-6
    )
    np.testing.assert_allclose(disk_centres(lazy, max_bytes=one_row), disk_centres(memory))
    model = fit_descan(disk_centres(memory))
    np.testing.assert_allclose(
        correct_descan(lazy, model, max_bytes=one_row).data,
        correct_descan(memory, model).data,
        atol=1e-6 * float(data.max()),
    )
    if isinstance(lazy_data, h5py.Dataset):
        lazy_data.file.close()


def test_zero_total_patterns_cannot_be_normalised() -> None:
    dataset = srtio3(SCAN, STEP).dataset
    with pytest.raises(ValueError, match="positive totals"):
        normalise(_with_data(dataset, np.zeros_like(dataset.data)))
    assert math.isfinite(estimate_dose(dataset).dose_e_per_ang2)
