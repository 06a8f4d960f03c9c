"""Direct imaging: virtual detectors, centre of mass, scan rotation/transpose from the CoM
curl, and the integrated-CoM phase, against simulated SrTiO3 with known answers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from ptyscope.data.dataset import Calibration, Dataset4D, scan_grid_positions
from ptyscope.data.direct import (
    annular_mask,
    center_of_mass,
    com_to_scan_frame,
    detector_angles_mrad,
    icom_phase,
    standard_detectors,
    virtual_image,
    virtual_images,
)
from ptyscope.data.scan_rotation import (
    find_scan_rotation,
    find_scan_rotation_dataset,
    scan_curl,
    scan_divergence,
    with_scan_rotation,
)
from ptyscope.physics.constants import wavelength_ang

from ._simulated import A, probe_blurred_phase, srtio3, vacuum

LAMBDA = wavelength_ang(300e3)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _disk_dataset(shift_px: tuple[float, float], dk: float = 0.05) -> Dataset4D:
    """One pattern: a uniform disk of radius 10 px centred at (32, 32) + shift."""
    y, x = np.indices((64, 64))
    disk = ((y - 32 - shift_px[0]) ** 2 + (x - 32 - shift_px[1]) ** 2 <= 10.0**2).astype(float)
    calibration = Calibration(300e3, (0.5, 0.5), (dk, dk), semiangle_mrad=10 * dk * LAMBDA * 1e3)
    return Dataset4D(disk[None, None], calibration)


# ----------------------------------------------------------------------------- detectors
def test_detector_angles_and_masks_follow_the_calibration() -> None:
    dataset = _disk_dataset((0, 0))
    dataset = replace(
        dataset, calibration=replace(dataset.calibration, detector_center_px=(30.0, 35.0))
    )
    alpha = detector_angles_mrad(dataset)
    mrad_per_px = 0.05 * LAMBDA * 1e3
    assert alpha[30, 35] == 0
    assert alpha[30, 45] == pytest.approx(10 * mrad_per_px)
    assert alpha[34, 38] == pytest.approx(5 * mrad_per_px)
    ring = annular_mask(dataset, 4.5 * mrad_per_px, 5.5 * mrad_per_px)
    assert ring[34, 38] and ring[25, 35] and not ring[30, 35] and not ring[30, 41]
    with pytest.raises(ValueError, match="inner_mrad"):
        annular_mask(dataset, 3.0, 2.0)


def test_virtual_bf_abf_adf_of_a_disk() -> None:
    dataset = _disk_dataset((0, 0))
    detectors = standard_detectors(dataset.calibration)
    r = dataset.calibration.semiangle_mrad
    assert detectors == {"bf": (0.0, r), "abf": (r / 2, r), "adf": (1.5 * r, 5 * r)}
    images = virtual_images(dataset, detectors)
    disk_area = np.asarray(dataset.data).sum()
    assert images["bf"][0, 0] == disk_area
    assert images["adf"][0, 0] == 0
    y, x = np.indices((64, 64))
    in_abf = (np.hypot(y - 32, x - 32) >= 5) & (np.hypot(y - 32, x - 32) <= 10)
    assert images["abf"][0, 0] == in_abf.sum()
    assert virtual_image(dataset, 0, r)[0, 0] == disk_area


def test_adf_image_of_srtio3_peaks_on_the_cation_columns() -> None:
    dataset = srtio3((16, 16), (A / 8, A / 8)).dataset
    adf = virtual_image(dataset, 30.0, 80.0)
    # Columns: Sr at (0, 0) + a·(m, n), TiO at (a/2, a/2) + ...: scan indices multiples of 4.
    local_max = (ndimage.maximum_filter(adf, size=3, mode="wrap") == adf) & (adf > adf.mean())
    peaks = {(int(i), int(j)) for i, j in np.argwhere(local_max)}
    cations = {(i, j) for i in range(0, 16, 4) for j in range(0, 16, 4) if (i + j) % 8 == 0}
    assert cations <= peaks


# ----------------------------------------------------------------------------- CoM
@pytest.mark.parametrize("shift", [(0.0, 0.0), (2.0, -3.0), (-1.5, 0.5)])
def test_center_of_mass_of_a_shifted_disk(shift: tuple[float, float]) -> None:
    dataset = _disk_dataset(shift)
    com = center_of_mass(dataset)
    # The disk's pixel set is symmetric about its centre only for half-integer shifts;
    # 1e-9 for whole and half pixels.
    assert com[0, 0] == pytest.approx(np.asarray(shift) * 0.05, abs=1e-9)
    mrad = center_of_mass(dataset, units="mrad")
    assert mrad[0, 0] == pytest.approx(np.asarray(shift) * 0.05 * LAMBDA * 1e3, abs=1e-9)
    with pytest.raises(ValueError, match="units"):
        center_of_mass(dataset, units="px")


def test_center_of_mass_in_vacuum_is_zero_and_points_to_atoms_in_srtio3() -> None:
    assert np.abs(center_of_mass(vacuum((4, 4)).dataset)).max() < 1e-6
    dataset = srtio3((16, 16), (A / 8, A / 8)).dataset
    com = center_of_mass(dataset)
    # Half way between a Sr column (index (0, 0)) and a TiO column (4, 4) along the
    # diagonal the pull of both is balanced; one step (0.49 Å) off the Sr column towards
    # +x, the CoM points back towards it (−x).
    assert com[0, 1, 1] < 0 and com[1, 0, 0] < 0
    assert com[0, 15, 1] > 0 and com[15, 0, 0] > 0


# ----------------------------------------------------------------------------- rotation
def test_com_to_scan_frame_matches_the_scan_geometry() -> None:
    # The scan axes of scan_grid_positions, projected: axis 0 = ê_slow, axis 1 = ê_fast.
    for rho, transpose in [(0.0, False), (30.0, False), (-75.0, True), (120.0, True)]:
        positions = scan_grid_positions((2, 2), (1.0, 1.0), rho, scan_transpose=transpose)
        axis0, axis1 = positions[1, 0] - positions[0, 0], positions[0, 1] - positions[0, 0]
        np.testing.assert_allclose(com_to_scan_frame(axis0, rho, transpose), [1, 0], atol=1e-12)
        np.testing.assert_allclose(com_to_scan_frame(axis1, rho, transpose), [0, 1], atol=1e-12)


def test_curl_and_divergence_of_known_fields() -> None:
    i, j = np.indices((6, 7), dtype=np.float64)
    u0, u1 = 0.3 * i, 0.5 * j  # positions along the axes for steps (0.3, 0.5) Å
    gradient = np.stack([2 * u0 * u1, u0**2], axis=-1)  # ∇(u0² u1)
    rotational = np.stack([-u1, u0], axis=-1)  # curl 2, divergence 0
    assert np.abs(scan_curl(gradient, (0.3, 0.5))).max() < 1e-12
    np.testing.assert_allclose(scan_divergence(gradient, (0.3, 0.5)), 2 * (u1[:-1, :-1] + 0.25))
    np.testing.assert_allclose(scan_curl(rotational, (0.3, 0.5)), 2.0)
    np.testing.assert_allclose(scan_divergence(rotational, (0.3, 0.5)), 0.0, atol=1e-12)


ROTATION_STEP = (0.3, 0.36)  # anisotropic, so that a wrong step order would show


def _blind(dataset: Dataset4D, transpose_scan: bool = False) -> Dataset4D:
    """The data with a calibration that knows nothing of the scan rotation.

    With ``transpose_scan`` the scan axes of the data are exchanged, and so is the step
    pair: point (a, b) is then the original (b, a), at b·step_y·ê_slow + a·step_x·ê_fast
    = a·step'_y·ê_fast + b·step'_x·ê_slow with step' = (step_x, step_y), which is the
    transposed scan of dataset.py with the same ρ: the truth is (ρ, transpose=True).
    """
    data = np.asarray(dataset.data)
    step = dataset.calibration.scan_step_ang
    if transpose_scan:
        data, step = np.ascontiguousarray(data.transpose(1, 0, 2, 3)), (step[1], step[0])
    calibration = replace(dataset.calibration, scan_rotation_deg=0.0, scan_step_ang=step)
    return Dataset4D(data, calibration)


@pytest.mark.parametrize(
    ("rotation_deg", "transpose"),
    [(0.0, False), (30.0, False), (-75.0, False), (30.0, True), (-75.0, True), (0.0, True)],
)
def test_scan_rotation_and_transpose_recovered_within_1_degree(
    rotation_deg: float, transpose: bool
) -> None:
    simulated = srtio3((16, 16), ROTATION_STEP, rotation_deg=rotation_deg).dataset
    blind = _blind(simulated, transpose_scan=transpose)
    fit = find_scan_rotation_dataset(blind)
    error = (fit.rotation_deg - rotation_deg + 180) % 360 - 180
    assert abs(error) < 1.0, fit.rotation_deg
    assert fit.transpose is transpose
    # The right transpose makes the field (nearly) curl-free, the wrong one does not.
    right, wrong = fit.min_relative_curl[int(transpose)], fit.min_relative_curl[1 - int(transpose)]
    assert right < 0.06 and wrong > 0.25
    assert fit.sign_evidence < -0.5  # div CoM anti-correlated with the ADF image
    # The curve has its minima at ρ and ρ + 180° (the sign is decided separately).
    curve = fit.relative_curl[int(transpose)]
    assert abs(curve.min() - right) < 1e-3
    # The fitted calibration puts every scan point where the simulation put it.
    positions = with_scan_rotation(blind, fit).positions_ang()
    truth = simulated.positions_ang()
    if transpose:
        truth = truth.transpose(1, 0, 2)
    assert np.abs(positions - truth).max() < 16 * 0.36 * np.radians(1.0)


def test_transposed_scan_convention() -> None:
    """Swapping the data's scan axes and the step pair is (ρ, scan_transpose=True)."""
    positions = scan_grid_positions((5, 7), (0.3, 0.36), 30.0)
    swapped = scan_grid_positions((7, 5), (0.36, 0.3), 30.0, scan_transpose=True)
    np.testing.assert_allclose(swapped, positions.transpose(1, 0, 2), atol=1e-12)


