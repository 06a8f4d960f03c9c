"""Failure signs of a reconstruction, read from its result file, each with what to try.

:func:`diagnose` runs one small check per sign (``check_*``) and returns :class:`Finding`
objects, warnings first: the probe's power drifting into one mode or spread evenly, the
object absorbing the probe, grid artefacts at the scan period, a tilt running away, and a
loss that plateaus or rises. A ``"warning"`` is a failure sign; an ``"info"`` says what
could not be judged. Every threshold is a module constant with its reason. The object is
read one slice at a time, state 0 only (the state every other one starts from).
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ValidationError
from scipy.spatial import cKDTree
from scipy.special import gammaln

from ptyscope.config import ObjectConfig, OptimizationConfig, PropagatorConfig
from ptyscope.io.hdf5_guard import open_untrusted_hdf5

__all__ = [
    "Finding",
    "LossFloor",
    "ResultSummary",
    "check_grid_artefact",
    "check_loss",
    "check_object_transmission",
    "check_probe_mode_collapse",
    "check_probe_mode_spread",
    "check_tilt",
    "diagnose",
    "format_findings",
    "loss_floor",
    "poisson_amplitude_error",
    "read_summary",
]

FloatArray = npt.NDArray[np.float64]
Severity = Literal["warning", "info"]

# --------------------------------------------------------------------------- thresholds

#: Probe collapse: the strongest orthogonalised mode holds more than this share of the
#: power. A field-emission source's blur at atomic resolution leaves several per cent in
#: the other modes; under 2 % they barely change the patterns (or the beam is coherent).
DOMINANT_MODE_FRACTION = 0.98
#: Probe collapse: a secondary mode whose share fell below this fraction of its peak share
#: during the run (an order of magnitude) has collapsed.
MODE_COLLAPSE_FACTOR = 0.1
#: Probe spread: the strongest mode holds less than this multiple of the equal share 1/M.
#: A partially coherent source (Gaussian Schell model) fills its modes geometrically, q^k,
#: so mode 0 stands well above 1/M unless the source blur exceeds the probe itself.
EVEN_SPREAD_RATIO = 1.25
#: Object: the prediction is scaled to the mean measured counts with a probe of fixed
#: power (``ProbePower``), so a fit keeps the mean transmission |Π_k O_k|² over the
#: scanned area near 1 for any specimen; at 1/2 (2) it predicts half (twice) the counts.
MIN_TRANSMISSION = 0.5
MAX_TRANSMISSION = 2.0
#: Object: with ``object.amplitude_limit``, the amplitude at the limit (1) on more than
#: this share of the scanned area: the model wants gain (predicts too few counts) nearly
#: everywhere. Counts scatter about the mean in a fit (38 % below on an SrTiO3 test run).
CLIPPED_FRACTION = 0.95
#: Object: within this of the limit counts as at it (float32 round-off over the slices).
CLIP_TOLERANCE = 1e-4
#: Grid: a spectrum bin's power over the median of its surroundings. In a noise-like
#: spectrum a bin's power is exponential about its mean, so P(ratio > r) = 2^-r: 1e-6 per
#: bin at 20, under 1e-4 over the <= 54 bins tested. A grid artefact is a sharp peak.
GRID_PEAK_RATIO = 20.0
#: Grid: the peak is sought within this many bins of the scan frequency (the Hann window's
#: main lobe is ±2 bins), the background in the ring of bins this far away.
GRID_PEAK_BINS = 1
GRID_RING = (3, 6)
#: Grid: the scanned area must span at least this many object pixels each way.
GRID_MIN_SIDE_PX = 16
#: Grid: and the grid's amplitude must reach this [rad]: weaker is below the phase noise
#: of a reconstruction and invisible beside atomic contrast (0.1-1 rad), and a smooth
#: image's window leakage along the axes can stand out from a near-empty spectrum.
GRID_MIN_AMPLITUDE_RAD = 0.01
#: Tilt: larger than this [mrad] is implausible: about twice a probe semiangle, a zone
#: axis no one would choose for atomic-resolution ptychography.
TILT_LARGE_MRAD = 40.0
#: Tilt: still moving when it moved more than this per 10 iterations over the last window.
#: A settled tilt jitters: registration noise of ±0.5 mrad per step (simulated SrTiO3),
#: damped by 0.5, keeps it within σ = 0.3 mrad, so two windows apart differ by ~0.4 mrad
#: per axis, and by over 1 mrad in 5 % of cases.
TILT_DRIFT_MRAD_PER_10 = 1.0
#: Tilt: the window [iterations] (at least two alignment steps: 2 × align_every).
TILT_WINDOW = 10
#: Tilt: ... and, along the window before's direction, moved over this fraction of it: a
#: converging tilt's movement falls by the damping (0.5) per alignment step, to 1/4 or
#: less per window; a runaway keeps going (noise alone does so 1 time in 4).
TILT_DECELERATION = 0.5
#: Tilt: a step within this fraction of align_max_step_mrad hit the limit.
TILT_PINNED_FRACTION = 0.98
#: Loss: the window [iterations] over which progress is measured.
LOSS_WINDOW = 10
#: Loss: a plateau when the window removed less than this share of the loss above its
#: floor: at that rate 100 more iterations remove less than 10 % of what is left.
LOSS_PLATEAU_FRACTION = 0.01
#: Loss: "far above the noise floor" is above this multiple of it. The fitted model can go
#: somewhat below the true object's floor and the floor estimate is approximate.
LOSS_FLOOR_FACTOR = 1.5
#: Loss: ending more than this fraction above the best is a rising loss (the engine's
#: divergence report uses 2 % too; for the Poisson loss, of the run's total decrease).
LOSS_RISE_FRACTION = 0.02

_TILT_TRY = (
    "Start the tilt fit later (propagator.tilt_start) once the object has formed, lower "
    "propagator.align_max_shift_ang below half the distance between columns, and check "
    "object.slices × object.slice_thickness_ang against the specimen."
)
#: What to try, by finding code.
SUGGESTIONS = {
    "probe_modes_collapsed": "If the beam is coherent, set probe.modes = 1 (cheaper). "
    "Otherwise the secondary modes are starved: start the probe fit later (probe.start) "
    "with a smaller probe.lr, and use optimization.lr_decay < 1 so the modes settle.",
    "probe_modes_spread": "The modes model something other than partial coherence: fit the "
    "positions (positions.fit = true), use fewer probe.modes, or start the probe fit later "
    "(probe.start) with a smaller probe.lr.",
    "object_absorbs": "Check the data's normalisation (every pattern in counts of the same "
    "dose, none cropped differently), keep object.amplitude_limit = true, lower object.lr, "
    "and check object.slices × object.slice_thickness_ang against the specimen.",
    "object_gain": "Set object.amplitude_limit = true and lower object.lr.",
    "object_clipped": "Check that the probe window holds the whole pattern and the data's "
    "normalisation; fitting the probe (probe.fit = true) lets it take up the intensity.",
    "grid_artefact": "Fit the positions (positions.fit = true, positions.max_px) and the "
    'probe (probe.fit = true), use optimization.batching = "compact" or a smaller '
    "object.lr, or scan with more overlap (a smaller step).",
    "tilt_large": _TILT_TRY,
    "tilt_pinned": "If the first step hit the limit, start closer (propagator.tilt_x_mrad, "
    "propagator.tilt_y_mrad) or raise propagator.align_max_step_mrad; if later steps do, "
    "the registration fails: " + _TILT_TRY[0].lower() + _TILT_TRY[1:],
    "tilt_runaway": _TILT_TRY,
    "loss_rising": "Set optimization.lr_decay below 1 (e.g. 0.98), lower the learning rates "
    "(object.lr, probe.lr, positions.lr), or start the probe, position and tilt fits later "
    "(probe.start, positions.start, propagator.tilt_start).",
    "loss_plateau": "Raise the learning rates (object.lr, probe.lr) with "
    "optimization.lr_decay < 1, fit the probe and positions (probe.fit, positions.fit), or "
    "run more optimization.iterations.",
    "loss_early_plateau": "If this is the data's noise level, fewer optimization.iterations "
    "would do; if not, the run stalled: raise the learning rates (object.lr, probe.lr) with "
    "optimization.lr_decay < 1, or fit the probe and positions (probe.fit, positions.fit).",
}

# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One diagnosis: ``code`` (e.g. ``"grid_artefact"``), ``severity`` (``"warning"``: a
    failure sign, ``"info"``: not judged, and why), the ``measured`` value(s) and the
    ``threshold`` (s) by name (units in the names), a one-line ``message`` (what was
    measured, against what) and a ``suggestion`` naming config keys (:data:`SUGGESTIONS`)."""

    code: str
    severity: Severity
    measured: Mapping[str, float] = field(default_factory=dict)
    threshold: Mapping[str, float] = field(default_factory=dict)
    message: str = ""
    suggestion: str = ""


