"""Adaptive propagator ptychography (APP) against the fixed propagator (FPP) on SrTiO3 [001].

Reproduces the simulated experiments of Sha, Cui & Yu, Sci. Adv. 8, eabn2275 (2022), on
data from ptyscope's simulator (300 kV, 22 mrad, 60 Å underfocus, 82 Å = 21 cells thick,
0.45 Å scan steps, 1e6 e/Å² unless stated) and prints the tables the method is judged by:

1. tilt sweep 0/4/8/12 mrad along x and along the diagonal (Figs. 2 and 4): tilt and
   thickness found by APP (started at zero tilt: the first alignment step is the automatic
   estimate), the apparent tilt that FPP leaves in its slices (post-alignment), and
   d_Sr-TiO / d_O-TiO of the middle slice for both (cubic SrTiO3: the truth is 0);
2. slice-count independence for 3, 5 and 10 slices at 8 mrad (Fig. 5);
3. tilt maps (Figs. 6-7): two domains at ±6 mrad and a linear ramp 2 → 10 mrad along x;
4. noise: selected cases again at 1e5 e/Å².

``--field-steps N`` scans N × N positions instead of 40 × 40 (60: 27 Å on 10 cells, so
d_Sr-TiO and d_O-TiO average 2.25 times the columns). ``--only steep`` runs the sweep's
15 mrad case (at 30° from x) alone. ``--substeps N``
gives APP N planes per slice (``propagator.substeps``; FPP stays Sha et al.'s one plane
per slice), ``--plane-spacing D`` planes at most D Å apart whatever the slice count
(``propagator.plane_spacing_ang``), and ``--no-fpp`` skips the FPP runs (their figures do
not depend on the planes).

Run: ``python validation/adaptive_propagator.py [--quick]`` (about 30 min on 2 cores;
``--quick`` runs one case of each table).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from ptyscope.analysis.commands import analyze_alignment, analyze_columns
from ptyscope.analysis.images import load_phase
from ptyscope.config import ReconstructionConfig
from ptyscope.io.datafile import write_dataset
from ptyscope.reconstruction.run import run_reconstruction
from ptyscope.report.reconstruction_figures import comparison_figure, tilt_map_figure
from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG as A
from ptyscope.simulation.specimens import srtio3_slab
from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings, simulate_4dstem

CELLS_Z = 21
THICKNESS_ANG = CELLS_Z * A
PROBE = ProbeSettings(300e3, 22.0, {"defocus": 60.0})
ITERATIONS = 60
LR_DECAY = 0.98  # learning rates x0.3 by the end: the slices settle in depth


# 18 Å scanned (4.6 cells) on 7 x 7 cells: d_Sr-TiO and d_O-TiO average 9 TiO columns. On a
# 10.8 Å field (24 x 24 steps, 1 TiO column with all 4 Sr neighbours) the zero-tilt errors
# were 0.6-1.0 pm; on this one 0.10-0.17 pm, and the tilt registers to 0.03 mrad.
SCAN = ScanSettings((40, 40), (0.45, 0.45), origin_ang=(4.0, 4.0))
CELLS = (7, 7)


def field(steps: int) -> tuple[ScanSettings, tuple[int, int]]:
    """The sweep's scan with ``steps`` × ``steps`` positions (``--field-steps``) and the
    cells of a periodic slab that hold it and the probe window (40 steps: 18 Å on 7 cells)."""
    scan = ScanSettings((steps, steps), (0.45, 0.45), origin_ang=(4.0, 4.0))
    cells = math.ceil((4.0 + steps * 0.45 + 5.0) / A)
    return scan, (cells, cells)


#: Simulate with abTEM instead of ptyscope's simulator (``--abtem``; needs ptyscope[sim]).
ABTEM = False
#: abTEM's probe window is the whole cell (27 Å for 7 cells); binning the detector by 3
#: brings the window the reconstruction sees to 9.1 Å (ptyscope's own data: 8 Å).
ABTEM_BINNING = 3


def simulate(tilt: tuple[float, float] | np.ndarray, dose: float, scan: ScanSettings, cells=None):
    cells = CELLS if cells is None else cells
    if ABTEM:
        return simulate_abtem(tilt, dose, scan, cells)
    return simulate_4dstem(
        srtio3_slab(cells, THICKNESS_ANG),
        PROBE,
        scan,
        sampling_ang=0.1,
        slice_thickness_ang=A / 2,
        window_ang=8.0,
        tilt_mrad=tilt,
        dose_e_per_ang2=dose,
        seed=1,
    )


def simulate_abtem(tilt, dose: float, scan: ScanSettings, cells):
    """The same specimen, probe and scan simulated by abTEM (its 2 Å slices, its ⅔ band
    limit), with ptyscope's Poisson noise at ``dose``. Global tilts only."""
    import dataclasses

    import torch

    from ptyscope.simulation.abtem_bridge import simulate_4dstem_abtem
    from ptyscope.simulation.acquisition import apply_dose
    from ptyscope.simulation.stem4d import DetectorSettings

    if np.ndim(tilt) != 1:
        raise ValueError("--abtem simulates one global tilt (abTEM has no tilt map)")
    sim = simulate_4dstem_abtem(
        srtio3_slab(cells, THICKNESS_ANG),
        PROBE,
        scan,
        sampling_ang=0.1,
        slice_thickness_ang=A / 2,
        tilt_mrad=(float(tilt[0]), float(tilt[1])),
        detector=DetectorSettings(binning=ABTEM_BINNING),
    )
    counts = apply_dose(
        torch.as_tensor(sim.dataset.data), dose, scan.step_ang, torch.Generator().manual_seed(1)
    )
    dataset = dataclasses.replace(sim.dataset, data=counts.numpy())
    return dataclasses.replace(sim, dataset=dataset)


