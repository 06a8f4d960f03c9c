"""The tomography figures: axes in Å, images where the data put them, legends that say
the numbers, and errors that name the parameter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ptyscope.report.tomography_figures import (
    axis_spectra_figure,
    fsc_figure,
    orthoslices_figure,
    projections_figure,
    save_figure,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOXEL = 0.5  # [Å]
N = 24
#: (x, y, z) [Å] of the blobs; the first is the one the planes go through.
BLOBS = np.array([[3.0, 6.0, 8.5], [9.0, 2.5, 4.0], [6.5, 9.5, 2.0]])


def blob_volume() -> np.ndarray:
    """(nz, ny, nx) = 24³ voxels of 0.5 Å with Gaussian blobs (σ = 0.6 Å) at ``BLOBS``."""
    z, y, x = np.mgrid[:N, :N, :N] * VOXEL
    volume = np.zeros((N, N, N))
    for bx, by, bz in BLOBS:
        volume += np.exp(-((x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2) / (2 * 0.6**2))
    return volume


def saved(figure: Figure, path: Path) -> None:
    save_figure(figure, path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def panel(figure: Figure, xlabel: str, ylabel: str) -> Axes:
    (found,) = [a for a in figure.axes if (a.get_xlabel(), a.get_ylabel()) == (xlabel, ylabel)]
    return found


def peak_position(ax: Axes) -> tuple[float, float]:
    """(across, down) [Å] of the brightest pixel of the axes' image, from its extent."""
    image = ax.images[0]
    data = np.asarray(image.get_array())
    left, right, bottom, top = image.get_extent()
    row, column = np.unravel_index(np.argmax(data), data.shape)
    across = left + (column + 0.5) * (right - left) / data.shape[1]
    down = top + (row + 0.5) * (bottom - top) / data.shape[0]
    return across, down


def markers(ax: Axes) -> int:
    return sum(len(collection.get_offsets()) for collection in ax.collections)


def test_orthoslices_are_in_angstrom_and_put_the_blob_where_it_is(tmp_path: Path) -> None:
    volume = blob_volume()
    figure = orthoslices_figure(volume, VOXEL, center_ang=BLOBS[0], units="V")
    saved(figure, tmp_path / "orthoslices.png")
    xy, xz, yz = (
        panel(figure, *labels)
        for labels in [("x [Å]", "y [Å]"), ("x [Å]", "z [Å]"), ("y [Å]", "z [Å]")]
    )
    edge = (N - 0.5) * VOXEL
    for ax in (xy, xz, yz):  # pixel centres at k·v, rows pointing down
        assert ax.images[0].get_extent() == pytest.approx((-0.25, edge, edge, -0.25))
    x, y, z = BLOBS[0]
    assert peak_position(xy) == pytest.approx((x, y))
    assert peak_position(xz) == pytest.approx((x, z))
    assert peak_position(yz) == pytest.approx((y, z))
    # one voxel: the xz panel is the plane i = y/v itself
    np.testing.assert_allclose(xz.images[0].get_array(), volume[:, round(y / VOXEL), :])
    assert "V" in figure.axes[-1].get_ylabel()  # the colour bar names the units


def test_orthoslices_sum_slabs_and_draw_the_atoms_inside_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    atoms = rng.uniform(0.0, (N - 1) * VOXEL, size=(60, 3))
    labels = rng.integers(0, 2, size=60)
    centre = np.array([6.0, 5.0, 7.0])
    figure = orthoslices_figure(
        blob_volume(),
        VOXEL,
        center_ang=centre,
        atoms=atoms,
        labels=labels,
        symbols=["Fe", "Pt"],
        slab_ang=2.0,
    )
    saved(figure, tmp_path / "slabs.png")
    planes = {"xy": ("x [Å]", "y [Å]", 2), "xz": ("x [Å]", "z [Å]", 1), "yz": ("y [Å]", "z [Å]", 0)}
    for xlabel, ylabel, normal in planes.values():
        inside = np.abs(atoms[:, normal] - centre[normal]) <= 1.0
        assert 0 < inside.sum() < len(atoms)
        assert markers(panel(figure, xlabel, ylabel)) == inside.sum()
    # |i·v − 5 Å| ≤ 1 Å: the five planes i = 8 … 12 are summed
    xz = panel(figure, "x [Å]", "z [Å]")
    np.testing.assert_allclose(xz.images[0].get_array(), blob_volume()[:, 8:13, :].sum(axis=1))
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["Fe", "Pt"]


