"""Sub-pixel column positions: bias, uncertainties, stacks and argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from ptyscope.analysis.refine import estimate_noise_std, refine_com, refine_gaussian

from ._synthetic import gaussian_columns, square_grid

PIXEL = (0.1, 0.1)  # Å
WIDTH = 0.35  # Å, Gaussian s of a column
SPACING = 1.95  # Å, nearest neighbours in SrTiO3 [001]
RADIUS = 0.8  # Å, about 2.3 s and below half the spacing
N_SIDE = 24  # 576 columns
MARGIN = 1.5  # Å


def _lattice(rng: np.random.Generator, noise_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit-amplitude columns on a 1.95 Å grid, each offset by up to ±0.3 px, plus noise."""
    truth = square_grid(N_SIDE, SPACING, MARGIN)
    truth += rng.uniform(-0.3, 0.3, truth.shape) * np.asarray(PIXEL)
    n = round((2 * MARGIN + (N_SIDE - 1) * SPACING) / PIXEL[0]) + 1
    image = gaussian_columns(truth, 1.0, (n, n), PIXEL, WIDTH)
    return image + rng.normal(0.0, noise_std, image.shape), truth


@pytest.mark.parametrize("method", ["com", "gaussian"])
@pytest.mark.parametrize("noise_std", [0.01, 0.05])
def test_positions_are_unbiased_and_sigma_matches_the_scatter(
    method: str, noise_std: float
) -> None:
    rng = np.random.default_rng(2022)
    image, truth = _lattice(rng, noise_std)
    start = truth + rng.uniform(-0.05, 0.05, truth.shape)  # as from find_peaks
    refine = refine_com if method == "com" else refine_gaussian
    result = refine(image, start, PIXEL, RADIUS)  # noise σ estimated from the image
    errors = result.positions_ang - truth
    sem = errors.std(axis=0, ddof=1) / np.sqrt(len(errors))
    # Enough columns that the test resolves 0.2 pm: 3 SEM < 0.1 pm (0.05 pm at 5% noise).
    assert np.all(3 * sem < 0.001)
    assert np.all(np.abs(errors.mean(axis=0)) < 0.002)  # 0.2 pm
    ratio = np.sqrt(np.mean(errors**2, axis=0)) / np.sqrt(np.mean(result.sigma_ang**2, axis=0))
    # With 576 columns the ratio's own scatter is ~3%.
    assert np.all((ratio > 0.7) & (ratio < 1.3)), ratio


def test_smooth_window_removes_the_hard_disk_pixelation_error() -> None:
    rng = np.random.default_rng(7)
    image, truth = _lattice(rng, 0.0)
    rms = {}
    for window in ("smooth", "hard"):
        result = refine_com(
            image, truth, PIXEL, RADIUS, window=window, background="none", noise_std=1e-3
        )
        rms[window] = np.sqrt(np.mean((result.positions_ang - truth) ** 2))
    assert rms["smooth"] < 0.0001  # < 0.01 pm noise-free (measured 0.003 pm)
    assert rms["hard"] > 5 * rms["smooth"]  # whole pixels entering and leaving the disk


@pytest.mark.parametrize("method", ["com", "gaussian"])
def test_anisotropic_pixels_and_origin(method: str) -> None:
    pixel, origin = (0.08, 0.11), (5.0, -3.0)
    truth = np.array([[6.537, -1.418], [8.0213, 1.4021]])  # 3.2 Å apart: no overlap
    image = gaussian_columns(truth, np.array([1.0, 0.6]), (70, 50), pixel, WIDTH, origin)
    refine = refine_com if method == "com" else refine_gaussian
    result = refine(image, truth + 0.06, pixel, RADIUS, origin_ang=origin, noise_std=0.01)
    np.testing.assert_allclose(result.positions_ang, truth, atol=2e-5)


def test_gaussian_recovers_amplitude_width_and_background() -> None:
    truth = np.array([[2.013, 1.987]])
    image = 0.25 + gaussian_columns(truth, 0.8, (40, 40), PIXEL, WIDTH)
    fit = refine_gaussian(image, np.array([[2.0, 2.0]]), PIXEL, 1.0)
    np.testing.assert_allclose(fit.positions_ang, truth, atol=1e-8)
    np.testing.assert_allclose(fit.amplitudes, [0.8], rtol=1e-7)
    np.testing.assert_allclose(fit.widths_ang, [WIDTH], rtol=1e-7)
    np.testing.assert_allclose(fit.backgrounds, [0.25], atol=1e-8)
    assert np.all(fit.sigma_ang < 1e-8)  # no residual, no uncertainty


def test_gaussian_fit_matches_scipy_least_squares() -> None:
    rng = np.random.default_rng(3)
    truth = np.array([[2.03, 1.96]])
    image = 0.1 + gaussian_columns(truth, 1.0, (40, 40), PIXEL, WIDTH)
    image += rng.normal(0.0, 0.03, image.shape)
    fit = refine_gaussian(image, np.array([[2.0, 2.0]]), PIXEL, RADIUS)
    # The same pixels (those within R of the first pass's centre, which is this one to
    # far below a pixel) fitted by scipy.
    y, x = np.mgrid[:40, :40] * 0.1
    inside = (y - fit.positions_ang[0, 0]) ** 2 + (x - fit.positions_ang[0, 1]) ** 2 <= RADIUS**2
    yy, xx, data = y[inside], x[inside], image[inside]

    def residual(p: np.ndarray) -> np.ndarray:
        r2 = (yy - p[0]) ** 2 + (xx - p[1]) ** 2
        out: np.ndarray = p[2] * np.exp(-r2 / (2 * p[3] ** 2)) + p[4] - data
        return out

    reference = least_squares(residual, [2.0, 2.0, 1.0, 0.3, 0.0], xtol=1e-14, ftol=1e-14)
    jac = reference.jac
    variance = 2 * reference.cost / (data.size - 5)
    sigma = np.sqrt(np.diag(np.linalg.inv(jac.T @ jac)) * variance)[:2]
    np.testing.assert_allclose(fit.positions_ang[0], reference.x[:2], atol=1e-7)
    np.testing.assert_allclose(fit.widths_ang[0], reference.x[3], rtol=1e-6)
    np.testing.assert_allclose(fit.sigma_ang[0], sigma, rtol=1e-4)


