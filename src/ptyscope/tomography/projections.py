"""From per-tilt ptychographic results to tomographic projections.

Sequential multislice ptychographic tomography (Romanov et al. 2025) turns each tilt's
multislice reconstruction into one projection: the phase summed over the slices, put on a
common grid, denoised, normalised, and masked to the particle's support.

Conventions
-----------
* A result's object pixel (i, j) lies at (y, x) = origin_ang + (i·dy, j·dx) [Å] in the
  scan frame (:mod:`ptyscope.reconstruction.results`): the specimen/lab frame in which the
  scan positions are given, the beam along +z. For a simulated series
  (:mod:`ptyscope.simulation.tilt_series`) it is the cell's (y, x).
* The tomography grid (:mod:`ptyscope.tomography.projector`): voxel (k, i, j) is centred at
  (z, y, x) = (k·v, i·v, j·v) [Å] and projection pixel (i, j) at (y, x) = (i·v, j·v), so
  :func:`projection_stack`'s default grid (origin (0, 0)) is the volume's lateral grid.
  The tilt rotates the specimen about a fixed centre; the projection frame is the lab
  frame at every tilt, so resampling is a scale and an offset, never a rotation.
* Phase: a slice transmits exp(iσ V_slice) (σ the interaction constant, V_slice the
  potential projected through the slice [V·Å]), so Σ_slices arg O ≈ σ ∫ V dz, the phase
  of the weak-phase projection, positive over atoms [rad]. The per-slice angles are summed
  (not the angle of the product of the slices), so the total may exceed π without
  wrapping; a single slice wraps only if its own phase passes π, which for slices of a few
  Å through a 2-3 nm nanoparticle at 300 kV is rare (``unwrap=True`` unwraps every slice
  with :func:`skimage.restoration.unwrap_phase` first).
* Ptychography fixes the object only up to a constant phase (O e^{iα} with P e^{-iα}
  gives the same data), so each projection's vacuum level is estimated and subtracted
  (:func:`summed_phase`, ``vacuum``).
* The reconstructed field of a tilt is the bounding box of its scan positions
  (``positions_ang`` in the result) grown by ``margin_ang``; outside it the object is
  padding that no probe constrained, and :func:`projection_stack` marks it invalid (NaN).

References
----------
A. Romanov et al., "Multislice electron ptychographic tomography" (2025): summed phase
projections (Fig. 1), BM3D denoising (Fig. 2), substrate mask from a low-resolution
volume (Fig. S3).
K. Dabov, A. Foi, V. Katkovnik, K. Egiazarian, IEEE Trans. Image Process. 16, 2080 (2007)
(BM3D).
J. Immerkær, Comput. Vis. Image Underst. 64, 300 (1996) (noise estimate).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage

from ptyscope._validation import (
    require_finite,
    require_in_range,
    require_int_pair,
    require_positive,
    require_positive_pair,
)
from ptyscope.io.datafile import plain_attribute
from ptyscope.io.hdf5_guard import open_untrusted_hdf5
from ptyscope.reconstruction.results import RESULT_FORMAT

__all__ = [
    "DEFAULT_STRENGTH",
    "DENOISERS",
    "PhaseProjection",
    "ProjectionStack",
    "apply_mask",
    "denoise",
    "noise_sigma",
    "normalize_mass",
    "projection_stack",
    "substrate_mask",
    "summed_phase",
]

VacuumMode = Literal["border", "percentile"] | float | None


@dataclass(frozen=True)
class PhaseProjection:
    """The summed phase of one result.

    Attributes
    ----------
    phase:
        float64 (ny, nx): Σ_slices arg O, vacuum level subtracted [rad].
    pixel_size_ang:
        (dy, dx) [Å].
    origin_ang:
        (y, x) [Å] of pixel (0, 0) in the scan/specimen frame.
    field_ang:
        (y_min, y_max, x_min, x_max) [Å]: the reconstructed field (module docstring).
    vacuum_rad:
        The level subtracted from the phase [rad] (0 when none).
    """

    phase: np.ndarray
    pixel_size_ang: tuple[float, float]
    origin_ang: tuple[float, float]
    field_ang: tuple[float, float, float, float]
    vacuum_rad: float = 0.0

    def coordinates_ang(self) -> tuple[np.ndarray, np.ndarray]:
        """(y of each row, x of each column) [Å], float64 (ny,) and (nx,)."""
        ny, nx = self.phase.shape
        y = self.origin_ang[0] + np.arange(ny) * self.pixel_size_ang[0]
        x = self.origin_ang[1] + np.arange(nx) * self.pixel_size_ang[1]
        return y, x

    def field_mask(self) -> np.ndarray:
        """bool (ny, nx): pixels whose centre lies inside ``field_ang``."""
        y, x = self.coordinates_ang()
        y0, y1, x0, x1 = self.field_ang
        mask: np.ndarray = ((y >= y0) & (y <= y1))[:, None] & ((x >= x0) & (x <= x1))[None, :]
        return mask


@dataclass(frozen=True)
class ProjectionStack:
    """Projections of every tilt on one grid.

    Attributes
    ----------
    images:
        float64 (tilts, ny, nx) [rad], NaN where ``valid`` is False.
    valid:
        bool (tilts, ny, nx): inside the tilt's reconstructed field.
    pixel_size_ang:
        (dy, dx) [Å] of the common grid.
    origin_ang:
        (y, x) [Å] of pixel (0, 0).
    vacuum_rad:
        float64 (tilts,): the vacuum level subtracted from each tilt [rad].
    """

    images: np.ndarray
    valid: np.ndarray
    pixel_size_ang: tuple[float, float]
    origin_ang: tuple[float, float]
    vacuum_rad: np.ndarray


# ---------------------------------------------------------------------------- summed phase
def _vacuum_level(
    phase: np.ndarray,
    field: np.ndarray,
    ring: np.ndarray,
    vacuum: VacuumMode,
    percentile: float,
) -> float:
    if vacuum is None:
        return 0.0
    if isinstance(vacuum, str):
        if vacuum == "border":
            return float(np.median(phase[ring]))
        if vacuum == "percentile":
            return float(np.percentile(phase[field], percentile))
    elif isinstance(vacuum, int | float) and not isinstance(vacuum, bool):
        require_finite("vacuum", float(vacuum))
        return float(vacuum)
    raise ValueError(
        f"vacuum must be 'border', 'percentile', a level [rad] or None, got {vacuum!r}"
    )


def summed_phase(
    result_path: str | os.PathLike[str],
    *,
    state: Literal["mean"] | int = "mean",
    unwrap: bool = False,
    vacuum: VacuumMode = "border",
    border_ang: float = 1.0,
    vacuum_percentile: float = 5.0,
    margin_ang: float = 0.0,
) -> PhaseProjection:
    """The phase of a ptychographic result summed over its slices (module docstring).

    Parameters
    ----------
    result_path:
        A ptyscope result file: ``object`` complex (states, slices, ny, nx) with attrs
        ``pixel_size_ang`` and ``origin_ang`` (y, x) [Å]; optional ``state_weights``
        (states,) (default equal) and ``positions_ang`` (N, 2) (y, x) [Å] (default: the
        whole grid is the field).
    state:
        ``"mean"``: Σ_s w_s φ_s / Σ_s w_s over the object states with their weights;
        an integer: that state only.
    unwrap:
        Unwrap each slice's phase (:func:`skimage.restoration.unwrap_phase`) before
        summing; for slices whose own phase passes π.
    vacuum:
        The level subtracted: ``"border"`` the median over the field's outer ring of
        width ``border_ang`` (a particle centred in a field with vacuum around it);
        ``"percentile"`` the ``vacuum_percentile``-th percentile over the field (a field
        mostly of particle; biased low by about 1.6 noise σ at 5 %); a number [rad]; or
        ``None`` (nothing subtracted).
    border_ang:
        Width of the border ring [Å].
    vacuum_percentile:
        Percentile for ``vacuum="percentile"`` [%], in [0, 100].
    margin_ang:
        Growth of the field beyond the scan positions' bounding box [Å] (may be
        negative to trim the less constrained scan edge).

    Returns
    -------
    PhaseProjection
        float64 phase [rad] on the result's object grid, its pixel size, origin and field.

    Examples
    --------
    >>> import tempfile, pathlib, h5py, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.h5"
    >>> with h5py.File(path, "w") as f:
    ...     f.attrs["format"] = "ptyscope-result"
    ...     o = f.create_dataset("object", data=np.exp(0.2j * np.ones((1, 3, 4, 4))))
    ...     o.attrs["pixel_size_ang"] = (0.5, 0.5); o.attrs["origin_ang"] = (0.0, 0.0)
    >>> round(float(summed_phase(path, vacuum=None).phase[0, 0]), 6)
    0.6
    """
    if not isinstance(unwrap, bool):
        raise ValueError(f"unwrap must be True or False, got {unwrap!r}")
    require_positive("border_ang", border_ang, "Å")
    require_in_range("vacuum_percentile", vacuum_percentile, 0.0, 100.0, "%")
    require_finite("margin_ang", margin_ang)
    if not os.path.isfile(result_path):
        raise ValueError(f"result_path must be an existing result file, got {result_path!r}")
    with open_untrusted_hdf5(result_path) as handle:
        found = plain_attribute(handle.attrs.get("format", ""))
        if found != RESULT_FORMAT or "object" not in handle:
            raise ValueError(
                f"result_path must be a ptyscope result (format {RESULT_FORMAT!r} with an "
                f"object), got {os.fspath(result_path)!r} with format {found!r}"
            )
        dataset = handle["object"]
        obj = np.asarray(dataset[()])
        pixel = require_positive_pair("object pixel_size_ang", dataset.attrs["pixel_size_ang"])
        origin = tuple(float(v) for v in np.asarray(dataset.attrs["origin_ang"]).ravel())
        weights = np.asarray(handle["state_weights"][()]) if "state_weights" in handle else None
        positions = np.asarray(handle["positions_ang"][()]) if "positions_ang" in handle else None
    if obj.ndim != 4 or not np.iscomplexobj(obj):
        raise ValueError(
            f"the result's object must be complex (states, slices, ny, nx), got {obj.dtype} "
            f"{obj.shape}"
        )
    if len(origin) != 2:
        raise ValueError(f"the object's origin_ang must be (y, x) [Å], got {origin}")
    states = obj.shape[0]
    if weights is None:
        weights = np.full(states, 1.0 / states)
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if weights.shape != (states,) or not np.all(np.isfinite(weights)) or weights.sum() <= 0:
        raise ValueError(
            f"state_weights must be {states} finite weights with a positive sum, got "
            f"{weights.tolist()}"
        )
    if state == "mean":
        chosen, w = obj, weights / weights.sum()
    elif (
        isinstance(state, int | np.integer) and not isinstance(state, bool) and 0 <= state < states
    ):
        chosen, w = obj[int(state) : int(state) + 1], np.ones(1)
    else:
        raise ValueError(f"state must be 'mean' or an integer in [0, {states - 1}], got {state!r}")

    slices = np.angle(chosen.astype(np.complex128))  # (states, slices, ny, nx) in (-π, π]
    if unwrap:
        from skimage.restoration import unwrap_phase

        slices = np.stack(
            [[unwrap_phase(s) for s in per_state] for per_state in slices]  # type: ignore[no-untyped-call]
        )
    phase = np.tensordot(w, slices.sum(axis=1), axes=1)  # Σ_s w_s Σ_l φ_sl

    y = origin[0] + np.arange(phase.shape[0]) * pixel[0]
    x = origin[1] + np.arange(phase.shape[1]) * pixel[1]
    if positions is not None and positions.size:
        points = positions.reshape(-1, 2)
        low, high = points.min(axis=0) - margin_ang, points.max(axis=0) + margin_ang
        box = (float(low[0]), float(high[0]), float(low[1]), float(high[1]))
    else:
        box = (float(y[0]), float(y[-1]), float(x[0]), float(x[-1]))
    projection = PhaseProjection(phase, pixel, (origin[0], origin[1]), box)
    field = projection.field_mask()
    if not field.any():
        raise ValueError(
            f"margin_ang must leave pixels in the reconstructed field, got {margin_ang} Å "
            f"(field {box} [Å])"
        )
    inner = ((y >= box[0] + border_ang) & (y <= box[1] - border_ang))[:, None] & (
        (x >= box[2] + border_ang) & (x <= box[3] - border_ang)
    )[None, :]
    ring = field & ~inner
    if vacuum == "border" and not ring.any():
        raise ValueError(
            f"border_ang must leave pixels in the field's border ring, got {border_ang} Å"
        )
    level = _vacuum_level(phase, field, ring, vacuum, vacuum_percentile)
    return replace(projection, phase=phase - level, vacuum_rad=level)


# ---------------------------------------------------------------------------- common grid
def projection_stack(
    sources: Sequence[str | os.PathLike[str] | PhaseProjection],
    *,
    pixel_ang: float | tuple[float, float],
    shape: tuple[int, int],
    origin_ang: tuple[float, float] = (0.0, 0.0),
    state: Literal["mean"] | int = "mean",
    unwrap: bool = False,
    vacuum: VacuumMode = "border",
    margin_ang: float = 0.0,
) -> ProjectionStack:
    """Every tilt's summed phase resampled onto one grid (y, x) in the specimen frame.

    Parameters
    ----------
    sources:
        Per-tilt result files (read with :func:`summed_phase` and the options below) or
        :class:`PhaseProjection` objects, in tilt order.
    pixel_ang:
        Pixel of the common grid, v or (dy, dx) [Å]; the volume's voxel for tomography.
    shape:
        (ny, nx) of the common grid.
    origin_ang:
        (y, x) [Å] of pixel (0, 0); (0, 0) is the tomography grid (module docstring).
    state, unwrap, vacuum, margin_ang:
        Passed to :func:`summed_phase` for file sources.

    Returns
    -------
    ProjectionStack
        float64 (tilts, ny, nx) [rad], bilinear (:func:`scipy.ndimage.map_coordinates`,
        order 1) from each result's grid; NaN and ``valid`` False outside a tilt's
        reconstructed field.
    """
    pixel = require_positive_pair("pixel_ang", pixel_ang, "Å")
    ny, nx = require_int_pair("shape", shape)
    if len(tuple(origin_ang)) != 2:
        raise ValueError(f"origin_ang must be (y, x) [Å], got {origin_ang!r}")
    oy, ox = (float(v) for v in origin_ang)
    require_finite("origin_ang", oy)
    require_finite("origin_ang", ox)
    if isinstance(sources, str | os.PathLike) or len(sources) == 0:
        raise ValueError(f"sources must be a non-empty sequence of results, got {sources!r}")
    y = oy + np.arange(ny) * pixel[0]
    x = ox + np.arange(nx) * pixel[1]
    images = np.full((len(sources), ny, nx), np.nan)
    valid = np.zeros((len(sources), ny, nx), dtype=bool)
    levels = np.zeros(len(sources))
    for t, source in enumerate(sources):
        projection = (
            source
            if isinstance(source, PhaseProjection)
            else summed_phase(
                source, state=state, unwrap=unwrap, vacuum=vacuum, margin_ang=margin_ang
            )
        )
        rows = (y - projection.origin_ang[0]) / projection.pixel_size_ang[0]
        cols = (x - projection.origin_ang[1]) / projection.pixel_size_ang[1]
        sy, sx = projection.phase.shape
        y0, y1, x0, x1 = projection.field_ang
        inside_y = (rows >= 0) & (rows <= sy - 1) & (y >= y0) & (y <= y1)
        inside_x = (cols >= 0) & (cols <= sx - 1) & (x >= x0) & (x <= x1)
        valid[t] = inside_y[:, None] & inside_x[None, :]
        grid = np.meshgrid(rows, cols, indexing="ij")
        sampled = ndimage.map_coordinates(projection.phase, grid, order=1, mode="nearest")
        images[t][valid[t]] = sampled[valid[t]]
        levels[t] = projection.vacuum_rad
    return ProjectionStack(images, valid, pixel, (oy, ox), levels)


# ---------------------------------------------------------------------------- denoising
def _as_stack(name: str, images: Any) -> tuple[np.ndarray, bool]:
    """images as float64 (tilts, ny, nx) and whether a single image was given."""
    array = np.asarray(images, dtype=np.float64)
    if array.ndim not in (2, 3) or min(array.shape[-2:]) < 3:
        raise ValueError(
            f"{name} must be an image (ny, nx) or a stack (tilts, ny, nx) with ny, nx >= 3, "
            f"got shape {array.shape}"
        )
    return (array[None], True) if array.ndim == 2 else (array, False)


def noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of white noise in an image, robust to its structure.

    The image is filtered with Immerkær's (1996) kernel [[1, -2, 1], [-2, 4, -2],
    [1, -2, 1]] (the difference of two Laplacians, which cancels smooth structure; white
    noise of σ comes out with σ·6) and σ = 1.4826·MAD / 6, the median absolute deviation
    ignoring the few large responses at edges and atoms. Replaces
    :func:`skimage.restoration.estimate_sigma`, which needs PyWavelets.

    Parameters
    ----------
    image:
        Real (ny, nx), finite, ny, nx >= 3.

    Returns
    -------
    float
        σ̂ in the image's units.
    """
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2 or min(array.shape) < 3 or not np.all(np.isfinite(array)):
        raise ValueError(
            f"image must be a finite (ny, nx) array with ny, nx >= 3, got shape {array.shape}"
        )
    kernel = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    response = ndimage.correlate(array, kernel)[1:-1, 1:-1]
    mad = np.median(np.abs(response - np.median(response)))
    return float(1.4826 * mad / 6.0)


