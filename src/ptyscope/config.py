"""Validated configs for the ``ptyscope`` commands (TOML files -> pydantic models).

Every model forbids unknown keys, so a misspelt key is an error that names it, and every
number carries its unit in its name. Tilts in configs are named ``tilt_x_mrad`` and
``tilt_y_mrad`` (DESIGN.md); inside the library they become the (θ_y, θ_x) pair.
"""

from __future__ import annotations

import difflib
import math
import tomllib
import typing
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "AcquisitionConfig",
    "ConfigError",
    "DetectorConfig",
    "InputConfig",
    "PhononConfig",
    "PreprocessConfig",
    "PreprocessSteps",
    "ProbeConfig",
    "ReconstructionConfig",
    "SamplingConfig",
    "ScanConfig",
    "SimulationConfig",
    "SpecimenConfig",
    "TiltConfig",
    "TiltSeriesConfig",
    "TomoAlignmentConfig",
    "TomoAtomsConfig",
    "TomoProjectionsConfig",
    "TomoReconstructionConfig",
    "TomoSeriesConfig",
    "TomoVolumeConfig",
    "TomographyConfig",
    "load_config",
    "toml_value",
]

ModelT = TypeVar("ModelT", bound=BaseModel)
PositiveFloat = Annotated[float, Field(gt=0)]
PositivePair = tuple[PositiveFloat, PositiveFloat]


