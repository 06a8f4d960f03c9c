"""Dataset4D: a 4D-STEM array with the calibration needed to reconstruct it.

Axis order is ``(scan_y, scan_x, det_y, det_x)`` (DESIGN.md conventions); every pair is
``(y, x)``. Diffraction patterns have the zero frequency at the optical axis pixel
``detector_center_px`` (default ``(det_y // 2, det_x // 2)``, the ``fftshift`` centre).

Scan geometry: scan point (i, j) (row i along the slow axis, column j along the fast axis)
lies at

    r_ij = origin + i·step_y·ê_slow + j·step_x·ê_fast,
    ê_fast = (sin ρ, cos ρ),  ê_slow = (cos ρ, −sin ρ)       [(y, x) components]

in the specimen frame in which the detector's axes are y and x, with ρ = scan_rotation_deg.
ρ > 0 turns the fast scan axis from +x towards +y (clockwise as displayed, since y points
down). With ``scan_transpose`` the two scan steps are exchanged before the rotation,
(i·step_y, j·step_x) -> (j·step_x, i·step_y): the scan is mirrored relative to the
detector (e.g. a detector read out transposed). ``scan_positions_ang`` may instead store
measured positions explicitly.

Large datasets stay on disk: ``data`` may be a ``numpy.memmap`` or an ``h5py.Dataset``,
and every operation here (:meth:`Dataset4D.iter_scan_rows`, binning, cropping, the mean
pattern) reads it a block of scan rows at a time, with a bounded working memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ptyscope._validation import require_finite, require_positive, require_positive_pair
from ptyscope.physics.constants import wavelength_ang

__all__ = ["Calibration", "Dataset4D", "output_array", "scan_grid_positions"]


@dataclass(frozen=True)
class Calibration:
    """Everything about the acquisition that the reconstruction needs.

    Attributes
    ----------
    energy_ev:
        Beam energy [eV].
    scan_step_ang:
        (step_y, step_x) between scan points along the slow and fast axes [Å].
    detector_pixel_inv_ang:
        (dk_y, dk_x) reciprocal-space size of one detector pixel [Å⁻¹].
    scan_rotation_deg:
        Rotation ρ of the scan axes relative to the detector axes [deg] (module docstring).
    scan_origin_ang:
        (y, x) position of scan point (0, 0) in the specimen frame [Å].
    semiangle_mrad:
        Probe-forming (convergence) semiangle [mrad], if known.
    defocus_ang:
        Probe defocus [Å], positive = underfocus, if known.
    detector_center_px:
        (y, x) detector pixel of the optical axis; ``None`` = (det_y // 2, det_x // 2).
    scan_transpose:
        The scan is transposed (mirrored) relative to the detector (module docstring).
    """

    energy_ev: float
    scan_step_ang: tuple[float, float]
    detector_pixel_inv_ang: tuple[float, float]
    scan_rotation_deg: float = 0.0
    scan_origin_ang: tuple[float, float] = (0.0, 0.0)
    semiangle_mrad: float | None = None
    defocus_ang: float | None = None
    detector_center_px: tuple[float, float] | None = None
    scan_transpose: bool = False

    def __post_init__(self) -> None:
        require_positive("energy_ev", self.energy_ev, "eV")
        object.__setattr__(self, "scan_transpose", bool(self.scan_transpose))
        object.__setattr__(
            self, "scan_step_ang", require_positive_pair("scan_step_ang", self.scan_step_ang)
        )
        object.__setattr__(
            self,
            "detector_pixel_inv_ang",
            require_positive_pair("detector_pixel_inv_ang", self.detector_pixel_inv_ang),
        )
        require_finite("scan_rotation_deg", self.scan_rotation_deg)
        origin = tuple(float(v) for v in self.scan_origin_ang)
        if len(origin) != 2 or not all(math.isfinite(v) for v in origin):
            raise ValueError(
                f"scan_origin_ang must be a finite (y, x) pair [Å], got {self.scan_origin_ang!r}"
            )
        object.__setattr__(self, "scan_origin_ang", origin)
        if self.semiangle_mrad is not None:
            require_positive("semiangle_mrad", self.semiangle_mrad, "mrad")
        if self.defocus_ang is not None:
            require_finite("defocus_ang", self.defocus_ang)

    @property
    def wavelength_ang(self) -> float:
        """Relativistic electron wavelength λ [Å]."""
        return wavelength_ang(self.energy_ev)

    @property
    def detector_pixel_mrad(self) -> tuple[float, float]:
        """(y, x) angular size of one detector pixel [mrad] (α = λk)."""
        lam = self.wavelength_ang
        return (
            1e3 * lam * self.detector_pixel_inv_ang[0],
            1e3 * lam * self.detector_pixel_inv_ang[1],
        )


def scan_grid_positions(
    scan_shape: tuple[int, int],
    scan_step_ang: tuple[float, float],
    scan_rotation_deg: float = 0.0,
    scan_origin_ang: tuple[float, float] = (0.0, 0.0),
    scan_transpose: bool = False,
) -> np.ndarray:
    """Positions of a rectangular, possibly rotated or transposed, scan (module docstring).

    Returns
    -------
    numpy.ndarray
        float64 (scan_y, scan_x, 2): (y, x) of each scan point [Å].
    """
    rho = math.radians(scan_rotation_deg)
    fast = np.array([math.sin(rho), math.cos(rho)])
    slow = np.array([math.cos(rho), -math.sin(rho)])
    i = np.arange(scan_shape[0])[:, None, None] * scan_step_ang[0]
    j = np.arange(scan_shape[1])[None, :, None] * scan_step_ang[1]
    if scan_transpose:
        i, j = j, i
    positions: np.ndarray = np.asarray(scan_origin_ang, dtype=np.float64) + i * slow + j * fast
    return positions


def _native(block: np.ndarray) -> np.ndarray:
    """The block in native byte order (detector files are often big-endian; torch needs
    native order)."""
    if block.dtype.isnative:
        return block
    converted: np.ndarray = block.astype(block.dtype.newbyteorder("="))
    return converted


def output_array(dataset: Dataset4D, dtype: Any, out: Any | None) -> Any:
    """The array a new dataset is written to: ``out`` (checked) or a new one in memory."""
    if out is None:
        return np.empty(dataset.shape, dtype=dtype)
    if tuple(out.shape) != dataset.shape:
        raise ValueError(f"out must have the dataset's shape {dataset.shape}, got {out.shape}")
    return out


#: Default bound on the memory one block of scan rows may take [bytes].
DEFAULT_BLOCK_BYTES = 256 * 2**20


@dataclass
class Dataset4D:
    """A 4D-STEM dataset with its calibration.

    Attributes
    ----------
    data:
        Real array (scan_y, scan_x, det_y, det_x): intensity per pixel (counts, or
        probability for noise-free simulations). An in-memory ``numpy.ndarray``, a
        ``numpy.memmap`` or an ``h5py.Dataset`` (read lazily, a block of rows at a time).
    calibration:
        The acquisition's :class:`Calibration`.
    scan_positions_ang:
        Optional float64 (scan_y, scan_x, 2) measured or simulated (y, x) positions [Å];
        ``None`` means the rectangular grid given by the calibration.
    metadata:
        Free-form provenance (strings and numbers), saved as HDF5 attributes.
    """

    data: Any
    calibration: Calibration
    scan_positions_ang: np.ndarray | None = None
    metadata: dict[str, str | float | int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = tuple(getattr(self.data, "shape", ()))
        dtype = np.dtype(getattr(self.data, "dtype", np.float64))
        if len(shape) != 4:
            raise ValueError(f"data must have shape (scan_y, scan_x, det_y, det_x), got {shape}")
        if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
            raise ValueError(f"data must be a real numeric array, got dtype {dtype}")
        if self.scan_positions_ang is not None:
            expected = (*shape[:2], 2)
            if self.scan_positions_ang.shape != expected:
                raise ValueError(
                    f"scan_positions_ang must have shape (scan_y, scan_x, 2) = {expected}, "
                    f"got {self.scan_positions_ang.shape}"
                )

    # ----------------------------------------------------------------- description
    @property
    def shape(self) -> tuple[int, int, int, int]:
        a, b, c, d = (int(n) for n in self.data.shape)
        return a, b, c, d

    @property
    def scan_shape(self) -> tuple[int, int]:
        return self.shape[0], self.shape[1]

    @property
    def detector_shape(self) -> tuple[int, int]:
        return self.shape[2], self.shape[3]

    @property
    def dtype(self) -> np.dtype[Any]:
        dtype: np.dtype[Any] = np.dtype(self.data.dtype)
        return dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def is_lazy(self) -> bool:
        """True when the data is read from disk on demand (memmap or HDF5)."""
        return isinstance(self.data, np.memmap) or not isinstance(self.data, np.ndarray)

    @property
    def detector_center_px(self) -> tuple[float, float]:
        """(y, x) of the optical axis [detector px] (calibrated, else the FFT centre)."""
        centre = self.calibration.detector_center_px
        if centre is not None:
            return centre
        return float(self.shape[2] // 2), float(self.shape[3] // 2)

    def positions_ang(self) -> np.ndarray:
        """float64 (scan_y, scan_x, 2): (y, x) of every scan point [Å]."""
        if self.scan_positions_ang is not None:
            return np.asarray(self.scan_positions_ang, dtype=np.float64)
        cal = self.calibration
        return scan_grid_positions(
            self.scan_shape,
            cal.scan_step_ang,
            cal.scan_rotation_deg,
            cal.scan_origin_ang,
            cal.scan_transpose,
        )

    # ----------------------------------------------------------------- block access
    def rows_per_block(self, max_bytes: int | None = None) -> int:
        """Scan rows per block so that one float32 block stays below ``max_bytes``
        (default :data:`DEFAULT_BLOCK_BYTES`)."""
        max_bytes = DEFAULT_BLOCK_BYTES if max_bytes is None else max_bytes
        row = self.shape[1] * self.shape[2] * self.shape[3] * max(4, self.dtype.itemsize)
        return max(1, min(self.shape[0], max_bytes // row))

    def iter_scan_rows(self, max_bytes: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield (rows, block): blocks of whole scan rows as in-memory arrays.

        ``block`` is ``data[rows]`` as a numpy array of the stored dtype, at most
        ``max_bytes`` (one row at least); only one block is in memory at a time.
        """
        step = self.rows_per_block(max_bytes)
        for start in range(0, self.shape[0], step):
            rows = slice(start, min(start + step, self.shape[0]))
            yield rows, _native(np.asarray(self.data[rows]))

    def to_memory(self) -> Dataset4D:
        """A copy whose data is an in-memory numpy array."""
        return replace(self, data=_native(np.asarray(self.data[()] if self.is_lazy else self.data)))

    def mean_pattern(self, max_bytes: int | None = None) -> np.ndarray:
        """Position-averaged pattern (PACBED), float64 (det_y, det_x), read block-wise."""
        total = np.zeros(self.detector_shape)
        for _, block in self.iter_scan_rows(max_bytes):
            total += block.sum(axis=(0, 1), dtype=np.float64)
        result: np.ndarray = total / (self.shape[0] * self.shape[1])
        return result

    # ----------------------------------------------------------------- new datasets
    def crop_scan(self, rows: slice, cols: slice) -> Dataset4D:
        """A scan sub-region (unit-step slices); positions and origin follow."""
        ys = range(*rows.indices(self.shape[0]))
        xs = range(*cols.indices(self.shape[1]))
        if ys.step != 1 or xs.step != 1 or len(ys) == 0 or len(xs) == 0:
            raise ValueError(
                f"crop_scan needs non-empty unit-step slices, got rows={rows}, cols={cols}"
            )
        positions = self.positions_ang()
        data = _native(np.asarray(self.data[ys.start : ys.stop, xs.start : xs.stop]))
        cal = replace(self.calibration, scan_origin_ang=tuple(positions[ys.start, xs.start]))
        kept = None
        if self.scan_positions_ang is not None:
            kept = positions[ys.start : ys.stop, xs.start : xs.stop].copy()
        return replace(self, data=data, calibration=cal, scan_positions_ang=kept)

    def crop_detector(self, rows: slice, cols: slice) -> Dataset4D:
        """Keep detector rows/cols (unit-step slices); the optical axis pixel follows."""
        ys = range(*rows.indices(self.shape[2]))
        xs = range(*cols.indices(self.shape[3]))
        if ys.step != 1 or xs.step != 1 or len(ys) == 0 or len(xs) == 0:
            raise ValueError(
                f"crop_detector needs non-empty unit-step slices, got rows={rows}, cols={cols}"
            )
        out = np.empty((*self.scan_shape, len(ys), len(xs)), dtype=self.dtype)
        for block_rows, block in self.iter_scan_rows():
            out[block_rows] = block[:, :, ys.start : ys.stop, xs.start : xs.stop]
        cy, cx = self.detector_center_px
        cal = replace(self.calibration, detector_center_px=(cy - ys.start, cx - xs.start))
        return replace(self, data=out, calibration=cal)

    def bin_detector(self, factor: int) -> Dataset4D:
        """Sum ``factor`` x ``factor`` detector pixels (trailing remainders are dropped).

        The detector pixel grows by ``factor``; the optical axis maps p -> (p + ½)/f − ½.
        Read block-wise, so a dataset larger than memory is binned without loading it.
        """
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
        ny, nx = self.shape[2] // factor, self.shape[3] // factor
        if ny == 0 or nx == 0:
            raise ValueError(f"factor {factor} is larger than the detector {self.detector_shape}")
        dtype = np.float32 if self.dtype.kind == "f" else np.int64
        out = np.empty((*self.scan_shape, ny, nx), dtype=dtype)
        for rows, block in self.iter_scan_rows():
            trimmed = block[:, :, : ny * factor, : nx * factor]
            shaped = trimmed.reshape(*trimmed.shape[:2], ny, factor, nx, factor)
            out[rows] = shaped.sum(
                axis=(3, 5), dtype=np.float64 if dtype == np.float32 else np.int64
            )
        cy, cx = self.detector_center_px
        dk = self.calibration.detector_pixel_inv_ang
        cal = replace(
            self.calibration,
            detector_pixel_inv_ang=(dk[0] * factor, dk[1] * factor),
            detector_center_px=((cy + 0.5) / factor - 0.5, (cx + 0.5) / factor - 0.5),
        )
        return replace(self, data=out, calibration=cal)

    def pad_detector(self, shape: tuple[int, int]) -> Dataset4D:
        """Zero-pad the detector to ``shape``, keeping the optical axis at the same place
        relative to the new centre (det // 2)."""
        ny, nx = (int(n) for n in shape)
        if ny < self.shape[2] or nx < self.shape[3]:
            raise ValueError(
                f"shape must be at least the detector {self.detector_shape}, got {(ny, nx)}"
            )
        top = ny // 2 - self.shape[2] // 2
        left = nx // 2 - self.shape[3] // 2
        out = np.zeros((*self.scan_shape, ny, nx), dtype=self.dtype)
        for rows, block in self.iter_scan_rows():
            out[rows, :, top : top + self.shape[2], left : left + self.shape[3]] = block
        cy, cx = self.detector_center_px
        cal = replace(self.calibration, detector_center_px=(cy + top, cx + left))
        return replace(self, data=out, calibration=cal)

    def bin_scan(self, factor: int) -> Dataset4D:
        """Sum the patterns of ``factor`` x ``factor`` neighbouring scan points.

        Counts per pattern grow by factor² (the dose per area is unchanged); the step grows
        by ``factor`` and each new point sits at the centre of its block. Trailing
        remainders are dropped.
        """
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
        sy, sx = self.shape[0] // factor, self.shape[1] // factor
        if sy == 0 or sx == 0:
            raise ValueError(f"factor {factor} is larger than the scan {self.scan_shape}")
        dtype = np.float32 if self.dtype.kind == "f" else np.int64
        out = np.zeros((sy, sx, *self.detector_shape), dtype=dtype)
        for rows, block in self.iter_scan_rows():
            for r in range(rows.start, min(rows.stop, sy * factor)):
                out[r // factor] += (
                    block[r - rows.start, : sx * factor]
                    .reshape(sx, factor, *self.detector_shape)
                    .sum(axis=1, dtype=np.float64 if dtype == np.float32 else np.int64)
                )
        positions = self.positions_ang()[: sy * factor, : sx * factor]
        centres = positions.reshape(sy, factor, sx, factor, 2).mean(axis=(1, 3))
        step = self.calibration.scan_step_ang
        cal = replace(
            self.calibration,
            scan_step_ang=(step[0] * factor, step[1] * factor),
            scan_origin_ang=(float(centres[0, 0, 0]), float(centres[0, 0, 1])),
        )
        kept = centres if self.scan_positions_ang is not None else None
        return replace(self, data=out, calibration=cal, scan_positions_ang=kept)
