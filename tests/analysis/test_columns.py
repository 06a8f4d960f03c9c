"""Finding columns: peaks, lattices and species on synthetic SrTiO3 [001] images."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial import cKDTree

from ptyscope.analysis.columns import (
    SRTIO3_LATTICE_CONSTANT_ANG,
    Lattice,
    assign_sites,
    classify_by_intensity,
    find_peaks,
    fit_lattice,
    integrated_intensity,
    lattice_sites,
    srtio3_lattice,
)
from ptyscope.analysis.refine import refine_com, refine_gaussian
from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG as SIMULATION_A

from ._synthetic import gaussian_columns

PIXEL = (0.1, 0.1)  # Å
WIDTH = 0.35  # Å
HEIGHT = {"Sr": 1.0, "TiO": 0.75, "O": 0.4}  # rad: a thin SrTiO3 phase, roughly


def _srtio3_image(
    rng: np.random.Generator, noise_std: float, cells: int = 6, margin_ang: float = 1.5
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Phase-like image of ``cells`` × ``cells`` SrTiO3 [001] cells and its true columns."""
    extent = cells * SRTIO3_LATTICE_CONSTANT_ANG
    positions, labels, _ = lattice_sites(
        srtio3_lattice((margin_ang, margin_ang)),
        (margin_ang, margin_ang + extent, margin_ang, margin_ang + extent),
    )
    positions = positions + rng.uniform(-0.03, 0.03, positions.shape)
    n = round((2 * margin_ang + extent) / PIXEL[0]) + 1
    heights = np.array([HEIGHT[label] for label in labels])
    image = gaussian_columns(positions, heights, (n, n), PIXEL, WIDTH)
    return image + rng.normal(0.0, noise_std, image.shape), positions, labels


def _match(found: np.ndarray, truth: np.ndarray, tolerance_ang: float) -> np.ndarray:
    """Distance from each true column to the nearest found peak, after checking 1:1."""
    distance, nearest = cKDTree(found).query(truth)
    assert len(set(nearest.tolist())) == len(truth), "two columns matched the same peak"
    assert np.all(distance < tolerance_ang), distance.max()
    result: np.ndarray = distance
    return result


# ---------------------------------------------------------------------------------------
# find_peaks


@pytest.mark.parametrize("noise_std", [0.0, 0.03])
def test_find_peaks_finds_every_column_and_nothing_else(noise_std: float) -> None:
    rng = np.random.default_rng(0)
    image, truth, _ = _srtio3_image(rng, noise_std)
    # Half the 1.95 Å neighbour distance; the outer columns lie 1.5 Å inside the edge.
    peaks = find_peaks(image, PIXEL, min_distance_ang=0.9, exclude_border_ang=0.9)
    assert peaks.shape == truth.shape == (169, 2)  # 13 × 13 rows of columns a/2 apart
    # Noise moves the brightest pixel of a weak (O) column by up to ~2 px: close enough for
    # refine_com / refine_gaussian with R = 0.8 Å to take over.
    _match(peaks, truth, tolerance_ang=0.3 if noise_std else 0.01)


def test_found_peaks_refine_to_the_true_columns() -> None:
    rng = np.random.default_rng(8)
    image, truth, _ = _srtio3_image(rng, 0.03, margin_ang=0.5)  # edge columns cut through
    radius = 0.8
    peaks = find_peaks(image, PIXEL, min_distance_ang=0.9, exclude_border_ang=radius)
    extent = (image.shape[0] - 1) * PIXEL[0]
    inner = truth[np.all((truth > radius + 0.05) & (truth < extent - radius - 0.05), axis=1)]
    assert len(inner) <= len(peaks) < len(truth)
    # Every peak passes the refinements' edge check and converges onto its column.
    for refine in (refine_com, refine_gaussian):
        result = refine(image, peaks, PIXEL, radius)
        distance, _ = cKDTree(truth).query(result.positions_ang)
        assert np.all(distance < 5 * np.linalg.norm(result.sigma_ang, axis=1))