class ConfigError(ValueError):
    """A config file that cannot be read or does not validate."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpecimenConfig(_Model):
    """The atomic model.

    kind ``srtio3_slab``: SrTiO3 [001], ``repeat_xy`` cells laterally, ``thickness_ang``.
    kind ``file``: any file ase reads (``path``), optionally repeated by ``repeat``.
    kind ``fcc_cluster`` / ``ordered_alloy_cluster``: nanoparticles in vacuum.
    kind ``srtio3_two_domain``: two SrTiO3 domains, the second rotated by ``euler_deg``.
    """

    kind: Literal[
        "srtio3_slab", "file", "fcc_cluster", "ordered_alloy_cluster", "srtio3_two_domain"
    ]
    repeat_xy: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = (4, 4)
    thickness_ang: PositiveFloat = 80.0
    lattice_constant_ang: PositiveFloat | None = None
    path: Path | None = None
    repeat: tuple[int, int, int] = (1, 1, 1)
    symbols: tuple[str, ...] = ("Au",)
    structure: Literal["L1_2", "L1_0"] = "L1_2"
    radius_ang: PositiveFloat = 10.0
    vacuum_ang: Annotated[float, Field(ge=0)] = 5.0
    euler_deg: tuple[float, float, float] = (0.0, 3.0, 0.0)

    @model_validator(mode="after")
    def _needs(self) -> SpecimenConfig:
        if self.kind == "file" and self.path is None:
            raise ValueError("specimen kind 'file' needs path = '<structure file>'")
        if (
            self.kind in ("fcc_cluster", "ordered_alloy_cluster")
            and self.lattice_constant_ang is None
        ):
            raise ValueError(f"specimen kind {self.kind!r} needs lattice_constant_ang")
        if self.kind == "ordered_alloy_cluster" and len(self.symbols) != 2:
            raise ValueError(f"ordered_alloy_cluster needs two symbols, got {list(self.symbols)}")
        if any(n < 1 for n in self.repeat):
            raise ValueError(f"repeat must be three integers >= 1, got {list(self.repeat)}")
        return self


class ProbeConfig(_Model):
    energy_ev: PositiveFloat = 300e3
    semiangle_mrad: PositiveFloat = 22.0
    defocus_ang: float = 0.0
    #: Further aberrations by name (C30 [Å], C12, phi12 [rad], ...).
    aberrations: dict[str, float] = Field(default_factory=dict)


class ScanConfig(_Model):
    shape: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = (16, 16)
    step_ang: PositivePair = (0.4, 0.4)
    origin_ang: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0


class SamplingConfig(_Model):
    pixel_ang: PositiveFloat = 0.05
    slice_thickness_ang: PositiveFloat = 2.0
    #: Probe window [Å]; omit to use the whole cell.
    window_ang: PositiveFloat | None = None
    #: Band limit, as a fraction of the Nyquist frequency (the detector reaches it).
    #: ``"off"`` (None from Python): no band limit; the grid and the window are then even
    #: in pixels and the detector keeps every pixel of the window, so a reconstruction
    #: with the same window can hold the specimen exactly.
    antialias_fraction: Annotated[float, Field(gt=0, le=1)] | None = 2.0 / 3.0

    @field_validator("antialias_fraction", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        return None if value == "off" else value


class TiltConfig(_Model):
    """Specimen mistilt: a global value plus an optional linear gradient over the scan.

    θ(r) = (tilt_y_mrad, tilt_x_mrad) + gradient · (r − scan centre), a tilt map when the
    gradient is non-zero (e.g. a bent specimen).
    """

    tilt_x_mrad: float = 0.0
    tilt_y_mrad: float = 0.0
    #: d(θ_x)/dx, d(θ_x)/dy, d(θ_y)/dx, d(θ_y)/dy [mrad/Å].
    gradient_x_mrad_per_ang: tuple[float, float] = (0.0, 0.0)
    gradient_y_mrad_per_ang: tuple[float, float] = (0.0, 0.0)

    @property
    def is_map(self) -> bool:
        return any(self.gradient_x_mrad_per_ang) or any(self.gradient_y_mrad_per_ang)


class PhononConfig(_Model):
    """Frozen phonons: none, Einstein, a harmonic spring model, or user snapshots."""

    model: Literal["none", "einstein", "harmonic", "snapshots"] = "none"
    configs: Annotated[int, Field(ge=1)] = 8
    #: Einstein: rms displacement per Cartesian component [Å], one value or per element.
    sigma_ang: float | dict[str, float] = 0.08
    temperature_k: PositiveFloat = 300.0
    #: Harmonic: (max distance [Å], spring [eV/Å²]) per neighbour shell.
    shells: tuple[tuple[PositiveFloat, PositiveFloat], ...] = ((2.0, 6.0), (2.8, 1.5))
    #: Snapshots: a trajectory file (any format ase reads) of the displaced specimen.
    trajectory: Path | None = None

    @model_validator(mode="after")
    def _needs(self) -> PhononConfig:
        if self.model == "snapshots" and self.trajectory is None:
            raise ValueError("phonons model 'snapshots' needs trajectory = '<file>'")
        return self


class DetectorConfig(_Model):
    max_angle_mrad: PositiveFloat | None = None
    binning: Annotated[int, Field(ge=1)] = 1


class AcquisitionConfig(_Model):
    #: Standard deviation of the demagnified incoherent Gaussian source [Å] (partial
    #: spatial coherence; FWHM = 2.355 σ). The probe becomes the source's exact mixed
    #: state, as orthogonal modes, so the time grows with their number (300 kV, 25 mrad:
    #: 8 modes for σ = 0.1 Å, 17 for 0.2 Å).
    source_sigma_ang: Annotated[float, Field(ge=0)] = 0.0
    #: Fraction of the source's power that the dropped probe modes may hold.
    source_tolerance: Annotated[float, Field(gt=0, lt=1)] = 1e-3
    #: Electron dose [e/Å²]; omit for noise-free data.
    dose_e_per_ang2: PositiveFloat | None = None


class TiltSeriesConfig(_Model):
    """Tilt series about the y axis from ``min_deg`` to ``max_deg`` (ZYZ Euler (0, θ, 0)),
    or explicit ``euler_deg`` triples."""

    min_deg: float = -60.0
    max_deg: float = 60.0
    step_deg: PositiveFloat = 10.0
    euler_deg: tuple[tuple[float, float, float], ...] | None = None


class SimulationConfig(_Model):
    """``ptyscope simulate sim.toml``."""

    output: Path = Path("simulation.h5")
    device: str = "auto"
    seed: int = 0
    memory_limit_gb: PositiveFloat = 1.0
    specimen: SpecimenConfig
    probe: ProbeConfig = ProbeConfig()
    scan: ScanConfig = ScanConfig()
    sampling: SamplingConfig = SamplingConfig()
    tilt: TiltConfig = TiltConfig()
    phonons: PhononConfig = PhononConfig()
    detector: DetectorConfig = DetectorConfig()
    acquisition: AcquisitionConfig = AcquisitionConfig()
    tilt_series: TiltSeriesConfig | None = None


class InputConfig(_Model):
    """A detector file and the calibration it does not record (``ptyscope preprocess``).

    Options given here override what the file records.
    """

    path: Path
    #: Reader name (see ``ptyscope.data.readers.known_formats``); default from the extension.
    format: str | None = None
    #: Path of the 4D dataset inside a foreign HDF5 file (default: its only 4D dataset).
    dataset_path: str | None = None
    #: (scan_y, scan_x) for formats that store frames without the scan shape.
    scan_shape: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = None
    energy_ev: PositiveFloat | None = None
    scan_step_ang: PositivePair | None = None
    semiangle_mrad: PositiveFloat | None = None
    #: Detector pixel (y, x) [mrad]; omit to calibrate it from the bright-field disk.
    detector_pixel_mrad: PositivePair | None = None

    def reader_options(self) -> dict[str, object]:
        """Keyword options for ``read_4dstem``: every field that is set, except the path
        and the format."""
        return {
            name: value
            for name in type(self).model_fields
            if name not in ("path", "format") and (value := getattr(self, name)) is not None
        }


class PreprocessSteps(_Model):
    """What ``ptyscope preprocess`` does, in this order."""

    repair_bad_pixels: bool = True
    #: Calibrate mrad per pixel from the bright-field disk and the known semiangle.
    calibrate_from_bf_disk: bool = True
    correct_descan: bool = True
    #: Polynomial order of the descan model over the scan (1 = plane, 2 = quadratic).
    descan_order: Literal[1, 2] = 1
    #: Solve the scan-to-detector rotation and transpose by CoM curl minimisation.
    find_scan_rotation: bool = True
    #: Crop the detector to this angle [mrad] (square); omit to keep it whole.
    detector_max_angle_mrad: PositiveFloat | None = None
    bin_detector: Annotated[int, Field(ge=1)] = 1
    bin_scan: Annotated[int, Field(ge=1)] = 1


class PreprocessConfig(_Model):
    """``ptyscope preprocess config.toml``."""

    output: Path = Path("preprocessed.h5")
    #: The PNG panel (PACBED, virtual BF, CoM rotation curve, iCoM); default: beside output.
    figure: Path | None = None
    input: InputConfig
    steps: PreprocessSteps = PreprocessSteps()


class DataConfig(InputConfig):
    """[data]: the dataset and calibration overrides (the file's own calibration is used
    for anything not given)."""

    scan_rotation_deg: float | None = None
    #: The scan is mirrored relative to the detector (its two steps exchanged before the
    #: rotation); ``ptyscope preprocess`` finds it with the rotation. Omit to keep the file's.
    scan_transpose: bool | None = None
    #: Reconstruct one interleaved half of the scan ((row + column) even or odd), e.g. two
    #: runs for Fourier ring correlation.
    scan_half: Literal["even", "odd"] | None = None

    def reader_options(self) -> dict[str, object]:
        options = super().reader_options()
        options.pop("scan_half", None)
        return options


class ReconProbeConfig(_Model):
    defocus_ang: float = 0.0
    modes: Annotated[int, Field(ge=1)] = 1
    #: Initial probe: "aperture" (disk of the semiangle) or "mean_pattern" (measured
    #: bright-field disk), both with the defocus phase.
    init: Literal["aperture", "mean_pattern"] = "aperture"
    #: Start the ``modes`` as the strongest modes of an incoherent Gaussian source of this
    #: σ [Å] (partial spatial coherence: the shapes and powers it gives them), their powers
    #: scaled to 1. 0: the probe times low-order polynomials, 1 : 0.1 : 0.05 : ... in power.
    source_sigma_ang: Annotated[float, Field(ge=0)] = 0.0
    #: Fit the probe (false: keep the initial probe throughout).
    fit: bool = True
    #: First iteration (0-based) at which the probe is fitted.
    start: Annotated[int, Field(ge=0)] = 5
    #: First iteration at which the probe is held again (omit to fit it to the end). In
    #: stage 2 of the mixed-object preset with several probe modes, the modes first give
    #: the thermal scattering back to the states, then take it back (docs/mixed_object_log.md).
    stop: Annotated[int, Field(ge=1)] | None = None
    #: Step size relative to the probe's initial peak amplitude.
    lr: PositiveFloat = 3e-3
    #: Iterations over which the step rises linearly to ``lr`` from ``start``: the k-th
    #: update uses lr·(k+1)/(warmup+1) while k < warmup (Adam and SGD; 0: none). Adam's
    #: first step moves every probe pixel by about lr; against a converged object, as in
    #: stage 2 of the mixed-object preset, it throws the loss up.
    warmup: Annotated[int, Field(ge=0)] = 0
    #: Keep the fitted probe's defocus at its starting value (the other aberrations stay
    #: free). The probe's focus and the object's depth trade off, so a fitted probe can
    #: drift in defocus; in stage 1 of the mixed-object preset the drift drained the
    #: object states' variance in stage 2 (docs/mixed_object_log.md).
    hold_defocus: bool = False

    @model_validator(mode="after")
    def _stop_after_start(self) -> ReconProbeConfig:
        if self.stop is not None and self.stop <= self.start:
            raise ValueError(
                f"probe.stop must be greater than probe.start ({self.start}), the first "
                f"iteration at which the probe is fitted; got {self.stop}"
            )
        return self


class ObjectConfig(_Model):
    """The multislice object; several ``states`` make a mixed object (Gladyshev 2023).

    Mixed-object runs need full-batch updates. The states start as the same transmission
    with random phases of ``state_noise_rad`` that differ per state (identical states stay
    identical). ``state_lowpass_ang`` keeps only the smooth part of each state's difference
    from the mean after every iteration (Gaussian of that σ): atoms that move make smooth
    differences, noise makes sharp ones.
    """

    slices: Annotated[int, Field(ge=1)] = 1
    slice_thickness_ang: PositiveFloat = 10.0
    states: Annotated[int, Field(ge=1)] = 1
    lr: PositiveFloat = 1e-2
    #: Clip the transmission amplitude to <= 1 after every iteration.
    amplitude_limit: bool = True
    #: Clip every slice's phase to >= 0 after every iteration: a specimen's potential is
    #: positive where vacuum sets the phase's zero (a particle, an edge). A crystal that
    #: fills the field has no such reference; there the clip distorts the object (in a
    #: 12-state mixed-object run B came out at 0.17 Å² after 100 iterations, truth 0.90).
    positive_phase: bool = False
    #: Object-state weights: "equal" (1/N, fixed) or "fitted" (from the data).
    state_weights: Literal["equal", "fitted"] = "fitted"
    state_weights_lr: PositiveFloat = 1e-2
    #: Standard deviation of the random phases that set the states apart at the start [rad].
    state_noise_rad: PositiveFloat = 0.01
    #: Gaussian σ of the low-pass on the differences between states [Å]; omit for none.
    state_lowpass_ang: PositiveFloat | None = None


class InitConfig(_Model):
    """Start from earlier results: of the same data, or a probe / object of another run.

    ``result``: an earlier ptyscope result of the same data (the two-stage mixed-object
    preset). Stage 1: one object state, several probe modes, fitted (the modes absorb the
    partial coherence). Stage 2: ``init.result`` = stage 1's result, ``object.states`` =
    10-20 and ``probe.start = 150``: each state starts from stage 1's object with its own
    random phases, and the probe modes are held as stage 1 found them until the states
    have moved apart, then fitted with them; several modes are held again after 50
    iterations (``probe.stop = 200``), or they take the scattering back
    (docs/mixed_object_log.md).

    ``probe_file`` / ``object_file``: the probe or object of another reconstruction
    (ptyscope, PtyRAD ``model_*.hdf5`` or py4DSTEM ``.h5``), resampled to this run's pixel
    size and probe window and placed on its object grid
    (:mod:`ptyscope.reconstruction.initial`); the probe modes must equal ``probe.modes``
    and the slices ``object.slices``.
    """

    result: Path | None = None
    #: Take the object (every state starts from the mean of its states), the probe modes
    #: and the fitted positions from the result.
    object: bool = True
    #: "mean": every state starts from the mean of the result's states, with its own random
    #: phases (the two-stage preset). "keep": the result's states and weights as they are,
    #: to go on with other settings (e.g. L-BFGS after Adam); their number must equal
    #: ``object.states``.
    states: Literal["mean", "keep"] = "mean"
    probe: bool = True
    positions: bool = True
    #: Probe of another reconstruction (path, relative to the config file): its modes
    #: become this run's initial probe, resampled to this run's pixels [Å] and window.
    probe_file: Path | None = None
    #: Object of another reconstruction (path, relative to the config file), resampled and
    #: placed by the centroid of its probe positions; vacuum where it does not reach.
    object_file: Path | None = None
    #: Format of probe_file and object_file: "auto" recognises each file; or "ptyscope",
    #: "ptyrad" (PtyRAD model_*.hdf5) or "py4dstem" (py4DSTEM.save of a ptychography).
    format: Literal["auto", "ptyscope", "ptyrad", "py4dstem"] = "auto"

    @model_validator(mode="after")
    def _one_source_each(self) -> InitConfig:
        if self.result is None:
            return self
        for key, taken, path in (
            ("probe", self.probe, self.probe_file),
            ("object", self.object, self.object_file),
        ):
            if taken and path is not None:
                raise ValueError(
                    f"init.{key}_file ({str(path)!r}) and init.result ({str(self.result)!r}) "
                    f"both give the initial {key}: set init.{key} = false to take it from "
                    f"init.{key}_file, or drop init.{key}_file"
                )
        return self


#: Most planes per slice of the forward model (``propagator.substeps``).
MAX_SUBSTEPS = 16


class PropagatorConfig(_Model):
    """The tilted Fresnel propagator and what of it is fitted (Sha et al. 2022).

    ``fit_tilt``: "off" keeps (tilt_y_mrad, tilt_x_mrad) fixed (FPP); "global" fits one
    tilt (APP); "map" fits one tilt per scan position (extended APP), global until
    ``map_start`` (coarse to fine) and smoothed over the scan grid by a Gaussian of
    ``map_smoothing`` scan steps. The tilt moves by the alignment of the slices
    (``align_*``, needs >= 2 slices; its first step is the automatic estimate, so the start
    tilt need not be known) and, when ``tilt_lr`` > 0, also by gradient steps.
    """

    #: Initial specimen tilt [mrad] (the fixed one when fit_tilt = "off").
    tilt_x_mrad: float = 0.0
    tilt_y_mrad: float = 0.0
    fit_tilt: Literal["off", "global", "map"] = "off"
    #: Gradient step of the tilt [mrad per iteration]; 0 = alignment steps only.
    tilt_lr: Annotated[float, Field(ge=0)] = 0.0
    tilt_start: Annotated[int, Field(ge=0)] = 15
    #: Iterations between alignment steps of the tilt.
    align_every: Annotated[int, Field(ge=1)] = 5
    #: Largest displacement between neighbouring slices searched [Å]; below half the
    #: shortest distance between columns.
    align_max_shift_ang: PositiveFloat = 0.6
    #: Largest tilt correction per alignment step [mrad].
    align_max_step_mrad: PositiveFloat = 25.0
    map_start: Annotated[int, Field(ge=0)] = 30
    #: Gaussian smoothing of the tilt map [scan steps] (the regularisation strength).
    map_smoothing: PositiveFloat = 2.0
    #: Side of the window around each scan position for the local drift [Å].
    map_window_ang: PositiveFloat = 7.0
    #: Planes per slice: each slice's transmission O acts as ``substeps`` planes of
    #: O^(1/substeps), slice_thickness / substeps apart, so the columns inside a slice are
    #: tilted too. With 1 a tilt only shifts whole slices and APP's tilt is off by up to
    #: 3 % on 16 Å slices; 2 brought every case of the validation sweep within 0.2 mrad
    #: (docs/adaptive_propagator.md). Costs ``substeps``× the multislice FFTs.
    substeps: Annotated[int, Field(ge=1, le=MAX_SUBSTEPS)] = 1
    #: Largest distance between planes [Å], instead of ``substeps``: each slice gets
    #: ceil(slice_thickness / plane_spacing_ang) planes, so that runs with different slice
    #: counts model the tilt inside their slices alike: 82 Å in 3 × 4, 5 × 2 and 10 × 2
    #: planes (<= 8.2 Å apart) gave APP tilts within 0.17 mrad of each other at 8 mrad
    #: (docs/adaptive_propagator.md).
    plane_spacing_ang: PositiveFloat | None = None
    fit_thickness: bool = False
    #: Gradient step of the slice thickness [Å per iteration].
    thickness_lr: PositiveFloat = 0.1
    thickness_start: Annotated[int, Field(ge=0)] = 15

    @model_validator(mode="after")
    def _planes_set_one_way(self) -> PropagatorConfig:
        if self.plane_spacing_ang is not None and "substeps" in self.model_fields_set:
            raise ValueError(
                "give propagator.substeps or propagator.plane_spacing_ang, not both (got "
                f"substeps = {self.substeps}, plane_spacing_ang = {self.plane_spacing_ang})"
            )
        return self

    def planes_per_slice(self, slice_thickness_ang: float) -> int:
        """Planes of the forward model per slice: ``substeps``, or the fewest that keep
        the planes of a slice of ``slice_thickness_ang`` at most ``plane_spacing_ang``
        apart."""
        if self.plane_spacing_ang is None:
            return self.substeps
        return max(1, math.ceil(slice_thickness_ang / self.plane_spacing_ang - 1e-9))


class PositionsConfig(_Model):
    fit: bool = False
    start: Annotated[int, Field(ge=0)] = 10
    #: Step size [object px per iteration].
    lr: PositiveFloat = 1e-2
    #: Largest correction [px]; the global affine part is removed when remove_affine.
    max_px: PositiveFloat = 3.0
    remove_affine: bool = True


class OptimizationConfig(_Model):
    iterations: Annotated[int, Field(ge=0)] = 50
    #: Patterns per update, or "full": one update per pass over all the data (TOML has
    #: no null, so "full" is how a config file asks for it; it is stored as None).
    batch_size: Annotated[int, Field(ge=1)] | None = 32
    batching: Literal["random", "compact"] = "random"
    loss: Literal["amplitude", "poisson", "intensity"] = "amplitude"
    optimizer: Literal["adam", "sgd", "lbfgs"] = "adam"
    device: str = "auto"
    seed: int = 0
    #: Multiply every learning rate by this after each iteration (1 = constant).
    lr_decay: Annotated[float, Field(gt=0, le=1)] = 1.0
    #: Adam's decay of its average of squared gradients: it remembers about
    #: 1/(1 − adam_beta2) updates. With one full-batch update per iteration the default
    #: 0.999 keeps the large gradients of the first iterations for ~1000 iterations and so
    #: shrinks every later step; 0.99 reached the mixed-object validation's correlations
    #: about 200 iterations sooner (docs/mixed_object_log.md).
    adam_beta2: Annotated[float, Field(gt=0, lt=1)] = 0.999
    #: Write the parameters of the lowest loss instead of the last (the result's
    #: kept_iteration says which); the run itself goes on to the end. The loss is measured
    #: on the parameters an iteration starts from; with mini-batches the parameters move
    #: during it, so the pick is approximate there.
    keep_best: bool = False
    #: Most patterns per forward/backward pass; a batch is split into equal chunks. "auto":
    #: on the CPU, chunks whose waves fit the cores' caches (fastest there); 64 on a GPU
    #: (``ptyscope.reconstruction.chunking``). Lower it when memory is short.
    chunk_size: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    #: Iterations between checkpoints, or "never" (TOML has no null; stored as None). A
    #: checkpoint is also written at the end, on Ctrl-C and when a numerical failure stops
    #: the run.
    checkpoint_every: Annotated[int, Field(ge=1)] | None = 10
    #: Deterministic kernels on CUDA (slower scatter-adds), so reruns are bit-identical
    #: there too; CPU runs are bit-identical for the same seed and thread count anyway.
    deterministic: bool = False
    #: NaN/Inf guard: failed attempts at one iteration (each rolled back with the learning
    #: rates halved) before the run stops with the last good state.
    max_rollbacks: Annotated[int, Field(ge=0)] = 3
    #: Refuse to start, before reading the data, when the predicted peak memory exceeds
    #: the memory available on the device (``ptyscope estimate`` shows the prediction).
    memory_check: bool = True

    @field_validator("batch_size", mode="before")
    @classmethod
    def _full_batch(cls, value: object) -> object:
        return None if value == "full" else value

    @field_validator("checkpoint_every", mode="before")
    @classmethod
    def _never(cls, value: object) -> object:
        return None if value == "never" else value


class OutputConfig(_Model):
    path: Path = Path("reconstruction.h5")
    #: Folder of the HTML report; default: the result's name without suffix + "_report".
    report: Path | None = None


class ReconstructionConfig(_Model):
    """``ptyscope reconstruct run.toml``."""

    data: DataConfig
    probe: ReconProbeConfig = ReconProbeConfig()
    object: ObjectConfig = ObjectConfig()
    propagator: PropagatorConfig = PropagatorConfig()
    positions: PositionsConfig = PositionsConfig()
    optimization: OptimizationConfig = OptimizationConfig()
    output: OutputConfig = OutputConfig()
    init: InitConfig = InitConfig()

    @model_validator(mode="after")
    def _states_need_full_batch(self) -> ReconstructionConfig:
        if self.object.states > 1 and self.optimization.batch_size is not None:
            raise ValueError(
                "object.states > 1 needs full-batch updates (the states are only defined by "
                'all patterns together): set optimization.batch_size = "full"'
            )
        return self

    @model_validator(mode="after")
    def _planes_within_limit(self) -> ReconstructionConfig:
        thickness = self.object.slice_thickness_ang
        planes = self.propagator.planes_per_slice(thickness)
        if planes > MAX_SUBSTEPS:
            raise ValueError(
                f"propagator.plane_spacing_ang = {self.propagator.plane_spacing_ang} Å gives "
                f"{planes} planes per slice of {thickness} Å; at most {MAX_SUBSTEPS} are "
                "allowed: use more, thinner slices or a larger spacing"
            )
        return self

    @model_validator(mode="after")
    def _fitted_tilt_needs_slices(self) -> ReconstructionConfig:
        if self.propagator.fit_tilt != "off" and self.object.slices < 2:
            raise ValueError(
                f"propagator.fit_tilt = {self.propagator.fit_tilt!r} needs object.slices >= 2 "
                f"(the tilt is what lines the slices up), got {self.object.slices}"
            )
        return self


class TomoSeriesConfig(_Model):
    """``[series]``: the tilt series and which of its tilts to use."""

    #: Tilt-series HDF5 (``ptyscope simulate`` with a ``[tilt_series]`` section).
    path: Path
    #: Indices of the tilts to use; default all.
    tilts: tuple[Annotated[int, Field(ge=0)], ...] | None = None


class TomoReconstructionConfig(_Model):
    """``[reconstruction]``: one ptychographic reconstruction per tilt."""

    #: A ``ptyscope reconstruct`` TOML run on every tilt (its data.path is replaced).
    template: Path
    executor: Literal["sequential", "processes", "dask"] = "sequential"
    workers: Annotated[int, Field(ge=1)] | None = None
    #: Address of a running Dask scheduler (executor "dask"); default a LocalCluster.
    scheduler_address: str | None = None
    device: str = "cpu"


class TomoProjectionsConfig(_Model):
    """``[projections]``: summed phases on the volume's lateral grid."""

    #: Voxel of the volume = pixel of the projections [Å].
    voxel_ang: PositiveFloat = 0.4
    #: (ny, nx) of the lateral grid; default the union of the tilts' fields.
    shape: tuple[Annotated[int, Field(ge=8)], Annotated[int, Field(ge=8)]] | None = None
    #: (y, x) [Å] of lateral pixel (0, 0) in the scan frame; default the union's corner.
    origin_ang: tuple[float, float] | None = None
    state: Literal["mean"] | Annotated[int, Field(ge=0)] = "mean"
    denoise: Literal["none", "tv", "nlm", "gaussian", "bm3d"] = "tv"
    denoise_strength: PositiveFloat | None = None
    normalize_mass: bool = True
    #: Mask what lies outside a low-resolution volume's support (a substrate).
    substrate_mask: bool = False
    mask_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.2
    mask_dilate_ang: Annotated[float, Field(ge=0)] = 1.0


