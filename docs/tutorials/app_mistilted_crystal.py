"""Tutorial: the adaptive propagator (APP) on a mistilted SrTiO3 crystal.

Simulates an 82 Å SrTiO3 [001] slab mistilted by 8 mrad along the diagonal, reconstructs
it twice with ``ptyscope reconstruct`` (fixed propagator, FPP, and adaptive propagator,
APP, which fits the tilt from a start at zero), measures the tilt each leaves in its
slices with ``ptyscope analyze align``, and compares both with the truth.

Run::

    python docs/tutorials/app_mistilted_crystal.py OUT [--figures DIR] [--device cpu]

Writes into OUT: the configs it ran, the data, both results, ``summary.json`` and the
figures (also into DIR when given). About 50 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tomllib
from pathlib import Path

import h5py
import numpy as np
from _tutorial import ptyscope, publish
from matplotlib.figure import Figure

from ptyscope.analysis.commands import analyze_alignment
from ptyscope.analysis.images import load_phase
from ptyscope.io.datafile import read_ground_truth
from ptyscope.report.reconstruction_figures import comparison_figure

CONFIGS = Path(__file__).resolve().parent / "configs" / "app_mistilted_crystal"
SLICES = 5
SLICE_THICKNESS_ANG = 16.4
DPI = 100


def fitted_tilt(result: Path) -> tuple[tuple[float, float], dict[str, np.ndarray]]:
    """(θ_y, θ_x) [mrad] in the result's propagator, and its history per iteration."""
    with h5py.File(result, "r") as handle:
        tilt = (float(handle.attrs["tilt_y_mrad"]), float(handle.attrs["tilt_x_mrad"]))
        history = {axis: np.asarray(handle[f"history/tilt_{axis}_mrad"]) for axis in ("y", "x")}
    return tilt, history