def test_find_peaks_sorted_brightest_first_with_parabolic_subpixel() -> None:
    rng = np.random.default_rng(1)
    image, truth, labels = _srtio3_image(rng, 0.0)
    peaks = find_peaks(image, PIXEL, min_distance_ang=0.9)
    pixel = find_peaks(image, PIXEL, min_distance_ang=0.9, subpixel=False)
    values = image[tuple(np.rint(pixel / PIXEL).astype(int).T)]
    assert np.all(np.diff(values) <= 0)
    # Parabolic interpolation of a 3.5-pixel-wide Gaussian: far below the pixel grid's
    # ±0.5 px error (RMS 0.41 px for uniform offsets in 2D).
    error_sub = _match(peaks, truth, 0.1)
    error_int = _match(pixel, truth, 0.1)
    assert np.sqrt(np.mean(error_sub**2)) < 0.01  # 0.1 px
    assert np.sqrt(np.mean(error_int**2)) > 0.02
    # The three species come out in order of their heights.
    order = [labels[i] for i in cKDTree(truth).query(peaks)[1]]
    n_sr, n_tio = labels.count("Sr"), labels.count("TiO")
    assert set(order[:n_sr]) == {"Sr"}
    assert set(order[n_sr : n_sr + n_tio]) == {"TiO"}
    assert set(order[n_sr + n_tio :]) == {"O"}


def test_find_peaks_thresholds_and_origin() -> None:
    rng = np.random.default_rng(2)
    image, _, labels = _srtio3_image(rng, 0.0)
    heavy = find_peaks(image, PIXEL, min_distance_ang=0.9, threshold_abs=0.6)
    assert len(heavy) == labels.count("Sr") + labels.count("TiO")
    relative = find_peaks(image, PIXEL, min_distance_ang=0.9, threshold_rel=0.9)
    assert len(relative) == labels.count("Sr")
    shifted = find_peaks(image, PIXEL, min_distance_ang=0.9, origin_ang=(10.0, -5.0))
    base = find_peaks(image, PIXEL, min_distance_ang=0.9)
    np.testing.assert_allclose(shifted, base + np.array([10.0, -5.0]))


def test_find_peaks_keeps_one_peak_of_a_plateau() -> None:
    image = np.zeros((30, 30))
    image[10:13, 14:17] = 1.0  # a flat 3 × 3 top
    peaks = find_peaks(image, PIXEL, min_distance_ang=0.5, subpixel=False)
    assert peaks.shape == (1, 2)


def test_find_peaks_errors_name_the_parameter() -> None:
    image = np.zeros((20, 20))
    with pytest.raises(ValueError, match="min_distance_ang must be > 0"):
        find_peaks(image, PIXEL, min_distance_ang=0.0)
    with pytest.raises(ValueError, match="threshold_rel must lie in"):
        find_peaks(image, PIXEL, min_distance_ang=0.5, threshold_rel=1.5)
    with pytest.raises(ValueError, match="exclude_border_ang must be >= 0"):
        find_peaks(image, PIXEL, min_distance_ang=0.5, exclude_border_ang=-1.0)
    with pytest.raises(ValueError, match="pixel_size_ang must be > 0"):
        find_peaks(image, 0.0, min_distance_ang=0.5)
    with pytest.raises(ValueError, match=r"image must be 2D"):
        find_peaks(np.zeros((2, 20, 20)), PIXEL, min_distance_ang=0.5)


# ---------------------------------------------------------------------------------------
# Lattices