def _tv(image: np.ndarray, strength: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    weight = strength * noise_sigma(image)
    result: np.ndarray = denoise_tv_chambolle(image, weight=weight)  # type: ignore[no-untyped-call]
    return result


def _nlm(image: np.ndarray, strength: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    sigma = noise_sigma(image)
    result: np.ndarray = denoise_nl_means(
        image, h=strength * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True
    )
    return result


def _gaussian(image: np.ndarray, strength: float) -> np.ndarray:
    from skimage.filters import gaussian

    result: np.ndarray = gaussian(  # type: ignore[no-untyped-call]
        image, sigma=strength, mode="reflect", preserve_range=True
    )
    return result


def _bm3d(image: np.ndarray, strength: float) -> np.ndarray:
    try:
        import bm3d
    except ImportError as error:
        raise ImportError(
            "method='bm3d' needs the optional 'bm3d' package (pip install bm3d); note that "
            "its licence allows non-commercial use only. 'tv' and 'nlm' need nothing extra"
        ) from error
    return np.asarray(bm3d.bm3d(image, sigma_psd=strength * noise_sigma(image)), np.float64)


#: Registry: method name -> denoiser(image float64 (ny, nx), strength) -> image.
DENOISERS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "tv": _tv,
    "nlm": _nlm,
    "gaussian": _gaussian,
    "bm3d": _bm3d,
}
#: Default ``strength`` of each method (see :func:`denoise`).
DEFAULT_STRENGTH = {"tv": 1.0, "nlm": 0.8, "gaussian": 1.0, "bm3d": 1.0}


def denoise(
    images: np.ndarray,
    method: str | Callable[[np.ndarray, float], np.ndarray] = "tv",
    strength: float | None = None,
) -> np.ndarray:
    """Denoise phase projections one image at a time.

    Parameters
    ----------
    images:
        float (ny, nx) or (tilts, ny, nx) [rad]; NaN pixels (outside a field) are filled
        with the image's median for the filter and NaN again afterwards.
    method:
        A name of :data:`DENOISERS` or a function ``(image, strength) -> image``:

        * ``"tv"``: total variation, :func:`skimage.restoration.denoise_tv_chambolle`
          with weight = strength × σ̂ (σ̂ from :func:`noise_sigma`); default 1.
        * ``"nlm"``: non-local means, :func:`skimage.restoration.denoise_nl_means` (5×5
          patches, 13×13 search, fast mode) with h = strength × σ̂ and sigma = σ̂;
          default 0.8 (scikit-image's recommendation).
        * ``"gaussian"``: :func:`skimage.filters.gaussian` of σ = strength [px];
          default 1.
        * ``"bm3d"`` (Dabov 2007, as Romanov et al. 2025 use): ``bm3d.bm3d`` with
          sigma_psd = strength × σ̂; default 1. Needs the optional ``bm3d`` package,
          whose licence permits non-commercial use only.
    strength:
        Per method (above), > 0; ``None`` takes :data:`DEFAULT_STRENGTH`.

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``images``.
    """
    stack, single = _as_stack("images", images)
    if callable(method):
        function, default = method, 1.0
    elif isinstance(method, str) and method in DENOISERS:
        function, default = DENOISERS[method], DEFAULT_STRENGTH[method]
    else:
        raise ValueError(f"method must be one of {sorted(DENOISERS)} or a function, got {method!r}")
    level = default if strength is None else strength
    require_positive("strength", level)
    out = np.empty_like(stack)
    for t, image in enumerate(stack):
        missing = ~np.isfinite(image)
        if missing.all():
            raise ValueError(f"images[{t}] has no finite pixel")
        filled = np.where(missing, np.median(image[~missing]), image)
        out[t] = function(filled, float(level))
        out[t][missing] = np.nan
    return out[0] if single else out


# ---------------------------------------------------------------------------- mass
def _valid_mask(name: str, mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype != bool or array.shape not in (shape, shape[1:]):
        raise ValueError(
            f"{name} must be a bool array of shape {shape} or {shape[1:]}, got {array.dtype} "
            f"{array.shape}"
        )
    return np.broadcast_to(array, shape)


def normalize_mass(
    images: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    limits: tuple[float, float] = (0.5, 2.0),
    on_outlier: Literal["warn", "raise"] = "warn",
) -> tuple[np.ndarray, np.ndarray]:
    """Scale each projection so that its integral equals the median over the tilts.

    The line integral of one object has the same integral at every tilt (mass
    conservation, ∫∫ P_t dy dx = ∫ V d³r), provided the whole object lies inside every
    tilt's field and the vacuum level is subtracted. Differences come from dose, thickness
    and probe errors of the separate reconstructions; a factor far from 1 signals a failed
    one.

    Parameters
    ----------
    images:
        float (tilts, ny, nx) [rad]; NaN pixels are left out of the integrals.
    mask:
        bool (tilts, ny, nx) or (ny, nx): the region integrated (default every finite
        pixel).
    limits:
        (low, high): factors outside this range are outliers.
    on_outlier:
        ``"warn"`` (RuntimeWarning naming the tilts) or ``"raise"`` (ValueError).

    Returns
    -------
    normalized : numpy.ndarray
        float64 (tilts, ny, nx): images × factors.
    factors : numpy.ndarray
        float64 (tilts,): median integral / integral of each tilt.
    """
    stack, single = _as_stack("images", images)
    if single:
        raise ValueError(f"images must be a stack (tilts, ny, nx), got shape {stack.shape}")
    low, high = (float(v) for v in limits)
    if not 0 < low <= 1 <= high:
        raise ValueError(f"limits must be (low, high) with 0 < low <= 1 <= high, got {limits!r}")
    if on_outlier not in ("warn", "raise"):
        raise ValueError(f"on_outlier must be 'warn' or 'raise', got {on_outlier!r}")
    region = np.isfinite(stack)
    if mask is not None:
        region &= _valid_mask("mask", mask, stack.shape)
    integrals = np.where(region, stack, 0.0).sum(axis=(1, 2))
    if np.any(integrals <= 0):
        bad = np.flatnonzero(integrals <= 0).tolist()
        raise ValueError(
            f"the integral of every projection must be > 0 rad·px² (vacuum subtracted, "
            f"object inside the field), got {integrals[bad].tolist()} for tilts {bad}"
        )
    factors: np.ndarray = np.median(integrals) / integrals
    outliers = np.flatnonzero((factors < low) | (factors > high)).tolist()
    if outliers:
        message = (
            f"tilts {outliers} need mass factors {np.round(factors[outliers], 3).tolist()} "
            f"outside [{low}, {high}]: a failed reconstruction, a field that cuts the object, "
            "or a wrong vacuum level"
        )
        if on_outlier == "raise":
            raise ValueError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return stack * factors[:, None, None], factors


# ---------------------------------------------------------------------------- masks
def substrate_mask(
    low_res_volume: np.ndarray | torch.Tensor,
    voxel_ang: float,
    euler_deg: np.ndarray | Sequence[Sequence[float]],
    *,
    threshold: float = 0.2,
    dilate_ang: float = 1.0,
    shifts_ang: np.ndarray | None = None,
    center_ang: Sequence[float] | None = None,
    pixel_ang: float | None = None,
    shape: tuple[int, int] | None = None,
    min_path_ang: float | None = None,
) -> np.ndarray:
    """Per-tilt masks of the particle's support from a low-resolution volume (Fig. S3).

    As Romanov et al. (2025): the support is the volume above ``threshold`` × its maximum,
    dilated by a ball of radius ``dilate_ang`` (the margin that their blurring gives),
    projected at every tilt with :func:`ptyscope.tomography.projector.project`; a pixel
    belongs to the particle where the path through the support is >= ``min_path_ang``.

    Parameters
    ----------
    low_res_volume:
        Real (nz, ny, nx), axes (z, y, x), voxel (k, i, j) centred at (k·v, i·v, j·v) [Å].
    voxel_ang:
        Its voxel v [Å].
    euler_deg:
        (tilts, 3): (φ, θ, ψ) [deg] of each tilt (projector conventions).
    threshold:
        Fraction of the volume's maximum that binarises it, in (0, 1).
    dilate_ang:
        Radius of the dilation [Å], >= 0.
    shifts_ang:
        Optional (tilts, 2) (s_y, s_x) [Å] alignment shifts of the projections.
    center_ang:
        Rotation centre (x, y, z) [Å]; default the projector's (n·v/2 per axis).
    pixel_ang, shape:
        The grid of the masks, pixel (i, j) at (i·p, j·p) [Å] (e.g. full-resolution
        projections); default the volume's lateral grid (v, (ny, nx)). The path length is
        resampled bilinearly before the comparison.
    min_path_ang:
        Shortest path through the support that counts [Å]; default v/2.

    Returns
    -------
    numpy.ndarray
        bool (tilts, ny, nx): True on the particle.
    """
    from .projector import project

    volume = torch.as_tensor(low_res_volume).detach().cpu().to(torch.float64)
    if volume.ndim != 3 or min(volume.shape) < 2 or not bool(torch.isfinite(volume).all()):
        raise ValueError(
            "low_res_volume must be a finite real (nz, ny, nx) volume with every size >= 2, "
            f"got shape {tuple(volume.shape)}"
        )
    require_positive("voxel_ang", voxel_ang, "Å")
    require_in_range("threshold", threshold, 0.0, 1.0, inclusive=False)
    require_in_range("dilate_ang", dilate_ang, 0.0, math.inf, "Å")
    path_min = 0.5 * voxel_ang if min_path_ang is None else min_path_ang
    require_positive("min_path_ang", path_min, "Å")
    if (pixel_ang is None) != (shape is None):
        raise ValueError(
            f"pixel_ang and shape must be given together, got pixel_ang={pixel_ang!r} and "
            f"shape={shape!r}"
        )
    peak = float(volume.max())
    if peak <= 0:
        raise ValueError(f"low_res_volume must have a positive maximum, got {peak!r}")
    support = (volume > threshold * peak).numpy()
    if dilate_ang > 0:
        radius = dilate_ang / voxel_ang
        reach = math.ceil(radius)
        k, i, j = np.mgrid[-reach : reach + 1, -reach : reach + 1, -reach : reach + 1]
        support = ndimage.binary_dilation(support, structure=k**2 + i**2 + j**2 <= radius**2)
    angles = torch.as_tensor(np.asarray(euler_deg, dtype=np.float64), dtype=torch.float32)
    shifts = None if shifts_ang is None else torch.as_tensor(shifts_ang, dtype=torch.float32)
    with torch.no_grad():
        path = project(
            torch.from_numpy(support.astype(np.float32)),
            angles,
            voxel_ang,
            shifts_ang=shifts,
            center_ang=center_ang,
        ).numpy()
    if pixel_ang is not None and shape is not None:
        require_positive("pixel_ang", pixel_ang, "Å")
        ny, nx = require_int_pair("shape", shape)
        scale = pixel_ang / voxel_ang
        grid = np.meshgrid(np.arange(ny) * scale, np.arange(nx) * scale, indexing="ij")
        path = np.stack(
            [ndimage.map_coordinates(p, grid, order=1, mode="constant", cval=0.0) for p in path]
        )
    masks: np.ndarray = path >= path_min
    return masks


def apply_mask(
    images: np.ndarray,
    masks: np.ndarray,
    fill: Literal["zero", "median_outside"] = "zero",
) -> np.ndarray:
    """Replace every pixel outside the mask (substrate contrast) by a constant.

    Parameters
    ----------
    images:
        float (tilts, ny, nx) or (ny, nx) [rad].
    masks:
        bool of the same shape, or (ny, nx) for every image: True where kept.
    fill:
        ``"zero"`` (vacuum-subtracted phase outside the particle) or ``"median_outside"``
        (each image's median outside its mask: no step at the mask's edge).

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``images``; NaN pixels inside the mask stay NaN.
    """
    stack, single = _as_stack("images", images)
    keep = _valid_mask("masks", masks, stack.shape)
    if fill not in ("zero", "median_outside"):
        raise ValueError(f"fill must be 'zero' or 'median_outside', got {fill!r}")
    out = stack.copy()
    for t in range(len(out)):
        outside = ~keep[t]
        value = 0.0
        if fill == "median_outside":
            finite = outside & np.isfinite(stack[t])
            value = float(np.median(stack[t][finite])) if finite.any() else 0.0
        out[t][outside] = value
    return out[0] if single else out
