"""Descan correction: put the bright-field disk back on one detector pixel everywhere.

Imperfect descan coils leave the diffraction pattern moving on the detector as the probe
scans. The movement is smooth in the scan indices (i, j) (row, column), so it is modelled
by a low-order polynomial

    c(i, j) = a + B·(i, j) [+ quadratic terms i², i·j, j²]     [(y, x) detector px]

fitted by least squares to the disk centre of every pattern
(:func:`ptyscope.data.bright_field.disk_centres`). The specimen also moves the disk's
centre of mass (the DPC signal), but on the atomic scale: over a scan of several unit
cells it averages out of a low-order fit, and the soft-threshold centroid used to locate
the disk follows its edge rather than the intensity inside it.

:func:`correct_descan` then shifts each pattern by ``target − c(i, j)`` with a sub-pixel
Fourier shift (total counts preserved exactly) or bilinear interpolation (counts
preserved except what leaves the detector).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage

from .bright_field import BrightFieldDisk, disk_centres
from .dataset import DEFAULT_BLOCK_BYTES, Dataset4D, output_array

__all__ = ["DescanModel", "correct_descan", "fit_descan", "measure_descan", "shift_patterns"]


def _design(scan_shape: tuple[int, int], order: int) -> np.ndarray:
    """float64 (scan_y · scan_x, terms): 1, i, j [, i², i·j, j²] at every scan point."""
    i, j = np.indices(scan_shape, dtype=np.float64)
    i, j = i.ravel(), j.ravel()
    columns = [np.ones_like(i), i, j]
    if order == 2:
        columns += [i * i, i * j, j * j]
    return np.column_stack(columns)


@dataclass(frozen=True)
class DescanModel:
    """Smooth model of the disk centre over the scan.

    Attributes
    ----------
    coefficients:
        float64 (terms, 2): the (y, x) centre [detector px] is
        Σ_t coefficients[t] · term_t(i, j), terms (1, i, j) for order 1 and
        (1, i, j, i², i·j, j²) for order 2, with i, j the scan row and column indices.
    order:
        1 (plane) or 2 (quadratic).
    residual_rms_px:
        Root-mean-square distance of the measured centres from the model [px]
        (includes the DPC signal of the specimen).
    """

    coefficients: np.ndarray
    order: int
    residual_rms_px: float = 0.0

    def centres_px(self, scan_shape: tuple[int, int]) -> np.ndarray:
        """float64 (scan_y, scan_x, 2): the modelled (y, x) disk centre [detector px]."""
        values: np.ndarray = _design(scan_shape, self.order) @ self.coefficients
        return values.reshape(*scan_shape, 2)


def fit_descan(centres_px: np.ndarray, order: int = 1) -> DescanModel:
    """Least-squares fit of a plane (order 1) or quadratic (order 2) to disk centres.

    Parameters
    ----------
    centres_px:
        float (scan_y, scan_x, 2): measured (y, x) disk centre of every pattern [px].
    order:
        1 or 2.

    Examples
    --------
    >>> import numpy as np
    >>> i, j = np.indices((5, 6))
    >>> centres = np.stack([10 + 0.1 * i, 20 - 0.2 * j], axis=-1)
    >>> fit_descan(centres).coefficients.round(6).tolist()
    [[10.0, 20.0], [0.1, 0.0], [0.0, -0.2]]
    """
    centres = np.asarray(centres_px, dtype=np.float64)
    if centres.ndim != 3 or centres.shape[2] != 2:
        raise ValueError(f"centres_px must have shape (scan_y, scan_x, 2), got {centres.shape}")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (plane) or 2 (quadratic), got {order!r}")
    scan_shape = (centres.shape[0], centres.shape[1])
    design = _design(scan_shape, order)
    if design.shape[0] < design.shape[1]:
        raise ValueError(f"a scan of {scan_shape} points is too small for an order-{order} fit")
    values = centres.reshape(-1, 2)
    coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
    residual = values - design @ coefficients
    rms = float(np.sqrt(np.mean(np.sum(residual**2, axis=1))))
    return DescanModel(coefficients, order, rms)


def measure_descan(
    dataset: Dataset4D,
    order: int = 1,
    disk: BrightFieldDisk | None = None,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
) -> DescanModel:
    """Measure every pattern's disk centre and fit the descan model (module docstring)."""
    return fit_descan(disk_centres(dataset, disk, max_bytes=max_bytes), order)


