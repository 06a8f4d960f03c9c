"""Atomic electron tomography of a simulated FePt nanoparticle: atoms, alignment, resolution.

The specimen: an L1_0 FePt particle (a = 3.85 Å) of radius ``--radius`` Å, turned to a
generic orientation (Euler (17°, 23°, 41°), so that no tilt is a zone axis), in vacuum.
Its projected potential at (0, θ, 0) over ±70° (``--tilts``) is computed exactly from the
turned atoms on 0.4 Å pixels
(:func:`~ptyscope.simulation.tilt_series.projected_potential_series`, no voxel grid, so
the data carry none of the projector's interpolation), blurred by ``--blur`` Å (the
resolution of the per-tilt ptychography); Gaussian noise of ``--noise`` × the largest
projected value is added. Three runs, each printing its figures:

* known angles: volume (FISTA), atoms traced, classified and refined against the
  projections; recall, precision, position RMSD, species accuracy;
* perturbed: random errors of 1° on φ and θ and 0.5 Å on the shifts; centre-of-mass and
  common-line pre-alignment, joint refinement with the volume, then with the atomic model
  (``--rounds`` updates; the atoms' element profiles, projected analytically);
  the angle errors (geodesic, common rotation removed) and shift errors (volume
  translation removed) before and after, and the atom figures again;
* resolution per axis: the RMS frequency per axis of the known-angle volume, whose z/x
  ratio is compared with Radermacher's missing-wedge elongation for the tilt range.

``--ptycho N`` adds a reduced series through 4D-STEM simulation and per-tilt
ptychography (N tilts over ±``--ptycho-range``, default 70°) with the whole
``ptyscope tomo`` pipeline.

Run: ``python validation/tomography.py [--radius 10] [--tilts 29] [--noise 0.01]
[--blur 0.5] [--rounds 12] [--only known|perturbed] [--ptycho 7]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ptyscope.config import TomoAlignmentConfig, TomoAtomsConfig, TomoVolumeConfig
from ptyscope.simulation.specimens import ordered_alloy_cluster, rotate_atoms
from ptyscope.simulation.tilt_series import projected_potential_series
from ptyscope.tomography.alignment import rotation_errors_deg, translation_modes
from ptyscope.tomography.atoms import match_atoms_translated
from ptyscope.tomography.pipeline import tomography_from_projections
from ptyscope.tomography.resolution import missing_wedge_elongation

VOXEL_ANG = 0.4
SYMBOLS = ("Fe", "Pt")


def particle(radius_ang: float):
    """The FePt particle in a cubic box of a whole number of 0.4 Å voxels (even)."""
    atoms = ordered_alloy_cluster(
        list(SYMBOLS), "L1_0", 3.85, radius_ang=radius_ang, vacuum_ang=4.0
    )
    side = 2 * round((2 * radius_ang + 9.0) / (2 * VOXEL_ANG)) * VOXEL_ANG
    atoms.set_cell([side] * 3)
    atoms.center()
    center = [side / 2] * 3
    return rotate_atoms(atoms, [17.0, 23.0, 41.0], center)


def labels_of(atoms) -> np.ndarray:
    return np.array([SYMBOLS.index(s) for s in atoms.get_chemical_symbols()])


def atom_figures(result, atoms, tag: str) -> None:
    truth, true_labels = np.asarray(atoms.positions), labels_of(atoms)
    found = result.positions_ang
    match, offset = match_atoms_translated(  # the translation gauge of a refined alignment
        found,
        truth,
        max_distance_ang=1.0,
        found_labels=result.labels,
        true_labels=true_labels,
    )
    print(
        f"  {tag}: {len(found)} found of {len(truth)}: recall {match.recall:.3f}, precision "
        f"{match.precision:.3f}, RMSD {match.rmsd_ang:.3f} Å, species accuracy "
        f"{match.species_accuracy:.3f} (translation removed {np.round(offset, 3).tolist()} Å)"
    )


def alignment_errors(euler, shifts, true_euler, true_shifts) -> tuple[float, float, float]:
    angle = rotation_errors_deg(torch.as_tensor(euler), torch.as_tensor(true_euler))
    difference = torch.as_tensor(shifts) - torch.as_tensor(true_shifts)
    modes = translation_modes(torch.as_tensor(true_euler))
    flat = difference.reshape(-1, 1).double()
    flat = flat - modes @ torch.linalg.lstsq(modes, flat).solution
    rms_shift = float(flat.reshape(-1, 2).pow(2).sum(1).mean().sqrt())
    return float(angle.pow(2).mean().sqrt()), float(angle.max()), rms_shift


def run(args: argparse.Namespace) -> None:
    atoms = particle(args.radius)
    size = round(float(atoms.cell.lengths()[0]) / VOXEL_ANG)
    tilts = np.linspace(-70.0, 70.0, args.tilts)
    euler = np.stack([np.zeros_like(tilts), tilts, np.zeros_like(tilts)], axis=1)
    rng = np.random.default_rng(args.seed)
    print(
        f"FePt L1_0, r = {args.radius} Å, {len(atoms)} atoms, box {size}³ × "
        f"{VOXEL_ANG} Å; {args.tilts} tilts ±70°; blur {args.blur} Å; noise {args.noise}"
    )
    volume_config = TomoVolumeConfig(iterations=60)
    atoms_config = TomoAtomsConfig(
        min_distance_ang=1.8,
        symbols=SYMBOLS,
        lattice_constant_ang=3.85,
        structure="L1_0",
        refine_rounds=args.rounds,
    )

    def series(true_euler: np.ndarray, true_shifts: np.ndarray) -> np.ndarray:
        clean = projected_potential_series(
            atoms,
            true_euler,
            (size, size),
            VOXEL_ANG,
            center_ang=[size * VOXEL_ANG / 2] * 3,
            shifts_ang=true_shifts,
            blur_ang=args.blur,
        )
        return clean + args.noise * clean.max() * rng.standard_normal(clean.shape)

    if args.only in (None, "known"):
        start = time.perf_counter()
        data = series(euler, np.zeros((len(tilts), 2)))
        off = TomoAlignmentConfig(center_of_mass=False, common_line=False, refine=False)
        result, spectra, curve, _ = tomography_from_projections(
            data,
            np.ones_like(data),
            euler,
            VOXEL_ANG,
            alignment=off,
            volume=volume_config,
            atoms=atoms_config,
        )
        print(f"known angles ({time.perf_counter() - start:.0f} s):")
        atom_figures(result, atoms, "atoms")
        print(f"  lattice registration (L1_0, a = 3.85 Å): {result.metrics.get('lattice')}")
        rms = spectra.rms_frequency_inv_ang
        print(
            f"  resolution: RMS frequency x {rms['x']:.3f}, y {rms['y']:.3f}, z {rms['z']:.3f} "
            f"1/Å; x/z = {rms['x'] / rms['z']:.3f} vs Radermacher "
            f"{missing_wedge_elongation(70.0):.3f}; cut-off per axis "
            + ", ".join(f"{k} {v:.2f} Å" for k, v in spectra.resolution_ang.items())
            + f"; half-series FSC(0.143) {curve.resolution_ang_0143:.2f} Å"
        )
    if args.only in (None, "perturbed"):
        start = time.perf_counter()
        errors = np.zeros_like(euler)
        errors[:, :2] = rng.normal(0.0, 1.0, size=(len(tilts), 2))
        true_shifts = rng.normal(0.0, 0.5, size=(len(tilts), 2))
        data = series(euler, true_shifts)
        before = alignment_errors(euler + errors, np.zeros_like(true_shifts), euler, true_shifts)
        result, _, _, _ = tomography_from_projections(
            data,
            np.ones_like(data),
            euler + errors,
            VOXEL_ANG,
            alignment=TomoAlignmentConfig(levels=(2, 1), outer_iterations=6, volume_iterations=20),
            volume=volume_config,
            atoms=atoms_config,
        )
        after = alignment_errors(result.euler_deg, result.shifts_ang, euler, true_shifts)
        print(f"perturbed by 1° (φ, θ) and 0.5 Å ({time.perf_counter() - start:.0f} s):")
        print(
            f"  angles: RMS {before[0]:.3f}° (max {before[1]:.3f}°) → {after[0]:.3f}° "
            f"(max {after[1]:.3f}°); shifts: RMS {before[2]:.3f} Å → {after[2]:.3f} Å"
        )
        atom_figures(result, atoms, "atoms")
    if args.ptycho:
        ptycho(args)


def ptycho(args: argparse.Namespace) -> None:
    """A reduced series through 4D-STEM and ptychography, with `ptyscope tomo`."""
    from ptyscope.config import TomographyConfig
    from ptyscope.io.datafile import write_tilt_series
    from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings
    from ptyscope.simulation.tilt_series import simulate_tilt_series
    from ptyscope.tomography.pipeline import ground_truth_metrics, project_shift, run_tomography

    atoms = particle(args.ptycho_radius)
    side = float(atoms.cell.lengths()[0])
    tilts = np.linspace(-args.ptycho_range, args.ptycho_range, args.ptycho)
    start = time.perf_counter()
    simulated = simulate_tilt_series(
        atoms,
        [(0.0, t, 0.0) for t in tilts],
        ProbeSettings(300e3, 25.0, {"defocus": 60.0}),
        ScanSettings((int(side) - 1, int(side) - 1), (1.0, 1.0), origin_ang=(1.0, 1.0)),
        sampling_ang=0.15,
        window_ang=9.6,
        slice_thickness_ang=2.0,
        volume_voxel_ang=1.0,
        dose_e_per_ang2=1e6,
        seed=args.seed,
    )
    print(
        f"ptychographic series: {len(tilts)} tilts simulated in {time.perf_counter() - start:.0f} s"
    )
    with tempfile.TemporaryDirectory() as folder:
        root = Path(args.ptycho_out or folder)
        root.mkdir(parents=True, exist_ok=True)
        write_tilt_series(
            root / "series.h5", simulated.datasets, simulated.euler_deg, simulated.ground_truth
        )
        slices = max(1, round(side / 4.0))
        (root / "tilt.toml").write_text(
            f"[probe]\ndefocus_ang = 60.0\nstart = 3\n[object]\nslices = {slices}\n"
            f"slice_thickness_ang = {side / slices}\n[optimization]\niterations = "
            f"{args.ptycho_iterations}\nbatch_size = 16\n"
        )
        config = TomographyConfig.model_validate(
            {
                "series": {"path": str(root / "series.h5")},
                "reconstruction": {"template": str(root / "tilt.toml")},
                "projections": {
                    "voxel_ang": VOXEL_ANG,
                    "shape": [round(side / VOXEL_ANG)] * 2,
                    "origin_ang": [0.0, 0.0],
                    "denoise": "none",
                },
                "alignment": {"refine": False},
                "atoms": {"min_distance_ang": 1.8, "symbols": list(SYMBOLS)},
                "output": str(root / "out"),
            }
        )
        result = run_tomography(config, progress=False)
        print(f"  pipeline done in {time.perf_counter() - start:.0f} s; metrics:")
        for key, value in result.metrics.items():
            print(f"    {key}: {value}")
        # The same projections with 1° (φ, θ) and 0.5 Å errors, aligned.
        rng = np.random.default_rng(args.seed)
        euler = np.asarray(simulated.euler_deg, dtype=np.float64)
        errors = np.zeros_like(euler)
        errors[:, :2] = rng.normal(0.0, 1.0, (len(euler), 2))
        true_shifts = rng.normal(0.0, 0.5, (len(euler), 2))
        moved = project_shift(
            torch.as_tensor(result.projections), torch.as_tensor(true_shifts), VOXEL_ANG
        ).numpy()
        before = alignment_errors(euler + errors, np.zeros_like(true_shifts), euler, true_shifts)
        aligned, _, _, _ = tomography_from_projections(
            moved,
            result.weights,
            euler + errors,
            VOXEL_ANG,
            alignment=TomoAlignmentConfig(levels=(2, 1), outer_iterations=6, volume_iterations=20),
            volume=TomoVolumeConfig(iterations=60),
            atoms=TomoAtomsConfig(min_distance_ang=1.8, symbols=SYMBOLS),
        )
        after = alignment_errors(aligned.euler_deg, aligned.shifts_ang, euler, true_shifts)
        print(
            f"  perturbed: angles RMS {before[0]:.3f}° (max {before[1]:.3f}°) → {after[0]:.3f}° "
            f"(max {after[1]:.3f}°); shifts RMS {before[2]:.3f} → {after[2]:.3f} Å"
        )
        truth = ground_truth_metrics(
            root / "series.h5", aligned.positions_ang, aligned.labels, SYMBOLS, aligned.origin_ang
        )
        print(f"  perturbed atoms: {truth}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--radius", type=float, default=10.0)
    parser.add_argument("--tilts", type=int, default=29)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--blur", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=12, help="atom-alignment rounds")
    parser.add_argument("--only", choices=("known", "perturbed"), default=None)
    parser.add_argument("--ptycho", type=int, default=0, help="tilts of the ptychographic series")
    parser.add_argument("--ptycho-radius", type=float, default=5.0)
    parser.add_argument("--ptycho-range", type=float, default=70.0, help="± tilt range [deg]")
    parser.add_argument("--ptycho-iterations", type=int, default=80)
    parser.add_argument("--ptycho-out", default=None, help="keep the series and results here")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