def test_srtio3_lattice_geometry() -> None:
    assert SRTIO3_LATTICE_CONSTANT_ANG == SIMULATION_A
    a = SRTIO3_LATTICE_CONSTANT_ANG
    lattice = srtio3_lattice((1.0, 2.0), rotation_deg=30.0)
    assert lattice.labels == ["Sr", "TiO", "O", "O"]
    np.testing.assert_allclose(lattice.b_ang, a * np.array([0.5, math.sqrt(3) / 2]))
    np.testing.assert_allclose(lattice.a_ang, a * np.array([math.sqrt(3) / 2, -0.5]))
    positions, labels, _ = lattice_sites(lattice, (-20, 20, -20, 20))
    tree = cKDTree(positions)
    central = np.argsort(np.linalg.norm(positions - [1.0, 2.0], axis=1))[:8]
    for label in ("Sr", "TiO", "O"):
        site = positions[next(k for k in central if labels[k] == label)]
        distance, _ = tree.query(site, k=5)
        np.testing.assert_allclose(distance[1:], a / 2)  # four neighbours at a/2
    # A Ti-O column sits at the centre of its four Sr neighbours (d_Sr-TiO = 0).
    tio = lattice.positions(np.array([[0, 0]]), np.array([1]))[0]
    sr = lattice.positions(np.array([[0, 0], [1, 0], [0, 1], [1, 1]]), np.zeros(4, dtype=int))
    np.testing.assert_allclose(sr.mean(axis=0), tio)


def test_lattice_sites_in_a_region() -> None:
    a = SRTIO3_LATTICE_CONSTANT_ANG
    lattice = srtio3_lattice((0.0, 0.0), rotation_deg=0.0)
    positions, labels, indices = lattice_sites(lattice, (0.0, 3 * a, 0.0, 2 * a))
    # (3·2 + 1) rows of a/2 along y and (2·2 + 1) along x: 7 × 5 sites, no TiO on edges.
    assert len(labels) == 35
    assert labels.count("Sr") == 4 * 3 and labels.count("TiO") == 3 * 2
    assert labels.count("O") == 35 - 12 - 6
    assert np.all((positions >= -1e-9) & (positions <= [3 * a + 1e-9, 2 * a + 1e-9]))
    cells, atoms, distance = assign_sites(positions, lattice)
    np.testing.assert_array_equal(cells, indices)
    assert [lattice.labels[k] for k in atoms] == labels
    np.testing.assert_allclose(distance, 0.0, atol=1e-12)


def test_fit_lattice_recovers_rotated_strained_lattice() -> None:
    rng = np.random.default_rng(4)
    a0 = SRTIO3_LATTICE_CONSTANT_ANG
    rho = math.radians(7.0)
    # 1.2% tensile along a, 0.8% compressive along b, 0.5° shear.
    a_vec = 1.012 * a0 * np.array([math.cos(rho), -math.sin(rho)])
    b_vec = 0.992 * a0 * np.array([math.sin(rho + 0.0087), math.cos(rho + 0.0087)])
    true = Lattice((20.3, 19.6), tuple(a_vec), tuple(b_vec), srtio3_lattice((0, 0)).basis)
    peaks, _, _ = lattice_sites(true, (0.0, 40.0, 0.0, 40.0))
    peaks = peaks + rng.normal(0.0, 0.02, peaks.shape)  # 2 pm measurement scatter
    keep = rng.random(len(peaks)) > 0.1  # 10% of the columns missed
    spurious = rng.uniform(0.0, 40.0, (15, 2))  # and some peaks that are not columns
    initial = srtio3_lattice((20.0, 20.0), rotation_deg=6.0)
    fitted = fit_lattice(np.concatenate([peaks[keep], spurious]), initial)
    for got, want in ((fitted.a_ang, a_vec), (fitted.b_ang, b_vec)):
        assert np.linalg.norm(np.subtract(got, want)) / np.linalg.norm(want) < 1e-3
    np.testing.assert_allclose(fitted.origin_ang, true.origin_ang, atol=0.01)
    assert fitted.basis == initial.basis


def test_fit_lattice_needs_peaks_near_the_sites() -> None:
    lattice = srtio3_lattice((0.0, 0.0))
    with pytest.raises(ValueError, match="peaks_ang: only 0 peaks lie within"):
        fit_lattice(np.array([[0.9, 0.9], [5.0, 0.9]]), lattice)
    with pytest.raises(ValueError, match=r"peaks_ang must be finite with shape \(K, 2\)"):
        fit_lattice(np.zeros(4), lattice)


