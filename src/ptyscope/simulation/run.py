"""``ptyscope simulate``: a validated config -> specimen, phonons, tilt -> HDF5 data file.

The Python API behind the command; every step is also usable on its own:
:func:`build_specimen`, :func:`phonon_displacements`, :func:`tilt_from_config` and
:func:`run_simulation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase
import numpy as np
import torch

from ptyscope.config import PhononConfig, SimulationConfig, SpecimenConfig, TiltConfig
from ptyscope.io.datafile import write_dataset, write_tilt_series

from . import specimens
from .lattice_dynamics import force_constant_blocks, phonon_dispersion, q_path, sample_supercell
from .phonons import einstein_displacements, spring_model
from .stem4d import DetectorSettings, ProbeSettings, ScanSettings, simulate_4dstem
from .tilt_series import simulate_tilt_series

__all__ = [
    "Specimen",
    "build_specimen",
    "phonon_displacements",
    "run_simulation",
    "snapshot_displacements",
    "tilt_from_config",
]

#: High-symmetry path of a simple cubic lattice (fractions of the reciprocal vectors).
CUBIC_PATH = (
    ("Γ", (0.0, 0.0, 0.0)),
    ("X", (0.5, 0.0, 0.0)),
    ("M", (0.5, 0.5, 0.0)),
    ("Γ", (0.0, 0.0, 0.0)),
    ("R", (0.5, 0.5, 0.5)),
)


@dataclass
class Specimen:
    """A specimen and, for crystals, the unit cell and repeat that tile it exactly."""

    atoms: ase.Atoms
    unit_cell: ase.Atoms | None = None
    repeat: tuple[int, int, int] | None = None


def _resolve(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else base / path


def build_specimen(config: SpecimenConfig, base_dir: Path = Path()) -> Specimen:
    """Build the specimen a config describes (relative paths are taken from ``base_dir``)."""
    a = config.lattice_constant_ang
    if config.kind == "srtio3_slab":
        lattice = a or specimens.SRTIO3_LATTICE_CONSTANT_ANG
        atoms = specimens.srtio3_slab(config.repeat_xy, config.thickness_ang, lattice)
        nz = round(atoms.cell[2, 2] / lattice)
        unit = specimens.srtio3_unit_cell(lattice)
        unit.pbc = True
        return Specimen(atoms, unit, (*config.repeat_xy, nz))
    if config.kind == "srtio3_two_domain":
        lattice = a or specimens.SRTIO3_LATTICE_CONSTANT_ANG
        atoms = specimens.srtio3_two_domain(
            config.repeat_xy, config.thickness_ang, config.euler_deg, lattice
        )
        return Specimen(atoms)
    if config.kind == "fcc_cluster":
        assert a is not None  # checked by the config
        atoms = specimens.fcc_cluster(config.symbols[0], a, config.radius_ang, config.vacuum_ang)
        return Specimen(atoms)
    if config.kind == "ordered_alloy_cluster":
        assert a is not None
        atoms = specimens.ordered_alloy_cluster(
            config.symbols, config.structure, a, config.radius_ang, config.vacuum_ang
        )
        return Specimen(atoms)
    assert config.path is not None
    unit = specimens.load_atoms(_resolve(config.path, base_dir))
    if config.repeat == (1, 1, 1):
        return Specimen(unit)
    periodic = unit.copy()
    periodic.pbc = True
    return Specimen(unit.repeat(config.repeat), periodic, config.repeat)


def snapshot_displacements(reference: ase.Atoms, snapshots: list[ase.Atoms]) -> np.ndarray:
    """Displacements (M, N, 3) [Å] of snapshots from a reference (minimum image on
    periodic axes)."""
    result = np.empty((len(snapshots), len(reference), 3))
    lengths = np.diag(np.asarray(reference.cell[:]))
    for m, frame in enumerate(snapshots):
        if len(frame) != len(reference) or list(frame.numbers) != list(reference.numbers):
            raise ValueError(
                f"snapshot {m} must hold the specimen's {len(reference)} atoms in the same "
                f"order; got {len(frame)} atoms"
            )
        delta = frame.positions - reference.positions
        for axis in np.flatnonzero(reference.pbc):
            delta[:, axis] -= lengths[axis] * np.round(delta[:, axis] / lengths[axis])
        result[m] = delta
    return result


def phonon_displacements(
    config: PhononConfig, specimen: Specimen, generator: np.random.Generator, base_dir: Path
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Frozen-phonon configurations and their ground truth (model, frequencies, dispersion)."""
    truth: dict[str, Any] = {"model": config.model}
    atoms = specimen.atoms
    if config.model == "none":
        return None, truth
    if config.model == "einstein":
        truth["sigma_ang"] = (
            config.sigma_ang if isinstance(config.sigma_ang, float) else dict(config.sigma_ang)
        )
        return einstein_displacements(atoms, config.sigma_ang, config.configs, generator), truth
    if config.model == "snapshots":
        assert config.trajectory is not None
        frames = specimens.load_trajectory(_resolve(config.trajectory, base_dir))
        truth["trajectory"] = str(config.trajectory)
        return snapshot_displacements(atoms, frames), truth
    truth["temperature_k"] = config.temperature_k
    truth["shells"] = np.asarray(config.shells)
    if specimen.unit_cell is not None and specimen.repeat is not None:
        blocks = force_constant_blocks(specimen.unit_cell, config.shells)
        q, distance, ticks, labels = q_path(specimen.unit_cell, CUBIC_PATH, 40)
        truth["dispersion"] = {
            "q_inv_ang": q,
            "path_distance_inv_ang": distance,
            "tick_distance_inv_ang": ticks,
            "labels": np.asarray(labels),
            "frequencies_thz": phonon_dispersion(blocks, q),
            "note": "exact dispersion of the periodic spring model (Bloch sampler)",
        }
        sample = sample_supercell(
            blocks, specimen.repeat, config.temperature_k, config.configs, generator
        )
        return sample, truth
    model = spring_model(atoms, config.shells)
    truth["mode_frequencies_thz"] = model.mode_frequencies_thz()
    return model.sample(config.temperature_k, config.configs, generator), truth


