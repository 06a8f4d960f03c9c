"""Probe defocus from the parallax of bright-field images.

A probe focused at a distance Δf below a plane of the specimen (Δf > 0: underfocus, the
convention of :mod:`ptyscope.physics.aberrations`) illuminates that plane with rays that
cross it at r − Δf·θ on their way to detector angle θ. A virtual image formed from the
detector pixels around θ is therefore the specimen image displaced by +Δf·θ in the scan
frame (geometric optics, valid where the phase of the specimen varies slowly on the scale
of the probe; the basis of tilt-corrected bright-field imaging, e.g. Yu et al.,
Ultramicroscopy 253, 113786 (2023)). Measuring the displacement of the images of a grid of
detector blocks inside the bright-field disk and fitting it linearly in θ gives Δf with no
knowledge of the specimen. For a specimen of thickness t the images focus roughly at its
middle, so the defocus at the entrance surface is about Δf + t/2 (measured on simulated
SrTiO3 in ``tests/data/test_parallax.py``).

Periodic crystals make the cross-correlation repeat every lattice vector, so the
displacements are measured from the inner blocks outwards: each ring is searched near the
displacement that the fit of the rings inside it predicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ptyscope.analysis.registration import fourier_shift_image, register_translation

from .bright_field import BrightFieldDisk, find_bf_disk
from .dataset import Dataset4D
from .direct import com_to_scan_frame, detector_integrals

__all__ = ["ParallaxFit", "fit_parallax"]

#: Fraction of the bright-field disk radius used: the edge rings carry the aperture's
#: diffraction, not the specimen's parallax.
DISK_FRACTION = 0.85
#: Blocks across the used diameter: enough angles for the fit, enough pixels per image.
BLOCKS_ACROSS = 7
#: Search radius around the predicted displacement [scan px]: below half the shortest
#: lattice period sampled at a typical 0.4 Å step (3.9 Å / 0.4 Å / 2 ≈ 5 px).
SEARCH_PX = 2.5


@dataclass(frozen=True)
class ParallaxFit:
    """Result of :func:`fit_parallax`.

    Attributes
    ----------
    defocus_ang:
        Δf [Å] of the plane the bright-field images focus on (+ = underfocus).
    matrix_ang:
        float64 (2, 2): the general linear fit of the displacement [Å] (scan frame, rows
        along scan axes 0 and 1) per detector angle [rad] (scan frame). Δf·identity for a
        round probe and a correct scan rotation; its traceless symmetric part is twofold
        astigmatism, its antisymmetric part a rotation error.
    residual_ang:
        RMS misfit of the displacements to Δf·θ [Å].
    angles_mrad, displacements_ang:
        float64 (blocks, 2): each block's mean angle (scan frame) [mrad] and measured
        image displacement [Å].
    """

    defocus_ang: float
    matrix_ang: np.ndarray
    residual_ang: float
    angles_mrad: np.ndarray
    displacements_ang: np.ndarray


def _blocks(dataset: Dataset4D, disk: BrightFieldDisk) -> tuple[np.ndarray, np.ndarray]:
    """Pixel weights (det pixels, blocks) and mean detector-frame angle [mrad] per block."""
    (cy, cx), radius = disk.center_px, disk.radius_px
    reach = DISK_FRACTION * radius
    size = max(1, round(2 * reach / BLOCKS_ACROSS))
    ny, nx = dataset.detector_shape
    y, x = np.indices((ny, nx), dtype=np.float64)
    inside = np.hypot(y - cy, x - cx) < reach
    label = np.where(inside, (y // size) * (nx // size + 1) + (x // size), -1).astype(int)
    mrad_y, mrad_x = dataset.calibration.detector_pixel_mrad
    columns, angles = [], []
    for value in np.unique(label[label >= 0]):
        member = label == value
        if member.sum() < 0.5 * size * size:
            continue  # a sliver at the disk's edge: too few electrons
        columns.append(member.ravel().astype(np.float64))
        angles.append(((y[member].mean() - cy) * mrad_y, (x[member].mean() - cx) * mrad_x))
    return np.stack(columns, axis=1), np.asarray(angles)


def _standardised(images: np.ndarray) -> np.ndarray:
    centred = images - images.mean(axis=(0, 1))
    scaled: np.ndarray = centred / np.maximum(centred.std(axis=(0, 1)), 1e-300)
    return scaled


def fit_parallax(
    dataset: Dataset4D,
    *,
    disk: BrightFieldDisk | None = None,
    rotation_deg: float | None = None,
    transpose: bool | None = None,
) -> ParallaxFit:
    """Fit the defocus to the parallax of bright-field images (module docstring).

    Parameters
    ----------
    dataset:
        Data calibrated in angle (detector pixel) and scan step; read once, block-wise.
    disk:
        The bright-field disk; default :func:`find_bf_disk` of the mean pattern.
    rotation_deg, transpose:
        Scan rotation and transpose (:func:`~ptyscope.data.scan_rotation.find_scan_rotation`);
        default the dataset's calibration.

    Returns
    -------
    ParallaxFit
    """
    if min(dataset.scan_shape) < 8:
        raise ValueError(
            f"the scan must be at least 8 x 8 positions for a parallax fit, got "
            f"{dataset.scan_shape[0]} x {dataset.scan_shape[1]}"
        )
    cal = dataset.calibration
    rho = cal.scan_rotation_deg if rotation_deg is None else rotation_deg
    swap = cal.scan_transpose if transpose is None else transpose
    if disk is None:
        disk = find_bf_disk(dataset.mean_pattern())
    weights, detector_mrad = _blocks(dataset, disk)
    if weights.shape[1] < 7:
        raise ValueError(
            f"the bright-field disk ({disk.radius_px:.1f} px radius) holds only "
            f"{weights.shape[1]} detector blocks; a parallax fit needs >= 7"
        )
    images = _standardised(detector_integrals(dataset, weights)).transpose(2, 0, 1)
    angles = com_to_scan_frame(detector_mrad, rho, swap) * 1e-3  # [rad], scan frame
    step = np.asarray(cal.scan_step_ang, dtype=np.float64)
    order = np.argsort(np.hypot(angles[:, 0], angles[:, 1]))
    reference = images[order[0]]
    displacement = np.full(angles.shape, np.nan)
    matrix = np.zeros((2, 2))
    offset = np.zeros(2)
    for start in range(0, len(order), 4):  # rings of 4 blocks, from the centre outwards
        for block in order[start : start + 4]:
            guess = (angles[block] @ matrix.T + offset) / step  # predicted [scan px]
            moved = fourier_shift_image(images[block], (-guess[0], -guess[1]))
            dy, dx = register_translation(reference, moved, max_shift_px=SEARCH_PX)
            displacement[block] = (guess - np.array([dy, dx])) * step
        known = np.isfinite(displacement[:, 0])
        if known.sum() >= 3:
            design = np.c_[angles[known], np.ones(known.sum())]
            coef = np.linalg.lstsq(design, displacement[known], rcond=None)[0]
            matrix, offset = coef[:2].T, coef[2]
    centred_d = displacement - displacement.mean(axis=0)
    centred_a = angles - angles.mean(axis=0)
    defocus = float(np.sum(centred_d * centred_a) / np.sum(centred_a**2))
    residual = float(np.sqrt(np.mean(np.sum((centred_d - defocus * centred_a) ** 2, axis=1))))
    if not math.isfinite(defocus):
        raise ValueError("the parallax fit failed: the bright-field images are featureless")
    return ParallaxFit(defocus, matrix, residual, angles * 1e3, displacement)