def test_lattice_errors_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="a_ang and b_ang must not be parallel"):
        Lattice((0.0, 0.0), (1.0, 1.0), (2.0, 2.0))
    with pytest.raises(ValueError, match="basis must hold at least one"):
        Lattice((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), ())
    with pytest.raises(ValueError, match="origin_ang must be a finite"):
        Lattice((0.0, math.nan), (1.0, 0.0), (0.0, 1.0))
    with pytest.raises(ValueError, match="a_ang must be > 0"):
        srtio3_lattice((0.0, 0.0), a_ang=-3.9)
    with pytest.raises(ValueError, match="region must have y0 <= y1"):
        lattice_sites(srtio3_lattice((0.0, 0.0)), (5.0, 0.0, 0.0, 5.0))
    with pytest.raises(ValueError, match="max_distance_ang must be > 0"):
        assign_sites(np.zeros((1, 2)), srtio3_lattice((0.0, 0.0)), max_distance_ang=0.0)


# ---------------------------------------------------------------------------------------
# Species


def test_classify_by_intensity_separates_two_species() -> None:
    rng = np.random.default_rng(5)
    i, j = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    positions = 1.5 + 1.95 * np.column_stack([i.ravel(), j.ravel()]).astype(np.float64)
    heavy = ((i + j) % 2 == 0).ravel()  # checkerboard, as Sr/O along a SrTiO3 [100] row
    heights = np.where(heavy, 1.0, 0.6)
    image = gaussian_columns(positions, heights, (250, 250), PIXEL, WIDTH)
    image += rng.normal(0.0, 0.05, image.shape)
    classes = classify_by_intensity(image, positions, PIXEL, 2, 0.6)
    np.testing.assert_array_equal(classes, heavy.astype(int))  # 0 = weaker


def test_classify_three_srtio3_species() -> None:
    rng = np.random.default_rng(6)
    image, positions, labels = _srtio3_image(rng, 0.03)
    keep = np.all((positions > 1.0) & (positions < image.shape[0] * PIXEL[0] - 1.0), axis=1)
    classes = classify_by_intensity(image, positions[keep], PIXEL, 3, 0.6)
    expected = [
        {"O": 0, "TiO": 1, "Sr": 2}[label] for label, k in zip(labels, keep, strict=True) if k
    ]
    np.testing.assert_array_equal(classes, expected)


def test_integrated_intensity_of_a_gaussian() -> None:
    image = gaussian_columns(np.array([[2.0, 2.0]]), 1.0, (40, 40), PIXEL, WIDTH)
    # ∫ over a disk of radius R: 2πs²·(1 − exp(−R²/(2s²))) [rad·Å²]
    radius = 1.5
    expected = 2 * math.pi * WIDTH**2 * (1 - math.exp(-(radius**2) / (2 * WIDTH**2)))
    value = integrated_intensity(image, np.array([[2.0, 2.0]]), PIXEL, radius)
    assert value[0] == pytest.approx(expected, rel=2e-3)  # pixelated disk edge


def test_classify_errors_name_the_parameter() -> None:
    image, positions = np.zeros((40, 40)), np.array([[2.0, 2.0], [2.0, 2.5]])
    with pytest.raises(ValueError, match="n_classes must be an integer >= 1"):
        classify_by_intensity(image, positions, PIXEL, 0, 0.5)
    with pytest.raises(ValueError, match=r"n_classes must be <= the number of positions \(2\)"):
        classify_by_intensity(image, positions, PIXEL, 3, 0.5)
    with pytest.raises(ValueError, match="radius_ang must be > 0"):
        classify_by_intensity(image, positions, PIXEL, 2, -0.5)
    with pytest.raises(ValueError, match=r"positions_ang must lie at least radius_ang=0\.5"):
        classify_by_intensity(image, positions + 3.0, PIXEL, 2, 0.5)
