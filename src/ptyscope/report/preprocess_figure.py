"""The preprocessing panel: PACBED, virtual bright field, CoM rotation curve, iCoM phase."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from ptyscope.io.atomic import atomic_path

__all__ = ["preprocess_figure"]


def preprocess_figure(
    path: Path,
    *,
    pacbed: np.ndarray,
    disk_center_px: tuple[float, float],
    disk_radius_px: float,
    bright_field: np.ndarray,
    rotation_deg: np.ndarray,
    curl: dict[str, np.ndarray],
    best_rotation_deg: float,
    best_transpose: bool,
    icom_phase: np.ndarray,
    scan_step_ang: tuple[float, float],
) -> None:
    """Write a four-panel PNG (atomically).

    Parameters
    ----------
    pacbed:
        Real array (det_y, det_x): the position-averaged pattern.
    disk_center_px, disk_radius_px:
        Fitted bright-field disk (y, x) and radius [detector px], drawn on the PACBED.
    bright_field:
        Real array (scan_y, scan_x): virtual bright-field image.
    rotation_deg:
        Real array (R,): trial scan rotations [deg].
    curl:
        ``{"no transpose": (R,), "transpose": (R,)}``: relative curl of the CoM field,
        ⟨curl²⟩/⟨curl² + div²⟩ (0 for a pure gradient); may be empty.
    best_rotation_deg, best_transpose:
        The solution, marked on the curve.
    icom_phase:
        Real array (scan_y, scan_x): integrated-CoM phase [rad].
    scan_step_ang:
        (y, x) scan step [Å], for the image axes.
    """
    figure = Figure(figsize=(12, 3.4), layout="constrained")
    axes = figure.subplots(1, 4)
    positive = np.clip(pacbed, 0.0, None)  # Fourier-shifted patterns ring slightly below 0
    level = float(np.median(positive[positive > 0])) if np.any(positive > 0) else 1.0
    scale = np.log1p(positive / level)
    axes[0].imshow(scale, cmap="magma")
    axes[0].add_patch(
        Circle(
            (disk_center_px[1], disk_center_px[0]),
            disk_radius_px,
            fill=False,
            color="cyan",
            linewidth=1,
        )
    )
    axes[0].set_title("PACBED (log) and BF disk")
    ny, nx = bright_field.shape
    extent = [0, nx * scan_step_ang[1], ny * scan_step_ang[0], 0]
    axes[1].imshow(bright_field, cmap="gray", extent=extent)
    axes[1].set_title("virtual bright field")
    axes[1].set_xlabel("x [Å]")
    for label, values in curl.items():
        axes[2].plot(rotation_deg, values, label=label)
    axes[2].axvline(best_rotation_deg, color="k", linestyle=":")
    if curl:  # no curves when the rotation was given rather than solved
        axes[2].set_yscale("log")
        axes[2].legend(fontsize=8)
    axes[2].set_xlabel("scan rotation [deg]")
    axes[2].set_ylabel("relative curl of CoM  ⟨curl²⟩/⟨curl² + div²⟩")
    axes[2].set_title(
        f"rotation {best_rotation_deg:.1f}°" + (", transposed" if best_transpose else "")
    )
    image = axes[3].imshow(icom_phase, cmap="viridis", extent=extent)
    axes[3].set_title("iCoM phase [rad]")
    axes[3].set_xlabel("x [Å]")
    figure.colorbar(image, ax=axes[3], shrink=0.8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
