"""``ptyscope tomo``: tilt series → per-tilt ptychography → aligned volume → atoms.

Steps (each a module of :mod:`ptyscope.tomography`):

1. :func:`~.runner.reconstruct_tilt_series`: every tilt reconstructed by the engine
   (resumable; sequential, processes or Dask), results under ``output/tilts``.
2. :func:`~.projections.projection_stack`: summed phases on the volume's lateral grid,
   denoised, mass-normalised (and masked by a low-resolution support when asked).
3. Alignment: centre-of-mass and common-line shifts, then the joint refinement
   (:func:`~.alignment.refine_alignment`).
4. The volume (FISTA or GENFIRE) and its resolution per axis, from the whole series and
   from its two halves (even and odd tilts) for the FSC.
5. Atoms: traced, classified, refined against the projections together with the tilt
   angles and shifts (an atomic model has far fewer unknowns than a volume, so it cannot
   absorb an angle error the way a volume does), registered to a lattice when one is
   given, and exported as XYZ and CIF.
6. When the series file holds a ground truth (a simulation), the atoms are compared
   with it after removing the translation gauge.

The result ``output/tomography.h5`` (written atomically, after the atoms files and the
figures; an old one is removed before they are replaced) holds the volume [rad/Å: the
projections are phases], the angles and shifts (nominal and refined), the projections
and reprojections, the atoms, the resolution figures and the alignment history.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ptyscope import __version__
from ptyscope.config import (
    TomoAlignmentConfig,
    TomoAtomsConfig,
    TomographyConfig,
    TomoProjectionsConfig,
    TomoVolumeConfig,
)
from ptyscope.io.atomic import atomic_path
from ptyscope.io.datafile import read_ground_truth

from .alignment import (
    AlignmentSettings,
    center_of_mass_shifts,
    common_line_shifts,
    refine_alignment,
    refine_alignment_with_atoms,
)
from .atom_projection import GAUSSIAN
from .atoms import classify_species, match_atoms_translated, trace_atoms, write_atoms
from .genfire import genfire_reconstruct
from .lattice import register_to_lattice
from .projections import (
    apply_mask,
    denoise,
    normalize_mass,
    projection_stack,
    substrate_mask,
    summed_phase,
)
from .projector import project
from .resolution import axis_spectra, fsc
from .runner import reconstruct_tilt_series
from .volume import VolumeSettings, reconstruct_volume

__all__ = [
    "TomographyResult",
    "ground_truth_metrics",
    "project_shift",
    "run_tomography",
    "tomography_from_projections",
]

RESULT_FORMAT = "ptyscope-tomography"


@dataclass
class TomographyResult:
    """What :func:`run_tomography` produced (also written to ``tomography.h5``)."""

    volume: np.ndarray
    voxel_ang: float
    origin_ang: tuple[float, float]
    euler_nominal_deg: np.ndarray
    euler_deg: np.ndarray
    shifts_start_ang: np.ndarray
    shifts_ang: np.ndarray
    projections: np.ndarray
    weights: np.ndarray
    reprojections: np.ndarray | None = None
    positions_ang: np.ndarray | None = None
    labels: np.ndarray | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


def _lateral_grid(
    phases: list[Any], voxel: float, config: TomographyConfig
) -> tuple[tuple[int, int], tuple[float, float]]:
    """(ny, nx) and origin (y, x) [Å]: the config's, or the union of the tilts' fields."""
    fields = np.array([p.field_ang for p in phases])  # (tilts, 4): y0, y1, x0, x1
    origin = config.projections.origin_ang or (float(fields[:, 0].min()), float(fields[:, 2].min()))
    if config.projections.shape is not None:
        return config.projections.shape, origin
    ny = math.ceil((fields[:, 1].max() - origin[0]) / voxel) + 1
    nx = math.ceil((fields[:, 3].max() - origin[1]) / voxel) + 1
    return (ny + ny % 2, nx + nx % 2), origin  # even: GENFIRE's centred grid


def _projections(
    paths: list[Path], config: TomographyConfig
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    settings = config.projections
    voxel = settings.voxel_ang
    phases = [summed_phase(path, state=settings.state) for path in paths]
    shape, origin = _lateral_grid(phases, voxel, config)
    stack = projection_stack(phases, pixel_ang=voxel, shape=shape, origin_ang=origin)
    images = np.where(stack.valid, stack.images, 0.0)
    if settings.denoise != "none":
        images = denoise(images, method=settings.denoise, strength=settings.denoise_strength)
    weights = stack.valid.astype(np.float64)
    if settings.normalize_mass:
        images, factors = normalize_mass(images, mask=stack.valid)
        # A tilt that needs a factor outside [0.5, 2] failed (normalize_mass warned):
        # it is left out of the volume (weight 0) rather than scaled.
        weights[(factors < 0.5) | (factors > 2.0)] = 0.0
    return images, weights, origin


def _volume(
    data: torch.Tensor,
    weights: torch.Tensor,
    euler: torch.Tensor,
    shifts: torch.Tensor,
    voxel: float,
    settings: TomoVolumeConfig,
    metrics: dict[str, Any] | None = None,
) -> torch.Tensor:
    """The volume by the configured method; GENFIRE's final R_free goes into ``metrics``.

    GENFIRE takes no per-pixel weights: pixels without data must hold 0 (they do after
    :func:`_projections`).
    """
    if settings.method == "genfire":
        # GENFIRE grids centred projections: apply the shifts first (move by −s).
        centred = project_shift(data, -shifts, voxel)
        depth = settings.depth or data.shape[-1]
        genfire = genfire_reconstruct(
            centred,
            euler,
            voxel,
            shape=(depth, *data.shape[-2:]),
            iterations=settings.iterations,
            positivity=settings.positivity,
        )
        if metrics is not None and len(genfire.rfree):
            metrics["rfree"] = float(genfire.rfree[-1])
        return genfire.volume
    return reconstruct_volume(
        data,
        euler.float(),
        voxel,
        depth=settings.depth,
        shifts_ang=shifts.float(),
        weights=weights,
        settings=_volume_settings(settings),
    ).volume


def _volume_settings(settings: TomoVolumeConfig) -> VolumeSettings:
    return VolumeSettings(
        iterations=settings.iterations,
        positivity=settings.positivity,
        tv_weight=settings.tv_weight,
        gaussian_sigma_ang=settings.gaussian_sigma_ang,
    )


def project_shift(images: torch.Tensor, shifts_ang: torch.Tensor, voxel_ang: float) -> torch.Tensor:
    """Move each image (tilts, ny, nx) by +s [Å] with a Fourier phase ramp."""
    ky = torch.fft.fftfreq(images.shape[-2], d=voxel_ang, dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(images.shape[-1], d=voxel_ang, dtype=torch.float64)[None, :]
    s = shifts_ang.double()
    ramp = torch.exp(-2j * math.pi * (ky * s[:, 0, None, None] + kx * s[:, 1, None, None]))
    moved: torch.Tensor = torch.fft.ifft2(torch.fft.fft2(images.double()) * ramp).real
    return moved.to(images.dtype)


def ground_truth_metrics(
    series_path: Path,
    positions: np.ndarray,
    labels: np.ndarray,
    symbols: tuple[str, ...],
    origin: tuple[float, float],
) -> dict[str, Any]:
    """Atoms against the simulation's, after the best common translation (3 rounds)."""
    try:
        truth = read_ground_truth(series_path)
    except (KeyError, ValueError):
        return {}
    if "atoms" not in truth:
        return {}
    true_positions = np.asarray(truth["atoms"]["positions_ang"], dtype=np.float64)
    numbers = np.asarray(truth["atoms"].get("numbers", []))
    from ase.data import atomic_numbers

    lookup = {atomic_numbers[s]: i for i, s in enumerate(symbols)}
    true_labels = np.array([lookup.get(int(z), -1) for z in numbers]) if numbers.size else None
    # Our frame: x, y from the lateral grid's origin; z of the box. Remove the offset.
    found = positions + np.array([origin[1], origin[0], 0.0])
    match, offset = match_atoms_translated(
        found,
        true_positions,
        max_distance_ang=1.0,
        initial_offset_ang=true_positions.mean(axis=0) - found.mean(axis=0),
        found_labels=labels,
        true_labels=true_labels,
    )
    return {
        "atoms_true": len(true_positions),
        "atoms_found": len(positions),
        "recall": match.recall,
        "precision": match.precision,
        "rmsd_ang": match.rmsd_ang,
        "species_accuracy": match.species_accuracy,
        "translation_ang": offset.tolist(),
    }