@pytest.mark.parametrize("method", ["com", "gaussian"])
def test_stacks_refine_each_image(method: str) -> None:
    base = np.array([[1.5, 1.5], [1.5, 4.5], [4.5, 3.0]])  # 3 Å apart: no overlap
    shifts = np.array([[[0.01 * s, -0.02 * j] for j in range(3)] for s in range(2)])
    truth = base[None, None] + shifts[..., None, :]  # (2, 3, K, 2)
    stack = np.stack(
        [
            np.stack([gaussian_columns(truth[s, j], 1.0, (60, 60), PIXEL, WIDTH) for j in range(3)])
            for s in range(2)
        ]
    )
    refine = refine_com if method == "com" else refine_gaussian
    shared = refine(stack, base, PIXEL, RADIUS, noise_std=0.01)
    own = refine(stack, truth + 0.03, PIXEL, RADIUS, noise_std=0.01)
    assert shared.positions_ang.shape == own.positions_ang.shape == (2, 3, 3, 2)
    assert shared.sigma_ang.shape == (2, 3, 3, 2)
    np.testing.assert_allclose(shared.positions_ang, truth, atol=1e-5)
    np.testing.assert_allclose(own.positions_ang, truth, atol=1e-5)
    single = refine(stack[1, 2], base, PIXEL, RADIUS, noise_std=0.01)
    np.testing.assert_array_equal(single.positions_ang, shared.positions_ang[1, 2])


def test_noise_estimate_ignores_the_columns() -> None:
    rng = np.random.default_rng(11)
    for noise_std in (0.01, 0.05):
        image, _ = _lattice(rng, noise_std)
        assert estimate_noise_std(image) == pytest.approx(noise_std, rel=0.03)
    clean, _ = _lattice(rng, 0.0)
    assert estimate_noise_std(clean) < 1e-4  # the columns alone read as (almost) no noise


def test_column_walking_off_the_image_is_nan_with_a_warning() -> None:
    # A column centred outside the image pulls the disk across the edge.
    image = gaussian_columns(np.array([[-0.3, 2.0], [2.5, 2.0]]), 1.0, (40, 40), PIXEL, WIDTH)
    with pytest.warns(RuntimeWarning, match="1 column"):
        result = refine_com(image, np.array([[0.85, 2.0], [2.5, 2.0]]), PIXEL, RADIUS)
    assert np.all(np.isnan(result.positions_ang[0])) and np.all(np.isnan(result.sigma_ang[0]))
    np.testing.assert_allclose(result.positions_ang[1], [2.5, 2.0], atol=1e-3)


@pytest.mark.parametrize("method", ["com", "gaussian"])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"radius_ang": 0.0}, "radius_ang must be > 0"),
        ({"radius_ang": -1.0}, "radius_ang must be > 0"),
        ({"pixel_size_ang": (0.1, -0.1)}, "pixel_size_ang must be > 0"),
        ({"positions_ang": np.array([[0.3, 2.0]])}, "positions_ang must lie at least"),
        ({"positions_ang": np.array([[2.0, 9.0]])}, r"x in \[0.800, 3.100\]"),
        ({"positions_ang": np.array([2.0, 2.0])}, r"positions_ang must have shape \(K, 2\)"),
        ({"positions_ang": np.zeros((3, 1, 2)) + 2}, "leading shape"),
        ({"positions_ang": np.array([[np.nan, 2.0]])}, "positions_ang must be finite"),
        ({"noise_std": -0.1}, "noise_std must be > 0"),
        ({"image": np.zeros(40)}, r"image must have shape \(\.\.\., ny, nx\)"),
    ],
)
def test_errors_name_the_parameter(method: str, kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "image": np.zeros((40, 40)),
        "positions_ang": np.array([[2.0, 2.0]]),
        "pixel_size_ang": PIXEL,
        "radius_ang": RADIUS,
    }
    arguments.update(kwargs)
    refine = refine_com if method == "com" else refine_gaussian
    with pytest.raises(ValueError, match=message):
        refine(**arguments)  # type: ignore[arg-type]


def test_com_option_errors() -> None:
    image, positions = np.zeros((40, 40)), np.array([[2.0, 2.0]])
    with pytest.raises(ValueError, match="background must be 'local_min' or 'none'"):
        refine_com(image, positions, PIXEL, RADIUS, background="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window must be 'smooth' or 'hard'"):
        refine_com(image, positions, PIXEL, RADIUS, window="gauss")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="image must be real"):
        refine_com(image + 0j, positions, PIXEL, RADIUS)
    with pytest.raises(ValueError, match="radius_ang must cover at least 10 pixels"):
        refine_gaussian(image, positions, PIXEL, 0.15)