class TomoAlignmentConfig(_Model):
    """``[alignment]``: pre-alignment, then joint refinement with the volume."""

    center_of_mass: bool = True
    common_line: bool = True
    refine: bool = True
    levels: tuple[Annotated[int, Field(ge=1)], ...] = (2, 1)
    outer_iterations: Annotated[int, Field(ge=1)] = 6
    volume_iterations: Annotated[int, Field(ge=1)] = 15
    fit_angles: tuple[Literal["phi", "theta", "psi"], ...] = ("phi", "theta")
    fit_shifts: bool = True


class TomoVolumeConfig(_Model):
    """``[volume]``: the final reconstruction."""

    method: Literal["fista", "genfire"] = "fista"
    #: nz; default max(ny, nx).
    depth: Annotated[int, Field(ge=8)] | None = None
    iterations: Annotated[int, Field(ge=1)] = 60
    tv_weight: Annotated[float, Field(ge=0)] = 0.0
    gaussian_sigma_ang: Annotated[float, Field(ge=0)] = 0.0
    positivity: bool = True


class TomoAtomsConfig(_Model):
    """``[atoms]``: tracing, species, refinement and lattice registration."""

    trace: bool = True
    min_distance_ang: PositiveFloat = 1.8
    #: Peaks below this fraction of the strongest are not atoms (0.3 missed 5 of 43 weak Fe
    #: atoms beside Pt in a ptychographic series; validation/tomography.py).
    threshold_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    #: Traced peaks whose integrated intensity is below this fraction of the lightest
    #: species' median are non-atoms and are dropped (missing-wedge ghosts, noise
    #: maxima); 0 keeps every peak. See tomography.atoms.classify_species.
    non_atom_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.5
    #: Peaks closer than this to a face of the volume [Å] are dropped (box artefacts).
    edge_margin_ang: Annotated[float, Field(ge=0)] = 1.0
    #: Species names, lightest (weakest) first; their count is the number of classes.
    symbols: tuple[str, ...] = ("Fe", "Pt")
    #: Refine positions (and species amplitudes) against the projections.
    refine: bool = True
    #: Atom profile of that refinement, projected analytically: "element" (each symbol's
    #: scattering factor with a fitted blur) or "gaussian" (a fitted 3D Gaussian).
    profile: Literal["element", "gaussian"] = "element"
    #: Alignment updates against the atomic model (each after an atom refinement).
    refine_rounds: Annotated[int, Field(ge=0)] = 12
    #: Register to a crystal lattice when both are given.
    lattice_constant_ang: PositiveFloat | None = None
    structure: Literal["fcc", "L1_0", "L1_2"] | None = None

    @model_validator(mode="after")
    def _profiles_known(self) -> TomoAtomsConfig:
        if self.refine and self.profile == "element":
            from ase.data import chemical_symbols  # H .. Og; ase imports without torch

            unknown = [s for s in self.symbols if s not in chemical_symbols[1:]]
            if unknown:
                raise ValueError(
                    f"symbols must be chemical elements when profile = 'element' (their "
                    f"scattering factors model the atoms), got {unknown}; set "
                    f"atoms.profile = 'gaussian' for other names"
                )
        return self


