"""Scan-to-detector rotation and transpose from the curl of the centre-of-mass field.

The CoM of a thin specimen is the gradient of the probe-blurred phase (:mod:`.direct`),
so expressed along the scan axes it must be curl-free. Using the geometry of
:mod:`ptyscope.data.dataset` (scan point (i, j) at i·step_y·ê_slow + j·step_x·ê_fast,
axes exchanged with ``scan_transpose``), the candidate field
F(ρ, T) = :func:`~ptyscope.data.direct.com_to_scan_frame` (CoM, ρ, T) is linear in
(cos ρ, sin ρ), and so are its finite-difference curl and divergence on the scan grid:

    curl(ρ) = cos ρ · X + sin ρ · Y,    div(ρ) = cos ρ · U + sin ρ · V.

The relative curl R(ρ) = ⟨curl²⟩ / ⟨curl² + div²⟩ (0 for a gradient field, 1 for a
purely rotational one) is a ratio of two quadratic forms in (cos ρ, sin ρ); its exact
minimum is the generalised eigenvector of the smallest eigenvalue, found for
T = False and T = True (a transpose is a mirror: only the right T reaches R ≈ 0). The
curve R(ρ) on a grid of angles is returned for plotting.

Curl-freeness cannot tell ρ from ρ + 180° (F → −F). For a positive potential the CoM
points towards the atoms, so div F < 0 at atom columns: the sign is chosen to make div F
anti-correlated with a reference image that is bright at the atoms (ADF/HAADF), or,
without one, negatively skewed (sharp negative minima at the columns).

Finite differences are taken at the centres of the cells between four scan points
(∂/∂i averaged over the two columns, ∂/∂j over the two rows), with the steps in Å.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import linalg

from ptyscope._validation import require_positive_pair

from .dataset import DEFAULT_BLOCK_BYTES, Dataset4D
from .direct import (
    annular_mask,
    com_to_scan_frame,
    com_weights,
    detector_integrals,
    standard_detectors,
)

__all__ = [
    "ScanRotationFit",
    "find_scan_rotation",
    "find_scan_rotation_dataset",
    "scan_curl",
    "scan_divergence",
    "with_scan_rotation",
]


def _cell_derivatives(
    component: np.ndarray, step: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """∂/∂(axis 0) and ∂/∂(axis 1) [per Å] at the cell centres, (scan_y − 1, scan_x − 1)."""
    d0 = (component[1:, :-1] - component[:-1, :-1] + component[1:, 1:] - component[:-1, 1:]) / (
        2 * step[0]
    )
    d1 = (component[:-1, 1:] - component[:-1, :-1] + component[1:, 1:] - component[1:, :-1]) / (
        2 * step[1]
    )
    return d0, d1


def scan_curl(field: np.ndarray, scan_step_ang: float | tuple[float, float]) -> np.ndarray:
    """Curl ∂F₁/∂u₀ − ∂F₀/∂u₁ of a field along the scan axes, at the cell centres.

    Parameters
    ----------
    field:
        float (scan_y, scan_x, 2): components along array axes 0 and 1.
    scan_step_ang:
        (step along axis 0, step along axis 1) [Å].

    Returns
    -------
    numpy.ndarray
        float64 (scan_y − 1, scan_x − 1) [field units / Å].

    Examples
    --------
    >>> import numpy as np
    >>> u0, u1 = np.indices((4, 5)) * 0.5
    >>> float(scan_curl(np.stack([-u1, u0], axis=-1), 0.5).mean())  # (−u₁, u₀): curl 2
    2.0
    """
    step = require_positive_pair("scan_step_ang", scan_step_ang, "Å")
    _, d1_f0 = _cell_derivatives(np.asarray(field[..., 0], dtype=np.float64), step)
    d0_f1, _ = _cell_derivatives(np.asarray(field[..., 1], dtype=np.float64), step)
    curl: np.ndarray = d0_f1 - d1_f0
    return curl


def scan_divergence(field: np.ndarray, scan_step_ang: float | tuple[float, float]) -> np.ndarray:
    """Divergence ∂F₀/∂u₀ + ∂F₁/∂u₁ at the cell centres (as :func:`scan_curl`)."""
    step = require_positive_pair("scan_step_ang", scan_step_ang, "Å")
    d0_f0, _ = _cell_derivatives(np.asarray(field[..., 0], dtype=np.float64), step)
    _, d1_f1 = _cell_derivatives(np.asarray(field[..., 1], dtype=np.float64), step)
    divergence: np.ndarray = d0_f0 + d1_f1
    return divergence


@dataclass(frozen=True)
class ScanRotationFit:
    """Result of :func:`find_scan_rotation`.

    Attributes
    ----------
    rotation_deg:
        ρ in [−180, 180) [deg], in the convention of ``Calibration.scan_rotation_deg``.
    transpose:
        In the convention of ``Calibration.scan_transpose``.
    angles_deg:
        float64 (n,): the grid of ρ of the curve.
    relative_curl:
        float64 (2, n): R(ρ) for transpose False (row 0) and True (row 1).
    min_relative_curl:
        (R_min for transpose False, R_min for transpose True).
    sign_evidence:
        After the choice of sign: the Pearson correlation of div F with the reference
        image, or (without one) the skewness of div F; negative, and the more negative
        the more reliable the 180° choice.
    """

    rotation_deg: float
    transpose: bool
    angles_deg: np.ndarray
    relative_curl: np.ndarray
    min_relative_curl: tuple[float, float]
    sign_evidence: float


def _quadratic_forms(
    com: np.ndarray, step: tuple[float, float], transpose: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """2 × 2 forms of ⟨curl²⟩ and ⟨div²⟩ in (cos ρ, sin ρ), and the div maps U, V."""
    basis = [com_to_scan_frame(com, angle, transpose) for angle in (0.0, 90.0)]
    curls = np.stack([scan_curl(f, step).ravel() for f in basis])  # (2, cells)
    divs = np.stack([scan_divergence(f, step) for f in basis])  # (2, n − 1, m − 1)
    flat_divs = divs.reshape(2, -1)
    valid = np.all(np.isfinite(curls), axis=0) & np.all(np.isfinite(flat_divs), axis=0)
    if valid.sum() < 4:
        raise ValueError("the CoM field has too few finite values to find the scan rotation")
    curl_form = curls[:, valid] @ curls[:, valid].T / valid.sum()
    div_form = flat_divs[:, valid] @ flat_divs[:, valid].T / valid.sum()
    return curl_form, div_form, divs[0], divs[1]


def _wrap_deg(angle: float) -> float:
    """Angle in [−180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def _skewness(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    v = v - v.mean()
    spread = float(np.sqrt(np.mean(v * v)))
    return float(np.mean(v**3)) / spread**3 if spread > 0 else 0.0


def find_scan_rotation(
    com: np.ndarray,
    scan_step_ang: float | tuple[float, float],
    reference_image: np.ndarray | None = None,
    num_angles: int = 360,
) -> ScanRotationFit:
    """Scan rotation and transpose that make the CoM field curl-free (module docstring).

    Parameters
    ----------
    com:
        float (scan_y, scan_x, 2): (y, x) centre of mass in the detector frame (any
        units; :func:`ptyscope.data.direct.center_of_mass`). A residual descan that is
        not a pure gradient biases the result: correct it first.
    scan_step_ang:
        (step_y, step_x) of the calibration [Å] (steps along scan axes 0 and 1).
    reference_image:
        float (scan_y, scan_x) bright at atom columns (ADF); resolves ρ vs ρ + 180°.
    num_angles:
        Grid points of the returned curve over [−180°, 180°).

    Returns
    -------
    ScanRotationFit
    """
    field = np.asarray(com, dtype=np.float64)
    if field.ndim != 3 or field.shape[2] != 2 or min(field.shape[:2]) < 3:
        raise ValueError(f"com must have shape (scan_y >= 3, scan_x >= 3, 2), got {field.shape}")
    step = require_positive_pair("scan_step_ang", scan_step_ang, "Å")
    if reference_image is not None and np.shape(reference_image) != field.shape[:2]:
        raise ValueError(
            f"reference_image must have the scan shape {field.shape[:2]}, "
            f"got {np.shape(reference_image)}"
        )
    angles = np.linspace(-180.0, 180.0, num_angles, endpoint=False)
    vectors = np.stack([np.cos(np.radians(angles)), np.sin(np.radians(angles))])  # (2, n)
    curves, minima, solutions = [], [], []
    for transpose in (False, True):
        curl_form, div_form, u_div, v_div = _quadratic_forms(field, step, transpose)
        total = curl_form + div_form
        curves.append(
            np.einsum("in,ij,jn->n", vectors, curl_form, vectors)
            / np.einsum("in,ij,jn->n", vectors, total, vectors)
        )
        values, eigenvectors = linalg.eigh(curl_form, total)
        minima.append(float(values[0]))
        solutions.append((eigenvectors[:, 0], u_div, v_div))
    transpose = bool(minima[1] < minima[0])
    (c, s), u_div, v_div = solutions[int(transpose)]
    rotation = math.degrees(math.atan2(s, c))
    divergence = (c * u_div + s * v_div) / math.hypot(c, s)
    if reference_image is not None:
        ref = np.asarray(reference_image, dtype=np.float64)
        cells = 0.25 * (ref[:-1, :-1] + ref[1:, :-1] + ref[:-1, 1:] + ref[1:, 1:])
        evidence = _pearson(divergence, cells)
    else:
        evidence = _skewness(divergence)
    if evidence > 0:
        rotation, evidence = rotation + 180.0, -evidence
    return ScanRotationFit(
        rotation_deg=_wrap_deg(rotation),
        transpose=transpose,
        angles_deg=angles,
        relative_curl=np.stack(curves),
        min_relative_curl=(minima[0], minima[1]),
        sign_evidence=evidence,
    )


def find_scan_rotation_dataset(
    dataset: Dataset4D,
    *,
    adf_mrad: tuple[float, float] | None = None,
    max_angle_mrad: float | None = None,
    num_angles: int = 360,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
) -> ScanRotationFit:
    """:func:`find_scan_rotation` of a dataset: CoM and an ADF reference in one pass.

    ``adf_mrad`` defaults to (1.5 α, 5 α) with α the calibrated semiangle
    (:func:`~ptyscope.data.direct.standard_detectors`); if the detector has no pixels
    there, the sign comes from the skewness of div CoM. ``max_angle_mrad`` limits the
    CoM to the inner part of the detector. The dataset's own rotation is ignored: the
    result is the absolute rotation of the scan relative to the detector.
    """
    if adf_mrad is None:
        adf_mrad = standard_detectors(dataset.calibration)["adf"]
    adf = annular_mask(dataset, *adf_mrad).reshape(-1, 1).astype(np.float64)
    weights = np.concatenate([com_weights(dataset, max_angle_mrad), adf], axis=1)
    moments = detector_integrals(dataset, weights, max_bytes)
    with np.errstate(invalid="ignore", divide="ignore"):
        com = moments[..., 1:3] / moments[..., :1]
    reference = moments[..., 3] if adf.any() else None  # no ADF pixels: use the skewness
    return find_scan_rotation(
        com, dataset.calibration.scan_step_ang, reference, num_angles=num_angles
    )


def with_scan_rotation(dataset: Dataset4D, fit: ScanRotationFit) -> Dataset4D:
    """The dataset (same data) with the fitted rotation and transpose in its calibration.

    Explicit ``scan_positions_ang`` are dropped: they were expressed in the frame of the
    old calibration; the grid of the new one replaces them.
    """
    calibration = replace(
        dataset.calibration, scan_rotation_deg=fit.rotation_deg, scan_transpose=fit.transpose
    )
    return replace(dataset, calibration=calibration, scan_positions_ang=None)
