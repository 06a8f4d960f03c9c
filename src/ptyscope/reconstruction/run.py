"""``ptyscope reconstruct``: a validated config -> engine -> result file (+ checkpoints).

A run writes a checkpoint every ``optimization.checkpoint_every`` iterations, when it is
interrupted (Ctrl-C) and when it stops on a numerical failure; ``resume=True`` continues
from the checkpoint exactly: parameters, optimiser moments, constraint state, history,
events and the batch order (seeded per iteration). After a hard kill (SIGKILL, a node
lost) the last complete checkpoint is there, because checkpoints are written atomically,
and the resumed run ends bit-identical to an uninterrupted one on the CPU.

A checkpoint records the settings that shape the run (every config key except the number
of iterations, the checkpoint interval, the device and the output paths); resuming with
different settings is refused with the keys that differ.

Before the data is read, the predicted peak memory (:mod:`~ptyscope.reconstruction.estimate`,
from the file's header) is compared with the memory available on the device; a run that
would not fit is refused with the numbers (``optimization.memory_check = false`` or
``ptyscope reconstruct --skip-memory-check`` start it anyway).

Under torchrun (``parallel``, :mod:`~ptyscope.reconstruction.distributed`) every process
runs the engine on its share of each batch; rank 0 alone removes stale temporaries and
writes the checkpoints, the result and the report, and the others wait for it. Every
process loads the checkpoint when resuming.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptyscope._device import keep_freed_blocks
from ptyscope.config import PropagatorConfig, ReconstructionConfig
from ptyscope.data.readers import read_4dstem
from ptyscope.io.atomic import remove_stale_temporaries
from ptyscope.report.reconstruction_report import write_report

from .constraints import (
    AmplitudeLimit,
    Constraint,
    PositionLimit,
    ProbeDefocusHold,
    ProbePower,
    Schedule,
    StateLowPass,
)
from .distributed import DataParallel
from .engine import Engine, EngineSettings, NumericalError
from .estimate import check_memory, estimate_run
from .initial import initialise
from .parameters import GroupSettings
from .preflight import check_reconstruction
from .results import write_result
from .setup import ReconstructionSetup, prepare
from .tilt import TiltAlignment, TiltMapSmoothing

__all__ = [
    "ReconstructionRun",
    "build_run",
    "checkpoint_path",
    "run_fingerprint",
    "run_reconstruction",
]

#: Config keys a resumed run may change: they do not alter the arithmetic of an iteration.
RESUMABLE_CHANGES = (
    "optimization.iterations",
    "optimization.checkpoint_every",
    "optimization.device",
    "optimization.max_rollbacks",
    "optimization.memory_check",
    "optimization.keep_best",
    "data.path",
    "output.path",
    "output.report",
)


@dataclass
class ReconstructionRun:
    """A prepared run: setup, engine and where its files go."""

    setup: ReconstructionSetup
    engine: Engine
    energy_ev: float
    semiangle_mrad: float
    result_path: Path
    checkpoint: Path
    report: Path | None = None


def checkpoint_path(result: Path) -> Path:
    """Where a run's checkpoint lives: beside the result, ``<name>.ckpt.pt``."""
    return result.with_name(result.stem + ".ckpt.pt")