def test_orthoslices_default_to_the_centre_of_mass_and_reject_bad_input() -> None:
    volume = np.zeros((N, N, N))
    volume[10, 4, 16] = 1.0  # (x, y, z) = (8, 2, 5) Å
    figure = orthoslices_figure(volume, VOXEL)
    assert figure.axes[0].get_title().startswith("xy at z = 5.00 Å")
    assert figure.axes[1].get_title().startswith("xz at y = 2.00 Å")
    with pytest.raises(ValueError, match=r"volume must be a real array \(nz, ny, nx\)"):
        orthoslices_figure(volume[0], VOXEL)
    with pytest.raises(ValueError, match="voxel_ang must be > 0 Å"):
        orthoslices_figure(volume, -1.0)
    with pytest.raises(ValueError, match=r"center_ang must be .* in the box"):
        orthoslices_figure(volume, VOXEL, center_ang=(1.0, 1.0, 50.0))
    with pytest.raises(ValueError, match=r"labels must be integers of shape \(2,\)"):
        orthoslices_figure(volume, VOXEL, atoms=np.ones((2, 3)), labels=[0, 1, 1])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 0\]"):
        orthoslices_figure(volume, VOXEL, atoms=np.ones((2, 3)), labels=[0, 1], symbols=["Au"])


def test_projections_show_the_difference_and_the_residual_of_each_tilt(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    tilts = 9
    theta = rng.permutation(np.linspace(-60.0, 60.0, tilts))
    euler = np.column_stack([np.zeros(tilts), theta, np.zeros(tilts)])
    euler[np.argmax(theta), 0] = 12.5  # φ ≠ 0 on the last tilt
    measured = rng.random((tilts, 12, 16))
    fraction = np.linspace(0.01, 0.09, tilts)  # reprojected = (1 − a_t) measured: r_t = a_t
    reprojected = (1.0 - fraction)[:, None, None] * measured
    figure = projections_figure(measured, reprojected, euler, VOXEL, units="V·Å")
    saved(figure, tmp_path / "projections.png")
    columns = 5
    tops, diffs = figure.axes[:columns], figure.axes[2 * columns : 3 * columns]
    shown = [int(ax.get_title().split(":")[0].removeprefix("tilt ")) for ax in tops]
    assert list(theta[shown]) == sorted(theta[shown])  # in θ order, spanning the range
    assert (theta[shown[0]], theta[shown[-1]]) == (-60.0, 60.0)
    assert tops[-1].get_title() == f"tilt {shown[-1]}: θ = 60°, φ = 12.5°"
    for t, ax in zip(shown, diffs, strict=True):
        assert ax.get_title() == f"r = {fraction[t]:.3g}"
        np.testing.assert_allclose(ax.images[0].get_array(), measured[t] - reprojected[t])
        assert ax.images[0].get_extent() == pytest.approx((-0.25, 7.75, 5.75, -0.25))
        low, high = ax.images[0].get_clim()
        assert low == -high  # symmetric difference scale
    chosen = projections_figure(measured, reprojected, euler, VOXEL, tilts=[2])
    assert chosen.axes[0].get_title().startswith("tilt 2:")
    with pytest.raises(ValueError, match=r"reprojected must have shape .* = \(9, 12, 16\)"):
        projections_figure(measured, reprojected[:, :, :-1], euler, VOXEL)
    with pytest.raises(ValueError, match=r"euler_deg must have shape \(9, 3\)"):
        projections_figure(measured, reprojected, euler[:, :2], VOXEL)
    with pytest.raises(ValueError, match=r"tilts must be at least one index in \[0, 8\]"):
        projections_figure(measured, reprojected, euler, VOXEL, tilts=[9])


def test_axis_spectra_state_and_mark_each_resolution(tmp_path: Path) -> None:
    k = np.linspace(0.0, 1.0, 51)
    spectra = {axis: np.exp(-k / width) for axis, width in (("x", 0.3), ("y", 0.25), ("z", 0.1))}
    resolution = {"x": 0.8, "y": 1.25, "z": None}
    planes = {
        name: (np.outer(np.arange(1.0, 9.0), np.arange(10.0)), (-1.0, 1.0, -0.5, 0.5))
        for name in ("xy", "xz", "yz")
    }
    figure = axis_spectra_figure(k, spectra, resolution, planes=planes)
    saved(figure, tmp_path / "spectra.png")
    ax = figure.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["$k_x$: 0.80 Å", "$k_y$: 1.25 Å", "$k_z$: not determined"]
    dotted = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":")
    assert dotted == pytest.approx([1 / 1.25, 1 / 0.8])
    assert ax.get_yscale() == "log"
    images = [a for a in figure.axes if a.images]
    assert [a.get_xlabel()[:5] for a in images] == ["$k_x$", "$k_x$", "$k_y$"]
    assert images[1].images[0].get_extent() == pytest.approx((-1.0, 1.0, -0.5, 0.5))
    with pytest.raises(ValueError, match=r"spectra\['z'\] must have shape \(n,\)"):
        axis_spectra_figure(k, {**spectra, "z": k[:-1]}, resolution)
    # a non-cubic volume: each axis on its own frequencies, the x axis spanning them all
    own = {"x": k, "y": k[:31], "z": k[::2]}
    uneven = {axis: spectra[axis][: own[axis].size] for axis in "xy"} | {"z": np.ones(26)}
    ax = axis_spectra_figure(own, uneven, resolution).axes[0]
    drawn = [line.get_xdata().size for line in ax.lines if line.get_linestyle() == "-"]
    assert drawn == [51, 31, 26]
    assert ax.get_xlim() == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"frequencies_per_angstrom must have a key .* 'z'"):
        axis_spectra_figure({"x": k, "y": k}, spectra, resolution)
    with pytest.raises(ValueError, match="resolution_ang keys must be among"):
        axis_spectra_figure(k, spectra, {"w": 1.0})
    with pytest.raises(ValueError, match="planes keys must name two different axes"):
        axis_spectra_figure(k, spectra, resolution, planes={"xx": planes["xy"]})