def tilt_from_config(config: TiltConfig, positions_ang: np.ndarray) -> np.ndarray:
    """(θ_y, θ_x) [mrad]: a pair, or a (scan_y, scan_x, 2) map when a gradient is set."""
    base = np.array([config.tilt_y_mrad, config.tilt_x_mrad])
    if not config.is_map:
        return base
    offset = positions_ang - positions_ang.reshape(-1, 2).mean(axis=0)  # (y, x) from centre
    gradient = np.array(  # rows: θ_y, θ_x; columns: d/dy, d/dx
        [config.gradient_y_mrad_per_ang[::-1], config.gradient_x_mrad_per_ang[::-1]]
    )
    tilt_map: np.ndarray = base + offset @ gradient.T
    return tilt_map


def run_simulation(
    config: SimulationConfig,
    *,
    config_text: str | None = None,
    base_dir: Path = Path(),
    output: Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Path:
    """Run a simulation config and write the HDF5 data file; returns its path.

    Relative paths in the config (specimen files, ``output``) are taken from ``base_dir``,
    the config's folder; ``output``, when given, overrides the config's and is used as is.

    The config is checked first (:func:`~ptyscope.reconstruction.preflight.check_simulation`):
    units that look wrong and a grid that cannot sample the probe stop it at once.
    """
    from ptyscope.reconstruction.preflight import check_simulation

    check_simulation(config)
    generator = np.random.default_rng(config.seed)
    specimen = build_specimen(config.specimen, base_dir)
    displacements, phonon_truth = phonon_displacements(
        config.phonons, specimen, generator, base_dir
    )
    probe = ProbeSettings(
        config.probe.energy_ev,
        config.probe.semiangle_mrad,
        {"defocus": config.probe.defocus_ang, **config.probe.aberrations},
    )
    scan = ScanSettings(
        config.scan.shape, config.scan.step_ang, config.scan.origin_ang, config.scan.rotation_deg
    )
    kwargs: dict[str, Any] = {
        "sampling_ang": config.sampling.pixel_ang,
        "slice_thickness_ang": config.sampling.slice_thickness_ang,
        "window_ang": config.sampling.window_ang,
        "tilt_mrad": tilt_from_config(config.tilt, scan.positions_ang()),
        "displacements_ang": displacements,
        "antialias_fraction": config.sampling.antialias_fraction,
        "detector": DetectorSettings(config.detector.max_angle_mrad, config.detector.binning),
        "source_sigma_ang": config.acquisition.source_sigma_ang,
        "source_tolerance": config.acquisition.source_tolerance,
        "dose_e_per_ang2": config.acquisition.dose_e_per_ang2,
        "seed": config.seed,
        "memory_limit_gb": config.memory_limit_gb,
        "device": device,
        "progress": progress,
    }
    # ``output`` (the command line's) is as given; the config's is relative to its folder.
    target = output or (config.output if config.output.is_absolute() else base_dir / config.output)
    if config.tilt_series is None:
        result = simulate_4dstem(specimen.atoms, probe, scan, **kwargs)
        result.ground_truth["phonons"] = phonon_truth
        write_dataset(target, result.dataset, result.ground_truth, config_text=config_text)
        return target
    series = config.tilt_series
    if series.euler_deg is not None:
        angles = np.asarray(series.euler_deg, dtype=np.float64)
    else:
        thetas = np.arange(series.min_deg, series.max_deg + 1e-9, series.step_deg)
        angles = np.stack([np.zeros_like(thetas), thetas, np.zeros_like(thetas)], axis=1)
    tilt_result = simulate_tilt_series(specimen.atoms, angles, probe, scan, **kwargs)
    tilt_result.ground_truth["phonons"] = phonon_truth
    write_tilt_series(
        target,
        tilt_result.datasets,
        tilt_result.euler_deg,
        tilt_result.ground_truth,
        config_text=config_text,
    )
    return target