def run_fingerprint(config: ReconstructionConfig) -> dict[str, Any]:
    """The settings a checkpoint must match to be resumed: flat ``{"section.key": value}``."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif prefix not in RESUMABLE_CHANGES:
            flat[prefix] = value

    walk("", config.model_dump(mode="json"))
    return flat


def build_run(
    config: ReconstructionConfig,
    *,
    base_dir: Path = Path(),
    device: torch.device | str = "cpu",
    progress: bool = False,
    output: Path | None = None,
    parallel: DataParallel | None = None,
) -> ReconstructionRun:
    """Read the data and build the parameters and engine a config describes.

    ``parallel``: this process's place in a torchrun run (``None`` = a single process).
    """
    if torch.device(device).type == "cpu":
        keep_freed_blocks()  # reuse freed waves instead of fresh pages (its docstring)
    data = config.data
    path = data.path if data.path.is_absolute() else base_dir / data.path
    dataset = read_4dstem(path, data.format, **data.reader_options())
    if config.optimization.memory_check:  # from the file's header, before reading the data
        processes = parallel.world_size if parallel is not None else 1
        check_memory(estimate_run(config, dataset, device, processes=processes, timing=False))
    check_reconstruction(config, dataset)  # every problem at once, before any work
    propagator = config.propagator
    tilt: tuple[float, float] | np.ndarray = (propagator.tilt_y_mrad, propagator.tilt_x_mrad)
    if propagator.fit_tilt == "map":  # one tilt per scan position, the same at the start
        tilt = np.broadcast_to(np.asarray(tilt), (*dataset.scan_shape, 2))
    setup = prepare(
        dataset,
        num_slices=config.object.slices,
        slice_thickness_ang=config.object.slice_thickness_ang,
        num_states=config.object.states,
        num_modes=config.probe.modes,
        defocus_ang=config.probe.defocus_ang,
        tilt_mrad=tilt,
        seed=config.optimization.seed,
        probe_from=config.probe.init,
        source_sigma_ang=config.probe.source_sigma_ang,
        scan_half=data.scan_half,
        substeps=propagator.planes_per_slice(config.object.slice_thickness_ang),
        state_phase_noise_rad=config.object.state_noise_rad,
        device=device,
    )
    initialise(
        setup,
        config.init,
        base_dir=base_dir,
        state_noise_rad=config.object.state_noise_rad,
        seed=config.optimization.seed,
    )
    constraints: list[Constraint] = [ProbePower()]
    if config.probe.fit and config.probe.hold_defocus:
        constraints.append(
            ProbeDefocusHold.from_probe(
                setup.params.probe,
                setup.pixel_size_ang,
                Schedule(config.probe.start, config.probe.stop),
            )
        )
    if config.object.amplitude_limit or config.object.positive_phase:
        constraints.append(
            AmplitudeLimit(
                maximum=1.0 if config.object.amplitude_limit else math.inf,
                positive_phase=config.object.positive_phase,
            )
        )
    positions = config.positions
    if positions.fit:
        constraints.append(
            PositionLimit(max_px=positions.max_px, remove_affine=positions.remove_affine)
        )
    groups = {
        "object": GroupSettings(lr=config.object.lr),
        "probe": GroupSettings(
            config.probe.fit,
            config.probe.start,
            config.probe.lr,
            stop=config.probe.stop,
            warmup=config.probe.warmup,
        ),
        "positions": GroupSettings(positions.fit, positions.start, positions.lr),
    }
    constraints.extend(_adaptive_propagator(config.propagator, setup, groups))
    obj = config.object
    if obj.states > 1 and obj.state_weights == "fitted":
        groups["state_weights"] = GroupSettings(lr=obj.state_weights_lr)
    if obj.states > 1 and obj.state_lowpass_ang is not None:
        dy, dx = setup.pixel_size_ang
        sigma = (obj.state_lowpass_ang / dy, obj.state_lowpass_ang / dx)
        constraints.append(StateLowPass(sigma_px=sigma))
    # Paths in the config are relative to the config file, like data.path; --output is
    # relative to the working directory like any command-line path.
    result_path = output or _under(base_dir, config.output.path)
    opt = config.optimization
    settings = EngineSettings(
        iterations=opt.iterations,
        batch_size=opt.batch_size,
        batching=opt.batching,
        chunk_size=None if opt.chunk_size == "auto" else opt.chunk_size,
        loss=opt.loss,
        optimizer=opt.optimizer,
        groups=groups,
        constraints=constraints,
        seed=opt.seed,
        lr_decay=opt.lr_decay,
        adam_beta2=opt.adam_beta2,
        checkpoint_every=opt.checkpoint_every,
        checkpoint_path=checkpoint_path(result_path),
        progress=progress,
        max_rollbacks=opt.max_rollbacks,
        keep_best=opt.keep_best,
    )
    engine = Engine(
        setup.params, setup.measured, setup.cache, settings, setup.grid_shape, parallel=parallel
    )
    engine.fingerprint = run_fingerprint(config)
    defaults = ReconstructionConfig.model_validate({"data": {"path": str(config.data.path)}})
    engine.fingerprint_defaults = run_fingerprint(defaults)
    cal = dataset.calibration
    assert cal.semiangle_mrad is not None  # checked by prepare
    return ReconstructionRun(
        setup, engine, cal.energy_ev, cal.semiangle_mrad, result_path, checkpoint_path(result_path)
    )


def _under(base_dir: Path, path: Path) -> Path:
    return path if path.is_absolute() else base_dir / path


def _adaptive_propagator(
    config: PropagatorConfig, setup: ReconstructionSetup, groups: dict[str, GroupSettings]
) -> list[Constraint]:
    """Groups and constraints that fit the tilt and thickness (Sha et al. 2022)."""
    if config.fit_thickness:
        groups["thickness"] = GroupSettings(True, config.thickness_start, config.thickness_lr)
    if config.fit_tilt == "off":
        return []
    if config.tilt_lr > 0:
        groups["tilt"] = GroupSettings(True, config.tilt_start, config.tilt_lr)
    pixel = setup.pixel_size_ang
    constraints: list[Constraint] = [
        TiltAlignment(
            Schedule(start=config.tilt_start, every=config.align_every),
            region_px=setup.scanned_region_px(),
            pixel_size_ang=pixel,
            max_step_mrad=config.align_max_step_mrad,
            max_shift_ang=config.align_max_shift_ang,
            window_px=max(8, round(config.map_window_ang / min(pixel))),
            map_start=config.map_start,
            grid_shape=setup.grid_shape,
            map_sigma_px=config.map_smoothing,
        )
    ]
    if config.fit_tilt == "map":
        if setup.grid_shape is None:
            raise ValueError(
                "propagator.fit_tilt = 'map' needs the whole scan grid (data.scan_half must "
                "be unset)"
            )
        if config.tilt_lr > 0:  # gradient steps move each position: keep the map smooth
            constraints += [
                TiltMapSmoothing(Schedule(stop=config.map_start), setup.grid_shape, None),
                TiltMapSmoothing(
                    Schedule(start=config.map_start), setup.grid_shape, config.map_smoothing
                ),
            ]
    return constraints


def run_reconstruction(
    config: ReconstructionConfig,
    *,
    config_text: str | None = None,
    base_dir: Path = Path(),
    device: torch.device | str = "cpu",
    resume: bool = False,
    progress: bool = True,
    output: Path | None = None,
    stop_after: int | None = None,
    write_html_report: bool = True,
    parallel: DataParallel | None = None,
) -> ReconstructionRun:
    """Run (or resume) a reconstruction and write its result file.

    ``stop_after`` ends the run after that many iterations with a checkpoint, as an
    interruption would (used to test resuming). A :class:`NumericalError` leaves the last
    good state in the checkpoint before it propagates. ``parallel``: this process's place
    in a torchrun run; only its rank 0 writes files (module docstring).
    """
    opt = config.optimization
    parallel = parallel if parallel is not None else DataParallel()
    with _deterministic(opt.deterministic):
        run = build_run(
            config,
            base_dir=base_dir,
            device=device,
            progress=progress,
            output=output,
            parallel=parallel,
        )
        if parallel.is_main:
            remove_stale_temporaries(run.checkpoint)  # left by a run killed mid-write
            remove_stale_temporaries(run.result_path)
        if resume:
            run.engine.load_checkpoint(run.checkpoint)
        try:
            run.engine.run(stop_after=stop_after)
        except (KeyboardInterrupt, NumericalError):
            run.engine.save_checkpoint(run.checkpoint)
            raise
        run.engine.save_checkpoint(run.checkpoint)
    if not parallel.is_main:  # rank 0 writes the files; the others wait until it has
        parallel.barrier()
        return run
    with run.engine.best_parameters() as kept:  # the last ones unless keep_best
        write_result(
            run.result_path,
            run.setup,
            run.engine,
            energy_ev=run.energy_ev,
            semiangle_mrad=run.semiangle_mrad,
            config_text=config_text,
            seed=opt.seed,
            deterministic=opt.deterministic,
            kept_iteration=kept,
        )
    if write_html_report:
        report = config.output.report
        folder = (
            _under(base_dir, report)
            if report is not None
            else run.result_path.with_name(run.result_path.stem + "_report")
        )
        run.report = write_report(run.result_path, folder)
    parallel.barrier()
    return run


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic torch kernels inside the block (restored afterwards)."""
    before = torch.are_deterministic_algorithms_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