def test_fsc_legend_gives_the_threshold_crossings(tmp_path: Path) -> None:
    k = np.linspace(0.0, 0.5, 26)  # [1/Å]
    curves = {"full": 1.0 - 2.0 * k, "z": 1.0 - 1.2 * k, "x": 1.0 - 1.5 * k}
    figure = fsc_figure(k, curves, thresholds=(0.143, 0.5), resolution_ang={"x": 1.5})
    saved(figure, tmp_path / "fsc.png")
    texts = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    crossing = 1 / ((1 - 0.143) / 2)  # 1 − 2k = 0.143
    assert texts[0] == f"full: {crossing:.2f} Å @ 0.143, 4.00 Å @ 0.5"
    assert texts[1] == "z: ≤ 2.00 Å @ 0.143 (no crossing), 2.40 Å @ 0.5"
    assert texts[2] == "x: 1.50 Å"
    assert texts[3:] == ["threshold 0.143", "threshold 0.5"]
    with pytest.raises(ValueError, match=r"curves\['z'\] must have shape"):
        fsc_figure(k, {"z": k[:3]})
    # an empty shell (NaN frequency and value) is skipped by the crossing
    holes = k.copy()
    holes[21] = np.nan  # k = 0.42: 1 − 2k = 0.143 (k = 0.43) falls between 0.40 and 0.44
    gappy = fsc_figure({"full": holes}, {"full": np.where(np.isnan(holes), np.nan, 1 - 2 * k)})
    assert gappy.axes[0].get_legend().get_texts()[0].get_text() == f"full: {crossing:.2f} Å @ 0.143"
    with pytest.raises(ValueError, match=r"resolution_ang\['full'\] must be > 0 Å"):
        fsc_figure(k, curves, resolution_ang={"full": -1.0})
