"""Preflight: every config and dataset is checked before the first iteration.

:func:`check_reconstruction` (a ``ptyscope reconstruct`` config and the dataset it read)
and :func:`check_simulation` (a ``ptyscope simulate`` config) collect every broken rule
and raise one :class:`~ptyscope.data.checks.PreflightError` listing each on its own line,
naming the parameter (the config key, e.g. ``data.scan_step_ang``, or the calibration
field the data file recorded, e.g. ``calibration.energy_ev``), the rule and the value
received. Values that are unusual but possible are returned and emitted as
:class:`~ptyscope.data.checks.PreflightWarning`.

Rules and their thresholds
--------------------------
λ is the electron wavelength, α the probe semiangle, dk the detector pixel [Å⁻¹], N the
detector side [px] and Δf the defocus (positive = underfocus, DESIGN.md).

*Units that look wrong.*

* Beam energy: error below 10³ eV ("looks like keV"); warning below 10⁴ eV (below any
  transmission microscope) and above 3.5·10⁶ eV (above the 3 MV of the largest).
* Semiangle: error below 0.1 mrad (a semiangle in radians is below 0.1: "looks like
  rad"); warning below 1 mrad (a near-parallel beam); error above 100 mrad (no probe
  corrector forms a wider cone and the paraxial propagator fails: "looks like µrad").
* Scan step: error above the probe window 1/dk (each probe lies inside the window, so
  neighbours could not overlap; "looks like pm"); warning above 10 Å (atomic-resolution
  ptychography steps are 0.2–2 Å) and below 0.05 Å ("looks like nm").
* Slice thickness (multislice only): error outside [0.1, 1000] Å ("looks like nm" / "pm");
  warning when slices × thickness exceeds 1000 Å (more than the ~100–150 nm inelastic
  mean free path at 200–300 kV).
* Tilt: warning above 100 mrad (mistilts are a few mrad; beyond the paraxial regime).
* Fitted tilt (``propagator.fit_tilt`` not "off") with the forward model's planes more
  than 9 Å apart (slices × planes per slice, ``propagator.plane_spacing_ang``): warning;
  one plane per thick slice shears the slices and biases the tilt
  (docs/adaptive_propagator.md, "Sub-slicing").

*Calibration consistent with the detector.*

* The bright-field disk fits on the detector: its radius α/(λ·dk) [px] is at most the
  distance from the optical axis to the nearest detector edge, on each axis. For a
  centred disk this is the statement that the object pixel 1/(N·dk) resolves the probe,
  1/(N·dk) ≤ λ/(2α) (the probe's spectrum reaches α/λ; Nyquist).
* The optical axis is the detector's centre pixel (N // 2) within 0.5 px (as
  :func:`~ptyscope.reconstruction.setup.prepare` requires).
* The bright-field disk measured on the mean pattern (3 x 3 median filtered against hot
  pixels) agrees with the calibration: radius ratio measured / (α/(λ·dk)) within
  [0.8, 1.25] (error) or [0.9, 1/0.9] (warning); its centre within 0.25 of its radius of
  the optical axis (error) or 1 px (warning).
* The probe window 1/dk holds the probe: its diameter

      D = 2·max(|Δf|, |Δf − t|)·tan α + 1.22·λ/α,

  the geometric shadow of the aperture at the largest distance from focus within the
  object's depth t = (slices − 1)·Δz, plus the Airy disk. Error when D > 1/dk (the probe
  wraps around the window); warning when D > 1/(2·dk) (the patterns sample the exit
  wave's autocorrelation, 2D wide, below Nyquist; overlap tolerates it, Edo et al. 2013).
* Overlap: warning when the scan step is at least D (neighbouring probes do not overlap).
* ``probe.defocus_ang`` differs from the defocus the file records by more than the depth
  of field λ/α²: warning.

*Optimiser.* ``optimizer = "lbfgs"`` with ``object.amplitude_limit`` or
``object.positive_phase``: warning (those projections after each step break L-BFGS's
curvature pairs).

*Sizes.* At least 2 scan positions; ``probe.modes`` at most the detector pixels inside
the bright-field disk (the modes are orthogonal functions on the aperture);
``object.states`` at most the number of patterns; ``data.scan_shape`` equal to the data's.

*Data* (:mod:`ptyscope.data.checks`): shapes, NaN/Inf, negative values, all-zero and
weak patterns; and a warning when the Poisson loss meets negative values (its likelihood
is defined for counts >= 0).

References
----------
P. D. Edo et al., "Sampling in x-ray ptychography", Phys. Rev. A 87, 053850 (2013).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ptyscope.config import ReconstructionConfig, SimulationConfig, SpecimenConfig
from ptyscope.data.bright_field import find_bf_disk
from ptyscope.data.checks import (
    DataStatistics,
    Issue,
    PreflightError,
    PreflightWarning,
    Severity,
    check_dataset,
    data_statistics,
    raise_for_issues,
)
from ptyscope.data.dataset import Dataset4D
from ptyscope.physics.constants import wavelength_ang

__all__ = [
    "PreflightError",
    "PreflightWarning",
    "check_reconstruction",
    "check_simulation",
    "probe_diameter_ang",
]

MIN_ENERGY_EV = 1e3
LOW_ENERGY_EV = 1e4
HIGH_ENERGY_EV = 3.5e6
MIN_SEMIANGLE_MRAD = 0.1
LOW_SEMIANGLE_MRAD = 1.0
MAX_SEMIANGLE_MRAD = 100.0
MIN_SLICE_ANG = 0.1
MAX_SLICE_ANG = 1000.0
MAX_DEPTH_ANG = 1000.0
LARGE_STEP_ANG = 10.0
SMALL_STEP_ANG = 0.05
MAX_TILT_MRAD = 100.0
#: Fitting the tilt with planes farther apart than this is warned about. SrTiO3, 82 Å in 5
#: slices (docs/adaptive_propagator.md): planes 16.4 Å apart left |Δθ| up to 0.43 mrad and
#: d_O-TiO 1.2–2.7 pm; 8.2 Å apart, |Δθ| <= 0.17 mrad and d_O-TiO < 1 pm up to 8 mrad.
MAX_TILT_PLANE_SPACING_ANG = 9.0
#: The plane spacing the warning suggests (four planes per 16.4 Å slice, same runs:
#: |Δθ| <= 0.15 mrad and d_O-TiO < 1 pm up to 12 mrad).
PLANE_SPACING_HINT_ANG = 4.0
#: Airy disk diameter (to the first dark ring) in units of λ/α.
AIRY_DIAMETER = 1.22
DISK_RATIO_ERROR = 1.25
DISK_RATIO_WARNING = 1 / 0.9
CENTRE_ERROR_FRACTION = 0.25
CENTRE_WARNING_PX = 1.0


def probe_diameter_ang(
    energy_ev: float, semiangle_mrad: float, defocus_ang: float, depth_ang: float = 0.0
) -> float:
    """Diameter of a defocused probe over an object's depth.

    D = 2·max(|Δf|, |Δf − t|)·tan α + 1.22·λ/α: the aperture's geometric shadow at the
    largest distance from focus between the entrance (z = 0) and the exit (z = t), plus
    the Airy disk (first dark ring) of the in-focus probe.

    Parameters
    ----------
    energy_ev:
        Beam energy [eV].
    semiangle_mrad:
        Probe semiangle α [mrad].
    defocus_ang:
        Δf [Å], positive = underfocus (focus at depth Δf below the entrance).
    depth_ang:
        Depth t the probe travels within the object [Å].

    Returns
    -------
    float
        D [Å].

    Examples
    --------
    >>> round(probe_diameter_ang(300e3, 22.0, 0.0), 3)  # Airy disk 1.22 λ/α
    1.092
    >>> round(probe_diameter_ang(300e3, 22.0, 100.0), 2)
    5.49
    """
    alpha = semiangle_mrad * 1e-3
    distance = max(abs(defocus_ang), abs(defocus_ang - depth_ang))
    return 2 * distance * math.tan(alpha) + AIRY_DIAMETER * wavelength_ang(energy_ev) / alpha


def _g(value: float) -> str:
    return f"{value:.4g}"


def _pair(values: Sequence[float]) -> str:
    return "(" + ", ".join(_g(float(v)) for v in values) + ")"


def _has_error(issues: Sequence[Issue]) -> bool:
    return any(issue.severity == "error" for issue in issues)


# ----------------------------------------------------------------- rules on one value
def _energy_issues(name: str, energy_ev: float) -> list[Issue]:
    value = f"{energy_ev:g} eV"
    if energy_ev < MIN_ENERGY_EV:
        return [
            Issue(
                "error",
                name,
                f"must be >= {MIN_ENERGY_EV:g} eV (electron microscopes run at 10⁴–3·10⁶ eV)",
                value,
                f"it looks like keV: {energy_ev:g} keV = {energy_ev * 1e3:g} eV",
            )
        ]
    if energy_ev < LOW_ENERGY_EV:
        return [
            Issue(
                "warning",
                name,
                f"should be >= {LOW_ENERGY_EV:g} eV (no transmission microscope runs lower)",
                value,
            )
        ]
    if energy_ev > HIGH_ENERGY_EV:
        return [
            Issue(
                "warning",
                name,
                f"should be <= {HIGH_ENERGY_EV:g} eV (the largest microscopes run at 3 MV)",
                value,
            )
        ]
    return []


def _semiangle_issues(name: str, alpha_mrad: float) -> list[Issue]:
    value = f"{alpha_mrad:g} mrad"
    if alpha_mrad < MIN_SEMIANGLE_MRAD:
        return [
            Issue(
                "error",
                name,
                f"must be >= {MIN_SEMIANGLE_MRAD:g} mrad (probe semiangles lie between about "
                "1 and 70 mrad)",
                value,
                f"it looks like radians: {alpha_mrad:g} rad = {alpha_mrad * 1e3:g} mrad",
            )
        ]
    if alpha_mrad < LOW_SEMIANGLE_MRAD:
        return [
            Issue(
                "warning",
                name,
                f"should be >= {LOW_SEMIANGLE_MRAD:g} mrad for ptychography (a near-parallel "
                "beam makes a probe wider than most windows)",
                value,
            )
        ]
    if alpha_mrad > MAX_SEMIANGLE_MRAD:
        return [
            Issue(
                "error",
                name,
                f"must be <= {MAX_SEMIANGLE_MRAD:g} mrad (no probe corrector forms a wider cone; "
                "the paraxial propagator fails beyond)",
                value,
                f"it looks like µrad: {alpha_mrad:g} µrad = {alpha_mrad / 1e3:g} mrad",
            )
        ]
    return []


def _slice_issues(name: str, thickness_ang: float, depth_ang: float | None) -> list[Issue]:
    value = f"{thickness_ang:g} Å"
    if thickness_ang < MIN_SLICE_ANG:
        return [
            Issue(
                "error",
                name,
                f"must be >= {MIN_SLICE_ANG:g} Å (a tenth of the closest atomic spacings)",
                value,
                f"it looks like nm: {thickness_ang:g} nm = {thickness_ang * 10:g} Å",
            )
        ]
    if thickness_ang > MAX_SLICE_ANG:
        return [
            Issue(
                "error",
                name,
                f"must be <= {MAX_SLICE_ANG:g} Å (one slice of a multislice model is thin)",
                value,
                f"it looks like pm: {thickness_ang:g} pm = {thickness_ang / 100:g} Å",
            )
        ]
    if depth_ang is not None and depth_ang > MAX_DEPTH_ANG:
        return [
            Issue(
                "warning",
                name,
                f"should give a total thickness <= {MAX_DEPTH_ANG:g} Å (the inelastic mean "
                "free path is ~1000–1500 Å at 200–300 kV)",
                f"{value}, {_g(depth_ang)} Å in all",
            )
        ]
    return []


def _tilt_issues(names: Sequence[str], tilts_mrad: Sequence[float]) -> list[Issue]:
    return [
        Issue(
            "warning",
            name,
            f"should be within ±{MAX_TILT_MRAD:g} mrad (mistilts are a few mrad; beyond "
            "lies the paraxial propagator's limit)",
            f"{tilt:g} mrad",
            "is it in µrad, or a tilt-series angle?",
        )
        for name, tilt in zip(names, tilts_mrad, strict=True)
        if abs(tilt) > MAX_TILT_MRAD
    ]


def _step_issues(
    name: str, step_ang: Sequence[float], window_ang: float | None, diameter_ang: float | None
) -> list[Issue]:
    largest, smallest = max(step_ang), min(step_ang)
    value = f"{_pair(step_ang)} Å"
    pm = f"if it is in pm: {_g(largest)} pm = {_g(largest / 100)} Å"
    if window_ang is not None and largest > window_ang:
        return [
            Issue(
                "error",
                name,
                f"must be at most the probe window {_g(window_ang)} Å (every probe lies inside "
                "the window, so neighbours could not overlap)",
                value,
                pm,
            )
        ]
    issues = []
    if largest > LARGE_STEP_ANG:
        issues.append(
            Issue(
                "warning",
                name,
                f"should be <= {LARGE_STEP_ANG:g} Å (atomic-resolution ptychography steps are "
                "0.2–2 Å)",
                value,
                pm,
            )
        )
    if smallest < SMALL_STEP_ANG:
        issues.append(
            Issue(
                "warning",
                name,
                f"should be >= {SMALL_STEP_ANG:g} Å (finer than any resolution reached)",
                value,
                f"if it is in nm: {_g(smallest)} nm = {_g(smallest * 10)} Å",
            )
        )
    if diameter_ang is not None and largest >= diameter_ang:
        issues.append(
            Issue(
                "warning",
                name,
                f"should be below the probe diameter {_g(diameter_ang)} Å so that neighbouring "
                "probes overlap (ptychography relies on overlap; >= 60% is customary)",
                value,
            )
        )
    return issues


def _window_issues(
    window: str,
    window_ang: float,
    defocus_name: str,
    defocus_ang: float,
    depth_ang: float,
    energy_ev: float,
    alpha_mrad: float,
) -> list[Issue]:
    diameter = probe_diameter_ang(energy_ev, alpha_mrad, defocus_ang, depth_ang)
    shape = (
        f"the probe's diameter 2·max|Δf − z|·tan α + 1.22·λ/α over the object's depth z ∈ "
        f"[0, {_g(depth_ang)}] Å is {_g(diameter)} Å"
        if depth_ang > 0
        else f"the probe's diameter 2·|Δf|·tan α + 1.22·λ/α is {_g(diameter)} Å"
    )
    if diameter > window_ang:
        return [
            Issue(
                "error",
                defocus_name,
                f"must leave the probe inside the probe window {window} = {_g(window_ang)} Å "
                f"({shape})",
                f"{defocus_ang:g} Å",
                "the probe would wrap around the window: reduce |defocus| or enlarge the "
                "window (a finer detector pixel, e.g. no detector binning)",
            )
        ]
    if diameter > window_ang / 2:
        return [
            Issue(
                "warning",
                defocus_name,
                f"should keep the probe within half the probe window {window} = "
                f"{_g(window_ang)} Å ({shape}; the patterns then sample the exit wave below "
                "Nyquist)",
                f"{defocus_ang:g} Å",
            )
        ]
    return []


# ----------------------------------------------------------------- reconstruction
def _source(config: ReconstructionConfig, field: str) -> str:
    """The config key if the config set the value, else the calibration field."""
    return f"data.{field}" if getattr(config.data, field) is not None else f"calibration.{field}"


def _detector_pixel(config: ReconstructionConfig, dataset: Dataset4D) -> str:
    cal = dataset.calibration
    if config.data.detector_pixel_mrad is not None:
        return f"data.detector_pixel_mrad = {_pair(cal.detector_pixel_mrad)} mrad"
    return f"calibration.detector_pixel_inv_ang = {_pair(cal.detector_pixel_inv_ang)} Å⁻¹"


def _scan_step(config: ReconstructionConfig, dataset: Dataset4D) -> tuple[str, tuple[float, ...]]:
    """(name, step): the calibrated step, or the median spacing of explicit positions."""
    if dataset.scan_positions_ang is None:
        return _source(config, "scan_step_ang"), dataset.calibration.scan_step_ang
    positions = dataset.positions_ang()
    spacings = []
    for axis in (0, 1):
        if positions.shape[axis] > 1:
            diffs = np.diff(positions, axis=axis)
            spacings.append(float(np.median(np.hypot(diffs[..., 0], diffs[..., 1]))))
    return "scan_positions_ang (median spacing)", tuple(spacings)


def _size_issues(config: ReconstructionConfig, dataset: Dataset4D) -> list[Issue]:
    issues = []
    wanted = config.data.scan_shape
    if wanted is not None and tuple(wanted) != dataset.scan_shape:
        issues.append(
            Issue(
                "error",
                "data.scan_shape",
                f"must match the data's scan (scan_y, scan_x) = {dataset.scan_shape}",
                str(tuple(wanted)),
            )
        )
    if dataset.scan_positions_ang is not None:
        for key in ("scan_step_ang", "scan_rotation_deg", "scan_transpose"):
            value = getattr(config.data, key)
            if value is not None:  # it would be silently ignored
                issues.append(
                    Issue(
                        "error",
                        f"data.{key}",
                        "has no effect when the file records explicit scan positions "
                        "(scan_positions_ang), which are used as they are; remove it",
                        str(value),
                    )
                )
    count = dataset.scan_shape[0] * dataset.scan_shape[1]
    if config.data.scan_half is not None:
        count = (count + (1 if config.data.scan_half == "even" else 0)) // 2
    if count < 2:
        issues.append(
            Issue(
                "error",
                "data",
                "must hold at least 2 scan positions (ptychography needs overlapping probes)",
                f"{count} pattern(s) (scan {dataset.scan_shape})",
            )
        )
    if config.object.states > count:
        issues.append(
            Issue(
                "error",
                "object.states",
                f"must be at most the number of patterns ({count}) that define the states",
                str(config.object.states),
            )
        )
    return issues


def _disk_issues(
    config: ReconstructionConfig, dataset: Dataset4D, stats: DataStatistics, alpha_mrad: float
) -> list[Issue]:
    """The bright-field disk on the detector: fits, centred, agrees with the data."""
    cal = dataset.calibration
    lam = cal.wavelength_ang
    dk = cal.detector_pixel_inv_ang
    ny, nx = dataset.detector_shape
    cy, cx = dataset.detector_center_px
    radius = (alpha_mrad * 1e-3 / lam / dk[0], alpha_mrad * 1e-3 / lam / dk[1])
    room = (min(cy + 0.5, ny - 0.5 - cy), min(cx + 0.5, nx - 0.5 - cx))
    alpha_name = _source(config, "semiangle_mrad")
    detector = _detector_pixel(config, dataset)
    issues = []
    if radius[0] > room[0] or radius[1] > room[1]:
        pixel = (1 / (ny * dk[0]), 1 / (nx * dk[1]))
        issues.append(
            Issue(
                "error",
                alpha_name,
                f"must give a bright-field disk that fits on the {ny}x{nx} detector "
                f"({detector}): its radius α/(λ·dk) is {_pair(radius)} px, the optical axis "
                f"{_pair((cy, cx))} lies {_pair(room)} px from the nearest edges (equivalently "
                f"the object pixel 1/(N·dk) = {_pair(pixel)} Å must be <= λ/(2α) = "
                f"{_g(lam / (2 * alpha_mrad * 1e-3))} Å to resolve the probe)",
                f"{alpha_mrad:g} mrad",
                "a semiangle or detector pixel in the wrong units, or a detector cropped "
                "inside the disk",
            )
        )
    centre_name = (
        "calibration.detector_center_px"
        if cal.detector_center_px is not None
        else "calibration.detector_center_px (default det // 2)"
    )
    if abs(cy - ny // 2) > 0.5 or abs(cx - nx // 2) > 0.5:
        issues.append(
            Issue(
                "error",
                centre_name,
                f"must be ({ny // 2}, {nx // 2}) within 0.5 px (the optical axis must be at "
                "the detector's centre pixel, det // 2; the reconstruction models the "
                "fraction of a pixel, not more)",
                _pair((cy, cx)),
                "run ptyscope preprocess (descan correction centres the patterns)",
            )
        )
    if float(stats.mean_pattern.max()) <= 0 or _has_error(issues):
        return issues
    try:  # a 3 x 3 median first: hot or dead pixels must not pass for the disk
        disk = find_bf_disk(ndimage.median_filter(stats.mean_pattern, size=3))
    except ValueError as exc:
        return [
            *issues,
            Issue("warning", "mean pattern", "should show a bright-field disk", f"'{exc}'"),
        ]
    expected = math.sqrt(radius[0] * radius[1])
    ratio = disk.radius_px / expected
    levels: tuple[tuple[Severity, float], ...] = (
        ("error", DISK_RATIO_ERROR),
        ("warning", DISK_RATIO_WARNING),
    )
    for severity, bound in levels:
        if not 1 / bound <= ratio <= bound:
            verb = "must" if severity == "error" else "should"
            issues.append(
                Issue(
                    severity,
                    f"{alpha_name} with {detector.split(' = ')[0]}",
                    f"{verb} put the bright-field disk where the mean pattern shows it (the "
                    f"ratio of measured to expected radius {verb} lie within "
                    f"[{1 / bound:.3g}, {bound:.3g}])",
                    f"{alpha_mrad:g} mrad with {detector.split(' = ')[1]}: α/(λ·dk) = "
                    f"{_g(expected)} px expected, {_g(disk.radius_px)} px measured (ratio "
                    f"{ratio:.3g})",
                    "one of the two is wrong; ptyscope preprocess "
                    "(steps.calibrate_from_bf_disk) calibrates the detector pixel from the disk",
                )
            )
            break
    offset = math.hypot(disk.center_px[0] - cy, disk.center_px[1] - cx)
    if offset > CENTRE_WARNING_PX:
        error = offset > CENTRE_ERROR_FRACTION * disk.radius_px
        issues.append(
            Issue(
                "error" if error else "warning",
                centre_name,
                f"{'must' if error else 'should'} be the centre of the mean pattern's "
                f"bright-field disk {_pair(disk.center_px)} within "
                f"{_g(CENTRE_ERROR_FRACTION * disk.radius_px) if error else 1} px",
                f"{_pair((cy, cx))}, {_g(offset)} px away",
                "run ptyscope preprocess (descan correction centres the patterns)",
            )
        )
    return issues


def _probe_issues(
    config: ReconstructionConfig, dataset: Dataset4D, alpha_mrad: float
) -> list[Issue]:
    """The window holds the probe, the scan overlaps, the modes fit the aperture."""
    cal = dataset.calibration
    lam = cal.wavelength_ang
    dk = cal.detector_pixel_inv_ang
    window = 1 / max(dk)
    obj = config.object
    depth = (obj.slices - 1) * obj.slice_thickness_ang
    defocus = [("probe.defocus_ang", config.probe.defocus_ang)]
    if cal.defocus_ang is not None:
        defocus.append(("calibration.defocus_ang", cal.defocus_ang))
    name, value = max(
        defocus, key=lambda item: probe_diameter_ang(cal.energy_ev, alpha_mrad, item[1], depth)
    )
    issues = _window_issues(
        f"1/dk ({_detector_pixel(config, dataset)})",
        window,
        name,
        value,
        depth,
        cal.energy_ev,
        alpha_mrad,
    )
    actual = cal.defocus_ang if cal.defocus_ang is not None else config.probe.defocus_ang
    diameter = probe_diameter_ang(cal.energy_ev, alpha_mrad, actual, depth)
    step_name, step = _scan_step(config, dataset)
    if step:
        issues += _step_issues(step_name, step, window, diameter)
    if cal.defocus_ang is not None:
        depth_of_field = lam / (alpha_mrad * 1e-3) ** 2
        if abs(config.probe.defocus_ang - cal.defocus_ang) > depth_of_field:
            issues.append(
                Issue(
                    "warning",
                    "probe.defocus_ang",
                    f"should be within the depth of field λ/α² = {_g(depth_of_field)} Å of "
                    f"the defocus the data file records ({cal.defocus_ang:g} Å)",
                    f"{config.probe.defocus_ang:g} Å",
                )
            )
    disk_pixels = math.pi * (alpha_mrad * 1e-3 / lam) ** 2 / (dk[0] * dk[1])
    if config.probe.modes > disk_pixels:
        issues.append(
            Issue(
                "error",
                "probe.modes",
                f"must be at most the {disk_pixels:.0f} detector pixels inside the "
                "bright-field disk (the modes are orthogonal functions on the aperture)",
                str(config.probe.modes),
            )
        )
    return issues


def _model_issues(config: ReconstructionConfig) -> list[Issue]:
    obj, propagator = config.object, config.propagator
    issues = []
    if obj.slices > 1:
        depth = obj.slices * obj.slice_thickness_ang
        issues += _slice_issues("object.slice_thickness_ang", obj.slice_thickness_ang, depth)
    elif propagator.fit_thickness:
        issues.append(
            Issue(
                "warning",
                "propagator.fit_thickness",
                "needs object.slices >= 2 (one slice has no propagation to fit)",
                "true with object.slices = 1",
            )
        )
    issues += _tilt_issues(
        ("propagator.tilt_y_mrad", "propagator.tilt_x_mrad"),
        (propagator.tilt_y_mrad, propagator.tilt_x_mrad),
    )
    planes = propagator.planes_per_slice(obj.slice_thickness_ang)
    spacing = obj.slice_thickness_ang / planes
    if propagator.fit_tilt != "off" and obj.slices > 1 and spacing > MAX_TILT_PLANE_SPACING_ANG:
        issues.append(
            Issue(
                "warning",
                "propagator.plane_spacing_ang",
                f"should keep the planes at most {MAX_TILT_PLANE_SPACING_ANG:g} Å apart when "
                "the tilt is fitted (a tilted column moves inside a thick slice and one "
                "plane cannot show it: the slices come out sheared, the tilt high)",
                f"{planes} plane(s) {_g(spacing)} Å apart",
                f"set propagator.plane_spacing_ang = {PLANE_SPACING_HINT_ANG:g} "
                f"({math.ceil(obj.slice_thickness_ang / PLANE_SPACING_HINT_ANG - 1e-9)} planes "
                "per slice, as many times the multislice FFTs)",
            )
        )
    projections = [
        name
        for name, on in (
            ("amplitude_limit", obj.amplitude_limit),
            ("positive_phase", obj.positive_phase),
        )
        if on
    ]
    if config.optimization.optimizer == "lbfgs" and projections:
        issues.append(
            Issue(
                "warning",
                f"object.{projections[0]}",
                "should be off with optimization.optimizer = 'lbfgs' (the object is projected "
                "after each step, which L-BFGS's curvature memory does not know of: from a "
                "mixed-state result at loss 1.2e-6 the loss rose to 4.2e-5 in 4 iterations)",
                " and ".join(f"object.{name} = true" for name in projections),
                "set them to false, or use 'adam'",
            )
        )
    return issues


def check_reconstruction(
    config: ReconstructionConfig,
    dataset: Dataset4D,
    *,
    statistics: DataStatistics | None = None,
    warn: bool = True,
) -> list[Issue]:
    """Check a reconstruction config against the dataset it read, before any work starts.

    Parameters
    ----------
    config:
        The validated ``ptyscope reconstruct`` config.
    dataset:
        The data as read with the config's calibration overrides (``read_4dstem``); read
        once more, block-wise, for the data checks unless ``statistics`` is given.
    statistics:
        :func:`~ptyscope.data.checks.data_statistics` of ``dataset`` already measured.
    warn:
        Emit the warnings as :class:`PreflightWarning` too.

    Returns
    -------
    list of Issue
        The warnings (unusual but possible values); empty when all is well.

    Raises
    ------
    PreflightError
        If any rule (module docstring) is broken; the message lists every error, one per
        line, naming the parameter, the rule and the value.

    Examples
    --------
    >>> import numpy as np
    >>> from ptyscope.data.dataset import Calibration, Dataset4D
    >>> config = ReconstructionConfig.model_validate({"data": {"path": "scan.npy"}})
    >>> calibration = Calibration(300.0, (0.4, 0.4), (0.1, 0.1), semiangle_mrad=20.0)
    >>> dataset = Dataset4D(np.ones((2, 2, 16, 16), np.float32), calibration)
    >>> try:  # doctest: +ELLIPSIS
    ...     check_reconstruction(config, dataset)
    ... except PreflightError as error:
    ...     print(error)
    reconstruction of 'scan.npy': 1 problem(s) to fix before starting:
      - calibration.energy_ev must be >= 1000 eV (...), got 300 eV; it looks like keV: 300 keV ...
    """
    cal = dataset.calibration
    issues = _energy_issues(_source(config, "energy_ev"), cal.energy_ev)
    alpha = cal.semiangle_mrad
    if alpha is None:
        issues.append(
            Issue(
                "error",
                "data.semiangle_mrad",
                "must be given (the data file records none; the probe is built from it)",
                "none",
            )
        )
    else:
        issues += _semiangle_issues(_source(config, "semiangle_mrad"), alpha)
    optics_ok = not _has_error(issues)
    issues += _model_issues(config)
    stats = statistics if statistics is not None else data_statistics(dataset)
    issues += check_dataset(dataset, name=f"data '{config.data.path}'", statistics=stats)
    issues += _size_issues(config, dataset)
    if optics_ok and alpha is not None:
        issues += _disk_issues(config, dataset, stats, alpha)
        issues += _probe_issues(config, dataset, alpha)
    if config.optimization.loss == "poisson" and float(stats.minima.min()) < 0:
        issues.append(
            Issue(
                "warning",
                "optimization.loss",
                "'poisson' expects counts >= 0 (negative values pull the model to zero)",
                f"'poisson' with values down to {_g(float(stats.minima.min()))}",
                "use 'amplitude', which clips negatives to zero",
            )
        )
    return raise_for_issues(issues, f"reconstruction of '{config.data.path}'", warn=warn)


# ----------------------------------------------------------------- simulation
def _specimen_depth(specimen: SpecimenConfig) -> float:
    """The specimen's extent along the beam [Å] where the config tells it, else 0."""
    if specimen.kind in ("srtio3_slab", "srtio3_two_domain"):
        return specimen.thickness_ang
    if specimen.kind in ("fcc_cluster", "ordered_alloy_cluster"):
        return 2 * specimen.radius_ang
    return 0.0


