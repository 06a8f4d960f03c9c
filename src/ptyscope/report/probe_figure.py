"""Figure of a probe: modes, diffraction pattern and through-focus section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from ptyscope.io.atomic import atomic_path

__all__ = ["probe_figure"]


def probe_figure(
    path: Path,
    *,
    modes: np.ndarray,
    cbed: np.ndarray,
    section: np.ndarray,
    depths_ang: np.ndarray,
    pixel_size_ang: tuple[float, float],
    reciprocal_pixel_mrad: tuple[float, float],
    semiangle_mrad: float,
    focus_depth_ang: float,
) -> None:
    """Write a PNG with the probe modes, the vacuum CBED and the x-z intensity section.

    Parameters
    ----------
    modes: complex array (M, ny, nx), the probe modes at the entrance surface.
    cbed: real array (ny, nx), the vacuum diffraction pattern (zero frequency centred).
    section: real array (Z, nx), probe intensity along x through the centre, per depth.
    depths_ang: real array (Z,), the depths of ``section`` [Å].
    """
    ny, nx = modes.shape[-2:]
    extent = [
        -nx / 2 * pixel_size_ang[1],
        nx / 2 * pixel_size_ang[1],
        ny / 2 * pixel_size_ang[0],
        -ny / 2 * pixel_size_ang[0],
    ]
    num = modes.shape[0]
    fig = Figure(figsize=(4 * max(num, 3), 7.5))
    axes = fig.subplots(2, max(num, 3))
    powers = (np.abs(modes) ** 2).sum(axis=(-2, -1))
    for m in range(num):
        ax = axes[0, m]
        ax.imshow(np.abs(modes[m]), extent=extent, cmap="magma")
        ax.set_title(f"mode {m}: |ψ|, power {powers[m]:.3f}")
        ax.set_xlabel("x [Å]")
        ax.set_ylabel("y [Å]")
    for ax in axes[0, num:]:
        ax.axis("off")
    k_extent = [
        -nx / 2 * reciprocal_pixel_mrad[1],
        nx / 2 * reciprocal_pixel_mrad[1],
        ny / 2 * reciprocal_pixel_mrad[0],
        -ny / 2 * reciprocal_pixel_mrad[0],
    ]
    ax = axes[1, 0]
    ax.imshow(cbed, extent=k_extent, cmap="gray")
    ax.add_patch(Circle((0, 0), semiangle_mrad, fill=False, color="tab:orange", ls="--"))
    ax.set_title(f"vacuum CBED, α = {semiangle_mrad:g} mrad")
    ax.set_xlabel("θx [mrad]")
    ax.set_ylabel("θy [mrad]")
    ax = axes[1, 1]
    ax.imshow(
        np.sqrt(section),
        aspect="auto",
        cmap="viridis",
        extent=[extent[0], extent[1], depths_ang[-1], depths_ang[0]],
    )
    ax.axhline(focus_depth_ang, color="w", ls=":", lw=1)
    ax.set_title("through focus: √I(x, z)")
    ax.set_xlabel("x [Å]")
    ax.set_ylabel("depth z [Å]")
    ax = axes[1, 2]
    centre = section[:, section.shape[1] // 2]
    ax.plot(depths_ang, centre / centre.max())
    ax.axvline(focus_depth_ang, color="k", ls=":", lw=1)
    ax.set_title("on-axis intensity")
    ax.set_xlabel("depth z [Å]")
    ax.set_ylabel("I / I_max")
    for ax in axes[1, 3:]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
