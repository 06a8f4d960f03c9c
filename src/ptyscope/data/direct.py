"""Direct imaging from 4D-STEM data: virtual detectors, centre of mass (DPC) and iCoM.

Detector geometry comes from the calibration: pixel p = (p_y, p_x) sees the scattering
vector k = (p − c) · dk [Å⁻¹], with c = ``detector_center_px`` (the optical axis) and
dk = ``detector_pixel_inv_ang``, i.e. the scattering angle α = 10³ λ|k| [mrad]. All
images are float64 (scan_y, scan_x) on the scan grid and are computed block-wise.

Centre of mass and phase (thin specimen, Waddell & Chapman 1979; Lazić et al. 2016): a
phase object exp(iφ) under a probe P(r − r_p) gives a pattern whose centre of mass is

    ⟨k⟩(r_p) = (1 / 2π) ∫ |P(r − r_p)|² ∇φ(r) d²r      [Å⁻¹, φ in rad]

(with the FFT sign convention of docs/conventions.md a phase ramp exp(2πi k₀·r) puts the
beam at +k₀). The CoM therefore points up the phase gradient, towards atom columns, and
∇φ_p = 2π⟨k⟩ with φ_p = φ ⊛ |P|²: the integrated CoM (iCoM) phase in radians,
φ_p = 2π ∫ ⟨k⟩·dr, is the specimen's phase (σ · projected potential) blurred by the
probe intensity. The CoM is measured in the detector frame; before integrating it on the
scan grid it must be expressed along the scan axes (:func:`com_to_scan_frame`, with the
rotation from :mod:`ptyscope.data.scan_rotation`).

References
----------
B. C. Waddell and J. N. Chapman, Optik 54, 83-96 (1979).
I. Lazić, E. G. T. Bosch and S. Lazar, Ultramicroscopy 160, 265-280 (2016).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ptyscope._validation import require_positive, require_positive_pair

from .dataset import DEFAULT_BLOCK_BYTES, Calibration, Dataset4D

__all__ = [
    "annular_mask",
    "center_of_mass",
    "com_to_scan_frame",
    "com_weights",
    "detector_angles_mrad",
    "detector_integrals",
    "icom_phase",
    "standard_detectors",
    "virtual_image",
    "virtual_images",
]


def detector_angles_mrad(dataset: Dataset4D) -> np.ndarray:
    """float64 (det_y, det_x): scattering angle α = 10³ λ|k| of each pixel [mrad]."""
    ky, kx = _detector_k(dataset)
    angles: np.ndarray = 1e3 * dataset.calibration.wavelength_ang * np.hypot(ky, kx)
    return angles


def _detector_k(dataset: Dataset4D) -> tuple[np.ndarray, np.ndarray]:
    """(k_y, k_x) of every detector pixel relative to the optical axis, (det_y, det_x)."""
    cy, cx = dataset.detector_center_px
    dky, dkx = dataset.calibration.detector_pixel_inv_ang
    ny, nx = dataset.detector_shape
    ky = (np.arange(ny, dtype=np.float64)[:, None] - cy) * dky
    kx = (np.arange(nx, dtype=np.float64)[None, :] - cx) * dkx
    return np.broadcast_to(ky, (ny, nx)), np.broadcast_to(kx, (ny, nx))


def annular_mask(dataset: Dataset4D, inner_mrad: float, outer_mrad: float) -> np.ndarray:
    """bool (det_y, det_x): pixels with inner <= α <= outer [mrad] (inner 0 = a disk)."""
    if not (0 <= inner_mrad < outer_mrad) or not math.isfinite(outer_mrad):
        raise ValueError(
            f"detector angles must satisfy 0 <= inner_mrad < outer_mrad (finite), got "
            f"inner_mrad={inner_mrad}, outer_mrad={outer_mrad}"
        )
    alpha = detector_angles_mrad(dataset)
    mask: np.ndarray = (alpha >= inner_mrad) & (alpha <= outer_mrad)
    return mask


def standard_detectors(
    calibration: Calibration,
    bf_mrad: float | None = None,
    adf_mrad: tuple[float, float] | None = None,
) -> dict[str, tuple[float, float]]:
    """Bright field, annular bright field and annular dark field, in mrad.

    BF: α <= r_bf; ABF: r_bf / 2 <= α <= r_bf; ADF: ``adf_mrad`` = (inner, outer), by
    default (1.5 r_bf, 5 r_bf). r_bf defaults to the probe semiangle.

    Returns
    -------
    dict
        ``{"bf": (0, r), "abf": (r/2, r), "adf": (inner, outer)}`` [mrad], for
        :func:`virtual_images`.
    """
    radius = bf_mrad if bf_mrad is not None else calibration.semiangle_mrad
    if radius is None:
        raise ValueError("bf_mrad is needed: pass it or set calibration.semiangle_mrad")
    require_positive("bf_mrad", radius, "mrad")
    adf = adf_mrad if adf_mrad is not None else (1.5 * radius, 5.0 * radius)
    return {"bf": (0.0, radius), "abf": (0.5 * radius, radius), "adf": adf}


def detector_integrals(
    dataset: Dataset4D, weights: np.ndarray, max_bytes: int = DEFAULT_BLOCK_BYTES
) -> np.ndarray:
    """Weighted sums of every pattern, Σ_p I_p w_pn, in one block-wise pass.

    Parameters
    ----------
    weights:
        float (det_y · det_x, n): one column of pixel weights per output (row-major
        pixel order).

    Returns
    -------
    numpy.ndarray
        float64 (scan_y, scan_x, n).
    """
    size = dataset.detector_shape[0] * dataset.detector_shape[1]
    if weights.ndim != 2 or weights.shape[0] != size:
        raise ValueError(
            f"weights must have shape (det_y · det_x, n) = ({size}, n), got {weights.shape}"
        )
    result = np.empty((*dataset.scan_shape, weights.shape[1]))
    for rows, block in dataset.iter_scan_rows(max_bytes):
        flat = block.reshape(*block.shape[:2], -1).astype(np.float64, copy=False)
        result[rows] = flat @ weights
    return result


def virtual_images(
    dataset: Dataset4D,
    detectors: Mapping[str, tuple[float, float]],
    max_bytes: int = DEFAULT_BLOCK_BYTES,
) -> dict[str, np.ndarray]:
    """Images of several annular virtual detectors in one pass over the data.

    Parameters
    ----------
    dataset:
        Calibrated data (optical axis and pixel size).
    detectors:
        name → (inner_mrad, outer_mrad), e.g. from :func:`standard_detectors`.

    Returns
    -------
    dict
        name → float64 (scan_y, scan_x): intensity summed over the detector's pixels.
    """
    names = list(detectors)
    weights = np.stack(
        [annular_mask(dataset, *detectors[name]).ravel() for name in names], axis=1
    ).astype(np.float64)
    images = detector_integrals(dataset, weights, max_bytes)
    return {name: images[..., n] for n, name in enumerate(names)}


def virtual_image(
    dataset: Dataset4D,
    inner_mrad: float,
    outer_mrad: float,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
) -> np.ndarray:
    """float64 (scan_y, scan_x): intensity within inner <= α <= outer [mrad]."""
    return virtual_images(dataset, {"image": (inner_mrad, outer_mrad)}, max_bytes)["image"]


def center_of_mass(
    dataset: Dataset4D,
    *,
    max_angle_mrad: float | None = None,
    units: str = "inv_ang",
    max_bytes: int = DEFAULT_BLOCK_BYTES,
) -> np.ndarray:
    """Centre of mass of every pattern relative to the optical axis (DPC signal).

    ⟨k⟩ = Σ_p I_p k_p / Σ_p I_p with k_p = (p − c)·dk, in the detector frame (module
    docstring).

    Parameters
    ----------
    dataset:
        Calibrated data (read block-wise).
    max_angle_mrad:
        Only pixels with α <= this count (limits the noise of the dark field); default
        all.
    units:
        ``"inv_ang"`` (Å⁻¹, no 2π) or ``"mrad"`` (10³ λ⟨k⟩).

    Returns
    -------
    numpy.ndarray
        float64 (scan_y, scan_x, 2): (y, x) centre of mass [Å⁻¹ or mrad]; NaN where a
        pattern has no counts.
    """
    if units not in ("inv_ang", "mrad"):
        raise ValueError(f"units must be 'inv_ang' or 'mrad', got {units!r}")
    moments = detector_integrals(dataset, com_weights(dataset, max_angle_mrad), max_bytes)
    return _com_from_moments(moments, dataset.calibration.wavelength_ang, units)


def com_weights(dataset: Dataset4D, max_angle_mrad: float | None = None) -> np.ndarray:
    """float64 (det_y · det_x, 3): weights 1, k_y, k_x [Å⁻¹] of the CoM moments."""
    ky, kx = _detector_k(dataset)
    keep = np.ones(dataset.detector_shape)
    if max_angle_mrad is not None:
        require_positive("max_angle_mrad", max_angle_mrad, "mrad")
        keep = (detector_angles_mrad(dataset) <= max_angle_mrad).astype(np.float64)
    return np.stack([keep, keep * ky, keep * kx], axis=-1).reshape(-1, 3)


def _com_from_moments(moments: np.ndarray, wavelength_ang: float, units: str) -> np.ndarray:
    """(..., 3) moments (Σ I, Σ I k_y, Σ I k_x) -> (..., 2) centre of mass."""
    with np.errstate(invalid="ignore", divide="ignore"):
        com: np.ndarray = moments[..., 1:] / moments[..., :1]
    if units == "mrad":
        com = com * (1e3 * wavelength_ang)
    return com


def com_to_scan_frame(com: np.ndarray, rotation_deg: float, transpose: bool) -> np.ndarray:
    """Express detector-frame vectors along the scan's array axes.

    With the scan geometry of :mod:`ptyscope.data.dataset` (ρ = ``rotation_deg``),
    array axis 0 (scan rows) runs along ê_slow = (cos ρ, −sin ρ) and axis 1 along
    ê_fast = (sin ρ, cos ρ) in the detector's (y, x) frame; with ``transpose`` the two
    are exchanged (axis 0 along ê_fast, axis 1 along ê_slow). The result's components
    are the projections v·ê_axis0 and v·ê_axis1, so a gradient in the specimen becomes
    the gradient with respect to the scan coordinates (i·step_y, j·step_x).

    Parameters
    ----------
    com:
        float (..., 2): (y, x) vectors in the detector frame.

    Returns
    -------
    numpy.ndarray
        float64 (..., 2): (axis 0, axis 1) components.

    Examples
    --------
    >>> import numpy as np
    >>> # ρ = 90°: the fast axis (axis 1) runs along +y, the slow axis along −x.
    >>> com_to_scan_frame(np.array([1.0, 0.0]), 90.0, False).round(12).tolist()
    [0.0, 1.0]
    """
    rho = math.radians(rotation_deg)
    slow = np.array([math.cos(rho), -math.sin(rho)])
    fast = np.array([math.sin(rho), math.cos(rho)])
    axes = np.stack([fast, slow] if transpose else [slow, fast])  # rows: axis 0, axis 1
    projected: np.ndarray = np.asarray(com, dtype=np.float64) @ axes.T
    return projected


def icom_phase(
    com_scan_inv_ang: np.ndarray,
    scan_step_ang: float | tuple[float, float],
    *,
    boundary: str = "mirror",
    highpass_inv_ang: float = 0.0,
) -> np.ndarray:
    """Integrated centre of mass: the probe-blurred phase φ_p [rad] on the scan grid.

    Solves ∇φ_p = 2π⟨k⟩ in the least-squares sense by Fourier integration:

        φ̂_p(q) = −i q·F̂(q) / (|q|² + q_hp²),   φ̂_p(0) = 0,

    with F = ⟨k⟩ [Å⁻¹] along the scan axes and q [Å⁻¹] the scan-grid frequencies
    (from ∂/∂r ↔ 2πi q: 2πi q φ̂ = 2π F̂). ``boundary="mirror"`` integrates the
    even extension of φ (F mirrored with the sign of its normal component flipped), which
    avoids the wrap-around of a non-periodic scan; ``"periodic"`` uses the field as it
    is (exact for a scan over whole periods of a crystal).

    Parameters
    ----------
    com_scan_inv_ang:
        float (scan_y, scan_x, 2): centre of mass along the scan axes 0 and 1 [Å⁻¹]
        (:func:`com_to_scan_frame` of :func:`center_of_mass`).
    scan_step_ang:
        (step along axis 0, step along axis 1) [Å].
    boundary:
        ``"mirror"`` or ``"periodic"``.
    highpass_inv_ang:
        q_hp [Å⁻¹] > 0 damps the lowest frequencies (slow drifts, residual descan).

    Returns
    -------
    numpy.ndarray
        float64 (scan_y, scan_x): φ_p [rad], zero mean.
    """
    field = np.asarray(com_scan_inv_ang, dtype=np.float64)
    if field.ndim != 3 or field.shape[2] != 2:
        raise ValueError(f"com_scan_inv_ang must have shape (scan_y, scan_x, 2), got {field.shape}")
    step = require_positive_pair("scan_step_ang", scan_step_ang, "Å")
    if highpass_inv_ang < 0 or not math.isfinite(highpass_inv_ang):
        raise ValueError(f"highpass_inv_ang must be >= 0 Å⁻¹, got {highpass_inv_ang}")
    ny, nx = field.shape[:2]
    f0, f1 = field[..., 0], field[..., 1]
    if boundary == "mirror":
        # φ even about both edges: F0 odd along axis 0 and even along axis 1, F1 the reverse.
        f0 = np.block([[f0, f0[:, ::-1]], [-f0[::-1], -f0[::-1, ::-1]]])
        f1 = np.block([[f1, -f1[:, ::-1]], [f1[::-1], -f1[::-1, ::-1]]])
    elif boundary != "periodic":
        raise ValueError(f"boundary must be 'mirror' or 'periodic', got {boundary!r}")
    q0 = np.fft.fftfreq(f0.shape[0], d=step[0])[:, None]
    q1 = np.fft.fftfreq(f0.shape[1], d=step[1])[None, :]
    denominator = q0**2 + q1**2 + highpass_inv_ang**2
    denominator[0, 0] = np.inf  # φ̂(0) = 0
    spectrum = -1j * (q0 * np.fft.fft2(f0) + q1 * np.fft.fft2(f1)) / denominator
    phase: np.ndarray = np.fft.ifft2(spectrum).real[:ny, :nx]
    centred: np.ndarray = phase - phase.mean()
    return centred
