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
down). ``scan_positions_ang`` may instead store measured positions explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ptyscope._validation import require_finite, require_positive, require_positive_pair
from ptyscope.physics.constants import wavelength_ang

__all__ = ["Calibration", "Dataset4D", "scan_grid_positions"]


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
    """

    energy_ev: float
    scan_step_ang: tuple[float, float]
    detector_pixel_inv_ang: tuple[float, float]
    scan_rotation_deg: float = 0.0
    scan_origin_ang: tuple[float, float] = (0.0, 0.0)
    semiangle_mrad: float | None = None
    defocus_ang: float | None = None
    detector_center_px: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        require_positive("energy_ev", self.energy_ev, "eV")
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
) -> np.ndarray:
    """Positions of a rectangular, possibly rotated, scan (module docstring).

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
    positions: np.ndarray = np.asarray(scan_origin_ang, dtype=np.float64) + i * slow + j * fast
    return positions


@dataclass
class Dataset4D:
    """A 4D-STEM dataset with its calibration.

    Attributes
    ----------
    data:
        Real array (scan_y, scan_x, det_y, det_x): intensity per pixel (counts, or
        probability for noise-free simulations).
    calibration:
        The acquisition's :class:`Calibration`.
    scan_positions_ang:
        Optional float64 (scan_y, scan_x, 2) measured or simulated (y, x) positions [Å];
        ``None`` means the rectangular grid given by the calibration.
    metadata:
        Free-form provenance (strings and numbers), saved as HDF5 attributes.
    """

    data: np.ndarray
    calibration: Calibration
    scan_positions_ang: np.ndarray | None = None
    metadata: dict[str, str | float | int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data.ndim != 4:
            raise ValueError(
                f"data must have shape (scan_y, scan_x, det_y, det_x), got {tuple(self.data.shape)}"
            )
        if not np.issubdtype(self.data.dtype, np.number) or np.iscomplexobj(self.data):
            raise ValueError(f"data must be a real numeric array, got dtype {self.data.dtype}")
        if self.scan_positions_ang is not None:
            expected = (*self.data.shape[:2], 2)
            if self.scan_positions_ang.shape != expected:
                raise ValueError(
                    f"scan_positions_ang must have shape (scan_y, scan_x, 2) = {expected}, "
                    f"got {self.scan_positions_ang.shape}"
                )

    @property
    def scan_shape(self) -> tuple[int, int]:
        return int(self.data.shape[0]), int(self.data.shape[1])

    @property
    def detector_shape(self) -> tuple[int, int]:
        return int(self.data.shape[2]), int(self.data.shape[3])

    def positions_ang(self) -> np.ndarray:
        """float64 (scan_y, scan_x, 2): (y, x) of every scan point [Å]."""
        if self.scan_positions_ang is not None:
            return np.asarray(self.scan_positions_ang, dtype=np.float64)
        cal = self.calibration
        return scan_grid_positions(
            self.scan_shape, cal.scan_step_ang, cal.scan_rotation_deg, cal.scan_origin_ang
        )
