"""Tutorial: from a simulated tilt series to a 3D volume and its atoms with ``ptyscope tomo``.

Simulates a 13-tilt series (±60° about y) of an ordered Cu3Au nanoparticle by multislice
4D-STEM, runs ``ptyscope tomo`` (ptychography of every tilt, projections, shift alignment, FISTA
volume, per-axis resolution, atom tracing, species, refinement, lattice registration) and
compares the atoms with the truth.

Run::

    python docs/tutorials/tilt_series_tomography.py OUT [--figures DIR] [--device cpu]

Writes into OUT: the configs it ran, the tilt series, the ``cu3au_tomography`` folder
(per-tilt results, ``tomography.h5``, ``atoms.xyz``/``.cif`` and figures),
``summary.json`` and the figures (also into DIR when given). About 50 s on 2 CPU
cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
from _tutorial import ptyscope, publish

CONFIGS = Path(__file__).resolve().parent / "configs" / "tilt_series_tomography"
FILES = ("simulate.toml", "tomo.toml", "tomo_tilt.toml")
#: Figures of ``ptyscope tomo`` shown in the tutorial.
FIGURES = ("orthoslices", "projections", "axis_spectra", "fsc", "atoms")


def run(out: Path, device: str) -> dict[str, float]:
    """Copy the configs into ``out`` and run the commands there; the seconds of each."""
    # [run]
    for name in FILES:
        shutil.copy(CONFIGS / name, out / name)
    seconds = {"simulate": ptyscope("simulate", "simulate.toml", "-q", "--device", device, cwd=out)}
    seconds["tomo"] = ptyscope("tomo", "tomo.toml", "-q", cwd=out)
    # [/run]
    return seconds


def measure(out: Path, seconds: dict[str, float], figures_copy: Path | None) -> dict[str, object]:
    """Read what ``ptyscope tomo`` measured against the truth; write the summary, copy
    the figures."""
    # [measure]
    folder = out / "cu3au_tomography"
    with h5py.File(folder / "tomography.h5", "r") as handle:
        metrics = json.loads(handle.attrs["metrics"])  # what `ptyscope tomo` printed
        volume_shape = handle["volume"].shape
    truth = metrics["ground_truth"]  # atoms matched to the simulation's, after a translation
    with open(folder / "tilts" / "tilt_series.json") as handle:
        tilt_seconds = [t["seconds"] for t in json.load(handle)["tilts"]]
    # [/measure]

    summary: dict[str, object] = {
        "settings": {
            "specimen": "Cu3Au (L1_2) particle, a = 3.75 Å, radius 4 Å, 19 atoms, 14 Å cell",
            "tilts": "13, -60° to 60° about y, 10° steps",
            "energy_kev": 300,
            "semiangle_mrad": 25.0,
            "defocus_ang": 60.0,
            "scan": "12 x 12 at 1 Å",
            "dose_e_per_ang2": 1e6,
            "per_tilt": "3 slices of 4.67 Å, 30 iterations",
            "voxel_ang": 0.4,
            "volume_shape": list(volume_shape),
            "angles": "known (alignment.refine = false); shifts from CoM and common line",
        },
        "resolution_ang": metrics["resolution_ang"],
        "fsc_0143_ang": metrics["fsc_0143_ang"],
        "reprojection_residual": metrics["reprojection_residual"],
        "ground_truth": truth,
        "lattice": metrics.get("lattice", {}),
        "seconds": {**seconds, "per_tilt_mean": float(np.mean(tilt_seconds))},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    resolution = ", ".join(f"{k} {v:.2f}" for k, v in metrics["resolution_ang"].items())
    print(f"\nresolution per axis [Å]: {resolution}; FSC(0.143) {metrics['fsc_0143_ang']:.2f} Å")
    print(
        f"atoms: {truth['atoms_found']} found of {truth['atoms_true']}; recall "
        f"{truth['recall']:.2f}, precision {truth['precision']:.2f}, RMSD "
        f"{truth['rmsd_ang']:.3f} Å, species {truth['species_accuracy']:.2f}"
    )

    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    for name in FIGURES:
        source = folder / "figures" / f"{name}.png"
        if source.exists():
            shutil.copy(source, figures / source.name)
    publish(figures, out / "summary.json", figures_copy)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder for the data, results and figures")
    parser.add_argument("--figures", type=Path, help="also copy the figures and summary here")
    parser.add_argument("--device", default="cpu", help="simulation device (default cpu)")
    args = parser.parse_args()
    out: Path = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    measure(out, run(out, args.device), args.figures)


if __name__ == "__main__":
    main()
