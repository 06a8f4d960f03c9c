"""Tutorial: reading real detector formats (EMPAD .raw, Merlin .mib) and preprocessing.

Simulates a 4D-STEM scan of thin SrTiO3 as a detector records it (a rotated scan, descan,
Poisson counts, one hot and one dead pixel, a 128 x 128 detector), writes it as an EMPAD
``.raw`` file and as a 12-bit Merlin ``.mib`` file, inspects both with ``ptyscope info``,
reads them back with :func:`ptyscope.data.readers.read_4dstem`, and preprocesses the EMPAD
file with ``ptyscope preprocess``: bad pixels, bright-field-disk calibration, descan and
scan rotation, each compared with the truth.

Run::

    python docs/tutorials/reading_detector_formats.py OUT [--figures DIR]

Writes into OUT: both detector files, the config it ran, the calibrated HDF5 file, its
panel, ``summary.json`` and the figures (also into DIR when given). About 25 s on 2 CPU
cores.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _tutorial import publish
from matplotlib.figure import Figure

from ptyscope.data.bad_pixels import find_bad_pixels, repair_bad_pixels
from ptyscope.data.bright_field import disk_centres
from ptyscope.data.descan import measure_descan, shift_patterns
from ptyscope.data.formats.empad import write_empad_raw
from ptyscope.data.formats.merlin import write_mib
from ptyscope.data.readers import read_4dstem
from ptyscope.io.datafile import read_dataset
from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG as A
from ptyscope.simulation.specimens import srtio3_slab
from ptyscope.simulation.stem4d import (
    DetectorSettings,
    ProbeSettings,
    ScanSettings,
    simulate_4dstem,
)

CONFIGS = Path(__file__).resolve().parent / "configs" / "reading_detector_formats"
SCAN_SHAPE = (24, 24)
STEP_ANG = 0.41
ROTATION_DEG = 20.0  # the scan's fast axis turned from the detector's x towards its y
SEMIANGLE_MRAD = 21.4
ELECTRONS_PER_PATTERN = 3e4
HOT_PIXEL = (20, 100)  # (row, column)
DEAD_PIXEL = (70, 58)  # inside the bright-field disk
DPI = 100


def ptyscope(*args: str, cwd: Path) -> str:
    """Run one ``ptyscope`` command (with this Python) in ``cwd``; echo and return its output."""
    print(f"\n$ ptyscope {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "ptyscope.cli", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    print(done.stdout, end="", flush=True)
    return done.stdout


def detector_counts(seed: int = 0) -> tuple[np.ndarray, dict[str, object]]:
    """What the detector records: int64 (24, 24, 128, 128) counts, and the truth."""
    # [simulate]
    simulation = simulate_4dstem(
        srtio3_slab((5, 5), 2 * A),  # 7.8 Å: a weak phase object, so iCoM ≈ projected phase
        ProbeSettings(300e3, SEMIANGLE_MRAD),  # in focus
        ScanSettings(SCAN_SHAPE, (STEP_ANG, STEP_ANG), rotation_deg=ROTATION_DEG),
        sampling_ang=0.1,  # the window is the 19.5 Å cell: 1.008 mrad per detector pixel
        slice_thickness_ang=A / 2,
        detector=DetectorSettings(max_angle_mrad=65.0),  # 128 x 128 pixels, ±64.5 mrad
    )
    clean = np.asarray(simulation.dataset.data, dtype=np.float64)
    # Descan: the disk walks over the detector as the beam scans (a plane, in pixels).
    i, j = np.meshgrid(*(np.arange(n) for n in SCAN_SHAPE), indexing="ij")
    descan = np.stack([1.5 + 0.15 * i - 0.05 * j, -2.0 + 0.05 * i + 0.12 * j], axis=-1)
    shifted = shift_patterns(clean, descan, method="bilinear")  # stays >= 0
    counts = np.random.default_rng(seed).poisson(shifted * ELECTRONS_PER_PATTERN)
    counts[..., HOT_PIXEL[0], HOT_PIXEL[1]] = 3000
    counts[..., DEAD_PIXEL[0], DEAD_PIXEL[1]] = 0
    # [/simulate]
    truth = {
        "detector_pixel_mrad": simulation.dataset.calibration.detector_pixel_mrad[0],
        "scan_rotation_deg": ROTATION_DEG,
        "descan_px": descan,
        "clean": simulation.dataset,
        "dose_e_per_ang2": ELECTRONS_PER_PATTERN / STEP_ANG**2,
    }
    return counts, truth


def raw_figure(path: Path, counts: np.ndarray, before: np.ndarray, after: np.ndarray) -> None:
    """The raw file's mean pattern (log scale), and the bright-field disk's centre in every
    pattern before and after ``ptyscope preprocess`` removed the descan (maps over the
    scan, each minus its mean; what is left after is the specimen's own DPC signal)."""
    figure = Figure(figsize=(13.0, 3.0), layout="constrained")
    axes = figure.subplots(1, 5, width_ratios=[1.25, 1, 1, 1, 1])
    mean = counts.mean(axis=(0, 1))
    shown = axes[0].imshow(np.log10(mean + 1e-3), cmap="magma")
    axes[0].set_title("EMPAD file: mean pattern", fontsize=9)
    axes[0].annotate(
        "hot pixel",
        HOT_PIXEL[::-1],
        xytext=(40, 8),
        color="w",
        fontsize=8,
        arrowprops={"color": "w", "width": 0.5, "headwidth": 4},
    )
    axes[0].set_xlabel("detector x [px]")
    axes[0].set_ylabel("detector y [px]")
    figure.colorbar(shown, ax=axes[0], shrink=0.8, label="log10(counts)")
    bound = float(np.abs(before - before.mean(axis=(0, 1))).max())
    maps = [
        (before, 1, "raw: disk centre x"),
        (before, 0, "raw: disk centre y"),
        (after, 1, "preprocessed: x"),
        (after, 0, "preprocessed: y"),
    ]
    for ax, (values, index, title) in zip(axes[1:], maps, strict=True):
        centred = values[..., index] - values[..., index].mean()
        shown = ax.imshow(centred, cmap="RdBu_r", vmin=-bound, vmax=bound)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("scan x [index]")
    axes[1].set_ylabel("scan y [index]")
    figure.colorbar(shown, ax=list(axes[1:]), shrink=0.8, label="shift from mean [px]")
    figure.savefig(path, dpi=DPI)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder for the files and figures")
    parser.add_argument("--figures", type=Path, help="also copy the figures and summary here")
    args = parser.parse_args()
    out: Path = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    counts, truth = detector_counts()
    seconds = {"simulate": time.perf_counter() - start}

    # [write]
    empad = out / "scan_x24_y24.raw"  # EMPAD's own naming: the scan shape in the name
    write_empad_raw(empad, counts.astype(np.float32))  # float32 frames of 130 x 128
    merlin = out / "scan.mib"
    write_mib(merlin, counts, counter_depth=12)  # 12-bit counters, big-endian uint16
    # [/write]

    # [info]
    ptyscope("info", empad.name, cwd=out)
    ptyscope(
        "info",
        merlin.name,
        "--scan-shape",
        "24",
        "24",
        "--scan-step-ang",
        "0.41",
        "0.41",
        "--energy-ev",
        "300e3",
        cwd=out,
    )
    # [/info]

    # [read]
    calibration = {"energy_ev": 300e3, "scan_step_ang": STEP_ANG, "detector_pixel_mrad": 1.0}
    from_empad = read_4dstem(empad, **calibration)  # lazy: a memmap, nothing read yet
    from_merlin = read_4dstem(merlin, scan_shape=SCAN_SHAPE, **calibration)
    empad_exact = bool(np.array_equal(from_empad.data, counts))
    merlin_exact = bool(np.array_equal(from_merlin.data, counts))
    # Written again from what was read, the EMPAD file is the same byte for byte.
    again = out / "again_x24_y24.raw"
    write_empad_raw(again, from_empad.data)
    empad_bytes_equal = again.read_bytes() == empad.read_bytes()
    again.unlink()
    # [/read]
    print(
        f"\nread back: EMPAD {from_empad.shape} {from_empad.data.dtype} "
        f"(lazy: {from_empad.is_lazy}), identical counts: {empad_exact}, file rewritten "
        f"byte for byte: {empad_bytes_equal}"
    )
    print(
        f"read back: Merlin {from_merlin.shape} {from_merlin.data.dtype} "
        f"(lazy: {from_merlin.is_lazy}), identical counts: {merlin_exact}"
    )

    # [preprocess]
    shutil.copy(CONFIGS / "preprocess.toml", out / "preprocess.toml")
    start = time.perf_counter()
    log = ptyscope("preprocess", "preprocess.toml", cwd=out)
    seconds["preprocess"] = time.perf_counter() - start
    result = read_dataset(out / "scan_preprocessed.h5")
    cal = result.calibration
    # [/preprocess]

    # Truth: the disk centres of the clean simulation (the specimen's own small DPC
    # signal, no descan) against those left after preprocessing.
    repaired = repair_bad_pixels(from_empad, find_bad_pixels(from_empad))
    before = disk_centres(repaired)  # every pattern's disk centre in the raw file
    after = disk_centres(result)
    remaining = measure_descan(result).centres_px(SCAN_SHAPE)
    intrinsic = measure_descan(truth["clean"]).centres_px(SCAN_SHAPE)
    left = (remaining - remaining.mean(axis=(0, 1))) - (intrinsic - intrinsic.mean(axis=(0, 1)))
    applied = truth["descan_px"] - truth["descan_px"].mean(axis=(0, 1))
    pixel_true = float(truth["detector_pixel_mrad"])
    pixel_found = float(cal.detector_pixel_mrad[0])
    dose_line = next(line for line in log.splitlines() if line.startswith("dose:"))
    dose_found = float(dose_line.split()[1])
    summary = {
        "settings": {
            "specimen": "SrTiO3 [001], 2 cells = 7.8 Å",
            "energy_kev": 300,
            "semiangle_mrad": SEMIANGLE_MRAD,
            "scan": f"{SCAN_SHAPE[0]} x {SCAN_SHAPE[1]} at {STEP_ANG} Å, rotated {ROTATION_DEG}°",
            "detector": "128 x 128",
            "electrons_per_pattern": ELECTRONS_PER_PATTERN,
        },
        "empad_counts_identical": empad_exact,
        "empad_file_rewritten_identical": empad_bytes_equal,
        "merlin_counts_identical": merlin_exact,
        "empad_lazy": from_empad.is_lazy,
        "merlin_lazy": from_merlin.is_lazy,
        "detector_pixel_mrad_true": pixel_true,
        "detector_pixel_mrad_found": pixel_found,
        "detector_pixel_relative_error": pixel_found / pixel_true - 1,
        "scan_rotation_deg_true": ROTATION_DEG,
        "scan_rotation_deg_found": cal.scan_rotation_deg,
        "scan_transpose_found": cal.scan_transpose,
        "descan_applied_max_px": float(np.abs(applied).max()),
        "descan_left_max_px": float(np.abs(left).max()),
        "dose_e_per_ang2_true": truth["dose_e_per_ang2"],
        "dose_e_per_ang2_found": dose_found,
        "seconds": seconds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\ndetector pixel: {pixel_found:.4f} mrad (truth {pixel_true:.4f}, "
        f"{summary['detector_pixel_relative_error']:+.2%})"
    )
    print(
        f"scan rotation: {cal.scan_rotation_deg:.2f}° (truth {ROTATION_DEG}°), transpose "
        f"{cal.scan_transpose}"
    )
    print(
        f"descan: up to {summary['descan_applied_max_px']:.2f} px applied, "
        f"{summary['descan_left_max_px']:.3f} px left"
    )
    print(f"dose: {dose_found:.4g} e/Å² (truth {truth['dose_e_per_ang2']:.4g} e/Å² sent)")
    if not math.isclose(pixel_found, pixel_true, rel_tol=0.02):
        print("warning: the calibration is off by more than 2 %")

    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    shutil.copy(out / "scan_preprocessed.png", figures / "preprocess_panel.png")
    raw_figure(figures / "raw_and_descan.png", counts, before, after)
    publish(figures, out / "summary.json", args.figures)


if __name__ == "__main__":
    main()