def shift_patterns(
    patterns: np.ndarray, shifts_px: np.ndarray, method: str = "fourier"
) -> np.ndarray:
    """Translate each pattern by its own sub-pixel shift.

    Parameters
    ----------
    patterns:
        Real (..., det_y, det_x).
    shifts_px:
        float (..., 2): (y, x) shift of each pattern [px]; content at p moves to p + shift.
    method:
        ``"fourier"``: multiply the spectrum by exp(−2πi(f_y·s_y + f_x·s_x)) (periodic:
        what leaves one edge enters the opposite one; the total is preserved exactly;
        sharp features ring slightly). ``"bilinear"``: linear interpolation, zero outside
        the detector (non-negative data stay non-negative).

    Returns
    -------
    numpy.ndarray
        float64 of the same shape as ``patterns``.

    Examples
    --------
    >>> import numpy as np
    >>> pattern = np.zeros((1, 8, 8))
    >>> pattern[0, 2, 3] = 1.0
    >>> moved = shift_patterns(pattern, np.array([[1.0, 2.0]]))
    >>> [int(v) for v in np.unravel_index(moved.argmax(), moved.shape)[1:]]
    [3, 5]
    """
    data = np.asarray(patterns, dtype=np.float64)
    shifts = np.asarray(shifts_px, dtype=np.float64)
    if data.ndim < 2 or shifts.shape != (*data.shape[:-2], 2):
        raise ValueError(
            f"shifts_px must have shape (..., 2) = {(*data.shape[:-2], 2)} for patterns of "
            f"shape {data.shape}, got {shifts.shape}"
        )
    ny, nx = data.shape[-2:]
    if method == "fourier":
        fy = np.fft.fftfreq(ny)[:, None]
        fx = np.fft.rfftfreq(nx)[None, :]
        phase = np.exp(
            -2j * np.pi * (shifts[..., 0, None, None] * fy + shifts[..., 1, None, None] * fx)
        )
        shifted: np.ndarray = np.fft.irfft2(np.fft.rfft2(data) * phase, s=(ny, nx))
        return shifted
    if method == "bilinear":
        flat = data.reshape(-1, ny, nx)
        moves = shifts.reshape(-1, 2)
        out = np.empty_like(flat)
        for n in range(flat.shape[0]):
            out[n] = ndimage.shift(flat[n], moves[n], order=1, mode="constant", cval=0.0)
        return out.reshape(data.shape)
    raise ValueError(f"method must be 'fourier' or 'bilinear', got {method!r}")


def correct_descan(
    dataset: Dataset4D,
    model: DescanModel,
    *,
    target_px: tuple[float, float] | None = None,
    method: str = "fourier",
    out: Any | None = None,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Dataset4D:
    """Shift every pattern so that its modelled disk centre lands on ``target_px``.

    Parameters
    ----------
    dataset:
        Data (read block-wise; left unchanged).
    model:
        Descan model, e.g. from :func:`measure_descan`.
    target_px:
        (y, x) where the disk centre goes [px]; default the FFT centre
        (det_y // 2, det_x // 2).
    method:
        See :func:`shift_patterns`.
    out:
        Optional float32 array of the dataset's shape to write into (e.g. a memmap).

    Returns
    -------
    Dataset4D
        float32 data; ``detector_center_px`` = ``target_px`` (the disk centre in vacuum is
        the optical axis).
    """
    ny, nx = dataset.detector_shape
    target = (float(ny // 2), float(nx // 2)) if target_px is None else target_px
    if len(target) != 2 or not all(np.isfinite(target)):
        raise ValueError(f"target_px must be a finite (y, x) pair [px], got {target_px!r}")
    shifts = np.asarray(target, dtype=np.float64) - model.centres_px(dataset.scan_shape)
    result = output_array(dataset, np.float32, out)
    for rows, block in dataset.iter_scan_rows(max_bytes // 4):  # room for the spectra
        result[rows] = shift_patterns(block, shifts[rows], method).astype(np.float32)
    calibration = replace(dataset.calibration, detector_center_px=(target[0], target[1]))
    return replace(dataset, data=result, calibration=calibration)