def _write(path: Path, result: TomographyResult, config_text: str | None, history: Any) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs["format"] = RESULT_FORMAT
        handle.attrs["software"] = f"ptyscope {__version__}"
        volume = handle.create_dataset("volume", data=result.volume.astype(np.float32))
        volume.attrs["voxel_size_ang"] = result.voxel_ang
        volume.attrs["axis_order"] = "(z, y, x)"
        volume.attrs["units"] = "rad/Å (summed phase per unit length)"
        volume.attrs["origin_ang"] = np.asarray(result.origin_ang)  # (y, x) of voxel (·, 0, 0)
        handle["euler_nominal_deg"] = result.euler_nominal_deg
        handle["euler_deg"] = result.euler_deg
        handle["shifts_ang"] = result.shifts_ang
        handle["projections"] = result.projections.astype(np.float32)
        handle["weights"] = result.weights.astype(np.float32)
        if result.positions_ang is not None and result.labels is not None:
            handle["atoms/positions_ang"] = result.positions_ang
            handle["atoms/labels"] = result.labels
        handle.attrs["metrics"] = json.dumps(result.metrics)
        handle.attrs["alignment_history"] = json.dumps(history)
        if config_text is not None:
            handle.attrs["config"] = config_text


def _figures(
    out: Path,
    result: TomographyResult,
    spectra: Any,
    curve: Any,
    history: Any,
    symbols: tuple[str, ...],
) -> None:
    from ptyscope.report import tomography_atoms_figures as atoms_figures
    from ptyscope.report import tomography_figures as figures

    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    volume, voxel = result.volume, result.voxel_ang
    drawn = {
        "orthoslices": figures.orthoslices_figure(
            volume,
            voxel,
            atoms=result.positions_ang,
            labels=result.labels,
            symbols=list(symbols) if result.labels is not None else None,
            units="rad/Å",
        ),
        "projections": figures.projections_figure(
            result.projections,
            result.projections if result.reprojections is None else result.reprojections,
            result.euler_deg,
            voxel,
            units="rad",
        ),
        "axis_spectra": figures.axis_spectra_figure(
            spectra.frequency_inv_ang, spectra.profiles, spectra.resolution_ang
        ),
        "fsc": figures.fsc_figure(
            curve.frequency_inv_ang,
            {"half series": curve.fsc},
            resolution_ang={"half series": curve.resolution_ang_0143},
        ),
    }
    if history:
        drawn["alignment"] = atoms_figures.alignment_figure(
            history,
            result.euler_nominal_deg,
            result.euler_deg,
            result.shifts_start_ang,
            result.shifts_ang,
        )
    if result.positions_ang is not None and result.labels is not None:
        drawn["atoms"] = atoms_figures.atoms_figure(
            result.positions_ang, result.labels, list(symbols)
        )
    for name, figure in drawn.items():
        path = folder / f"{name}.png"
        figures.save_figure(figure, path)
        result.files[f"figure_{name}"] = path


