"""Draw the figures of the documentation from the code they describe.

    .venv/bin/python docs/figures/make_figures.py     # writes docs/figures/*.png

``tilt_convention.png`` (docs/conventions.md) defines the specimen tilt θ = (θ_y, θ_x).
The drift it shows is not drawn by hand: a narrow wave is propagated slice by slice with
ptyscope's own propagator (:func:`ptyscope.physics.propagator.fresnel_propagator`) and its
measured centroid is plotted, so the figure follows the code's sign convention; the script
stops with an error if the measured drift is not −Δz·tanθ per slice.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Arc, FancyArrowPatch

from ptyscope.physics.constants import wavelength_ang
from ptyscope.physics.grids import spatial_frequencies
from ptyscope.physics.propagator import fresnel_propagator, propagate

HERE = Path(__file__).resolve().parent

#: Exaggerated so that the geometry is visible (real mistilts are a few mrad).
TILT_X_MRAD = 200.0
SLICE_THICKNESS_ANG = 10.0
NUM_SLICES = 5


def wave_drift_ang(
    tilt_mrad: tuple[float, float],
    slice_thickness_ang: float,
    num_slices: int,
    energy_ev: float = 300e3,
) -> np.ndarray:
    """Where a narrow wave is after each tilted propagation, in the object arrays' frame.

    A Gaussian wave (σ = 1 Å) centred on a periodic 25.6 × 25.6 Å grid is propagated
    ``num_slices`` times by ``fresnel_propagator(..., slice_thickness_ang, tilt_mrad)``
    through vacuum; its intensity centroid is measured after every step.

    Parameters
    ----------
    tilt_mrad:
        (θ_y, θ_x) [mrad].
    slice_thickness_ang:
        Δz [Å].
    num_slices:
        Number of propagations.
    energy_ev:
        Beam energy [eV].

    Returns
    -------
    numpy.ndarray
        float64 array of shape (num_slices + 1, 2): the (y, x) displacement [Å] of the
        centroid from its start, at z = 0, Δz, ..., num_slices·Δz.
    """
    n, pixel = 256, 0.1
    ky, kx = spatial_frequencies((n, n), pixel, dtype=torch.float64)
    p = fresnel_propagator(ky, kx, wavelength_ang(energy_ev), slice_thickness_ang, tilt_mrad)
    r = (torch.arange(n, dtype=torch.float64) - n // 2) * pixel
    y, x = torch.meshgrid(r, r, indexing="ij")
    wave = torch.exp(-(y**2 + x**2) / (4 * 1.0**2)).to(torch.complex128)
    start = _centroid_ang(wave, pixel)
    found = [np.zeros(2)]
    for _ in range(num_slices):
        wave = propagate(wave, p)
        period = n * pixel
        found.append((_centroid_ang(wave, pixel) - start + period / 2) % period - period / 2)
    return np.asarray(found)


def _centroid_ang(wave: torch.Tensor, pixel_ang: float) -> np.ndarray:
    """(y, x) centroid [Å] of |wave|² on a periodic grid (circular mean)."""
    intensity = wave.abs() ** 2
    out = []
    for axis in (0, 1):
        n = wave.shape[axis]
        phase = torch.exp(2j * math.pi * torch.arange(n, dtype=torch.float64) / n)
        profile = intensity.sum(dim=1 - axis)
        out.append(float(torch.angle((profile * phase).sum())) * n / (2 * math.pi) * pixel_ang)
    return np.asarray(out)


def _arrow(
    ax: plt.Axes, start: tuple[float, float], end: tuple[float, float], **kw: object
) -> None:
    style = {"arrowstyle": "-|>", "mutation_scale": 14, "lw": 1.6, "color": "k", **kw}
    ax.add_patch(FancyArrowPatch(start, end, **style))  # type: ignore[arg-type]


def _side_view(ax: plt.Axes, drift_x: np.ndarray, beam_frame: bool) -> None:
    """One x–z panel: the slab, its slices, three atomic columns and the wave."""
    dz, depth = SLICE_THICKNESS_ANG, NUM_SLICES * SLICE_THICKNESS_ANG
    z_edges = np.arange(NUM_SLICES + 1) * dz
    ax.axhspan(0, depth, color="#eef2f7", zorder=0)
    for z in z_edges:
        ax.axhline(z, color="#8a9bb0", lw=0.8, ls="--", zorder=1)
    for j in range(NUM_SLICES):
        ax.text(14.8, z_edges[j] + dz / 2, f"slice {j}", va="center", fontsize=8, color="#50627a")
    # Beam frame: the wave stays put and the columns lean; array frame: the reverse.
    column_shift = -drift_x if beam_frame else np.zeros_like(drift_x)
    wave_x = np.zeros_like(drift_x) if beam_frame else drift_x
    for x0 in (-8.0, 0.0, 8.0):
        xs = x0 + column_shift
        ax.plot(xs, z_edges, color="#b5542d", lw=1, zorder=2)
        ax.scatter(xs[:-1], z_edges[:-1], s=55, color="#d9793f", edgecolor="#7a3214", zorder=3)
    ax.plot(wave_x, z_edges, color="#1f5fbf", lw=5, alpha=0.35, zorder=2, solid_capstyle="butt")
    ax.scatter(wave_x, z_edges, s=18, color="#1f5fbf", zorder=4, label="wave centroid")
    _arrow(ax, (0.0, -13.0), (0.0, -2.0), color="#1f5fbf")
    ax.text(0.6, -9.5, "beam, +z", color="#1f5fbf", fontsize=9)
    ax.set_xlim(-13, 21)
    ax.set_ylim(depth + 10, -15)
    ax.set_aspect("equal")
    ax.set_xlabel("x [Å]  (array axis −1)")
    ax.set_ylabel("depth z [Å]")
    ax.spines[["top", "right"]].set_visible(False)


def draw_tilt_convention(path: Path) -> None:
    """The figure of docs/conventions.md: θ_x > 0 in the beam frame and the array frame."""
    drift = wave_drift_ang((0.0, TILT_X_MRAD), SLICE_THICKNESS_ANG, NUM_SLICES)
    z = np.arange(NUM_SLICES + 1) * SLICE_THICKNESS_ANG
    tan = math.tan(TILT_X_MRAD * 1e-3)
    if not (
        np.allclose(drift[:, 1], -z * tan, atol=0.01) and np.allclose(drift[:, 0], 0, atol=0.01)
    ):
        raise RuntimeError(
            f"the propagator's drift {drift[:, 1]} Å is not −z·tanθ_x = {-z * tan} Å: "
            "the tilt convention changed; update docs/conventions.md and this figure"
        )
    depth = z[-1]
    fig, (beam, arrays) = plt.subplots(1, 2, figsize=(8.4, 6.2), constrained_layout=True)
    _side_view(beam, drift[:, 1], beam_frame=True)
    beam.set_title(r"(a) beam frame: the zone axis is tilted by $\theta_x > 0$", fontsize=10)
    # The angle between the beam and a column, and the column's offset at the exit.
    theta_deg = math.degrees(math.atan(tan))
    beam.add_patch(Arc((0, 0), 60, 60, theta1=90 - theta_deg, theta2=90, color="k", lw=1.2))
    beam.text(1.0, 26.0, r"$\theta_x$", fontsize=11, zorder=6)
    _arrow(beam, (0.0, depth + 4), (depth * tan, depth + 4), arrowstyle="<|-|>", lw=1)
    beam.text(depth * tan + 0.8, depth + 5.5, r"$z\,\tan\theta_x$", fontsize=9)
    caption = {"fontsize": 8.5, "ha": "center", "va": "top"}
    beam.text(
        0.5,
        -0.13,
        "a column entering at $x_0$ lies at $x_0 + z\\tan\\theta_x$ at depth $z$:\n"
        "slice $j$ is seen displaced by $+z_j\\tan\\theta_x$ from slice 0",
        transform=beam.transAxes,
        **caption,
    )
    _side_view(arrays, drift[:, 1], beam_frame=False)
    arrays.set_title("(b) object arrays (what ptyscope stores)", fontsize=10)
    arrays.text(
        0.5,
        -0.13,
        "each propagation by $p(k; \\Delta z, \\theta)$ moves the wave by "
        "$-\\Delta z\\tan\\theta_x$\n(blue dots: centroid computed with fresnel_propagator)",
        transform=arrays.transAxes,
        **caption,
    )
    fig.suptitle(
        rf"Specimen tilt $\theta = (\theta_y, \theta_x)$ [mrad]; here $\theta_x$ = "
        rf"{TILT_X_MRAD:.0f} mrad (exaggerated), $\theta_y$ acts the same way along y"
        "\n"
        r"$p(k; \Delta z, \theta) = \exp[-i\pi\Delta z(\lambda|k|^2 - 2k_x\tan\theta_x"
        r" - 2k_y\tan\theta_y)]$",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    draw_tilt_convention(HERE / "tilt_convention.png")
    print(f"wrote {HERE / 'tilt_convention.png'}")


if __name__ == "__main__":
    main()
