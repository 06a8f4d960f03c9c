"""Adaptive propagator: the specimen tilt fitted during the reconstruction (Sha et al. 2022).

Why a gradient alone is not enough
----------------------------------
The tilted propagator is the Fresnel propagator followed by a lateral shift by −Δz·tanθ.
Shifts commute with the Fresnel propagator, so a model with tilt θ' and slices O_j predicts
exactly the intensities of tilt θ with slice j shifted by z_j·(tanθ' − tanθ): the exit
waves differ by a shift only (up to the periodic edges of the probe window; derivation in
docs/adaptive_propagator.md). The loss has no minimum in θ: a gradient step on θ is undone
by the object within a few iterations and the tilt stays wherever the object first formed.
Measured on simulated SrTiO3 (82 Å, 5 slices, true tilt 8 mrad along x): the tilt fitted
by Adam from 0 mrad stalls at 2.4 mrad; started at the truth it wanders to 8.3.

This holds for one plane per slice. With ``propagator.substeps`` > 1 each slice is
several planes, the columns inside a slice are tilted by the propagator too, and the loss
does see θ (:func:`ptyscope.physics.multislice.check_substeps`); the alignment step then
changes the prediction slightly (only inside the slices), and its fixed point, the tilt
at which the slices line up, moves onto the true tilt (docs/adaptive_propagator.md).

The alignment step
------------------
:class:`TiltAlignment` fixes what the data cannot: the tilt at which the slices line up.
Every few iterations it measures the drift of the reconstructed slices with depth by
cross-correlation
(:func:`ptyscope.analysis.alignment.align_slices`); on the zone axis the slices are aligned,
so a drift s(z) = s₀ + z·δ means the propagator's tilt is off by δ. The step adds δ to
tanθ and shifts slice j back by −(z_j − z̄)·δ, which leaves the model's prediction
unchanged: the object does not have to re-form. Applied to a
fixed-propagator object (θ = 0) the first step is the post-alignment of Sha et al.'s FPP
baseline, so it is also the automatic starting estimate: no guess of the tilt is needed.
With a tilt map (one θ per scan position) the drift is measured in a window around each
scan position and the slices are warped by the smooth field of corrections.

:class:`TiltMapSmoothing` is the smoothness regulariser of the map: a Gaussian low-pass of
θ over the scan grid after each iteration (the proximal step of a quadratic penalty on
the map's gradient); with ``sigma_px=None`` it replaces the map by its mean (one global
tilt), the coarse stage of a coarse-to-fine run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional

from ptyscope.analysis.alignment import align_slices
from ptyscope.physics.multislice import fourier_shift

from .constraints import Constraint
from .parameters import PtychoParameters

__all__ = ["TiltAlignment", "TiltMapSmoothing", "drift_slope", "smooth_map"]


def drift_slope(
    phases: np.ndarray,
    pixel_size_ang: tuple[float, float],
    slice_thickness_ang: float,
    max_shift_ang: float,
    outlier_ang: float = 0.05,
) -> np.ndarray:
    """Drift (dy/dz, dx/dz) [Å/Å] of the slices of a stack with depth.

    Parameters
    ----------
    phases:
        Real (L, ny, nx), L >= 2: the phase of each slice, entrance first.
    pixel_size_ang:
        (dy, dx) [Å].
    slice_thickness_ang:
        Δz [Å].
    max_shift_ang:
        Largest displacement between neighbouring slices searched [Å]; keep it below half
        the shortest distance between columns so a lattice cannot match the wrong column.
    outlier_ang:
        A step between neighbouring slices further than this from the median step is a
        failed registration and is left out [Å].

    Notes
    -----
    The drift is the mean displacement between neighbouring slices divided by Δz (the
    end-to-end drift), over the steps that agree with the median step within
    ``outlier_ang``. Not a least-squares line: one slice that does not match its neighbour
    must not tilt the result. On simulated SrTiO3 on the zone axis the entrance slice,
    which absorbs what the probe model gets wrong, came out displaced by ~0.3 Å from the
    others (which agreed within 0.015 Å); a line through all slices read that as a 20 mrad
    tilt. Not the median step either: with slices thinner than the depth resolution the
    reconstruction compresses the drift inside the stack and puts the rest in the first
    step (10 slices of 8 Å at the true 8 mrad: interior steps −0.4 mrad, first step
    +1.9 mrad, mean of all −0.1 mrad).
    """
    max_px = max_shift_ang / min(pixel_size_ang)
    # 1/200 px: a 0.15 Å pixel over a 16 Å slice quantises the tilt to 0.05 mrad.
    shifts = align_slices(phases, pixel_size_ang, upsample=200, max_shift_px=max_px).shifts_ang
    steps = np.diff(shifts, axis=0)  # slice j against slice j - 1
    # A step far from the median is a failed registration, not drift: leave it out.
    agree = np.abs(steps - np.median(steps, axis=0)) <= outlier_ang
    kept = np.where(agree, steps, 0.0).sum(axis=0) / np.maximum(agree.sum(axis=0), 1)
    slope: np.ndarray = kept / slice_thickness_ang
    return slope


def smooth_map(values: torch.Tensor, grid_shape: tuple[int, int], sigma_px: float) -> torch.Tensor:
    """Gaussian low-pass of per-position values (N, C) over the (scan_y, scan_x) grid.

    Edges are handled by normalised convolution (the kernel is renormalised over the part
    that lies inside the grid), so a constant map stays constant and a linear gradient is
    kept away from the corners.
    """
    n, channels = values.shape
    if grid_shape[0] * grid_shape[1] != n:
        raise ValueError(f"grid_shape {grid_shape} must hold the {n} positions of the map")
    radius = max(1, math.ceil(3 * sigma_px))
    offsets = torch.arange(-radius, radius + 1, dtype=values.dtype, device=values.device)
    kernel = torch.exp(-0.5 * (offsets / sigma_px) ** 2)
    image = values.T.reshape(channels, 1, *grid_shape)
    ones = torch.ones_like(image[:1])

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = functional.conv2d(x, kernel.reshape(1, 1, -1, 1), padding=(radius, 0))
        return functional.conv2d(x, kernel.reshape(1, 1, 1, -1), padding=(0, radius))

    smoothed = blur(image) / blur(ones)
    return smoothed.reshape(channels, n).T


@dataclass
class TiltMapSmoothing(Constraint):
    """Smooth a tilt map over the scan grid; ``sigma_px=None``: replace it by its mean.

    Attributes
    ----------
    grid_shape:
        (scan_y, scan_x) of the positions, in the order of the map's rows.
    sigma_px:
        Standard deviation of the Gaussian [scan steps]; the regularisation strength.
    """

    grid_shape: tuple[int, int] | None = None
    sigma_px: float | None = 1.0

    def apply(self, params: PtychoParameters, iteration: int) -> None:
        tilt = params.tilt.data
        if tilt.ndim != 2:
            return
        if self.sigma_px is None:
            tilt.copy_(tilt.mean(dim=0, keepdim=True).expand_as(tilt))
            return
        if self.grid_shape is None:
            raise ValueError("a smoothed tilt map needs the scan's grid_shape")
        tilt.copy_(smooth_map(tilt, self.grid_shape, self.sigma_px))


@dataclass
class TiltAlignment(Constraint):
    """Correct the propagator's tilt by the measured drift of the slices (see module).

    Attributes
    ----------
    region_px:
        (y0, y1, x0, x1): the object pixels where the slices are compared (the scanned area).
    pixel_size_ang:
        (dy, dx) object pixel [Å].
    damping:
        Fraction of the measured correction applied per step after the first (which is the
        starting estimate and applied whole), in (0, 1]; below 1 it averages the
        registration noise of successive steps (±0.5 mrad per step on simulated SrTiO3).
    max_step_mrad:
        Largest correction per step [mrad] (a failed registration cannot throw the tilt far).
    max_shift_ang:
        Search radius between neighbouring slices [Å] (see :func:`drift_slope`).
    window_px:
        Side of the window around each scan position in which a tilt map's local drift is
        measured [object px] (only for a map); at least one unit cell.
    map_start:
        Iteration from which a tilt map is corrected position by position; before it, the
        drift of the whole region corrects every position alike (coarse to fine).
    grid_shape, map_sigma_px:
        Scan grid of the map's positions and the Gaussian [scan steps] that smooths each
        local correction over it (the map's regularisation; ``None``: unsmoothed).
    corrections_mrad:
        Record of the mean correction (θ_y, θ_x) [mrad] applied at each step.
    """

    region_px: tuple[int, int, int, int] = (0, 0, 0, 0)
    pixel_size_ang: tuple[float, float] = (1.0, 1.0)
    damping: float = 0.5
    max_step_mrad: float = 25.0
    max_shift_ang: float = 0.6
    window_px: int = 48
    map_start: int = 0
    grid_shape: tuple[int, int] | None = None
    map_sigma_px: float | None = 2.0
    corrections_mrad: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.damping <= 1:
            raise ValueError(f"damping must lie in (0, 1], got {self.damping}")
        if self.max_step_mrad <= 0 or self.max_shift_ang <= 0:
            raise ValueError(
                f"max_step_mrad and max_shift_ang must be > 0, got {self.max_step_mrad} "
                f"and {self.max_shift_ang}"
            )
        y0, y1, x0, x1 = self.region_px
        if y1 - y0 < 8 or x1 - x0 < 8:
            raise ValueError(f"region_px must span at least 8x8 pixels, got {self.region_px}")

    # ------------------------------------------------------------------ measuring
    def _phases(self, params: PtychoParameters) -> np.ndarray:
        obj = params.object.detach()
        weights = params.weights().detach()[:, None, None, None]
        mean = (obj * weights).sum(dim=0) if obj.shape[0] > 1 else obj[0]
        phases: np.ndarray = torch.angle(mean).cpu().double().numpy()
        return phases

    def _global_delta(self, phases: np.ndarray, dz: float) -> np.ndarray:
        y0, y1, x0, x1 = self.region_px
        return drift_slope(phases[:, y0:y1, x0:x1], self.pixel_size_ang, dz, self.max_shift_ang)

    def _local_delta(self, params: PtychoParameters, phases: np.ndarray, dz: float) -> np.ndarray:
        """(N, 2) drift at each scan position: measured in windows on a grid over the region
        (a third of a window apart), spread to the positions, smoothed over the scan grid."""
        y0, y1, x0, x1 = self.region_px
        size = min(self.window_px, y1 - y0, x1 - x0)
        stride = max(1, size // 3)
        tops = _window_starts(y0, y1, size, stride)
        lefts = _window_starts(x0, x1, size, stride)
        centres = []
        deltas = []
        for top in tops:
            for left in lefts:
                window = phases[:, top : top + size, left : left + size]
                deltas.append(drift_slope(window, self.pixel_size_ang, dz, self.max_shift_ang))
                centres.append((top + size / 2, left + size / 2))
        positions = params.positions_px().detach().cpu().double().numpy()
        local = _spread(np.asarray(centres), np.asarray(deltas), positions)
        if self.grid_shape is not None and self.map_sigma_px is not None:
            local = smooth_map(torch.as_tensor(local), self.grid_shape, self.map_sigma_px).numpy()
        return local

    # ------------------------------------------------------------------ correcting
    def apply(self, params: PtychoParameters, iteration: int) -> None:
        if params.num_slices < 2:
            return
        dz = float(params.thickness.detach())
        phases = self._phases(params)
        local = params.tilt.ndim == 2 and iteration >= self.map_start
        if local:
            delta = self._local_delta(params, phases, dz)
        else:
            delta = self._global_delta(phases, dz)[None]
        limit = math.tan(self.max_step_mrad * 1e-3)
        factor = self.damping if self.corrections_mrad else 1.0  # the first: the estimate
        delta = np.clip(factor * delta, -limit, limit)
        tilt = params.tilt.data
        step = torch.as_tensor(delta, dtype=tilt.dtype, device=tilt.device)
        old = tilt.clone()
        tilt.copy_(torch.atan(torch.tan(tilt * 1e-3) + step.reshape(-1, 2).squeeze(0)) * 1e3)
        applied = (tilt - old).reshape(-1, 2).mean(dim=0)
        self.corrections_mrad.append((float(applied[0]), float(applied[1])))
        mean = delta.reshape(-1, 2).mean(axis=0)
        self._shift_slices(params, mean, dz)
        if local:
            self._warp_slices(params, delta - mean, dz)

    def _depths(self, params: PtychoParameters, dz: float) -> torch.Tensor:
        z = torch.arange(params.num_slices, dtype=torch.float64) * dz
        return z - z.mean()

    def _shift_slices(self, params: PtychoParameters, delta: np.ndarray, dz: float) -> None:
        """Shift slice j by −(z_j − z̄)·δ (exact, Fourier) so the slices line up again."""
        obj = params.object.data
        pixel = torch.tensor(self.pixel_size_ang, dtype=torch.float64)
        shifts = -self._depths(params, dz)[:, None] * torch.as_tensor(delta) / pixel
        for j in range(params.num_slices):
            obj[:, j] = fourier_shift(obj[:, j], shifts[j].to(obj.real.dtype))

    def _warp_slices(self, params: PtychoParameters, delta: np.ndarray, dz: float) -> None:
        """Shift slice j by the smooth field −(z_j − z̄)·δ(r), δ interpolated from the
        scan positions to every object pixel (bicubic resampling)."""
        obj = params.object.data
        real = obj.real.dtype
        device = obj.device
        big_y, big_x = obj.shape[-2:]
        centres = params.positions_px().detach().double().cpu().numpy()
        rows, cols = np.meshgrid(np.arange(big_y), np.arange(big_x), indexing="ij")
        pixels = np.column_stack([rows.ravel(), cols.ravel()]).astype(np.float64)
        field_yx = _spread(centres, delta, pixels).T.reshape(2, big_y, big_x)  # Å/Å
        pixel = np.asarray(self.pixel_size_ang)[:, None, None]
        for j, depth in enumerate(self._depths(params, dz).tolist()):
            shift_px = -depth * field_yx / pixel  # content moves by +shift: sample at r − shift
            sample_y = (rows - shift_px[0]) / (big_y - 1) * 2 - 1
            sample_x = (cols - shift_px[1]) / (big_x - 1) * 2 - 1
            grid = torch.as_tensor(np.stack([sample_x, sample_y], axis=-1)[None], dtype=real)
            grid = grid.to(device).expand(obj.shape[0], -1, -1, -1)
            parts = torch.stack([obj[:, j].real, obj[:, j].imag], dim=1)
            warped = functional.grid_sample(
                parts, grid, mode="bicubic", padding_mode="border", align_corners=True
            )
            obj[:, j] = torch.complex(warped[:, 0], warped[:, 1])


def _window_starts(low: int, high: int, size: int, stride: int) -> list[int]:
    """Starts of windows of ``size`` every ``stride`` in [low, high), the last flush."""
    last = max(low, high - size)
    starts = list(range(low, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def _spread(centres: np.ndarray, values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(T, C): ``values`` (N, C) known at ``centres`` (N, 2) [px], interpolated at
    ``targets`` (T, 2) by inverse-square-distance weighting of the 4 nearest centres."""
    from scipy.spatial import cKDTree

    k = min(4, len(centres))
    distance, index = cKDTree(centres).query(targets, k=k)
    distance = np.asarray(distance).reshape(len(targets), k)
    index = np.asarray(index).reshape(len(targets), k)
    weights = 1.0 / np.maximum(distance, 1e-6) ** 2
    weights /= weights.sum(axis=1, keepdims=True)
    spread: np.ndarray = np.einsum("tk,tkc->tc", weights, values[index])
    return spread