def check_simulation(config: SimulationConfig, *, warn: bool = True) -> list[Issue]:
    """Check a ``ptyscope simulate`` config before any work starts.

    The same unit rules as :func:`check_reconstruction` (energy, semiangle, scan step,
    slice thickness, tilt), and: the grid samples the probe (the aperture α/λ lies inside
    the band limit, ``sampling.pixel_ang`` <= f·λ/(2α) for the antialias fraction f),
    ``sampling.window_ang`` (when given) holds the defocused probe through the specimen,
    and the detector (``detector.max_angle_mrad``) takes in the bright-field disk
    (warning).

    Returns
    -------
    list of Issue
        The warnings; empty when all is well.

    Raises
    ------
    PreflightError
        If any rule is broken (every error listed, one per line).
    """
    probe, sampling, scan = config.probe, config.sampling, config.scan
    issues = _energy_issues("probe.energy_ev", probe.energy_ev)
    issues += _semiangle_issues("probe.semiangle_mrad", probe.semiangle_mrad)
    optics_ok = not _has_error(issues)
    issues += _slice_issues("sampling.slice_thickness_ang", sampling.slice_thickness_ang, None)
    issues += _tilt_issues(
        ("tilt.tilt_y_mrad", "tilt.tilt_x_mrad"),
        (config.tilt.tilt_y_mrad, config.tilt.tilt_x_mrad),
    )
    if not optics_ok:
        issues += _step_issues("scan.step_ang", scan.step_ang, sampling.window_ang, None)
        return raise_for_issues(issues, "simulation config", warn=warn)
    lam = wavelength_ang(probe.energy_ev)
    alpha = probe.semiangle_mrad * 1e-3
    fraction = sampling.antialias_fraction or 1.0
    limit = fraction * lam / (2 * alpha)
    if sampling.pixel_ang > limit:
        issues.append(
            Issue(
                "error",
                "sampling.pixel_ang",
                f"must be <= f·λ/(2α) = {_g(limit)} Å so that the aperture (α/λ = "
                f"{_g(alpha / lam)} Å⁻¹) lies inside the band limit (f = {fraction:.3g} of "
                "Nyquist)",
                f"{sampling.pixel_ang:g} Å",
            )
        )
    depth = _specimen_depth(config.specimen)
    if sampling.window_ang is not None:
        issues += _window_issues(
            "sampling.window_ang",
            sampling.window_ang,
            "probe.defocus_ang",
            probe.defocus_ang,
            depth,
            probe.energy_ev,
            probe.semiangle_mrad,
        )
    diameter = probe_diameter_ang(probe.energy_ev, probe.semiangle_mrad, probe.defocus_ang, depth)
    issues += _step_issues("scan.step_ang", scan.step_ang, sampling.window_ang, diameter)
    max_angle = config.detector.max_angle_mrad
    if max_angle is not None and max_angle < probe.semiangle_mrad:
        issues.append(
            Issue(
                "warning",
                "detector.max_angle_mrad",
                f"should be >= probe.semiangle_mrad = {probe.semiangle_mrad:g} mrad (the "
                "detector cuts the bright-field disk; ptychography needs all of it)",
                f"{max_angle:g} mrad",
            )
        )
    return raise_for_issues(issues, "simulation config", warn=warn)
