"""The bright-field (BF) disk: its centre and radius, and the detector calibration.

The probe-forming aperture of semiangle α appears on the detector as a disk of radius
r = α / (λ · dk) pixels around the optical axis. Measuring the disk on the mean pattern
(PACBED) therefore calibrates the detector:

    mrad per pixel = α / r,    Å⁻¹ per pixel dk = (α / r) · 10⁻³ / λ.

The disk is found in two steps: a threshold at half the (smoothed) maximum gives the
initial centre and radius (centroid and area of the largest bright region); then along
``num_rays`` rays from that centre the profile is sampled (bilinear interpolation) and the
point where it crosses ``outside + edge_level · (inside − outside)`` is located to a
fraction of a pixel; a least-squares circle through these edge points gives the centre
and radius (iterated, rejecting outlying rays). Each crossing lies on the same level
contour whatever the ray's origin, so the centre is not biased by the initial guess.
For a detector pixel straddling a hard aperture edge the recorded intensity is
proportional to the covered area, so the half level (default) lies on the edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from ptyscope._validation import require_in_range, require_positive

from .dataset import DEFAULT_BLOCK_BYTES, Dataset4D

__all__ = [
    "BrightFieldDisk",
    "calibrate_detector",
    "disk_centres",
    "find_bf_disk",
    "fit_circle",
]


@dataclass(frozen=True)
class BrightFieldDisk:
    """A bright-field disk on the detector.

    Attributes
    ----------
    center_px:
        (y, x) centre [detector px] (pixel centres at integers).
    radius_px:
        Radius [detector px].
    edge_rms_px:
        Root-mean-square distance of the edge points from the fitted circle [px].
    """

    center_px: tuple[float, float]
    radius_px: float
    edge_rms_px: float

    def pixel_mrad(self, semiangle_mrad: float) -> float:
        """Angular size of one detector pixel, α / r [mrad]."""
        require_positive("semiangle_mrad", semiangle_mrad, "mrad")
        return semiangle_mrad / self.radius_px


def fit_circle(points: np.ndarray) -> tuple[float, float, float]:
    """Least-squares circle through points (Kåsa's algebraic fit).

    Solves y² + x² + a·y + b·x + c = 0 in the least-squares sense: centre (−a/2, −b/2),
    radius sqrt(a²/4 + b²/4 − c). Unbiased for points spread all around the circle.

    Parameters
    ----------
    points:
        float (n, 2) of (y, x), n >= 3.

    Returns
    -------
    tuple
        (centre_y, centre_x, radius).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 3:
        raise ValueError(f"points must have shape (n >= 3, 2), got {pts.shape}")
    y, x = pts[:, 0], pts[:, 1]
    # Centre the points first for a well-conditioned system.
    my, mx = y.mean(), x.mean()
    y, x = y - my, x - mx
    system = np.column_stack([y, x, np.ones_like(y)])
    (a, b, c), *_ = np.linalg.lstsq(system, -(y**2 + x**2), rcond=None)
    radius = math.sqrt(max(a * a / 4 + b * b / 4 - c, 0.0))
    return float(my - a / 2), float(mx - b / 2), radius


def _initial_disk(pattern: np.ndarray) -> tuple[float, float, float]:
    """Centroid and equivalent radius of the largest region above half the maximum."""
    smooth = ndimage.gaussian_filter(pattern, 1.0)
    low = float(np.median(smooth))
    bright = smooth > low + 0.5 * (float(smooth.max()) - low)
    labels, count = ndimage.label(bright)
    if count == 0:
        raise ValueError("no bright-field disk found: the pattern is flat")
    sizes = ndimage.sum_labels(bright, labels, index=np.arange(1, count + 1))
    region = labels == 1 + int(np.argmax(sizes))
    cy, cx = ndimage.center_of_mass(region)
    return float(cy), float(cx), math.sqrt(float(region.sum()) / math.pi)


def _edge_points(
    pattern: np.ndarray, centre: tuple[float, float], radius: float, num_rays: int, level: float
) -> np.ndarray:
    """(num_rays, 2) (y, x) where each ray's profile crosses its edge level (NaN if none)."""
    theta = np.linspace(0.0, 2 * np.pi, num_rays, endpoint=False)
    step = 0.05
    r = np.arange(0.3 * radius, 1.7 * radius + 2.0, step)
    ys = centre[0] + np.sin(theta)[:, None] * r
    xs = centre[1] + np.cos(theta)[:, None] * r
    profile = ndimage.map_coordinates(pattern, [ys, xs], order=1, mode="nearest")
    inside = np.median(profile[:, (r > 0.4 * radius) & (r < 0.75 * radius)], axis=1)
    outside = np.median(profile[:, r > 1.3 * radius + 1.0], axis=1)
    threshold = outside + level * (inside - outside)
    # First sample, beyond 0.75 r, below the level; interpolate with the one before.
    start = int(np.searchsorted(r, 0.75 * radius))
    below = profile[:, start:] < threshold[:, None]
    found = below.any(axis=1) & (inside > outside)
    k = start + np.argmax(below, axis=1)
    rows = np.arange(num_rays)
    before, after = profile[rows, k - 1], profile[rows, k]
    fraction = (before - threshold) / np.where(before > after, before - after, 1.0)
    radial = r[k - 1] + step * np.clip(fraction, 0.0, 1.0)
    points = np.column_stack(
        [centre[0] + np.sin(theta) * radial, centre[1] + np.cos(theta) * radial]
    )
    points[~found] = np.nan
    return points


def find_bf_disk(
    pattern: np.ndarray,
    *,
    edge_level: float = 0.5,
    num_rays: int = 360,
    iterations: int = 3,
) -> BrightFieldDisk:
    """Centre and radius of the bright-field disk of a pattern (module docstring).

    Parameters
    ----------
    pattern:
        Real (det_y, det_x): a PACBED (:func:`ptyscope.data.preprocess.pacbed`) or one
        diffraction pattern.
    edge_level:
        Where between the outside (0) and inside (1) levels the edge lies. 0.5 suits a
        detector whose pixels integrate the intensity over a hard aperture edge. In a
        coherent simulation sampled at the aperture's own resolution (soft edge of
        linear *amplitude*, :func:`ptyscope.physics.probe.aperture`) the intensity is
        ¼ at α/λ and ½ about 0.2 px inside it (−1.2% on a 16 px radius); binning the
        detector by 2 halves that.
    num_rays:
        Number of radial profiles.
    iterations:
        Circle fits, each from the previous centre, dropping rays farther than 3 robust
        standard deviations from the circle.

    Returns
    -------
    BrightFieldDisk
        Sub-pixel centre (y, x) [px] and radius [px].

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:64, :64]
    >>> disk = find_bf_disk(((y - 30.3) ** 2 + (x - 33.6) ** 2 < 12.0**2).astype(float))
    >>> [round(v) for v in (*disk.center_px, disk.radius_px)]
    [30, 34, 12]
    """
    image = np.asarray(pattern, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"pattern must have shape (det_y, det_x), got {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError("pattern must be finite")
    require_in_range("edge_level", edge_level, 0.0, 1.0, inclusive=False)
    if num_rays < 8:
        raise ValueError(f"num_rays must be >= 8, got {num_rays}")
    cy, cx, radius = _initial_disk(image)
    rms = math.nan
    for _ in range(max(1, iterations)):
        points = _edge_points(image, (cy, cx), radius, num_rays, edge_level)
        points = points[np.all(np.isfinite(points), axis=1)]
        if len(points) < 8:
            raise ValueError(f"only {len(points)} edge points of the bright-field disk found")
        fy, fx, fr = fit_circle(points)
        distance = np.hypot(points[:, 0] - fy, points[:, 1] - fx) - fr
        spread = 1.4826 * float(np.median(np.abs(distance - np.median(distance))))
        keep = np.abs(distance) <= max(3 * spread, 1e-3)
        cy, cx, radius = fit_circle(points[keep]) if keep.sum() >= 8 else (fy, fx, fr)
        rms = float(
            np.sqrt(np.mean((np.hypot(points[keep, 0] - cy, points[keep, 1] - cx) - radius) ** 2))
        )
    return BrightFieldDisk((cy, cx), radius, rms)


def calibrate_detector(
    dataset: Dataset4D,
    semiangle_mrad: float | None = None,
    disk: BrightFieldDisk | None = None,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
) -> tuple[Dataset4D, BrightFieldDisk]:
    """Calibrate the detector from the bright-field disk of the PACBED.

    Sets ``detector_center_px`` to the disk centre and ``detector_pixel_inv_ang`` to
    dk = (α / r) · 10⁻³ / λ [Å⁻¹] (square pixels).

    Parameters
    ----------
    dataset:
        Data (read block-wise for the PACBED unless ``disk`` is given).
    semiangle_mrad:
        Probe semiangle α [mrad]; default the calibration's ``semiangle_mrad``.
    disk:
        A disk already measured; default :func:`find_bf_disk` of the PACBED.

    Returns
    -------
    tuple
        (dataset sharing the same data with the new calibration, the disk).
    """
    alpha = semiangle_mrad if semiangle_mrad is not None else dataset.calibration.semiangle_mrad
    if alpha is None:
        raise ValueError("semiangle_mrad is needed: pass it or set calibration.semiangle_mrad")
    require_positive("semiangle_mrad", alpha, "mrad")
    if disk is None:
        disk = find_bf_disk(dataset.mean_pattern(max_bytes))
    dk = disk.pixel_mrad(alpha) * 1e-3 / dataset.calibration.wavelength_ang
    calibration = replace(
        dataset.calibration,
        semiangle_mrad=float(alpha),
        detector_center_px=disk.center_px,
        detector_pixel_inv_ang=(dk, dk),
    )
    return replace(dataset, calibration=calibration), disk


def disk_centres(
    dataset: Dataset4D,
    disk: BrightFieldDisk | None = None,
    *,
    search_radius_px: float | None = None,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
) -> np.ndarray:
    """Centre of the bright-field disk in every pattern (soft-threshold centroid).

    Each pattern's pixels within ``search_radius_px`` of the PACBED disk centre get the
    weight w = clip((I − ¼L) / (½L), 0, 1), with L the pattern's median intensity within
    0.6 r of the PACBED centre (inside the disk, for shifts up to 0.4 r): w is 1 inside
    the disk and 0 outside whatever the intensity variations within it, so the centroid
    of w follows the disk's edge (the disk position) rather than the intensity inside it
    (the DPC signal).

    Parameters
    ----------
    dataset:
        Data (read block-wise).
    disk:
        The PACBED disk; default :func:`find_bf_disk` of the mean pattern.
    search_radius_px:
        Default 1.5 r + 2 px.

    Returns
    -------
    numpy.ndarray
        float64 (scan_y, scan_x, 2): (y, x) disk centre of every pattern [detector px].
    """
    if disk is None:
        disk = find_bf_disk(dataset.mean_pattern(max_bytes))
    reach = 1.5 * disk.radius_px + 2.0 if search_radius_px is None else search_radius_px
    require_positive("search_radius_px", reach, "px")
    y, x = np.indices(dataset.detector_shape, dtype=np.float64)
    distance = np.hypot(y - disk.center_px[0], x - disk.center_px[1])
    near = distance <= reach
    core = distance[near] <= 0.6 * disk.radius_px
    yy, xx = y[near], x[near]
    centres = np.empty((*dataset.scan_shape, 2))
    for rows, block in dataset.iter_scan_rows(max_bytes):
        values = block[..., near].astype(np.float64)  # (rows, scan_x, n)
        level = np.median(values[..., core], axis=-1, keepdims=True)
        weight = np.clip((values - 0.25 * level) / np.maximum(0.5 * level, 1e-300), 0.0, 1.0)
        total = np.maximum(weight.sum(axis=-1), 1e-300)
        centres[rows, :, 0] = (weight * yy).sum(axis=-1) / total
        centres[rows, :, 1] = (weight * xx).sum(axis=-1) / total
    return centres