def _warning(
    code: str, measured: Mapping[str, float], threshold: Mapping[str, float], message: str
) -> Finding:
    return Finding(code, "warning", measured, threshold, message, SUGGESTIONS[code])


def _info(code: str, message: str) -> Finding:
    return Finding(code, "info", message=message)


@dataclass(frozen=True)
class ResultSummary:
    """What the checks read from a result file: ``phase_sum`` and ``amplitude``, real
    (ny, nx) Σ_k arg O_k [rad] and Π_k |O_k| of object state 0; the object pixel (dy, dx)
    [Å]; ``origin_ang``, (y, x) [Å] of object pixel (0, 0) (``None``: not recorded, the
    whole object counts as scanned); real (N, 2) nominal (y, x) positions [Å]; the complex
    (modes, ny, nx) probe; ``history/`` by name (``probe_mode_power`` (iterations, modes),
    the others (iterations,)); the TOML config if stored."""

    phase_sum: FloatArray
    amplitude: FloatArray
    pixel_size_ang: tuple[float, float]
    origin_ang: tuple[float, float] | None
    nominal_positions_ang: FloatArray
    probe: npt.NDArray[np.complex64]
    history: Mapping[str, FloatArray] = field(default_factory=dict)
    config_text: str | None = None

    def positions_px(self) -> FloatArray:
        """Real (N, 2) nominal positions on the object grid [px] (origin (0, 0) if unknown)."""
        origin = np.asarray(self.origin_ang if self.origin_ang is not None else (0.0, 0.0))
        px: FloatArray = (self.nominal_positions_ang - origin) / np.asarray(self.pixel_size_ang)
        return px

    def scanned_region_px(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1): the object pixels between the outermost probe centres."""
        ny, nx = self.phase_sum.shape
        if self.origin_ang is None or len(self.nominal_positions_ang) == 0:
            return 0, ny, 0, nx
        px = self.positions_px()
        low = np.clip(np.ceil(px.min(axis=0)).astype(int), 0, None)
        high = np.floor(px.max(axis=0)).astype(int) + 1
        return int(low[0]), int(min(high[0], ny)), int(low[1]), int(min(high[1], nx))


def read_summary(
    handle: h5py.File,
    *,
    phase_sum: FloatArray | None = None,
    amplitude: FloatArray | None = None,
) -> ResultSummary:
    """The :class:`ResultSummary` of an open result file.

    ``phase_sum`` and ``amplitude`` (state 0, already read by the caller) spare reading
    the object again; otherwise it is read one slice at a time.
    """
    obj = handle["object"]
    if phase_sum is None or amplitude is None:
        # Imported here: the report module imports this one.
        from ptyscope.report.reconstruction_report import read_state_images

        images = read_state_images(obj, 0)
        phase_sum, amplitude = images.phase_sum, images.amplitude
    pixel = np.atleast_1d(np.asarray(obj.attrs["pixel_size_ang"], dtype=np.float64))
    pixel = np.repeat(pixel, 2) if pixel.size == 1 else pixel
    origin = obj.attrs.get("origin_ang")
    group = handle.get("history")
    history = {} if group is None else {k: np.asarray(v, np.float64) for k, v in group.items()}
    config = handle.get("config")
    text = config.attrs.get("text") if config is not None else None
    return ResultSummary(
        phase_sum=np.asarray(phase_sum, dtype=np.float64),
        amplitude=np.asarray(amplitude, dtype=np.float64),
        pixel_size_ang=(float(pixel[0]), float(pixel[1])),
        origin_ang=None if origin is None else (float(origin[0]), float(origin[1])),
        nominal_positions_ang=np.asarray(handle["nominal_positions_ang"], dtype=np.float64),
        probe=np.asarray(handle["probe"]).astype(np.complex64, copy=False),
        history=history,
        config_text=text.decode() if isinstance(text, bytes) else text,
    )


def _settings(text: str | None) -> tuple[ObjectConfig, PropagatorConfig, OptimizationConfig]:
    """The config sections the checks use; defaults where the config is absent or a section
    does not validate (a result of an older version)."""
    try:
        raw = tomllib.loads(text) if text else {}
    except tomllib.TOMLDecodeError:
        raw = {}

    def section(name: str, model: type[BaseModel]) -> Any:
        try:
            return model.model_validate(raw.get(name, {}))
        except ValidationError:
            return model()

    return (
        section("object", ObjectConfig),
        section("propagator", PropagatorConfig),
        section("optimization", OptimizationConfig),
    )


# --------------------------------------------------------------------------- probe modes


def mode_fractions(probe: npt.ArrayLike) -> FloatArray:
    """Share of the power in each orthogonalised probe mode, strongest first.

    The eigenvalues of the modes' overlap matrix G_ij = <m_i, m_j> (what
    ``history/probe_mode_power`` records), normalised: independent of the basis the fitted
    modes happen to be in.

    Parameters
    ----------
    probe:
        Complex (modes, ny, nx).

    Returns
    -------
    Real (modes,), summing to 1.

    Examples
    --------
    >>> import numpy as np
    >>> mode_fractions(np.stack([np.ones((2, 2)), np.ones((2, 2))])).round(6).tolist()
    [1.0, 0.0]
    """
    modes = np.asarray(probe, dtype=np.complex128)
    flat = modes.reshape(modes.shape[0], -1)
    power = np.linalg.eigvalsh(flat.conj() @ flat.T)[::-1].clip(min=0.0)
    return _normalised(power)


def _normalised(power: FloatArray) -> FloatArray:
    total = power.sum(axis=-1, keepdims=True)
    result: FloatArray = np.divide(power, total, out=np.zeros_like(power), where=total > 0)
    return result


def check_probe_mode_collapse(probe: npt.ArrayLike, mode_power: FloatArray | None) -> list[Finding]:
    """Probe power drifting into one mode: the strongest holds over
    :data:`DOMINANT_MODE_FRACTION`, or a secondary mode fell below
    :data:`MODE_COLLAPSE_FACTOR` of its peak share. ``probe``: complex (modes, ny, nx), the
    final probe; ``mode_power``: real (iterations, modes), ``history/probe_mode_power``
    (``None`` for a result that predates it)."""
    final = mode_fractions(probe)
    if final.size < 2:
        return []
    findings = []
    history = final[None]
    if mode_power is not None and mode_power.ndim == 2 and len(mode_power):
        history = _normalised(mode_power)
    else:
        message = "no history/probe_mode_power (an older result): judged by the final probe"
        findings.append(_info("probe_modes_unrecorded", message))
    dominant, first = float(final[0]), float(history[0, 0])
    if dominant > DOMINANT_MODE_FRACTION:
        message = (
            f"the strongest of {final.size} probe modes holds {100 * dominant:.1f} % of the "
            f"power (first recorded {100 * first:.1f} %; a sign above "
            f"{100 * DOMINANT_MODE_FRACTION:g} %)"
        )
        measured = {"dominant_fraction": dominant, "dominant_fraction_first": first}
        limit = {"dominant_fraction_max": DOMINANT_MODE_FRACTION}
        return [*findings, _warning("probe_modes_collapsed", measured, limit, message)]
    peak = history[:, 1:].max(axis=0)
    fallen = np.flatnonzero(final[1:] < MODE_COLLAPSE_FACTOR * peak)
    if len(fallen) and len(history) > 1:
        m = int(fallen[0]) + 1
        message = (
            f"probe mode {m} fell to {100 * final[m]:.2g} % of the power from "
            f"{100 * peak[m - 1]:.2g} % during the run (a sign below {MODE_COLLAPSE_FACTOR:g} "
            f"of its peak share)"
        )
        measured = {"mode": m, "fraction": float(final[m]), "peak_fraction": float(peak[m - 1])}
        limit = {"collapse_factor": MODE_COLLAPSE_FACTOR}
        findings.append(_warning("probe_modes_collapsed", measured, limit, message))
    return findings


def check_probe_mode_spread(probe: npt.ArrayLike) -> list[Finding]:
    """Probe power spread evenly over the modes: the strongest holds less than
    :data:`EVEN_SPREAD_RATIO` / modes (``probe``: complex (modes, ny, nx))."""
    final = mode_fractions(probe)
    limit = EVEN_SPREAD_RATIO / final.size
    if final.size < 2 or final[0] >= limit:
        return []
    message = (
        f"the strongest of {final.size} probe modes holds only {100 * final[0]:.1f} % of the "
        f"power, near the equal share (a sign below {EVEN_SPREAD_RATIO:g} / {final.size})"
    )
    measured = {"dominant_fraction": float(final[0])}
    return [_warning("probe_modes_spread", measured, {"dominant_fraction_min": limit}, message)]


# --------------------------------------------------------------------------- object


def check_object_transmission(
    amplitude: FloatArray, region: tuple[int, int, int, int], *, amplitude_limit: bool = True
) -> list[Finding]:
    """The object absorbing the probe, amplifying it, or pinned at its amplitude limit:
    ``amplitude``, real (ny, nx) Π_k |O_k|, over ``region`` (y0, y1, x0, x1) [object px],
    the scanned area; ``amplitude_limit``: ``object.amplitude_limit`` of the run."""
    y0, y1, x0, x1 = region
    scanned = amplitude[y0:y1, x0:x1]
    if scanned.size == 0:
        return []
    transmission = float(np.mean(scanned**2))
    measured = {"mean_transmission": transmission}
    where = f"mean |Π_k O_k|² = {transmission:.3g} over the scanned area"
    if transmission < MIN_TRANSMISSION:
        message = f"the object absorbs the probe: {where} (a sign below {MIN_TRANSMISSION:g})"
        limit = {"mean_transmission_min": MIN_TRANSMISSION}
        return [_warning("object_absorbs", measured, limit, message)]
    if transmission > MAX_TRANSMISSION:
        message = f"the object amplifies the probe: {where} (a sign above {MAX_TRANSMISSION:g})"
        limit = {"mean_transmission_max": MAX_TRANSMISSION}
        return [_warning("object_gain", measured, limit, message)]
    clipped = float(np.mean(scanned >= 1.0 - CLIP_TOLERANCE))
    if not amplitude_limit or clipped <= CLIPPED_FRACTION:
        return []
    message = (
        f"the object's amplitude sits at its limit (1) on {100 * clipped:.1f} % of the "
        f"scanned area (a sign above {100 * CLIPPED_FRACTION:g} %): the model predicts fewer "
        "counts than measured almost everywhere"
    )
    limit = {"clipped_fraction_max": CLIPPED_FRACTION}
    return [_warning("object_clipped", {"clipped_fraction": clipped, **measured}, limit, message)]


# --------------------------------------------------------------------------- grid


def scan_steps_px(positions_px: npt.ArrayLike) -> FloatArray | None:
    """The scan lattice's two shortest independent steps, real (2, 2), one (y, x) [px] per
    row, from real (N, 2) (y, x) positions [px] (a raster at any rotation, or a half of
    one); ``None`` for a scan that is not 2-D."""
    points = np.asarray(positions_px, dtype=np.float64)
    if len(points) < 4:
        return None
    _, neighbours = cKDTree(points).query(points, k=min(9, len(points)))
    steps = (points[neighbours[:, 1:]] - points[:, None, :]).reshape(-1, 2)
    flip = (steps[:, 0] < -1e-9) | ((np.abs(steps[:, 0]) <= 1e-9) & (steps[:, 1] < 0))
    steps[flip] *= -1  # a and −a are the same lattice step
    lengths = np.hypot(steps[:, 0], steps[:, 1])
    steps, lengths = steps[lengths > 1e-6], lengths[lengths > 1e-6]
    if len(steps) == 0:
        return None
    first = _common_step(steps[lengths < 1.2 * lengths.min()])
    cross = np.abs(steps[:, 0] * first[1] - steps[:, 1] * first[0])
    independent = cross > 0.5 * lengths * np.hypot(*first)
    if not independent.any():
        return None
    others, other_lengths = steps[independent], lengths[independent]
    second = _common_step(others[other_lengths < 1.2 * other_lengths.min()])
    return np.stack([first, second])


def _common_step(candidates: FloatArray) -> FloatArray:
    """The most frequent of near-equal step vectors, averaged over its cluster."""
    keys, counts = np.unique(np.round(candidates / 0.05), axis=0, return_counts=True)
    centre = keys[np.argmax(counts)] * 0.05
    near = np.hypot(*(candidates - centre).T) < 0.1 * np.hypot(*centre) + 0.05
    result: FloatArray = candidates[near].mean(axis=0)
    return result


def check_grid_artefact(
    phase_sum: FloatArray,
    region: tuple[int, int, int, int],
    positions_px: FloatArray,
    pixel_size_ang: tuple[float, float],
) -> list[Finding]:
    """Peaks of the summed phase's spectrum at the scan lattice's frequencies: b1, b2,
    b1 ± b2, 2 b1, 2 b2 below Nyquist [cycles/px] (a_i · b_j = δ_ij, the steps a_i from the
    positions, so a rotated scan is handled), in the Hann-windowed scanned area less its
    plane: a peak over the median of a ring of bins around it (:data:`GRID_PEAK_RATIO`)
    and a grid amplitude of at least :data:`GRID_MIN_AMPLITUDE_RAD`.

    Parameters
    ----------
    phase_sum:
        Real (ny, nx) summed phase [rad].
    region:
        (y0, y1, x0, x1): the scanned area [object px].
    positions_px:
        Real (N, 2) nominal (y, x) scan positions [object px].
    pixel_size_ang:
        (dy, dx) object pixel [Å] (for the period reported).
    """
    y0, y1, x0, x1 = region
    patch = np.asarray(phase_sum[y0:y1, x0:x1], dtype=np.float64)
    steps = scan_steps_px(positions_px)
    if min(patch.shape) < GRID_MIN_SIDE_PX or steps is None:
        size = f"{patch.shape[0]} × {patch.shape[1]} px"
        message = f"no grid check: scanned area {size} (needs >= {GRID_MIN_SIDE_PX}) or 1-D scan"
        return [_info("grid_unjudged", message)]
    rows, cols = np.indices(patch.shape)
    design = np.stack([np.ones(patch.size), rows.ravel(), cols.ravel()], axis=1)
    plane = design @ np.linalg.lstsq(design, patch.ravel(), rcond=None)[0]  # phase ramps
    window = np.outer(np.hanning(patch.shape[0]), np.hanning(patch.shape[1]))
    power = np.abs(np.fft.fft2((patch - plane.reshape(patch.shape)) * window)) ** 2
    reciprocal = np.linalg.inv(steps).T  # rows b_j with a_i · b_j = δ_ij [cycles/px]
    signs = []
    for m, n in ((1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2)):
        frequency = m * reciprocal[0] + n * reciprocal[1]
        peak = _peak(power, frequency) if np.abs(frequency).max() < 0.5 else None
        if peak is None:  # beyond Nyquist (aliased) or too near zero: not tested
            continue
        amplitude = 2 * math.sqrt(peak[0]) / window.sum()  # of A cos(2π f·r) [rad]
        ratio = peak[0] / peak[1] if peak[1] > 0 else math.inf
        if amplitude >= GRID_MIN_AMPLITUDE_RAD and ratio > GRID_PEAK_RATIO:
            signs.append((ratio, amplitude, frequency))
    if not signs:
        return []
    ratio, amplitude, f = max(signs, key=lambda sign: sign[0])
    period = 1 / math.hypot(f[0] / pixel_size_ang[0], f[1] / pixel_size_ang[1])
    message = (
        f"the summed phase's spectrum peaks at {ratio:.3g} × its surroundings at the scan "
        f"period {period:.3g} Å, a grid of about {1e3 * amplitude:.3g} mrad (a sign above "
        f"{GRID_PEAK_RATIO:g} × and {1e3 * GRID_MIN_AMPLITUDE_RAD:g} mrad)"
    )
    measured = {"peak_to_background": ratio, "amplitude_rad": amplitude, "period_ang": period}
    limit = {"peak_to_background": GRID_PEAK_RATIO, "amplitude_rad": GRID_MIN_AMPLITUDE_RAD}
    return [_warning("grid_artefact", measured, limit, message)]


def _peak(power: FloatArray, frequency: FloatArray) -> tuple[float, float] | None:
    """The peak power near ``frequency`` [cycles/px] and the median of the ring around it;
    ``None`` when the ring would reach zero frequency."""
    ly, lx = power.shape
    cy, cx = round(frequency[0] * ly), round(frequency[1] * lx)
    inner, outer = GRID_RING
    if max(abs(cy), abs(cx)) <= outer:
        return None
    offsets = np.arange(-outer, outer + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    distance = np.maximum(np.abs(dy), np.abs(dx))
    block = power[np.ix_((cy + offsets) % ly, (cx + offsets) % lx)]
    background = float(np.median(block[(distance >= inner) & (distance <= outer)]))
    return float(block[distance <= GRID_PEAK_BINS].max()), background


# --------------------------------------------------------------------------- tilt


def check_tilt(
    tilt_mrad: FloatArray,
    *,
    start_mrad: tuple[float, float] = (0.0, 0.0),
    align_every: int = 5,
    max_step_mrad: float = 25.0,
) -> list[Finding]:
    """A fitted tilt that runs away: large, pinned at the step limit, or still moving.

    ``tilt_mrad``: real (iterations, 2), the mean (θ_y, θ_x) after each iteration [mrad]
    (``history/tilt_y_mrad``, ``tilt_x_mrad``); ``start_mrad``: (θ_y, θ_x) before the first
    (``propagator.tilt_y_mrad``, ``tilt_x_mrad``); ``align_every`` and ``max_step_mrad``:
    ``propagator.align_every`` and ``propagator.align_max_step_mrad``.
    """
    tilt = np.asarray(tilt_mrad, dtype=np.float64).reshape(-1, 2)
    steps = np.diff(tilt, axis=0, prepend=np.asarray(start_mrad, dtype=np.float64)[None])
    moved = np.flatnonzero(np.abs(steps).max(axis=1) > 1e-9)
    if len(moved) == 0:  # the tilt was not fitted
        return []
    findings = []
    final = float(np.hypot(*tilt[-1]))
    if final > TILT_LARGE_MRAD:
        message = (
            f"the fitted tilt ends at {final:.3g} mrad (θ_y, θ_x = {tilt[-1, 0]:.3g}, "
            f"{tilt[-1, 1]:.3g}; a sign above {TILT_LARGE_MRAD:g} mrad)"
        )
        limit = {"tilt_mrad_max": TILT_LARGE_MRAD}
        findings.append(_warning("tilt_large", {"tilt_mrad": final}, limit, message))
    pinned = moved[np.abs(steps[moved]).max(axis=1) >= TILT_PINNED_FRACTION * max_step_mrad]
    if len(pinned):
        message = (
            f"{len(pinned)} tilt step(s) hit propagator.align_max_step_mrad = {max_step_mrad:g} "
            f"mrad (first at iteration {pinned[0]}): the slice registration asked for more"
        )
        measured = {"pinned_steps": float(len(pinned)), "first_pinned_iteration": float(pinned[0])}
        limit = {"align_max_step_mrad": max_step_mrad}
        findings.append(_warning("tilt_pinned", measured, limit, message))
    window = max(TILT_WINDOW, 2 * align_every)
    after = tilt[moved[0] :]  # from the first estimate on
    if len(after) < 2 * window + 1:
        message = (
            f"the tilt was fitted for {len(after)} iterations after its first estimate: "
            f"too few to tell whether it settled (needs {2 * window + 1})"
        )
        return [*findings, _info("tilt_unjudged", message)]
    last = after[-1] - after[-1 - window]
    before = after[-1 - window] - after[-1 - 2 * window]
    rate = float(np.hypot(*last)) * 10 / window
    if rate > TILT_DRIFT_MRAD_PER_10 and last @ before > TILT_DECELERATION * (before @ before):
        message = (
            f"the tilt is still moving at the end: {rate:.3g} mrad per 10 iterations over the "
            f"last {window}, the same way and not slowing down (a sign above "
            f"{TILT_DRIFT_MRAD_PER_10:g})"
        )
        measured = {"drift_mrad_per_10_iterations": rate, "tilt_mrad": final}
        limit = {"drift_mrad_per_10_iterations_max": TILT_DRIFT_MRAD_PER_10}
        findings.append(_warning("tilt_runaway", measured, limit, message))
    return findings


# --------------------------------------------------------------------------- loss


@dataclass(frozen=True)
class LossFloor:
    """The loss per pattern that Poisson noise alone leaves at the true object.

    ``kind`` ``"estimate"``: from the data's mean pattern; ``"upper_bound"``: without the
    data, the most any counts can leave (amplitude loss only).
    """

    value: float
    kind: Literal["estimate", "upper_bound"]


def poisson_amplitude_error(mean_counts: npt.ArrayLike) -> FloatArray:
    """E[(√J − √λ)²] for J ~ Poisson(λ): the amplitude loss per pixel at the true object.

    About 2λ for λ ≪ 1, at most 0.455 (near λ = 1.1), and 1/4 for λ ≫ 1: the
    variance-stabilised Poisson noise (Thibault & Guizar-Sicairos, New J. Phys. 14, 063004
    (2012)). Tabulated on 600 values of λ from 1e-4 to 400 and interpolated.

    Parameters
    ----------
    mean_counts:
        Real array of λ >= 0 [counts], any shape.

    Returns
    -------
    Real array of the same shape.

    Examples
    --------
    >>> round(float(poisson_amplitude_error(1000.0)), 3)
    0.25
    """
    lam = np.asarray(mean_counts, dtype=np.float64)
    grid = np.geomspace(1e-4, 400.0, 600)
    k = np.arange(700)[:, None]  # P(J >= 700) is negligible for λ <= 400
    pmf = np.exp(k * np.log(grid) - grid - gammaln(k + 1))
    table = (pmf * (np.sqrt(k) - np.sqrt(grid)) ** 2).sum(axis=0)
    inside = np.interp(np.log(np.clip(lam, 1e-4, 400.0)), np.log(grid), table)
    small = lam * table[0] / grid[0]  # linear below the table
    result: FloatArray = np.where(lam < 1e-4, small, np.where(lam > 400.0, 0.25, inside))
    return result


#: The largest E[(√J − √λ)²] over λ (near λ = 1.1): no pixel's floor is higher.
MAX_AMPLITUDE_ERROR = 0.4551


def loss_floor(
    loss: str, pattern_pixels: int, measured: npt.ArrayLike | None = None
) -> LossFloor | None:
    """The Poisson noise floor of ``loss`` per pattern (the engine's mean over patterns).

    Parameters
    ----------
    loss:
        ``optimization.loss``: ``"amplitude"``, ``"intensity"`` or ``"poisson"``.
    pattern_pixels:
        Pixels per pattern (ny · nx).
    measured:
        Real (..., ny, nx) patterns the run fitted, in electron counts, or ``None``. Counts
        are recognised by being whole numbers; other data (noise-free simulations,
        gain-scaled frames) have no known floor.

    Returns
    -------
    Σ_pixels E[(√J − √λ)²] (amplitude) or Σ λ (intensity), λ the mean pattern; without
    data, pattern_pixels × :data:`MAX_AMPLITUDE_ERROR` bounds the amplitude loss's floor.
    ``None`` where none is known (Poisson loss: a data-dependent constant; non-counts).
    """
    if measured is None:
        bound = pattern_pixels * MAX_AMPLITUDE_ERROR
        return LossFloor(bound, "upper_bound") if loss == "amplitude" else None
    data = np.asarray(measured, dtype=np.float64)
    data = data.reshape(-1, *data.shape[-2:])
    if np.any(data < 0) or not np.allclose(data, np.round(data), atol=1e-3):
        return None
    mean = data.mean(axis=0)
    if loss == "amplitude":
        return LossFloor(float(poisson_amplitude_error(mean).sum()), "estimate")
    if loss == "intensity":  # E[(J − λ)²] = λ
        return LossFloor(float(mean.sum()), "estimate")
    return None


def check_loss(
    loss_history: FloatArray, floor: LossFloor | None, *, loss: str = "amplitude"
) -> list[Finding]:
    """A loss that plateaus far above its noise floor, plateaus early, or rises at the end.

    ``loss_history``: real (iterations,) loss per pattern (``history/loss``); ``floor``:
    from :func:`loss_floor`; ``loss``: ``optimization.loss``. Progress is measured on the
    loss above the floor estimate (above 0 without one); a Poisson loss holds a
    data-dependent constant, so without its floor only a rise (against the run's total
    decrease) is judged.
    """
    values = np.asarray(loss_history, dtype=np.float64)
    count = len(values)
    if count < LOSS_WINDOW + 1 or not np.all(np.isfinite(values)):
        message = f"{count} finite loss values: too few to judge (needs {LOSS_WINDOW + 1})"
        return [_info("loss_unjudged", message)]
    findings = []
    best, end, at = float(values.min()), float(values[-1]), int(np.argmin(values))
    offset = loss == "poisson" and floor is None
    scale = float(values[0]) - best if offset else abs(best)
    if end - best > LOSS_RISE_FRACTION * scale:
        message = (
            f"the loss ended at {end:.5g}, above its best {best:.5g} at iteration {at} by "
            f"{100 * (end - best) / scale:.2g} % (a sign above {100 * LOSS_RISE_FRACTION:g} %)"
        )
        measured = {"final_loss": end, "best_loss": best, "best_iteration": at}
        limit = {"rise_fraction_max": LOSS_RISE_FRACTION}
        findings.append(_warning("loss_rising", measured, limit, message))
    if offset:
        return [*findings, _info("loss_unjudged", "a Poisson loss without its noise floor")]
    excess = values - (floor.value if floor is not None and floor.kind == "estimate" else 0)
    # The first iteration from which the loss fell by less than the plateau fraction.
    since = count - 1
    while since > 0 and excess[since - 1] - excess[-1] < LOSS_PLATEAU_FRACTION * abs(
        excess[since - 1]
    ):
        since -= 1
    start = excess[-1 - LOSS_WINDOW]
    progress = float((start - excess[-1]) / start) if start > 0 else 0.0
    if progress >= LOSS_PLATEAU_FRACTION:
        return findings
    measured = {"window_progress": progress, "final_loss": end, "flat_since": since}
    limit = {"window_progress_min": LOSS_PLATEAU_FRACTION}
    flat = (
        f"the loss fell by {100 * progress:.2g} % over the last {LOSS_WINDOW} iterations "
        f"(flat since iteration {since} of {count}; a sign below "
        f"{100 * LOSS_PLATEAU_FRACTION:g} %)"
    )
    if floor is not None and end > LOSS_FLOOR_FACTOR * floor.value:
        message = (
            f"{flat} at {end:.5g}, over {LOSS_FLOOR_FACTOR:g} × the noise floor "
            f"{'estimate' if floor.kind == 'estimate' else 'bound'} {floor.value:.5g}"
        )
        measured["noise_floor"] = floor.value
        limit["floor_factor"] = LOSS_FLOOR_FACTOR
        findings.append(_warning("loss_plateau", measured, limit, message))
    elif floor is not None and floor.kind == "estimate":
        pass  # at the noise floor: converged
    elif since <= count // 2:
        message = f"{flat}: half the run made no progress"
        findings.append(_warning("loss_early_plateau", measured, limit, message))
    else:
        message = f"{flat}; without the data's noise floor convergence and a stall look alike"
        findings.append(_info("loss_levelled", message))
    return findings


# --------------------------------------------------------------------------- all


def diagnose(
    result: str | os.PathLike[str] | ResultSummary, *, measured: npt.ArrayLike | None = None
) -> list[Finding]:
    """Every failure sign of a reconstruction result.

    Parameters
    ----------
    result:
        A result file (:func:`ptyscope.reconstruction.results.write_result`) or its
        :class:`ResultSummary`.
    measured:
        Optional real (..., ny, nx) patterns the run fitted, in counts: they give the
        loss's noise floor (:func:`loss_floor`); without them only a bound is known.

    Returns
    -------
    The findings, warnings first.
    """
    if not isinstance(result, ResultSummary):
        with open_untrusted_hdf5(Path(result)) as handle:
            result = read_summary(handle)
    obj, propagator, optimization = _settings(result.config_text)
    history, region = result.history, result.scanned_region_px()
    positions, pixel = result.positions_px(), result.pixel_size_ang
    findings = [
        *check_probe_mode_collapse(result.probe, history.get("probe_mode_power")),
        *check_probe_mode_spread(result.probe),
        *check_object_transmission(result.amplitude, region, amplitude_limit=obj.amplitude_limit),
        *check_grid_artefact(result.phase_sum, region, positions, pixel),
    ]
    if "tilt_y_mrad" in history and "tilt_x_mrad" in history:
        findings += check_tilt(
            np.stack([history["tilt_y_mrad"], history["tilt_x_mrad"]], axis=-1),
            start_mrad=(propagator.tilt_y_mrad, propagator.tilt_x_mrad),
            align_every=propagator.align_every,
            max_step_mrad=propagator.align_max_step_mrad,
        )
    if "loss" in history:
        loss = optimization.loss
        floor = loss_floor(loss, int(np.prod(result.probe.shape[1:])), measured)
        findings += check_loss(history["loss"], floor, loss=loss)
    return sorted(findings, key=lambda finding: finding.severity != "warning")


def format_findings(findings: Sequence[Finding]) -> str:
    """The findings as plain text for a terminal: a headline, then one entry each.

    Examples
    --------
    >>> print(format_findings([]))
    diagnostics: no failure signs found
    """
    warnings = [f for f in findings if f.severity == "warning"]
    count = f"{len(warnings)} failure sign{'s' if len(warnings) != 1 else ''}"
    lines = [f"diagnostics: {count if warnings else 'no failure signs'} found"]
    for finding in (*warnings, *(f for f in findings if f.severity != "warning")):
        label = "warning" if finding.severity == "warning" else "note"
        lines.append(f"  {label} [{finding.code}] {finding.message}")
        if finding.suggestion:
            lines.append(f"    try: {finding.suggestion}")
    return "\n".join(lines)