def phase_panels(fpp: Path, app: Path, figure: Path) -> None:
    """Entrance, middle and exit slice of both runs, one colour scale per run."""
    panels = []
    pixel = (1.0, 1.0)
    for result in (fpp, app):
        for index, name in (
            (1, "slice 2"),
            (SLICES // 2, "slice 3 (middle)"),
            (SLICES - 1, "slice 5 (exit)"),
        ):
            image = load_phase(result, slice_index=index)
            panels.append((name, image.phase_rad[image.inner_slices(1.0)]))
            pixel = image.pixel_size_ang
    rows = ["FPP (θ = 0)", "APP (θ fitted)"]
    comparison_figure(figure, panels, pixel_size_ang=pixel, rows=rows)


def tilt_figure(
    figure_path: Path,
    truth: tuple[float, float],
    history: dict[str, np.ndarray],
    shifts: dict[str, np.ndarray],
) -> None:
    """Left: APP's tilt per iteration against the truth. Right: each run's slice shifts
    against depth; a mistilt θ shows as a line of slope tanθ (slices drift sideways)."""
    figure = Figure(figsize=(10.0, 3.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    colours = {"x": "tab:blue", "y": "tab:orange"}
    for axis, index in (("x", 1), ("y", 0)):
        values = history[axis]
        left.plot(np.arange(1, len(values) + 1), values, color=colours[axis], label=f"APP θ_{axis}")
        left.axhline(truth[index], color=colours[axis], ls="--", lw=1, label=f"true θ_{axis}")
    left.set_xlabel("iteration")
    left.set_ylabel("tilt in the propagator [mrad]")
    left.set_title("APP: the tilt, started at zero", fontsize=10)
    left.legend(fontsize=8, ncol=2)
    depth = np.arange(SLICES) * SLICE_THICKNESS_ANG
    for (run, values), marker in zip(shifts.items(), ("o", "s"), strict=True):
        for axis, index in (("x", 1), ("y", 0)):
            centred = values[:, index] - values[:, index].mean()
            right.plot(
                depth,
                centred,
                marker=marker,
                color=colours[axis],
                ls="-" if run == "FPP" else ":",
                label=f"{run} shift {axis}",
            )
    for axis, index in (("x", 1), ("y", 0)):
        line = (depth - depth.mean()) * math.tan(truth[index] * 1e-3)
        right.plot(
            depth, line, color=colours[axis], lw=4, alpha=0.2, label=f"z·tanθ_{axis} (truth)"
        )
    right.set_xlabel("slice depth z [Å]")
    right.set_ylabel("lateral shift of the slice [Å]")
    right.set_title("slice drift with depth (post-alignment)", fontsize=10)
    right.legend(fontsize=7, ncol=2)
    figure.savefig(figure_path, dpi=DPI)


def run(out: Path, device: str) -> dict[str, float]:
    """Copy the configs into ``out`` and run the commands there; the seconds of each."""
    # [run]
    for name in ("simulate.toml", "fpp.toml", "app.toml"):
        shutil.copy(CONFIGS / name, out / name)
    seconds = {"simulate": ptyscope("simulate", "simulate.toml", "-q", "--device", device, cwd=out)}
    for name in ("fpp", "app"):
        seconds[name] = ptyscope(
            "reconstruct", f"{name}.toml", "-q", "--no-report", "--device", device, cwd=out
        )
    # [/run]
    return seconds


def measure(out: Path, seconds: dict[str, float], figures_copy: Path | None) -> dict[str, object]:
    """Compare both results in ``out`` with the truth; write the summary and figures."""
    # [measure]
    truth_map = np.asarray(read_ground_truth(out / "mistilted_srtio3.h5")["tilt_mrad"])
    truth = (float(truth_map[0]), float(truth_map[1]))  # (θ_y, θ_x)
    app_tilt, history = fitted_tilt(out / "app.h5")
    # `ptyscope analyze align RESULT` does the same: the slices registered to each other,
    # and the tilt their drift with depth implies.
    fpp_alignment = analyze_alignment(out / "fpp.h5", out / "fpp_analysis")
    app_alignment = analyze_alignment(out / "app.h5", out / "app_analysis")
    fpp_tilt = fpp_alignment.apparent_tilt_mrad  # FPP: the post-alignment estimate
    app_residual = app_alignment.apparent_tilt_mrad  # what APP's slices still hold
    # [/measure]

    settings = tomllib.loads((out / "app.toml").read_text())
    summary: dict[str, object] = {
        "settings": {
            "specimen": "SrTiO3 [001], 21 cells = 82.0 Å, 5 x 5 cells periodic",
            "energy_kev": 300,
            "semiangle_mrad": 22.0,
            "defocus_ang": 60.0,
            "scan": "16 x 16 at 0.45 Å",
            "dose_e_per_ang2": 1e6,
            "slices": settings["object"]["slices"],
            "slice_thickness_ang": settings["object"]["slice_thickness_ang"],
            "iterations": settings["optimization"]["iterations"],
            "tilt_start": settings["propagator"]["tilt_start"],
        },
        "true_tilt_mrad": truth,
        "app_tilt_mrad": app_tilt,
        "app_error_mrad": math.dist(app_tilt, truth),
        "app_residual_tilt_mrad": app_residual,
        "fpp_apparent_tilt_mrad": fpp_tilt,
        "fpp_error_mrad": math.dist(fpp_tilt, truth),
        "fpp_shifts_ang": fpp_alignment.shifts_ang.tolist(),
        "app_shifts_ang": app_alignment.shifts_ang.tolist(),
        "seconds": seconds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\ntrue tilt (θy, θx):           ({truth[0]:+.2f}, {truth[1]:+.2f}) mrad")
    print(
        f"APP fitted tilt:              ({app_tilt[0]:+.2f}, {app_tilt[1]:+.2f}) mrad, "
        f"off by {summary['app_error_mrad']:.2f} mrad"
    )
    print(
        f"FPP apparent tilt (slices):   ({fpp_tilt[0]:+.2f}, {fpp_tilt[1]:+.2f}) mrad, "
        f"off by {summary['fpp_error_mrad']:.2f} mrad"
    )
    print(f"tilt left in APP's slices:    ({app_residual[0]:+.2f}, {app_residual[1]:+.2f}) mrad")

    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    phase_panels(out / "fpp.h5", out / "app.h5", figures / "phase_slices.png")
    shifts = {"FPP": fpp_alignment.shifts_ang, "APP": app_alignment.shifts_ang}
    tilt_figure(figures / "tilt.png", truth, history, shifts)
    publish(figures, out / "summary.json", figures_copy)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder for the data, results and figures")
    parser.add_argument("--figures", type=Path, help="also copy the figures and summary here")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    args = parser.parse_args()
    out: Path = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    measure(out, run(out, args.device), args.figures)


if __name__ == "__main__":
    main()
