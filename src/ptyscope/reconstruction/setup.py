"""From a calibrated Dataset4D to initial parameters, measured intensities and the grid.

The probe window is the detector: a detector of N pixels of Δk gives object pixels of
1/(N Δk) [Å]. Positions (Å, specimen frame) become object pixels, offset so every probe
window lies inside the object with ``padding_px`` to spare for position corrections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ptyscope.data.dataset import Dataset4D
from ptyscope.physics.aberrations import aberration_function
from ptyscope.physics.constants import wavelength_ang
from ptyscope.physics.grids import Grid
from ptyscope.physics.multislice import detector_offset_ramp, fourier_shift
from ptyscope.physics.probe import (
    build_probe,
    orthogonal_modes,
    probe_from_fourier,
    source_modes,
)

from .forward import PropagatorCache
from .parameters import PtychoParameters

__all__ = [
    "PADDING_PX",
    "ReconstructionSetup",
    "axis_offset_px",
    "object_grid",
    "prepare",
    "scan_half_mask",
]

#: Object margin around the scanned area [px], room for position corrections.
PADDING_PX = 8
#: An optical axis closer than this to the centre pixel [px] is taken as on it (a beam
#: tilt of 1e-3 px · dk · λ, a few µrad, is below anything a reconstruction resolves).
AXIS_OFFSET_TOLERANCE_PX = 1e-3


@dataclass
class ReconstructionSetup:
    """Everything the engine needs, plus the geometry to report results in Å.

    Attributes
    ----------
    params, measured, cache:
        For :class:`~ptyscope.reconstruction.engine.Engine`.
    pixel_size_ang:
        (dy, dx) object pixel [Å].
    origin_ang:
        (y, x) [Å] of object pixel (0, 0) in the scan's frame.
    grid_shape:
        (scan_y, scan_x), or ``None`` for a half of the scan.
    """

    params: PtychoParameters
    measured: torch.Tensor
    cache: PropagatorCache
    pixel_size_ang: tuple[float, float]
    origin_ang: tuple[float, float]
    grid_shape: tuple[int, int] | None

    def scanned_region_px(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1): the object pixels between the outermost probe centres."""
        px = self.params.positions_px().detach().cpu().numpy()
        low = np.ceil(px.min(axis=0)).astype(int)
        high = np.floor(px.max(axis=0)).astype(int) + 1
        return int(low[0]), int(high[0]), int(low[1]), int(high[1])

    def positions_ang(self) -> np.ndarray:
        """float64 (N, 2): current (y, x) positions [Å]."""
        px = self.params.positions_px().detach().cpu().double().numpy()
        result: np.ndarray = np.asarray(self.origin_ang) + px * np.asarray(self.pixel_size_ang)
        return result


