"""Tutorial: mixed-state ptychography of a vibrating crystal, and its vibrations.

Simulates a thin crystal (a checkerboard of Sr and Ti columns, 2 layers) vibrating at
300 K as the incoherent sum of 10 exact harmonic snapshots, reconstructs it with the
two-stage mixed-object preset (one object state, then 10), runs ``ptyscope analyze
vibrations`` on the 10 states, and compares the spread of the column positions and the
Debye-Waller factors with those of the snapshots that made the data.

Run::

    python docs/tutorials/mixed_state_vibrations.py OUT [--figures DIR] [--device cpu]

Writes into OUT: the configs it ran, the data, both stages' results, the vibration
tables and figures, ``summary.json`` and the comparison figures (also into DIR when
given). About 75 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tomllib
from pathlib import Path

import h5py
import numpy as np
from _tutorial import ptyscope, publish
from matplotlib.figure import Figure

from ptyscope.analysis.truth import column_displacements
from ptyscope.analysis.vibrations import (
    correlation_pairs,
    debye_waller,
    displacements,
    greens_tensor,
    pair_blocks,
    similarity,
    state_positions,
)
from ptyscope.io.datafile import read_ground_truth

CONFIGS = Path(__file__).resolve().parent / "configs" / "mixed_state_vibrations"
FILES = ("checkerboard.xyz", "simulate.toml", "stage1.toml", "stage2.toml")
A_ANG = 4.0
SCAN_END_ANG = 11.5  # the last scan position (24 steps of 0.5 Å from 0)
MARGIN_ANG = 1.0  # columns closer than this to the scan's edge are left out
RADIUS_ANG = 0.9  # disk of the per-state column refinement (< half of 2.83 Å)
NEIGHBOUR_ANG = 2.9  # self pairs and the 4 nearest neighbours (2.83 Å)
MAGNIFY = 6.0  # displacements drawn this many times larger
DPI = 100


def projected_states(result: Path) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    """Phase summed over the slices, per state: float (states, 1, ny, nx) [rad]; the
    pixel (y, x) [Å] and the origin (y, x) [Å] of pixel (0, 0)."""
    with h5py.File(result, "r") as handle:
        obj = handle["object"][()]
        pixel = tuple(float(v) for v in handle["object"].attrs["pixel_size_ang"])
        origin = np.asarray(handle["object"].attrs["origin_ang"], dtype=np.float64)
    return np.angle(obj).sum(axis=1, keepdims=True), (pixel[0], pixel[1]), origin


def spread_figure(
    path: Path,
    background: np.ndarray,
    extent: list[float],
    columns: np.ndarray,
    true_d: np.ndarray,
    found_d: np.ndarray,
) -> None:
    """Each column's displacement in every snapshot (left) and every object state
    (right), drawn ``MAGNIFY`` times larger around its mean position."""
    figure = Figure(figsize=(9.0, 4.4), layout="constrained")
    axes = figure.subplots(1, 2, sharex=True, sharey=True)
    titles = (
        f"truth: the {len(true_d)} snapshots",
        f"reconstruction: the {len(found_d)} object states",
    )
    for ax, u, title in zip(axes, (true_d, found_d), titles, strict=True):
        ax.imshow(background, extent=extent, cmap="gray", origin="upper")
        points = columns[None] + MAGNIFY * u  # (states, K, 2) as (y, x)
        ax.scatter(points[..., 1].ravel(), points[..., 0].ravel(), s=6, c="tab:orange")
        ax.scatter(columns[:, 1], columns[:, 0], s=12, marker="+", c="tab:cyan")
        ax.set_title(f"{title} (×{MAGNIFY:g})", fontsize=10)
        ax.set_xlabel("x [Å]")
        ax.set_xlim(0.0, SCAN_END_ANG)
        ax.set_ylim(SCAN_END_ANG, 0.0)
    axes[0].set_ylabel("y [Å]")
    figure.savefig(path, dpi=DPI)


def b_figure(path: Path, species: np.ndarray, b_true: np.ndarray, b_found: np.ndarray) -> None:
    """Debye-Waller B per column: reconstruction against the snapshots."""
    figure = Figure(figsize=(4.6, 4.2), layout="constrained")
    ax = figure.subplots()
    top = 1.1 * float(max(b_true.max(), b_found.max()))
    ax.plot([0, top], [0, top], color="0.6", lw=1, label="equal")
    for name, colour in (("Sr", "tab:green"), ("Ti", "tab:purple")):
        chosen = species == name
        ax.scatter(b_true[chosen], b_found[chosen], color=colour, label=f"{name} columns")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("B of the snapshots [Å²]")
    ax.set_ylabel("B of the object states [Å²]")
    ax.set_title("Debye-Waller B = 8π²(⟨u_x²⟩ + ⟨u_y²⟩)", fontsize=10)
    ax.legend(fontsize=8)
    figure.savefig(path, dpi=DPI)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder for the data, results and figures")
    parser.add_argument("--figures", type=Path, help="also copy the figures and summary here")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    args = parser.parse_args()
    out: Path = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # [run]
    for name in FILES:
        shutil.copy(CONFIGS / name, out / name)
    seconds = {
        "simulate": ptyscope("simulate", "simulate.toml", "-q", "--device", args.device, cwd=out)
    }
    for stage in ("stage1", "stage2"):
        seconds[stage] = ptyscope(
            "reconstruct", f"{stage}.toml", "-q", "--no-report", "--device", args.device, cwd=out
        )
    # Masses [amu] of what moves as one body, brightest column first: with --projected a
    # column of 2 atoms (Sr: 2 x 87.62, Ti: 2 x 47.87).
    seconds["analyze"] = ptyscope(
        "analyze", "vibrations", "vibrations_stage2.h5", "--temperature", "300",
        "--masses", "175.24,95.74", "--projected", "--out", "vibrations",
        cwd=out,
    )  # fmt: skip
    # [/run]

    # [score]
    truth = read_ground_truth(out / "vibrations_4dstem.h5")
    atoms = truth["atoms"]
    columns, true_u = column_displacements(atoms["positions_ang"], truth["displacements_ang"])
    # The species of each column: that of its nearest atom (a column holds one species).
    nearest = [np.argmin(np.hypot(*(atoms["positions_ang"][:, [1, 0]] - c).T)) for c in columns]
    species = np.where(atoms["numbers"][nearest] == 38, "Sr", "Ti")

    # The object states, scored against the snapshots on the same columns.
    phase, pixel, origin = projected_states(out / "vibrations_stage2.h5")
    inner = np.all((columns >= MARGIN_ANG) & (columns <= SCAN_END_ANG - MARGIN_ANG), axis=1)
    columns, species = columns[inner], species[inner]
    true_d = displacements(true_u[:, inner])  # (snapshots, K, 2): minus the mean position
    found = state_positions(phase, columns, pixel, RADIUS_ANG, origin_ang=origin)[:, 0]
    found_d = displacements(found)  # (states, K, 2)
    g_true, g_found = greens_tensor(true_d), greens_tensor(found_d)
    b_true, b_found = debye_waller(g_true), debye_waller(g_found)
    pairs = correlation_pairs(columns, NEIGHBOUR_ANG)
    scores = similarity(pair_blocks(g_found, pairs), pair_blocks(g_true, pairs))
    rms_true, rms_found = (float(np.sqrt(np.mean(d**2))) for d in (true_d, found_d))
    # [/score]

    with open(out / "vibrations" / "vibrations.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    b_command = {
        basis: float(np.mean([float(r["b_ang2"]) for r in rows if r["basis"] == basis]))
        for basis in sorted({r["basis"] for r in rows})
    }
    stage1, stage2 = (tomllib.loads((out / f"{n}.toml").read_text()) for n in ("stage1", "stage2"))
    summary = {
        "settings": {
            "specimen": "checkerboard Sr/Ti, a = 4 Å, 2 layers of 3 Å, 3 x 3 x 2 cells",
            "phonons": f"harmonic, 300 K, {len(true_d)} exact snapshots",
            "energy_kev": 300,
            "semiangle_mrad": 25.0,
            "defocus_ang": 40.0,
            "scan": "24 x 24 at 0.5 Å (one period)",
            "dose": "noise-free",
            "stage1_iterations": stage1["optimization"]["iterations"],
            "stage2_iterations": stage2["optimization"]["iterations"],
            "states": stage2["object"]["states"],
            "probe_modes": stage2["probe"]["modes"],
            "device": args.device,
        },
        "columns_scored": len(columns),
        "rms_displacement_per_axis_ang": {"truth": rms_true, "reconstruction": rms_found},
        "b_mean_ang2": {
            "truth": {name: float(b_true[species == name].mean()) for name in ("Sr", "Ti")},
            "reconstruction": {
                name: float(b_found[species == name].mean()) for name in ("Sr", "Ti")
            },
        },
        "b_ratio_reconstruction_to_truth": float(b_found.mean() / b_true.mean()),
        "b_per_basis_atom_from_analyze_vibrations_ang2": b_command,
        "lsm": scores.lsm,
        "csm": scores.csm,
        "seconds": seconds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{len(columns)} columns scored (at least {MARGIN_ANG} Å inside the scan)")
    print(
        f"rms displacement per axis: truth {100 * rms_true:.1f} pm, "
        f"object states {100 * rms_found:.1f} pm"
    )
    for name in ("Sr", "Ti"):
        print(
            f"mean B of {name} columns: truth {summary['b_mean_ang2']['truth'][name]:.3f} Å², "
            f"object states {summary['b_mean_ang2']['reconstruction'][name]:.3f} Å²"
        )
    print(
        f"Green's tensor blocks (self + 4 neighbours): LSM {scores.lsm:.2f}, CSM {scores.csm:.2f}"
    )

    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    mean = phase[:, 0].mean(axis=0)
    ny, nx = mean.shape
    extent = [
        origin[1] - pixel[1] / 2,
        origin[1] + (nx - 0.5) * pixel[1],
        origin[0] + (ny - 0.5) * pixel[0],
        origin[0] - pixel[0] / 2,
    ]
    spread_figure(figures / "spread.png", mean, extent, columns, true_d, found_d)
    b_figure(figures / "debye_waller.png", species, b_true, b_found)
    shutil.copy(out / "vibrations" / "correlations.png", figures / "correlations.png")
    publish(figures, out / "summary.json", args.figures)


if __name__ == "__main__":
    main()