#: Planes per slice of APP's forward model (``--substeps``); FPP keeps one.
SUBSTEPS = 1
#: Largest distance between APP's planes [Å] (``--plane-spacing``; replaces SUBSTEPS).
PLANE_SPACING: float | None = None
#: The slice-count runs are longer: with 10 slices the tilt still rose by 0.07 mrad per
#: 5 iterations at iteration 60.
SLICE_COUNT_ITERATIONS = 100


def app_planes() -> dict[str, float]:
    """APP's ``[propagator]`` planes setting."""
    if PLANE_SPACING is not None:
        return {"plane_spacing_ang": PLANE_SPACING}
    return {"substeps": SUBSTEPS}


#: Run the FPP baselines (``--no-fpp`` skips them).
RUN_FPP = True


def reconstruct(
    folder: Path,
    sim,
    *,
    fit_tilt: str,
    slices: int,
    fit_thickness: bool = False,
    thickness_scale: float = 1.0,
    iterations: int = ITERATIONS,
) -> Path:
    data = folder / "data.h5"
    if not data.exists():
        write_dataset(data, sim.dataset)
    config = ReconstructionConfig.model_validate(
        {
            "data": {"path": str(data)},
            "probe": {"defocus_ang": 60.0, "start": 10, "lr": 3e-3},
            "object": {
                "slices": slices,
                "slice_thickness_ang": THICKNESS_ANG * thickness_scale / slices,
                "lr": 2e-2,
            },
            "propagator": {
                "fit_tilt": fit_tilt,
                "fit_thickness": fit_thickness,
                **({"substeps": 1} if fit_tilt == "off" else app_planes()),
            },
            "optimization": {
                "iterations": iterations,
                "batch_size": 32,
                "checkpoint_every": None,
                "lr_decay": LR_DECAY,
            },
            "output": {"path": str(folder / f"{fit_tilt}_{slices}_{thickness_scale}.h5")},
        }
    )
    run = run_reconstruction(config, progress=False, write_html_report=False)
    return run.result_path


