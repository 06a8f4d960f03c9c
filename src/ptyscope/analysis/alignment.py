"""Post-alignment of the slices of a fixed-propagator reconstruction.

A specimen whose zone axis is tilted by θ from the beam, reconstructed with the untilted
(fixed) propagator, comes out with its slices projected along the beam: the same column
appears displaced from slice to slice. Aligning the slices by cross-correlation after the
reconstruction is the misorientation correction that Sha et al. (Sci. Adv. 8, eabn2275
(2022), Fig. 1C, "FPP plus post-alignment") compare with the adaptive propagator, which
fits θ during the reconstruction instead; the drift of the slices with depth gives the
apparent tilt.

Sign convention (docs/conventions.md, "Tilted propagator and the meaning of θ"): for a
specimen tilted by θ = (θ_y, θ_x) a feature of slice j (depth z_j) is seen displaced by
+z_j·tanθ relative to slice 0. :func:`align_slices` reports exactly that displacement, so
:func:`apparent_tilt_mrad` returns the θ that the tilted propagator of
:func:`ptyscope.physics.fresnel_propagator` would need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ptyscope._validation import require_positive, require_positive_pair

from .registration import fourier_shift_image, register_translation

__all__ = ["SliceAlignment", "align_slices", "apparent_tilt_mrad"]

_REFERENCES = ("previous", "first")


@dataclass(frozen=True)
class SliceAlignment:
    """Displacement of each slice relative to slice 0, and the aligned stack.

    Attributes
    ----------
    shifts_px:
        float64 (L, 2): (dy, dx) [px] by which the content of slice j is displaced relative
        to slice 0 (row 0 is zero).
    shifts_ang:
        float64 (L, 2): the same in Å.
    aligned:
        float64 (L, ny, nx): slice j shifted back by −shifts_px[j] (periodic Fourier shift,
        so content leaving one edge re-enters at the other).
    """

    shifts_px: np.ndarray
    shifts_ang: np.ndarray
    aligned: np.ndarray


def _displacement(
    reference: np.ndarray, moving: np.ndarray, upsample: int, max_shift_px: float | None
) -> np.ndarray:
    """(dy, dx) [px] by which ``moving``'s content is displaced relative to ``reference``.

    register_translation returns minus this. The apodisation window stays put while the
    content moves, which pulls the estimate towards zero (by about 0.02 px per pixel of
    shift on the stacks of the tests); a second registration of the shifted-back image
    measures that residual near zero shift, where the bias vanishes.
    """
    first = -np.array(register_translation(reference, moving, upsample, max_shift_px))
    back = fourier_shift_image(moving, (-float(first[0]), -float(first[1])))
    residual = -np.array(register_translation(reference, back, upsample, 1.0))
    total: np.ndarray = first + residual
    return total


def align_slices(
    phases: np.ndarray,
    pixel_size_ang: float | Sequence[float],
    *,
    reference: str = "previous",
    upsample: int = 50,
    max_shift_px: float | None = None,
) -> SliceAlignment:
    """Sub-pixel displacements of the slices of a stack, by cross-correlation.

    Each registration is :func:`~ptyscope.analysis.registration.register_translation`
    (Hann-apodised cross-correlation refined by an upsampled DFT to 1/``upsample`` pixel).

    Parameters
    ----------
    phases:
        Real (L, ny, nx) stack, e.g. the phase [rad] of each object slice, slice 0 at the
        entrance surface.
    pixel_size_ang:
        (dy, dx) [Å].
    reference:
        "previous" (default): register slice j to slice j − 1 and accumulate; neighbouring
        slices look most alike and the step stays small, so a crystal's lattice-periodic
        correlation cannot pick the wrong peak, but errors add up over the stack (equal
        steps repeat the same rounding to the 1/``upsample`` grid: up to L/(2·upsample)
        px in all). "first": register every slice to slice 0 (error below
        1/(2·upsample) px, but the content of distant slices may differ).
    upsample:
        Registration precision is 1/upsample pixel (>= 1).
    max_shift_px:
        Search radius of each registration [px] (None: anywhere). For crystals keep it
        below half the smallest lattice spacing.

    Returns
    -------
    SliceAlignment

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> base = rng.standard_normal((32, 32))
    >>> stack = np.stack([fourier_shift_image(base, (0.0, 0.5 * j)) for j in range(3)])
    >>> align_slices(stack, 0.1).shifts_px[:, 1].round(2).tolist()
    [0.0, 0.5, 1.0]
    """
    stack = np.asarray(phases)
    if stack.ndim != 3 or stack.shape[0] < 1 or np.iscomplexobj(stack):
        raise ValueError(
            "phases must be a real (L, ny, nx) stack (take np.angle of complex slices), "
            f"got {stack.dtype} {stack.shape}"
        )
    if not np.all(np.isfinite(stack)):
        raise ValueError("phases must be finite")
    pixel = require_positive_pair("pixel_size_ang", pixel_size_ang, "Å")
    if reference not in _REFERENCES:
        raise ValueError(f"reference must be one of {list(_REFERENCES)}, got {reference!r}")
    if isinstance(upsample, bool) or not isinstance(upsample, int) or upsample < 1:
        raise ValueError(f"upsample must be an integer >= 1, got {upsample!r}")
    if max_shift_px is not None:
        require_positive("max_shift_px", max_shift_px, "px")
    stack = stack.astype(np.float64)
    shifts = np.zeros((stack.shape[0], 2))
    for j in range(1, stack.shape[0]):
        ref = j - 1 if reference == "previous" else 0
        shifts[j] = shifts[ref] + _displacement(stack[ref], stack[j], upsample, max_shift_px)
    aligned = np.stack(
        [
            fourier_shift_image(s, (-float(d[0]), -float(d[1])))
            for s, d in zip(stack, shifts, strict=True)
        ]
    )
    return SliceAlignment(shifts, shifts * np.asarray(pixel), aligned)


def apparent_tilt_mrad(shifts_ang: np.ndarray, slice_thickness_ang: float) -> tuple[float, float]:
    """Tilt (θ_y, θ_x) [mrad] from the drift of the slices with depth.

    A least-squares line s(z) = s₀ + z·tanθ through the displacements of the slices at
    z_j = j·Δz gives θ = 1000·atan(slope) per axis. With ptyscope's convention (a feature of
    slice j is seen displaced by +z_j·tanθ) this is the θ of the tilted propagator that
    would project the slices along the zone axis.

    Parameters
    ----------
    shifts_ang:
        float (L, 2), L >= 2: displacement (dy, dx) [Å] of each slice's content, as
        :attr:`SliceAlignment.shifts_ang`.
    slice_thickness_ang:
        Δz [Å] (> 0).

    Returns
    -------
    (θ_y, θ_x)
        [mrad].

    Examples
    --------
    >>> s = np.array([[0.0, 0.0], [0.0, 0.02], [0.0, 0.04]])
    >>> [round(t, 6) for t in apparent_tilt_mrad(s, 20.0)]
    [0.0, 1.0]
    """
    shifts = np.asarray(shifts_ang, dtype=np.float64)
    if shifts.ndim != 2 or shifts.shape[1] != 2 or shifts.shape[0] < 2:
        raise ValueError(
            f"shifts_ang must have shape (L >= 2, 2) ordered (y, x) [Å], got {shifts.shape}"
        )
    if not np.all(np.isfinite(shifts)):
        raise ValueError("shifts_ang must be finite")
    require_positive("slice_thickness_ang", slice_thickness_ang, "Å")
    z = np.arange(shifts.shape[0]) * float(slice_thickness_ang)
    design = np.column_stack([np.ones_like(z), z])
    (_, (slope_y, slope_x)), *_ = np.linalg.lstsq(design, shifts, rcond=None)
    return 1e3 * math.atan(float(slope_y)), 1e3 * math.atan(float(slope_x))