def test_scan_rotation_sign_without_a_reference_image() -> None:
    simulated = srtio3((16, 16), ROTATION_STEP, rotation_deg=-75.0).dataset
    com = center_of_mass(_blind(simulated))
    fit = find_scan_rotation(com, ROTATION_STEP)  # sign from the skewness of div CoM
    assert abs(fit.rotation_deg + 75.0) < 1.0 and fit.sign_evidence < -1.0
    # A reference bright between the atoms instead of on them flips the answer.
    adf = virtual_image(_blind(simulated), 30.0, 80.0)
    flipped = find_scan_rotation(com, ROTATION_STEP, reference_image=-adf)
    assert abs(abs(flipped.rotation_deg - fit.rotation_deg) - 180.0) < 1e-6


def test_find_scan_rotation_validates_its_input() -> None:
    with pytest.raises(ValueError, match="com must have shape"):
        find_scan_rotation(np.zeros((2, 5, 2)), 0.3)
    with pytest.raises(ValueError, match="reference_image"):
        find_scan_rotation(np.zeros((5, 5, 2)), 0.3, reference_image=np.zeros((4, 5)))


# ----------------------------------------------------------------------------- iCoM
def test_icom_integrates_a_known_gradient_exactly() -> None:
    # φ = sum of periodic bumps on a 24 x 30 grid of steps (0.25, 0.3) Å; ⟨k⟩ = ∇φ / 2π.
    shape, step = (24, 30), (0.25, 0.3)
    q0 = np.fft.fftfreq(shape[0], step[0])[:, None]
    q1 = np.fft.fftfreq(shape[1], step[1])[None, :]
    rng = np.random.default_rng(5)
    spectrum = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) * np.exp(
        -(q0**2 + q1**2) / 0.5
    )
    spectrum[shape[0] // 2] = spectrum[:, shape[1] // 2] = 0  # no gradient at Nyquist
    phase = np.fft.ifft2(spectrum).real
    com = np.stack(
        [np.fft.ifft2(2j * np.pi * q * np.fft.fft2(phase)).real / (2 * np.pi) for q in (q0, q1)],
        axis=-1,
    )
    recovered = icom_phase(com, step, boundary="periodic")
    np.testing.assert_allclose(recovered, phase - phase.mean(), atol=1e-10 * np.abs(phase).max())
    mirrored = icom_phase(com, step)  # not exact for a periodic field, but close
    assert _pearson(mirrored, phase) > 0.95
    with pytest.raises(ValueError, match="boundary"):
        icom_phase(com, step, boundary="zero")


@pytest.mark.parametrize("boundary", ["periodic", "mirror"])
def test_icom_phase_is_the_probe_blurred_projected_potential(boundary: str) -> None:
    # A 32 x 32 scan of step a/16 over exactly 2 x 2 unit cells: periodic and sampled
    # finely enough (0.24 Å) for the ~0.6 Å probe.
    result = srtio3((32, 32), (A / 16, A / 16))
    dataset = result.dataset
    com = com_to_scan_frame(center_of_mass(dataset), 0.0, False)
    phase = icom_phase(com, dataset.calibration.scan_step_ang, boundary=boundary)
    truth = probe_blurred_phase(result, dataset.positions_ang())
    truth -= truth.mean()
    # Weak phase object (two unit cells): φ_iCoM = σ V ⊛ |P|² in radians; multislice over
    # 7.8 Å changes the amplitude by a few %.
    assert _pearson(phase, truth) > 0.99
    assert (phase * truth).sum() / (truth * truth).sum() == pytest.approx(1.0, abs=0.1)
    # The eight brightest maxima are the Sr and TiO columns (indices multiples of 8).
    local_max = ndimage.maximum_filter(phase, size=3, mode="wrap") == phase
    peaks = np.argwhere(local_max)
    brightest = peaks[np.argsort(phase[local_max])[::-1][:8]]
    assert {(int(i), int(j)) for i, j in brightest} == {
        (i, j) for i in range(0, 32, 8) for j in range(0, 32, 8) if (i + j) % 16 == 0
    }


def test_icom_of_a_rotated_scan_with_the_fitted_rotation() -> None:
    result = srtio3((16, 16), ROTATION_STEP, rotation_deg=30.0)
    blind = _blind(result.dataset)
    fit = find_scan_rotation_dataset(blind)
    com = com_to_scan_frame(center_of_mass(blind), fit.rotation_deg, fit.transpose)
    phase = icom_phase(com, ROTATION_STEP)  # mirror boundary: this scan is not periodic
    truth = probe_blurred_phase(result, result.dataset.positions_ang())
    truth -= truth.mean()
    assert _pearson(phase, truth) > 0.95
    # Ignoring the rotation θ integrates only the curl-free part of the rotated field,
    # cos θ·∇φ: the same image, weaker by cos 30°; ignoring the 180° reverses it.
    unrotated = icom_phase(center_of_mass(blind), ROTATION_STEP)
    ratio = (unrotated * phase).sum() / (phase * phase).sum()
    assert ratio == pytest.approx(np.cos(np.radians(30.0)), abs=0.05)
    reversed_ = icom_phase(-com, ROTATION_STEP)
    assert _pearson(reversed_, truth) < -0.95


def test_scan_rotation_of_a_bright_field_only_detector() -> None:
    # Cropped to 16 x 16 px (corners at 28.5 mrad): no pixel reaches the default ADF
    # (30-100 mrad), so the sign comes from the skewness of div CoM.
    blind = _blind(srtio3((16, 16), ROTATION_STEP, rotation_deg=30.0).dataset)
    cropped = blind.crop_detector(slice(24, 40), slice(24, 40))
    assert not annular_mask(cropped, *standard_detectors(cropped.calibration)["adf"]).any()
    fit = find_scan_rotation_dataset(cropped)
    assert abs(fit.rotation_deg - 30.0) < 1.0 and not fit.transpose