def measure(result: Path, slices: int) -> dict[str, float]:
    import h5py

    with h5py.File(result, "r") as handle:
        tilt = (float(handle.attrs["tilt_y_mrad"]), float(handle.attrs["tilt_x_mrad"]))
        dz = float(handle.attrs["slice_thickness_ang"])
    out = result.with_suffix("")
    columns = analyze_columns(result, out, slice_index=slices // 2, sr_position_ang=(4.0, 4.0))
    alignment = analyze_alignment(result, out)
    return {
        "ty": tilt[0],
        "tx": tilt[1],
        "thickness": dz * slices,
        "d_sr": math.hypot(*columns.d_sr_tio_pm[:2]),
        "d_o": math.hypot(*columns.d_o_tio_pm[:2]),
        "app_ty": alignment.apparent_tilt_mrad[0] + tilt[0],
        "app_tx": alignment.apparent_tilt_mrad[1] + tilt[1],
    }


def middle_phase(result: Path, slices: int) -> tuple[np.ndarray, tuple[float, float]]:
    image = load_phase(result, slice_index=slices // 2)
    return image.phase_rad[image.inner_slices(1.0)], image.pixel_size_ang


def sweep(root: Path, cases, dose: float, figures: Path | None) -> None:
    scan = SCAN
    print(
        f"\n## Tilt sweep, {THICKNESS_ANG:.0f} Å, 5 slices ×{SUBSTEPS} planes, dose {dose:.0e} e/Å²"
    )
    print(
        "| truth (θy, θx) | APP θ | APP |Δθ| | APP t [Å] | APP d_Sr-TiO, d_O-TiO [pm] "
        "| FPP apparent θ | FPP d_Sr-TiO, d_O-TiO [pm] | time [s] |"
    )
    print("|---|---|---|---|---|---|---|---|")
    panels: list[tuple[str, np.ndarray]] = []
    rows: list[str] = []
    pixel = (1.0, 1.0)
    for truth in cases:
        start = time.perf_counter()
        folder = root / f"sweep_{truth[0]:.2f}_{truth[1]:.2f}_{dose:.0e}"
        folder.mkdir()
        sim = simulate(truth, dose, scan)
        app_result = reconstruct(folder, sim, fit_tilt="global", slices=5)
        app = measure(app_result, 5)
        fpp = dict.fromkeys(app, math.nan)
        panels.append(("APP", middle_phase(app_result, 5)[0]))
        if RUN_FPP:
            fpp_result = reconstruct(folder, sim, fit_tilt="off", slices=5)
            fpp = measure(fpp_result, 5)
            panels.append(("FPP", middle_phase(fpp_result, 5)[0]))
        rows.append(f"({truth[0]:.1f}, {truth[1]:.1f}) mrad")
        error = math.hypot(app["ty"] - truth[0], app["tx"] - truth[1])
        print(
            f"| ({truth[0]:.2f}, {truth[1]:.2f}) | ({app['ty']:.2f}, {app['tx']:.2f}) "
            f"| {error:.2f} | {app['thickness']:.1f} | {app['d_sr']:.2f}, {app['d_o']:.2f} "
            f"| ({fpp['app_ty']:.2f}, {fpp['app_tx']:.2f}) | {fpp['d_sr']:.2f}, {fpp['d_o']:.2f} "
            f"| {time.perf_counter() - start:.0f} |",
            flush=True,
        )
        pixel = middle_phase(app_result, 5)[1]
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        name = figures / f"app_vs_fpp_middle_slice_{dose:.0e}.png"
        comparison_figure(name, panels, pixel_size_ang=pixel, rows=rows)
        print(f"\nmiddle slices, APP vs FPP: {name}")


def slice_count(root: Path, counts) -> None:
    truth = (0.0, 8.0)
    sim = simulate(truth, 1e6, SCAN)
    print(f"\n## Slice-count independence, truth {truth} mrad")
    print("| slices | APP θ | FPP apparent θ |")
    print("|---|---|---|")
    for slices in counts:
        folder = root / f"slices_{slices}"
        folder.mkdir()
        runs = {"slices": slices, "iterations": SLICE_COUNT_ITERATIONS}
        app = measure(reconstruct(folder, sim, fit_tilt="global", **runs), slices)
        fpp = dict.fromkeys(app, math.nan)
        if RUN_FPP:
            fpp = measure(reconstruct(folder, sim, fit_tilt="off", **runs), slices)
        print(
            f"| {slices} | ({app['ty']:.2f}, {app['tx']:.2f}) "
            f"| ({fpp['app_ty']:.2f}, {fpp['app_tx']:.2f}) |",
            flush=True,
        )


def thickness(root: Path) -> None:
    truth = (0.0, 8.0)
    sim = simulate(truth, 1e6, SCAN)
    print(f"\n## Thickness fitted from a wrong start, truth {THICKNESS_ANG:.1f} Å, tilt {truth}")
    print("| start [Å] | found [Å] | error | APP θ |")
    print("|---|---|---|---|")
    for scale in (0.9, 1.1):
        folder = root / f"thickness_{scale}"
        folder.mkdir()
        result = reconstruct(
            folder, sim, fit_tilt="global", slices=5, fit_thickness=True, thickness_scale=scale
        )
        app = measure(result, 5)
        print(
            f"| {THICKNESS_ANG * scale:.1f} | {app['thickness']:.1f} "
            f"| {app['thickness'] / THICKNESS_ANG - 1:+.1%} | ({app['ty']:.2f}, {app['tx']:.2f}) |",
            flush=True,
        )


def tilt_map(root: Path, kind: str, dose: float, figures: Path | None) -> None:
    import h5py

    ny, nx, step = 20, 60, 0.45
    xs = np.arange(nx) * step
    domains = np.where(xs < xs.mean(), 6.0, -6.0)
    profile = domains if kind == "domains" else 2.0 + 8.0 * xs / xs[-1]
    truth = np.zeros((ny, nx, 2))
    truth[..., 1] = profile[None, :]
    scan = ScanSettings((ny, nx), (step, step), origin_ang=(3.0, 4.0))
    sim = simulate(truth, dose, scan, cells=(9, 4))
    folder = root / f"map_{kind}_{dose:.0e}"
    folder.mkdir()
    write_dataset(folder / "data.h5", sim.dataset)
    config = ReconstructionConfig.model_validate(
        {
            "data": {"path": str(folder / "data.h5")},
            "probe": {"defocus_ang": 60.0, "start": 10, "lr": 3e-3},
            "object": {"slices": 5, "slice_thickness_ang": THICKNESS_ANG / 5, "lr": 2e-2},
            "propagator": {"fit_tilt": "map", "map_start": 30, **app_planes()},
            "optimization": {
                "iterations": 70,
                "batch_size": 32,
                "checkpoint_every": None,
                "lr_decay": LR_DECAY,
            },
            "output": {"path": str(folder / "map.h5")},
        }
    )
    start = time.perf_counter()
    run = run_reconstruction(config, progress=False, write_html_report=False)
    with h5py.File(run.result_path, "r") as handle:
        found = np.asarray(handle["tilt_map_mrad"])
    error = found - truth
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        tilt_map_figure(figures / f"tilt_map_{kind}_{dose:.0e}.png", tilt_map_mrad=found)
    if kind == "domains":
        away = np.abs(xs - xs.mean())[None, :].repeat(ny, 0) > 10.0  # > 1 nm from the boundary
        rms = float(np.sqrt((error[away] ** 2).sum(axis=-1).mean()))
        print(
            f"| two domains ±6 mrad | {dose:.0e} | RMS error > 1 nm from the boundary: "
            f"{rms:.2f} mrad ({int(away[0].sum())} of {nx} columns) "
            f"| {time.perf_counter() - start:.0f} |",
            flush=True,
        )
    else:
        inner = slice(5, nx - 5)
        fit = np.polyfit(xs[inner], found[..., 1].mean(axis=0)[inner], 1)
        slope_truth = 8.0 / xs[-1]
        rms = float(np.sqrt((error[:, inner] ** 2).sum(axis=-1).mean()))
        print(
            f"| ramp 2 → 10 mrad | {dose:.0e} | gradient {fit[0]:.4f} mrad/Å vs "
            f"{slope_truth:.4f} ({fit[0] / slope_truth - 1:+.1%}); RMS {rms:.2f} mrad "
            f"| {time.perf_counter() - start:.0f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one case per table")
    parser.add_argument("--only", choices=["sweep", "steep", "slices", "thickness", "map", "noise"])
    parser.add_argument("--figures", type=Path, help="folder for the figures (default: none)")
    planes = parser.add_mutually_exclusive_group()
    planes.add_argument("--substeps", type=int, default=1, help="APP's planes per slice")
    planes.add_argument(
        "--plane-spacing", type=float, help="largest distance between APP's planes [Å]"
    )
    parser.add_argument("--no-fpp", action="store_true", help="skip the FPP baselines")
    parser.add_argument(
        "--abtem", action="store_true", help="simulate with abTEM (ptyscope[sim]; no maps)"
    )
    parser.add_argument(
        "--field-steps", type=int, default=40, help="scan positions per side (all but the maps)"
    )
    args = parser.parse_args()
    global SUBSTEPS, PLANE_SPACING, RUN_FPP, ABTEM, SCAN, CELLS
    SCAN, CELLS = field(args.field_steps)
    SUBSTEPS, PLANE_SPACING, RUN_FPP = args.substeps, args.plane_spacing, not args.no_fpp
    ABTEM = args.abtem
    planes = (
        f"planes at most {PLANE_SPACING} Å apart"
        if PLANE_SPACING is not None
        else f"{SUBSTEPS} plane(s) per slice"
    )
    print(f"APP with {planes}; FPP {'on' if RUN_FPP else 'skipped'}")
    diagonal = [(-t / math.sqrt(2), t / math.sqrt(2)) for t in (4.0, 8.0, 12.0)]
    along_x = [(0.0, t) for t in (0.0, 4.0, 8.0, 12.0)]
    steep = [(15 * math.sin(math.radians(30)), 15 * math.cos(math.radians(30)))]  # 15 mrad
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        todo = [args.only] if args.only else ["sweep", "slices", "thickness", "map", "noise"]
        if "sweep" in todo:
            cases = [(0.0, 8.0), diagonal[-1]] if args.quick else along_x + diagonal + steep
            sweep(root, cases, 1e6, args.figures)
        if "steep" in todo:  # the steepest case of the sweep alone
            sweep(root, steep, 1e6, args.figures)
        if "slices" in todo:
            slice_count(root, (5,) if args.quick else (3, 5, 10))
        if "thickness" in todo:
            thickness(root)
        if "map" in todo or "noise" in todo:
            print("\n## Tilt maps\n| specimen | dose | result | time [s] |\n|---|---|---|---|")
        if "map" in todo:
            for kind in ("domains",) if args.quick else ("domains", "linear"):
                tilt_map(root, kind, 1e6, args.figures)
        if "noise" in todo:
            tilt_map(root, "domains", 1e5, args.figures)
            sweep(root, [(0.0, 8.0), diagonal[-1]], 1e5, args.figures)


if __name__ == "__main__":
    main()