class TomographyConfig(_Model):
    """``ptyscope tomo tomo.toml``: tilt series → per-tilt ptychography → aligned volume →
    atoms."""

    series: TomoSeriesConfig
    reconstruction: TomoReconstructionConfig
    projections: TomoProjectionsConfig = TomoProjectionsConfig()
    alignment: TomoAlignmentConfig = TomoAlignmentConfig()
    volume: TomoVolumeConfig = TomoVolumeConfig()
    atoms: TomoAtomsConfig = TomoAtomsConfig()
    #: Folder for per-tilt results, the tomography result, atoms and figures.
    output: Path = Path("tomography")


def toml_value(value: object) -> str:
    """``value`` written as a TOML value (what :func:`load_config` reads back).

    Booleans, strings and paths (quoted, backslashes and quotes escaped), numbers (floats
    as Python writes them, or with 6 significant digits when that takes more than 10
    characters), lists and tuples as arrays, dicts as inline tables.

    Examples
    --------
    >>> toml_value((0.45, 22.0)), toml_value(True), toml_value(Path("a.h5")), toml_value(1 / 3)
    ('[0.45, 22.0]', 'true', '"a.h5"', '0.333333')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | PurePath):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        text = repr(value)
        return text if len(text) <= 10 or not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def _location(error: dict[str, object]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"  # type: ignore[attr-defined]


def load_config(path: str | Path, model: type[ModelT]) -> ModelT:
    """Read a TOML file into a validated config model.

    Raises
    ------
    ConfigError
        Naming the file, and for each problem the key, the rule and the value received.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {str(path)!r}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = model.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  {_unknown_key(model, e['loc'], e.get('input'))}"
            if e["type"] == "extra_forbidden"
            else f"  {_location(e)}: {e['msg']} (got {e.get('input')!r})"  # type: ignore[arg-type]
            for e in exc.errors()
        ]
        raise ConfigError(f"{path}: invalid config\n" + "\n".join(lines)) from None
    return config


def _section_fields(model: type[BaseModel], section: tuple[Any, ...]) -> list[str]:
    """Field names of the nested model at ``section`` (empty when it is not a model)."""
    for part in section:
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def _unknown_key(model: type[BaseModel], location: tuple[Any, ...], value: object) -> str:
    """``unknown key 'iteratons' in [optimization]; did you mean 'iterations'? (...)``."""
    *section, key = location
    fields = _section_fields(model, tuple(section))
    close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.6)
    where = f"[{'.'.join(map(str, section))}]" if section else "the top level"
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{'.'.join(map(str, location))}: unknown key {str(key)!r} in {where}{hint} " + (
        f"(got {value!r}; known: {', '.join(fields)})"
    )
