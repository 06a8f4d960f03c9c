"""``ptyscope init DATAFILE``: look at a dataset and write a commented starter config.

What the data tell is measured; what they cannot tell (beam energy, probe semiangle and
scan step, unless the file records them or the user gives them) is filled with a typical
value and marked ``CONFIRM``. Measured here:

* the bright-field disk (centre, radius): the detector pixel in mrad, given the semiangle,
  or the semiangle, given a detector calibration the file records;
* the scan rotation and transpose (curl-free centre of mass, :mod:`ptyscope.data.scan_rotation`);
* counts per pattern and the dose;
* the probe defocus, from the parallax of bright-field images (:mod:`ptyscope.data.parallax`);
* the object pixel (λ / detector extent), the probe diameter and the overlap of the scan;
* the slice thickness and count from the depth of field λ/α² and the specimen thickness
  (given); the specimen tilt is then fitted by the adaptive propagator, whose first
  alignment step is the automatic starting estimate (``docs/adaptive_propagator.md``).

The reconstruction reads the data directly when the optical axis is already on the
detector's centre pixel and the scan is not transposed; otherwise a ``preprocess`` config
is written too and the reconstruction reads its output.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ptyscope.config import PreprocessConfig, ReconstructionConfig, toml_value
from ptyscope.data.bright_field import BrightFieldDisk, find_bf_disk
from ptyscope.data.dataset import Dataset4D
from ptyscope.data.formats._common import MissingCalibrationError
from ptyscope.data.parallax import ParallaxFit, fit_parallax
from ptyscope.data.readers import read_4dstem
from ptyscope.data.scan_rotation import ScanRotationFit, find_scan_rotation_dataset
from ptyscope.data.summary import CountStatistics, count_statistics
from ptyscope.io.atomic import atomic_path
from ptyscope.physics.constants import wavelength_ang
from ptyscope.reconstruction.preflight import MAX_TILT_PLANE_SPACING_ANG, probe_diameter_ang

__all__ = ["Starter", "inspect_for_reconstruction", "write_starter"]

#: Values written where neither the file nor the user says (each marked CONFIRM).
TYPICAL: dict[str, Any] = {"energy_ev": 300e3, "scan_step_ang": (0.4, 0.4)}
TYPICAL_SEMIANGLE_MRAD = 25.0
#: Slices per depth of field λ/α²: the depth resolution of multislice ptychography is of
#: the order of λ/α², and a few slices per resolution element let the depth profile form.
SLICES_PER_DEPTH_OF_FIELD = 3
#: ``propagator.plane_spacing_ang`` of a config that fits the tilt with slices thicker than
#: the preflight's limit: two planes per slice of up to 16 Å (on SrTiO3, 82 Å in 5 slices:
#: |Δθ| <= 0.17 mrad, d_O-TiO < 1 pm up to 8 mrad; docs/adaptive_propagator.md).
INIT_PLANE_SPACING_ANG = 8.5
#: Below this dose [e/Å²] the Poisson likelihood is the better loss; above it the amplitude
#: (Gaussian on √I) loss converges faster and more robustly at the default step sizes.
LOW_DOSE_E_PER_ANG2 = 1e4
#: Mini-batches: at most this many patterns per update, and at least this many updates per
#: pass over the data (small scans converge in fewer passes with more, smaller updates).
MAX_BATCH = 32
MIN_UPDATES_PER_ITERATION = 12
#: A detector pixel calibration the file records and the bright-field disk may disagree
#: by this much before init says so.
CALIBRATION_TOLERANCE = 0.05


@dataclass
class Starter:
    """What ``ptyscope init`` found, and what it must ask the user to confirm."""

    path: Path
    file_format: str | None
    dataset: Dataset4D
    scan_shape_option: tuple[int, int] | None
    energy_ev: float
    scan_step_ang: tuple[float, float]
    semiangle_mrad: float
    detector_pixel_mrad: float
    disk: BrightFieldDisk
    rotation: ScanRotationFit
    counts: CountStatistics
    parallax: ParallaxFit | None
    thickness_ang: float | None
    confirm: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def centred(self) -> bool:
        """Whether the optical axis is on the detector's centre pixel (within 0.5 px)."""
        ny, nx = self.dataset.detector_shape
        cy, cx = self.disk.center_px
        return abs(cy - ny // 2) <= 0.5 and abs(cx - nx // 2) <= 0.5

    @property
    def needs_preprocess(self) -> bool:
        return not self.centred or self.rotation.transpose

    @property
    def object_pixel_ang(self) -> tuple[float, float]:
        """λ / (N · Δα) per axis [Å]: the reconstruction's pixel with the whole detector."""
        lam = wavelength_ang(self.energy_ev)
        ny, nx = self.dataset.detector_shape
        return (
            lam / (ny * self.detector_pixel_mrad * 1e-3),
            lam / (nx * self.detector_pixel_mrad * 1e-3),
        )

    @property
    def depth_of_field_ang(self) -> float:
        """λ / α² [Å]."""
        return wavelength_ang(self.energy_ev) / (self.semiangle_mrad * 1e-3) ** 2

    @property
    def defocus_ang(self) -> float:
        """Entrance-surface defocus [Å]: the parallax focus plus half the thickness."""
        if self.parallax is None:
            return 0.0
        return self.parallax.defocus_ang + 0.5 * (self.thickness_ang or 0.0)

    @property
    def slices(self) -> tuple[int, float]:
        """(slice count, slice thickness [Å]); one slice when the thickness is unknown."""
        if self.thickness_ang is None:
            return 1, 10.0
        target = self.depth_of_field_ang / SLICES_PER_DEPTH_OF_FIELD
        count = max(1, round(self.thickness_ang / target))
        return count, self.thickness_ang / count


def _read(
    path: Path, file_format: str | None, options: dict[str, Any]
) -> tuple[Dataset4D, list[str]]:
    try:
        return read_4dstem(path, file_format, **options), []
    except MissingCalibrationError as exc:
        filled = dict(options)
        for name in exc.missing:
            if name == "detector_pixel":
                filled["detector_pixel_mrad"] = 1.0  # replaced from the disk below
            else:
                filled[name] = TYPICAL[name]
        return read_4dstem(path, file_format, **filled), list(exc.missing)


def inspect_for_reconstruction(
    path: str | Path,
    *,
    file_format: str | None = None,
    scan_shape: tuple[int, int] | None = None,
    energy_ev: float | None = None,
    semiangle_mrad: float | None = None,
    scan_step_ang: tuple[float, float] | None = None,
    thickness_ang: float | None = None,
) -> Starter:
    """Measure what a starter config needs from a dataset (module docstring).

    Parameters
    ----------
    path:
        A 4D-STEM file in any format ptyscope reads.
    file_format, scan_shape:
        As for :func:`~ptyscope.data.readers.read_4dstem`.
    energy_ev, semiangle_mrad, scan_step_ang:
        What the user knows [eV, mrad, (y, x) Å]; they override the file.
    thickness_ang:
        Specimen thickness [Å], for the slices and the entrance defocus.

    Returns
    -------
    Starter
    """
    source = Path(path)
    if thickness_ang is not None and not thickness_ang > 0:
        raise ValueError(f"thickness_ang must be > 0 Å, got {thickness_ang}")
    given: dict[str, Any] = {
        "energy_ev": energy_ev,
        "scan_step_ang": scan_step_ang,
        "scan_shape": scan_shape,
    }
    options = {key: value for key, value in given.items() if value is not None}
    dataset, missing = _read(source, file_format, options)
    confirm: dict[str, str] = {}
    notes: list[str] = []
    if "energy_ev" in missing:
        confirm["energy_ev"] = "not in the file: typical value, give --energy-ev"
    if "scan_step_ang" in missing:
        confirm["scan_step_ang"] = "not in the file: typical value, give --scan-step-ang"
    disk = find_bf_disk(dataset.mean_pattern())
    cal = dataset.calibration
    recorded_pixel = None if "detector_pixel" in missing else cal.detector_pixel_mrad[0]
    alpha = semiangle_mrad if semiangle_mrad is not None else cal.semiangle_mrad
    if alpha is None and recorded_pixel is not None:
        alpha = disk.radius_px * recorded_pixel
        notes.append(
            f"semiangle {alpha:.3g} mrad measured from the bright-field disk and the "
            "detector calibration the file records"
        )
    if alpha is None:
        alpha = TYPICAL_SEMIANGLE_MRAD
        confirm["semiangle_mrad"] = "not in the file: typical value, give --semiangle-mrad"
    pixel_mrad = float(alpha) / disk.radius_px
    if recorded_pixel is not None and (
        abs(recorded_pixel / pixel_mrad - 1) > CALIBRATION_TOLERANCE
    ):
        notes.append(
            f"the file's detector pixel ({recorded_pixel:.4g} mrad) and the bright-field "
            f"disk ({pixel_mrad:.4g} mrad for α = {alpha:.3g} mrad) disagree by more than "
            f"{CALIBRATION_TOLERANCE:.0%}: the disk's value is used; check the semiangle"
        )
    lam = wavelength_ang(cal.energy_ev)
    dk = pixel_mrad * 1e-3 / lam
    calibration = replace(
        cal,
        semiangle_mrad=float(alpha),
        detector_pixel_inv_ang=(dk, dk),
        detector_center_px=disk.center_px,
    )
    calibrated = replace(dataset, calibration=calibration)
    rotation = find_scan_rotation_dataset(calibrated)
    calibrated = replace(
        calibrated,
        calibration=replace(
            calibration,
            scan_rotation_deg=rotation.rotation_deg,
            scan_transpose=rotation.transpose,
        ),
    )
    try:
        parallax: ParallaxFit | None = fit_parallax(calibrated, disk=disk)
    except ValueError as exc:
        parallax = None
        confirm["defocus_ang"] = f"not measured ({exc}): set the defocus [Å]"
    if thickness_ang is None:
        confirm["thickness_ang"] = (
            "specimen thickness unknown: one slice, no tilt fit; give --thickness-ang"
        )
    return Starter(
        path=source,
        file_format=file_format,
        dataset=calibrated,
        scan_shape_option=scan_shape,
        energy_ev=float(calibration.energy_ev),
        scan_step_ang=(float(cal.scan_step_ang[0]), float(cal.scan_step_ang[1])),
        semiangle_mrad=float(alpha),
        detector_pixel_mrad=float(pixel_mrad),
        disk=disk,
        rotation=rotation,
        counts=count_statistics(calibrated),
        parallax=parallax,
        thickness_ang=thickness_ang,
        confirm=confirm,
        notes=notes,
    )


class _Writer:
    """TOML text with a comment on every key: the config's own documentation, our reason."""

    def __init__(self, header: list[str]) -> None:
        self.lines = [f"# {line}" if line else "#" for line in header]

    def table(self, name: str, comment: str = "") -> None:
        self.lines += ["", f"[{name}]"] + ([f"# {comment}"] if comment else [])

    def key(self, name: str, value: object, why: str = "", confirm: str = "") -> None:
        line = f"{name} = {toml_value(value)}"
        note = f"CONFIRM: {confirm}" if confirm else why
        self.lines.append(f"{line:<42}# {note}" if note else line)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _pair(values: tuple[float, float]) -> str:
    return f"({values[0]:.4g}, {values[1]:.4g})"


def _summary(starter: Starter) -> list[str]:
    ds, disk, rot, counts = starter.dataset, starter.disk, starter.rotation, starter.counts
    px = starter.object_pixel_ang
    step = max(starter.scan_step_ang)
    kind = "integer" if counts.integer_valued else "not integer"
    diameter = probe_diameter_ang(
        starter.energy_ev, starter.semiangle_mrad, starter.defocus_ang, starter.thickness_ang or 0.0
    )
    lines = [
        f"Starter config written by `ptyscope init` for {starter.path.name}.",
        "Measured from the data (values marked CONFIRM are guesses the data cannot make):",
        f"  scan {ds.scan_shape[0]} x {ds.scan_shape[1]}, detector {ds.detector_shape[0]} x "
        f"{ds.detector_shape[1]}, {ds.dtype}",
        f"  bright-field disk: centre (y, x) = {_pair(disk.center_px)} px, radius "
        f"{disk.radius_px:.2f} px -> {starter.detector_pixel_mrad:.4g} mrad per pixel",
        f"  counts per pattern {counts.mean_counts:.4g} ({kind}), "
        f"dose {counts.dose_e_per_ang2:.3g} e/Å²",
        f"  scan rotation {rot.rotation_deg:.1f}° (transpose {rot.transpose}; relative curl "
        f"{min(rot.min_relative_curl):.3f})",
        f"  object pixel {_pair(px)} Å (λ / detector extent); probe diameter ~{diameter:.3g} Å, "
        f"scan step {step:.3g} Å -> overlap {max(0.0, 1 - step / diameter):.0%}",
        f"  depth of field λ/α² = {starter.depth_of_field_ang:.3g} Å",
    ]
    if starter.parallax is not None:
        fit = starter.parallax
        lines.append(
            f"  parallax of bright-field images: focus {fit.defocus_ang:.1f} Å above the "
            f"imaged plane (residual {fit.residual_ang:.3f} Å)"
        )
    lines += [f"  note: {note}" for note in starter.notes]
    lines += [
        "Run it with `ptyscope reconstruct` on this file; `ptyscope estimate` predicts its memory",
        "and time. Every key is documented in the config reference (docs).",
    ]
    return lines


def _data_keys(writer: _Writer, starter: Starter, preprocessed: Path | None) -> None:
    confirm = starter.confirm
    if preprocessed is not None:
        writer.key("path", str(preprocessed), "the output of the preprocess config beside this one")
        return
    writer.key("path", str(starter.path), "the detector file")
    if starter.file_format is not None:
        writer.key("format", starter.file_format, "reader")
    if starter.scan_shape_option is not None:
        writer.key("scan_shape", starter.scan_shape_option, "(scan_y, scan_x)")
    writer.key("energy_ev", starter.energy_ev, "beam energy [eV]", confirm.get("energy_ev", ""))
    writer.key(
        "semiangle_mrad",
        starter.semiangle_mrad,
        "probe semiangle [mrad]",
        confirm.get("semiangle_mrad", ""),
    )
    writer.key(
        "scan_step_ang",
        starter.scan_step_ang,
        "(y, x) step between scan positions [Å]",
        confirm.get("scan_step_ang", ""),
    )
    pixel = round(starter.detector_pixel_mrad, 5)
    writer.key(
        "detector_pixel_mrad",
        (pixel, pixel),
        f"semiangle / bright-field disk radius ({starter.disk.radius_px:.2f} px)",
    )
    writer.key(
        "scan_rotation_deg",
        round(starter.rotation.rotation_deg, 2),
        "from the curl-free centre of mass",
    )


def reconstruction_text(
    starter: Starter, *, output: Path, preprocessed: Path | None, iterations: int = 60
) -> str:
    """The commented reconstruction config (TOML) for a dataset."""
    writer = _Writer(_summary(starter))
    writer.table("data")
    _data_keys(writer, starter, preprocessed)
    slices, slice_ang = starter.slices
    writer.table("probe")
    if starter.parallax is None:
        writer.key("defocus_ang", 0.0, "", starter.confirm.get("defocus_ang", ""))
    else:
        where = "+ half the thickness " if starter.thickness_ang else ""
        writer.key(
            "defocus_ang",
            round(starter.defocus_ang, 1),
            f"parallax focus {where}[Å], + = underfocus; the probe is fitted from `start`",
        )
    writer.key("modes", 1, "4-8 for a partially coherent source (lower loss, slower)")
    writer.key("start", 5, "fit the probe from this iteration")
    writer.table("object")
    if starter.thickness_ang is None:
        writer.key("slices", 1, "", starter.confirm.get("thickness_ang", ""))
        writer.lines.append(
            "# With `ptyscope init --thickness-ang T` the slices come from T and λ/α² "
            f"({starter.depth_of_field_ang:.3g} Å):"
        )
        writer.lines.append(
            f"# about {SLICES_PER_DEPTH_OF_FIELD} slices per λ/α², and the tilt is fitted."
        )
        writer.key("slice_thickness_ang", slice_ang, "[Å]")
    else:
        writer.key(
            "slices",
            slices,
            f"{starter.thickness_ang:g} Å / (λ/α² / {SLICES_PER_DEPTH_OF_FIELD}); "
            "more slices add depth detail only down to ~λ/α²",
        )
        writer.key("slice_thickness_ang", round(slice_ang, 3), "[Å]")
    writer.key("states", 1, "several states (full batch) show vibrations: docs/mixed_object")
    writer.table("propagator")
    if slices >= 2:
        writer.key(
            "fit_tilt",
            "global",
            "fit the mistilt: the first alignment step (at tilt_start) measures it "
            'from the slices, so no guess is needed; "map" for a tilt per position',
        )
        writer.key("tilt_start", 15, "first alignment step")
        if slice_ang > MAX_TILT_PLANE_SPACING_ANG:
            planes = math.ceil(slice_ang / INIT_PLANE_SPACING_ANG - 1e-9)
            writer.key(
                "plane_spacing_ang",
                INIT_PLANE_SPACING_ANG,
                f"{planes} planes per slice show the tilt inside it ({planes}x the FFTs); "
                "4 for the best tilt and d_O-TiO (docs/adaptive_propagator.md)",
            )
    else:
        writer.key("fit_tilt", "off", "a tilt needs >= 2 slices")
    writer.key("tilt_x_mrad", 0.0, "starting tilt [mrad]")
    writer.key("tilt_y_mrad", 0.0, "starting tilt [mrad]")
    positions = starter.dataset.scan_shape[0] * starter.dataset.scan_shape[1]
    writer.table("optimization")
    writer.key(
        "iterations", iterations, "watch the loss curve in the report; add more if still falling"
    )
    batch = min(MAX_BATCH, max(1, positions // MIN_UPDATES_PER_ITERATION))
    writer.key(
        "batch_size", batch, f"patterns per update (>= {MIN_UPDATES_PER_ITERATION} per pass)"
    )
    low_dose = starter.counts.dose_e_per_ang2 < LOW_DOSE_E_PER_ANG2
    writer.key(
        "loss",
        "poisson" if low_dose else "amplitude",
        "Poisson at low dose (few counts per pixel)" if low_dose else '"poisson" below 1e4 e/Å²',
    )
    writer.key("lr_decay", 0.98, "learning rates shrink by this per iteration")
    writer.key("device", "auto", "cuda when a GPU is present")
    writer.key("seed", 0, "")
    writer.table("output")
    writer.key("path", str(output), "HDF5 result; the report goes beside it")
    return writer.text()


def preprocess_text(starter: Starter, *, output: Path) -> str:
    """The commented preprocess config (TOML): centring, calibration, rotation."""
    why = []
    if not starter.centred:
        why.append(
            f"the bright-field disk is centred at {_pair(starter.disk.center_px)} px, not on "
            "the detector's centre pixel"
        )
    if starter.rotation.transpose:
        why.append("the scan is transposed relative to the detector")
    writer = _Writer(
        [
            f"Preprocess config written by `ptyscope init` for {starter.path.name}:",
            "; ".join(why) + ". Run this first, then the reconstruction config.",
        ]
    )
    writer.key("output", str(output), "the preprocessed dataset the reconstruction reads")
    writer.table("input")
    writer.key("path", str(starter.path), "the detector file")
    if starter.file_format is not None:
        writer.key("format", starter.file_format, "reader")
    if starter.scan_shape_option is not None:
        writer.key("scan_shape", starter.scan_shape_option, "(scan_y, scan_x)")
    confirm = starter.confirm
    writer.key("energy_ev", starter.energy_ev, "[eV]", confirm.get("energy_ev", ""))
    writer.key(
        "semiangle_mrad", starter.semiangle_mrad, "[mrad]", confirm.get("semiangle_mrad", "")
    )
    writer.key("scan_step_ang", starter.scan_step_ang, "[Å]", confirm.get("scan_step_ang", ""))
    writer.table("steps", "bad pixels, BF-disk calibration, descan, scan rotation (defaults)")
    writer.key("calibrate_from_bf_disk", True, "mrad per pixel from the disk and the semiangle")
    writer.key("correct_descan", True, "centres every pattern on the optical axis")
    writer.key("find_scan_rotation", True, "rotation and transpose from the centre of mass")
    return writer.text()


def _check(text: str, model: type[ReconstructionConfig] | type[PreprocessConfig]) -> None:
    """A starter config must load as it is written (a bug here is ours, not the user's)."""
    model.model_validate(tomllib.loads(text))


def write_starter(
    starter: Starter, config: str | Path, *, overwrite: bool = False, iterations: int = 60
) -> list[Path]:
    """Write the reconstruction config (and a preprocess config when needed), atomically.

    Paths inside are relative to the config's folder when the data lie beneath it.

    Returns
    -------
    list of Path
        The files written: [preprocess config,] reconstruction config.
    """
    target = Path(config)
    stem = target.with_suffix("")
    preprocess_config = stem.parent / f"{stem.name}_preprocess.toml"
    wanted = [preprocess_config, target] if starter.needs_preprocess else [target]
    if not overwrite:
        for path in wanted:
            if path.exists():
                raise FileExistsError(f"config {str(path)!r} exists; pass --force to replace it")
    base = target.resolve().parent

    def relative(path: Path) -> Path:
        try:
            return path.resolve().relative_to(base)
        except ValueError:
            return path.resolve()

    data_file = relative(starter.path)
    result = Path(f"{stem.name}_result.h5")
    local = replace(starter, path=data_file)
    texts: list[tuple[Path, str]] = []
    preprocessed = None
    if starter.needs_preprocess:
        # Absolute, so that the two configs still agree when one of them is moved.
        preprocessed = base / f"{stem.name}_preprocessed.h5"
        text = preprocess_text(local, output=preprocessed)
        _check(text, PreprocessConfig)
        texts.append((preprocess_config, text))
    text = reconstruction_text(
        local, output=result, preprocessed=preprocessed, iterations=iterations
    )
    _check(text, ReconstructionConfig)
    texts.append((target, text))
    for path, content in texts:
        with atomic_path(path) as tmp:
            tmp.write_text(content)
    return [path for path, _ in texts]