def tomography_from_projections(
    projections: np.ndarray,
    weights: np.ndarray,
    euler_deg: np.ndarray,
    voxel_ang: float,
    *,
    alignment: TomoAlignmentConfig,
    volume: TomoVolumeConfig,
    atoms: TomoAtomsConfig,
    origin_ang: tuple[float, float] = (0.0, 0.0),
    mask: TomoProjectionsConfig | None = None,
) -> tuple[TomographyResult, Any, Any, list[dict[str, float]]]:
    """Alignment, volume, resolution and atoms from projections on the volume's grid.

    Parameters
    ----------
    projections:
        float (tilts, ny, nx) on the lateral grid of voxel ``voxel_ang`` (pixel (0, 0) at
        ``origin_ang`` (y, x) [Å] of the scan frame).
    weights:
        float (tilts, ny, nx) ≥ 0: 0 where a tilt has no data.
    euler_deg:
        float (tilts, 3): nominal (φ, θ, ψ) [deg].
    alignment, volume, atoms:
        The config sections.
    mask:
        The ``[projections]`` section when its substrate mask is wanted (applied after
        the pre-alignment).

    Returns
    -------
    (TomographyResult, AxisSpectra, FSCCurve, alignment history)
        Atom positions are in the volume's frame (add (x0, y0, 0) = origin for the scan
        frame).
    """
    data = torch.as_tensor(np.asarray(projections), dtype=torch.float32)
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
    nominal = np.asarray(euler_deg, dtype=np.float64)
    euler = torch.as_tensor(nominal)
    shifts = torch.zeros(len(nominal), 2, dtype=torch.float64)
    if alignment.center_of_mass:
        shifts = center_of_mass_shifts(data.clamp_min(0.0), voxel_ang)
    if alignment.common_line:
        phi = math.radians(float(nominal[:, 0].mean()))
        axis = torch.tensor([math.cos(phi), -math.sin(phi)], dtype=torch.float64)
        along = common_line_shifts(data, euler, voxel_ang)
        # Keep the centre-of-mass shift across the axis, the common line's along it.
        shifts = shifts - (shifts @ axis)[:, None] * axis + along
    start = shifts.clone()
    if mask is not None and mask.substrate_mask:
        # Romanov 2025, Fig. S3: the particle's support in a smooth low-resolution volume,
        # projected at every tilt; what lies outside (substrate) is set to zero.
        low = reconstruct_volume(
            data,
            euler.float(),
            voxel_ang,
            depth=volume.depth,
            shifts_ang=shifts.float(),
            weights=w,
            settings=VolumeSettings(iterations=20, gaussian_sigma_ang=1.0),
        ).volume
        support = substrate_mask(
            low.numpy(),
            voxel_ang,
            nominal,
            threshold=mask.mask_threshold,
            dilate_ang=mask.mask_dilate_ang,
            shifts_ang=shifts.numpy(),
        )
        data = torch.as_tensor(apply_mask(data.numpy(), support), dtype=torch.float32)
    history: list[dict[str, float]] = []
    if alignment.refine:
        aligned = refine_alignment(
            data,
            euler,
            voxel_ang,
            shifts_ang=shifts,
            weights=w,
            depth=volume.depth,
            settings=AlignmentSettings(
                levels=alignment.levels,
                outer_iterations=alignment.outer_iterations,
                volume_iterations=alignment.volume_iterations,
                fit_angles=alignment.fit_angles,
                fit_shifts=alignment.fit_shifts,
                volume=_volume_settings(volume),
            ),
        )
        euler, shifts, history = aligned.euler_deg, aligned.shifts_ang, aligned.history

    positions = labels = None
    metrics: dict[str, Any] = {}
    if alignment.refine and volume.method == "fista":
        rho = aligned.volume  # reconstructed with these angles, shifts and settings
    else:
        rho = _volume(data, w, euler, shifts, voxel_ang, volume, metrics)
    if atoms.trace:
        grid = rho.cpu().numpy()
        traced = trace_atoms(
            grid,
            voxel_ang,
            min_distance_ang=atoms.min_distance_ang,
            threshold_fraction=atoms.threshold_fraction,
        )
        extent = np.array(grid.shape[::-1], dtype=np.float64) * voxel_ang  # x, y, z
        lowest = atoms.edge_margin_ang - voxel_ang / 2
        highest = extent - voxel_ang / 2 - atoms.edge_margin_ang
        inside = np.all(
            (traced.positions_ang >= lowest) & (traced.positions_ang <= highest),
            axis=1,
        )
        candidates = traced.positions_ang[inside]
        species = classify_species(
            grid,
            voxel_ang,
            candidates,
            num_species=len(atoms.symbols),
            radius_ang=0.5 * atoms.min_distance_ang,
            non_atom_fraction=atoms.non_atom_fraction,
        )
        positions = candidates[~species.non_atoms]
        labels = species.labels[~species.non_atoms]
        metrics["peaks_traced"] = len(candidates)
        metrics["non_atoms"] = int(species.non_atoms.sum())
        if atoms.refine:
            refined = refine_alignment_with_atoms(
                data,
                euler,
                voxel_ang,
                positions,
                labels,
                shifts_ang=shifts,
                weights=w,
                depth=rho.shape[0],
                rounds=atoms.refine_rounds,
                fit_angles=alignment.fit_angles if alignment.refine else (),
                fit_shifts=alignment.fit_shifts and alignment.refine,
                profiles=(
                    list(atoms.symbols)
                    if atoms.profile == "element"
                    else [GAUSSIAN] * len(atoms.symbols)
                ),
            )
            positions, euler, shifts = refined.positions_ang, refined.euler_deg, refined.shifts_ang
            history += [dict(entry, level=0.0) for entry in refined.history]
            rho = _volume(data, w, euler, shifts, voxel_ang, volume, metrics)

    result = TomographyResult(
        volume=rho.cpu().numpy(),
        voxel_ang=voxel_ang,
        origin_ang=origin_ang,
        euler_nominal_deg=nominal,
        euler_deg=euler.numpy(),
        shifts_start_ang=start.numpy(),
        shifts_ang=shifts.numpy(),
        projections=np.asarray(projections),
        weights=np.asarray(weights),
        positions_ang=positions,
        labels=labels,
    )
    result.reprojections = (
        project(rho.float(), euler.float(), voxel_ang, shifts_ang=shifts.float()).cpu().numpy()
    )
    result.metrics.update(metrics)
    result.metrics["reprojection_residual"] = float(
        np.sqrt((result.weights * (result.reprojections - result.projections) ** 2).sum())
        / np.sqrt((result.weights * result.projections**2).sum())
    )
    spectra = axis_spectra(result.volume, voxel_ang)
    result.metrics["resolution_ang"] = {k: float(v) for k, v in spectra.resolution_ang.items()}
    result.metrics["rms_frequency_inv_ang"] = {
        k: float(v) for k, v in spectra.rms_frequency_inv_ang.items()
    }
    order = np.argsort(nominal[:, 1])
    halves = [
        _volume(data[part], w[part], euler[part], shifts[part], voxel_ang, volume).cpu().numpy()
        for part in (torch.as_tensor(order[0::2]), torch.as_tensor(order[1::2]))
    ]
    curve = fsc(halves[0], halves[1], voxel_ang)
    result.metrics["fsc_0143_ang"] = float(curve.resolution_ang_0143)
    if (
        positions is not None
        and labels is not None
        and atoms.lattice_constant_ang
        and atoms.structure
    ):
        lattice = register_to_lattice(
            positions,
            labels,
            lattice_constant_ang=atoms.lattice_constant_ang,
            structure=atoms.structure,
            max_distance_ang=0.35 * atoms.lattice_constant_ang,
        )
        result.metrics["lattice"] = {
            "rms_displacement_ang": float(lattice.rms_displacement_ang),
            "missing_sites": len(lattice.missing_sites_ang),
            "unassigned_atoms": len(lattice.unassigned),
            "species_match_fraction": lattice.species_match_fraction,
        }
    return result, spectra, curve, history