def prepare(
    dataset: Dataset4D,
    *,
    num_slices: int,
    slice_thickness_ang: float,
    num_states: int = 1,
    num_modes: int = 1,
    defocus_ang: float = 0.0,
    tilt_mrad: tuple[float, float] | np.ndarray = (0.0, 0.0),
    state_phase_noise_rad: float = 0.01,
    padding_px: int = PADDING_PX,
    seed: int = 0,
    probe_from: str = "aperture",
    source_sigma_ang: float = 0.0,
    scan_half: str | None = None,
    substeps: int = 1,
    device: torch.device | str = "cpu",
) -> ReconstructionSetup:
    """Initial parameters for reconstructing ``dataset``.

    Parameters
    ----------
    dataset:
        Calibrated data with the optical axis at the detector's centre pixel (det // 2),
        e.g. after ``ptyscope preprocess``; needs ``semiangle_mrad``.
    num_slices, slice_thickness_ang:
        Multislice object: L slices of Δz [Å].
    num_states, num_modes:
        Object states and probe modes.
    defocus_ang:
        Initial probe defocus [Å] (positive = underfocus).
    tilt_mrad:
        (θ_y, θ_x) [mrad], or a map (scan_y, scan_x, 2).
    state_phase_noise_rad:
        Object states start as uniform transmission with small random phases of this
        standard deviation, different per state (identical states would stay identical).
    padding_px:
        Object margin around the scanned area [px].
    seed:
        Seed of the state noise.
    scan_half:
        ``None`` uses every pattern; ``"even"`` / ``"odd"`` keep the scan points with
        (row + column) even / odd, two interleaved halves covering the same area on the same
        object grid, for Fourier ring correlation between independent reconstructions.
    substeps:
        Planes per slice of the forward model (``propagator.substeps``).
    probe_from:
        ``"aperture"``: a soft-edged disk of the calibrated semiangle with the defocus
        phase (the probe builder). ``"mean_pattern"``: the measured bright-field disk,
        |ψ(k)| = √PACBED inside 1.1 α, with the defocus phase; follows the real
        aperture's shape and edge. Extra modes are derived from it the same way.
    source_sigma_ang:
        0: extra probe modes are the probe times low-order polynomials
        (:func:`~ptyscope.physics.probe.orthogonal_modes`). > 0: the modes are the
        ``num_modes`` strongest of an incoherent Gaussian source of this σ [Å]
        (:func:`~ptyscope.physics.probe.source_modes`), their powers scaled to a total of
        1: the shapes and powers partial spatial coherence gives them.
    device:
        Torch device of the run.
    """
    cal = dataset.calibration
    if cal.semiangle_mrad is None:
        raise ValueError("the dataset's calibration needs semiangle_mrad to build the probe")
    ny, nx = dataset.detector_shape
    centre = dataset.detector_center_px
    if abs(centre[0] - ny // 2) > 0.5 or abs(centre[1] - nx // 2) > 0.5:
        raise ValueError(
            f"the optical axis must be at the detector's centre pixel ({ny // 2}, {nx // 2}), "
            f"got ({centre[0]:.2f}, {centre[1]:.2f}); run ptyscope preprocess (descan "
            "correction centres the patterns)"
        )
    if not isinstance(num_slices, int) or num_slices < 1:
        raise ValueError(f"num_slices must be an integer >= 1, got {num_slices!r}")
    if not isinstance(num_states, int) or num_states < 1:
        raise ValueError(f"num_states must be an integer >= 1, got {num_states!r}")
    device = torch.device(device)
    pixel, origin, positions_px, (big_y, big_x) = object_grid(dataset, padding_px)
    generator = torch.Generator().manual_seed(seed)
    phases = torch.randn((num_states, num_slices, big_y, big_x), generator=generator)
    phases *= state_phase_noise_rad if num_states > 1 else 0.0
    obj = torch.polar(torch.ones_like(phases), phases).to(torch.complex64)
    grid = Grid((ny, nx), pixel)
    if not math.isfinite(source_sigma_ang) or source_sigma_ang < 0:
        raise ValueError(f"source_sigma_ang must be finite and >= 0 Å, got {source_sigma_ang}")
    grown = 1 if source_sigma_ang > 0 else num_modes  # modes grown from the coherent probe
    if probe_from == "aperture":
        probe = build_probe(
            grid, cal.energy_ev, cal.semiangle_mrad, {"defocus": defocus_ang}, num_modes=grown
        )
    elif probe_from == "mean_pattern":
        probe = _probe_from_mean_pattern(dataset, grid, defocus_ang, grown)
    else:
        raise ValueError(f"probe_from must be 'aperture' or 'mean_pattern', got {probe_from!r}")
    if source_sigma_ang > 0:
        probe = _source_probe(probe[0], grid, source_sigma_ang, num_modes)
    tilt = np.asarray(tilt_mrad, dtype=np.float64)
    tilt = tilt.reshape(-1, 2) if tilt.ndim == 3 else tilt
    keep = scan_half_mask(dataset.scan_shape, scan_half)
    positions_px = positions_px[keep]
    if tilt.ndim == 2:
        tilt = tilt[keep]
    params = PtychoParameters(
        obj,
        probe,
        torch.as_tensor(positions_px, dtype=torch.float32),
        torch.as_tensor(tilt, dtype=torch.float32),
        slice_thickness_ang,
    ).to(device)
    measured = torch.as_tensor(
        np.asarray(dataset.to_memory().data, dtype=np.float32).reshape(-1, ny, nx)[keep]
    )
    ky, kx = Grid((ny, nx), pixel).frequencies(device=device)
    cache = PropagatorCache(
        ky,
        kx,
        wavelength_ang(cal.energy_ev),
        substeps=substeps,
        exit_ramp=_exit_ramp(dataset, device),
    )
    grid_shape = dataset.scan_shape if scan_half is None else None  # no compact tiles
    return ReconstructionSetup(params, measured, cache, pixel, origin, grid_shape)


def object_grid(
    dataset: Dataset4D, padding_px: int = PADDING_PX
) -> tuple[tuple[float, float], tuple[float, float], np.ndarray, tuple[int, int]]:
    """The object grid of a dataset, from its calibration alone (the data is not read).

    Returns
    -------
    (pixel_size_ang, origin_ang, positions_px, shape):
        (dy, dx) object pixel [Å] = 1/(N Δk); (y, x) [Å] of object pixel (0, 0);
        float64 (scan_y · scan_x, 2) probe-centre positions [object px]; (Ny, Nx) of the
        object: the scanned area, the probe window and ``padding_px`` on each side.
    """
    ny, nx = dataset.detector_shape
    dk = dataset.calibration.detector_pixel_inv_ang
    pixel = (1.0 / (ny * dk[0]), 1.0 / (nx * dk[1]))
    positions = dataset.positions_ang().reshape(-1, 2)
    low = positions.min(axis=0)
    origin = (
        float(low[0] - (ny // 2 + padding_px) * pixel[0]),
        float(low[1] - (nx // 2 + padding_px) * pixel[1]),
    )
    positions_px = (positions - np.asarray(origin)) / np.asarray(pixel)
    span = positions_px.max(axis=0)
    big_y = math.ceil(span[0]) + ny - ny // 2 + padding_px + 1
    big_x = math.ceil(span[1]) + nx - nx // 2 + padding_px + 1
    return pixel, origin, positions_px, (big_y, big_x)


def scan_half_mask(scan_shape: tuple[int, int], scan_half: str | None) -> np.ndarray:
    """bool (scan_y · scan_x,): the scan points a run with ``scan_half`` keeps."""
    rows, cols = np.indices(scan_shape)
    parity = ((rows + cols) % 2).ravel()
    if scan_half is None:
        return np.ones(parity.size, dtype=bool)
    if scan_half not in ("even", "odd"):
        raise ValueError(f"scan_half must be None, 'even' or 'odd', got {scan_half!r}")
    mask: np.ndarray = parity == (0 if scan_half == "even" else 1)
    return mask


def axis_offset_px(dataset: Dataset4D) -> tuple[float, float] | None:
    """How far the optical axis lies from the centre pixel (det // 2) [px], (y, x);
    ``None`` when it is on that pixel (within :data:`AXIS_OFFSET_TOLERANCE_PX`)."""
    ny, nx = dataset.detector_shape
    cy, cx = dataset.detector_center_px
    offset = float(cy - ny // 2), float(cx - nx // 2)
    if max(abs(offset[0]), abs(offset[1])) < AXIS_OFFSET_TOLERANCE_PX:
        return None
    return offset


def _exit_ramp(dataset: Dataset4D, device: torch.device) -> torch.Tensor | None:
    """The forward model's detector-offset ramp; ``None`` when the axis is on a pixel."""
    offset = axis_offset_px(dataset)
    return None if offset is None else detector_offset_ramp(dataset.detector_shape, offset, device)


def _source_probe(
    probe: torch.Tensor, grid: Grid, source_sigma_ang: float, num_modes: int
) -> torch.Tensor:
    """The ``num_modes`` strongest modes of a Gaussian source, scaled to unit power."""
    modes, _ = source_modes(probe, grid, source_sigma_ang, tolerance=1e-9)
    if len(modes) < num_modes:
        raise ValueError(
            f"probe.source_sigma_ang={source_sigma_ang} Å gives only {len(modes)} probe modes "
            f"with more than 1e-9 of the power, fewer than probe.modes={num_modes}: use "
            "fewer modes or a larger source"
        )
    kept = modes[:num_modes]
    return kept / torch.sqrt((kept.abs() ** 2).sum())


def _probe_from_mean_pattern(
    dataset: Dataset4D, grid: Grid, defocus_ang: float, num_modes: int
) -> torch.Tensor:
    """Probe modes whose Fourier amplitude is the measured bright-field disk."""
    cal = dataset.calibration
    assert cal.semiangle_mrad is not None
    lam = wavelength_ang(cal.energy_ev)
    ky, kx = grid.frequencies(dtype=torch.float64)
    inside = torch.sqrt(ky**2 + kx**2) * lam * 1e3 <= 1.1 * cal.semiangle_mrad
    mean = torch.as_tensor(dataset.mean_pattern(), dtype=torch.float64)
    offset = axis_offset_px(dataset)
    if offset is not None:
        # The model adds the offset in the far field (_exit_ramp): take it out here.
        back = torch.tensor([-offset[0], -offset[1]], dtype=torch.float64)
        mean = fourier_shift(mean.to(torch.complex128), back).real
    mean = torch.fft.ifftshift(mean)  # FFT order
    amplitude = torch.sqrt(mean.clamp(min=0)) * inside
    chi = aberration_function(ky, kx, lam, {"defocus": defocus_ang})
    first = probe_from_fourier((amplitude * torch.exp(-1j * chi))[None]).to(torch.complex64)
    if num_modes == 1:
        return first
    modes: torch.Tensor = orthogonal_modes(first[0], num_modes, support=inside.to(torch.float32))
    return modes