def run_tomography(
    config: TomographyConfig,
    *,
    base_dir: Path = Path(),
    config_text: str | None = None,
    progress: bool = True,
) -> TomographyResult:
    """Run the whole tomography pipeline a config describes (module docstring)."""
    out = config.output if config.output.is_absolute() else base_dir / config.output
    out.mkdir(parents=True, exist_ok=True)
    series = config.series.path
    series = series if series.is_absolute() else base_dir / series
    template = config.reconstruction.template
    template = template if template.is_absolute() else base_dir / template
    run = reconstruct_tilt_series(
        series,
        template,
        out / "tilts",
        tilts=config.series.tilts,
        executor=config.reconstruction.executor,
        workers=config.reconstruction.workers,
        scheduler_address=config.reconstruction.scheduler_address,
        device=config.reconstruction.device,
        progress=progress,
    )
    nominal = np.array([record.euler_deg for record in run.records], dtype=np.float64)
    images, valid, origin = _projections(run.result_paths, config)
    result, spectra, curve, history = tomography_from_projections(
        images,
        valid,
        nominal,
        config.projections.voxel_ang,
        alignment=config.alignment,
        volume=config.volume,
        atoms=config.atoms,
        origin_ang=origin,
        mask=config.projections,
    )
    # The outputs are replaced one by one (each atomically), tomography.h5 last; an old
    # tomography.h5 goes first, so an interrupted run never leaves it beside atoms and
    # figures of another run, and atoms files this run does not write are removed.
    result.files["result"] = out / "tomography.h5"
    result.files["result"].unlink(missing_ok=True)
    if result.positions_ang is not None and result.labels is not None:
        frame = result.positions_ang + np.array([origin[1], origin[0], 0.0])
        cell = np.array(result.volume.shape[::-1], dtype=np.float64) * result.voxel_ang
        for suffix in ("xyz", "cif"):
            path = out / f"atoms.{suffix}"
            write_atoms(path, frame, result.labels, list(config.atoms.symbols), cell_ang=cell)
            result.files[f"atoms_{suffix}"] = path
        result.metrics["ground_truth"] = ground_truth_metrics(
            series, result.positions_ang, result.labels, config.atoms.symbols, origin
        )
    else:
        for suffix in ("xyz", "cif"):
            (out / f"atoms.{suffix}").unlink(missing_ok=True)
    _figures(out, result, spectra, curve, history, config.atoms.symbols)
    _write(result.files["result"], result, config_text, history)
    return result
