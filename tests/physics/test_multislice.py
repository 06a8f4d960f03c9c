"""Multislice forward pass: vacuum, weak-phase analytics, batching and mixed states."""

from __future__ import annotations

import math

import pytest
import scipy.special
import torch

from ptyscope.physics import (
    Grid,
    build_probe,
    extract_patches,
    fourier_shift,
    fresnel_propagator,
    multislice_exit_waves,
    multislice_forward,
    split_positions,
    wavelength_ang,
)

ENERGY = 300e3
LAM = wavelength_ang(ENERGY)
WINDOW = Grid((48, 48), (0.15, 0.15))


def _propagator(
    tilt: tuple[float, float] = (0.0, 0.0), dz: float = 15.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    ky, kx = WINDOW.frequencies(dtype=dtype)
    return fresnel_propagator(ky, kx, LAM, dz, tilt)


def _random_object(
    generator: torch.Generator,
    states: int = 2,
    slices: int = 3,
    shape: tuple[int, int] = (80, 90),
    strength: float = 0.5,
) -> torch.Tensor:
    phase = strength * torch.rand((states, slices, *shape), generator=generator)
    amplitude = 1 - 0.1 * torch.rand((states, slices, *shape), generator=generator)
    return torch.polar(amplitude, phase)


# complex64: ~2 FFTs per slice, each adding O(log2 N · ε_float32) ≈ 1e-6 relative error.
TOLERANCE = {torch.complex64: 1e-5, torch.complex128: 1e-12}


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("positions", [[[40.0, 45.0]], [[30.3, 41.7], [52.5, 47.2]]])
def test_vacuum_returns_the_probe_diffraction_pattern(
    positions: list[list[float]], dtype: torch.dtype
) -> None:
    probe = build_probe(WINDOW, ENERGY, 20.0, {"defocus": 60.0}, num_modes=2, dtype=dtype)
    real = probe.real.dtype
    vacuum = torch.ones((1, 4, 80, 90), dtype=dtype)
    pos = torch.tensor(positions, dtype=real)
    intensity = multislice_forward(probe, vacuum, pos, _propagator((3.0, -8.0), dtype=real))
    expected = torch.fft.fftshift(
        (torch.fft.fft2(probe, norm="ortho").abs() ** 2).sum(0), dim=(-2, -1)
    )
    tol = TOLERANCE[dtype]
    for b in range(len(positions)):
        torch.testing.assert_close(intensity[b], expected, rtol=0, atol=tol * float(expected.max()))
        assert float(intensity[b].sum()) == pytest.approx(1.0, abs=tol)
    # The undiffracted disk is centred: the brightest pixel is inside the central disk.
    assert float(intensity[0, 24, 24]) > 0.5 * float(intensity[0].max())


def test_plane_wave_on_phase_grating_gives_bessel_orders() -> None:
    """exp(iε cos(2πg·r)) = Σ iⁿ Jₙ(ε) e^{2πi n g·r} (Jacobi-Anger): order n carries Jₙ(ε)²;
    in the weak-phase limit the first orders carry ε²/4."""
    ny, nx = 48, 48
    gy, gx = 3, 5  # grating frequency in cycles per window, along y and x
    eps = 0.05
    y = torch.arange(ny, dtype=torch.float64)[:, None]
    x = torch.arange(nx, dtype=torch.float64)[None, :]
    phase = eps * torch.cos(2 * math.pi * (gy * y / ny + gx * x / nx))
    obj = torch.exp(1j * phase)[None, None]  # one state, one slice
    plane_wave = torch.full((1, ny, nx), 1 / math.sqrt(ny * nx), dtype=torch.complex128)
    intensity = multislice_forward(
        plane_wave,
        obj,
        torch.tensor([[24.0, 24.0]], dtype=torch.float64),
        _propagator(dtype=torch.float64),
    )[0]
    c = (ny // 2, nx // 2)
    for n in (0, 1, 2):
        expected = scipy.special.jv(n, eps) ** 2
        for sign in (1, -1) if n else (1,):
            spot = intensity[c[0] + sign * n * gy, c[1] + sign * n * gx]
            assert float(spot) == pytest.approx(expected, rel=1e-9)
    assert float(intensity[c[0] + gy, c[1] + gx]) == pytest.approx(eps**2 / 4, rel=eps**2)
    assert float(intensity.sum()) == pytest.approx(1.0, rel=1e-12)


def test_focused_probe_weak_phase_object_first_order() -> None:
    """Thin weak-phase object φ with a focused probe ψ: to first order in φ
    I = |Ψ|² − 2 Im[Ψ* F(ψφ)] (weak-phase approximation); the residual shrinks as φ²."""
    generator = torch.Generator().manual_seed(7)
    probe = build_probe(WINDOW, ENERGY, 25.0, {"defocus": 30.0}, dtype=torch.complex128)
    shape = WINDOW.shape
    texture = torch.randn(shape, generator=generator, dtype=torch.float64)
    ky, kx = WINDOW.frequencies(dtype=torch.float64)
    low_pass = (ky**2 + kx**2 < 1.5**2).to(torch.float64)  # keep spatial periods > 0.67 Å
    texture = torch.fft.ifft2(torch.fft.fft2(texture) * low_pass).real
    pos = torch.tensor([[24.0, 24.0]], dtype=torch.float64)
    residuals = []
    for strength in (0.02, 0.01):
        phi = strength * texture / texture.abs().max()
        obj = torch.exp(1j * phi)[None, None]
        exact = multislice_forward(probe, obj, pos, _propagator(dtype=torch.float64))[0]
        psi = probe[0]
        big_psi = torch.fft.fft2(psi, norm="ortho")
        first = (
            big_psi.abs() ** 2 - 2 * (big_psi.conj() * torch.fft.fft2(psi * phi, norm="ortho")).imag
        )
        first = torch.fft.fftshift(first)
        residual = float((exact - first).abs().max())
        linear = float((first - torch.fft.fftshift(big_psi.abs() ** 2)).abs().max())
        assert residual < 0.05 * linear  # the weak-phase term dominates the deviation
        residuals.append(residual)
    assert residuals[0] / residuals[1] == pytest.approx(4.0, rel=0.1)  # O(φ²)


def test_batch_equals_loop_over_positions(generator: torch.Generator) -> None:
    probe = build_probe(WINDOW, ENERGY, 22.0, {"defocus": 40.0}, num_modes=3)
    obj = _random_object(generator)
    positions = torch.tensor([[30.2, 40.9], [31.7, 44.4], [50.5, 60.0], [44.0, 30.49]])
    prop = _propagator((2.0, 5.0))
    batch = multislice_forward(probe, obj, positions, prop)
    for b in range(len(positions)):
        single = multislice_forward(probe, obj, positions[b : b + 1], prop)
        torch.testing.assert_close(batch[b : b + 1], single, rtol=1e-5, atol=1e-7)


def test_mixed_modes_and_states_are_the_incoherent_sum(generator: torch.Generator) -> None:
    probe = build_probe(WINDOW, ENERGY, 22.0, {"defocus": 40.0}, num_modes=2)
    obj = _random_object(generator, states=3)
    weights = torch.tensor([0.2, 0.5, 0.3])
    positions = torch.tensor([[35.3, 44.8], [41.0, 39.6]])
    prop = _propagator((-4.0, 1.0))
    mixed = multislice_forward(probe, obj, positions, prop, weights)
    expected = torch.zeros_like(mixed)
    for s in range(3):
        for m in range(2):
            expected += weights[s] * multislice_forward(
                probe[m : m + 1], obj[s : s + 1], positions, prop
            )
    torch.testing.assert_close(mixed, expected, rtol=1e-5, atol=1e-8)
    # Not a coherent sum: the coherent superposition of the modes differs.
    coherent = multislice_forward(probe.sum(0, keepdim=True), obj, positions, prop, weights)
    assert float((coherent - mixed).abs().max()) > 1e-3 * float(mixed.max())


def test_per_position_propagators_match_global_ones(generator: torch.Generator) -> None:
    probe = build_probe(WINDOW, ENERGY, 22.0, num_modes=1)
    obj = _random_object(generator)
    positions = torch.tensor([[35.0, 44.0], [41.5, 39.5]])
    tilts = torch.tensor([[0.0, 6.0], [-9.0, 2.0]])
    ky, kx = WINDOW.frequencies()
    per_position = fresnel_propagator(ky, kx, LAM, 15.0, tilts)
    mapped = multislice_forward(probe, obj, positions, per_position)
    for b in range(2):
        single = multislice_forward(probe, obj, positions[b : b + 1], per_position[b])
        torch.testing.assert_close(mapped[b : b + 1], single, rtol=1e-5, atol=1e-8)


def test_gradients_reach_object_probe_thickness_and_tilt(generator: torch.Generator) -> None:
    window = Grid((16, 16), (0.2, 0.2))
    probe = build_probe(window, ENERGY, 20.0, dtype=torch.complex128).requires_grad_(True)
    obj = _random_object(generator, states=1, slices=2, shape=(24, 24)).to(torch.complex128)
    obj.requires_grad_(True)
    dz = torch.tensor(12.0, dtype=torch.float64, requires_grad=True)
    tilt = torch.tensor([3.0, -2.0], dtype=torch.float64, requires_grad=True)
    positions = torch.tensor([[10.3, 11.6], [13.0, 12.2]], dtype=torch.float64)
    ky, kx = window.frequencies(dtype=torch.float64)

    def forward(dz: torch.Tensor, tilt: torch.Tensor) -> torch.Tensor:
        return multislice_forward(probe, obj, positions, fresnel_propagator(ky, kx, LAM, dz, tilt))

    assert torch.autograd.gradcheck(forward, (dz, tilt), eps=1e-6, atol=1e-8, rtol=1e-4)
    forward(dz, tilt).sum().backward()  # total intensity is conserved only for unit |O|
    assert probe.grad is not None and obj.grad is not None
    assert float(obj.grad.abs().max()) > 0


def test_patches_and_their_gradient_scatter_add() -> None:
    obj = torch.zeros((1, 1, 10, 12), requires_grad=True)
    corners = torch.tensor([[0, 0], [2, 3], [2, 3]])
    patches = extract_patches(obj, corners, (4, 5))
    assert patches.shape == (3, 1, 1, 4, 5)
    patches.sum().backward()
    assert obj.grad is not None
    assert float(obj.grad[0, 0, 3, 4]) == 3.0  # covered by all three windows
    assert float(obj.grad[0, 0, 0, 0]) == 1.0
    assert float(obj.grad[0, 0, 9, 11]) == 0.0
    with pytest.raises(ValueError, match=r"must lie inside the object of shape \(10, 12\)"):
        extract_patches(obj, torch.tensor([[7, 0]]), (4, 5))


def test_split_positions_and_fourier_shift() -> None:
    corners, fractions = split_positions(torch.tensor([[10.4, 20.6]]), (8, 8))
    assert corners.tolist() == [[6, 17]]
    torch.testing.assert_close(fractions, torch.tensor([[0.4, -0.4]]))
    image = torch.zeros((16, 16), dtype=torch.complex128)
    image[5, 7] = 1.0
    # An integer shift equals a roll; a (y, x) shift moves rows by y and columns by x.
    rolled = fourier_shift(image, torch.tensor([2.0, -3.0]))
    torch.testing.assert_close(rolled, torch.roll(image, shifts=(2, -3), dims=(0, 1)))
    # A sub-pixel shift of a smooth blob moves its centroid by the same amount.
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = torch.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 8).to(torch.complex128)
    moved = fourier_shift(blob, torch.tensor([[0.3, -0.45]]))[0].abs()
    assert float((moved * yy).sum() / moved.sum()) == pytest.approx(16.3, abs=1e-6)
    assert float((moved * xx).sum() / moved.sum()) == pytest.approx(15.55, abs=1e-6)
    with pytest.raises(ValueError, match=r"positions_px must have shape \(B, 2\)"):
        split_positions(torch.zeros(3), (8, 8))


def test_subpixel_positions_point_where_they_say() -> None:
    """Scanning a small absorbing dot: the transmitted intensity is lowest when the probe
    centre sits on the dot, at a fractional object-pixel position."""
    window = Grid((32, 32), (0.2, 0.2))
    probe = build_probe(window, ENERGY, 25.0, dtype=torch.complex128)
    dot = (40.3, 45.7)
    yy, xx = torch.meshgrid(
        torch.arange(80.0, dtype=torch.float64),
        torch.arange(90.0, dtype=torch.float64),
        indexing="ij",
    )
    absorber = 1 - 0.5 * torch.exp(-((yy - dot[0]) ** 2 + (xx - dot[1]) ** 2) / (2 * 1.5**2))
    obj = absorber.to(torch.complex128)[None, None]
    prop = torch.ones((32, 32), dtype=torch.complex128)
    offsets = torch.linspace(-1.0, 1.0, 41, dtype=torch.float64)
    for axis in (0, 1):
        positions = torch.tensor([dot], dtype=torch.float64).repeat(41, 1)
        positions[:, axis] += offsets
        total = multislice_forward(probe, obj, positions, prop).sum(dim=(-2, -1))
        i = int(total.argmin())
        # Parabola through the minimum and its neighbours locates it to sub-step accuracy.
        a, b, c = (float(total[j]) for j in (i - 1, i, i + 1))
        step = float(offsets[1] - offsets[0])
        found = float(positions[i, axis]) + 0.5 * step * (a - c) / (a - 2 * b + c)
        assert found == pytest.approx(dot[axis], abs=0.02)


def test_exit_waves_follow_the_multislice_recursion(generator: torch.Generator) -> None:
    """exit = p⁻¹-free recursion: ψ₁ = F⁻¹[p F[P·O₀]], exit = ψ₁·O₁ (no final propagation)."""
    probe = build_probe(WINDOW, ENERGY, 22.0, {"defocus": 40.0}, dtype=torch.complex128)
    patches = _random_object(generator, states=1, slices=2, shape=WINDOW.shape)
    patches = patches.to(torch.complex128)[None]  # (B=1, S=1, L=2, ny, nx)
    prop = _propagator((2.0, -3.0), dtype=torch.float64)
    exit_wave = multislice_exit_waves(probe, patches, prop)[0, 0, 0]
    psi1 = torch.fft.ifft2(torch.fft.fft2(probe[0] * patches[0, 0, 0]) * prop)
    torch.testing.assert_close(exit_wave, psi1 * patches[0, 0, 1], rtol=0, atol=1e-12)
    one_slice = multislice_exit_waves(probe, patches[:, :, :1], prop)[0, 0, 0]
    torch.testing.assert_close(one_slice, probe[0] * patches[0, 0, 0], rtol=0, atol=1e-14)


def test_default_state_weights_are_equal(generator: torch.Generator) -> None:
    probe = build_probe(WINDOW, ENERGY, 22.0, {"defocus": 40.0})
    obj = _random_object(generator, states=3)
    positions = torch.tensor([[35.3, 44.8]])
    prop = _propagator()
    default = multislice_forward(probe, obj, positions, prop)
    equal = multislice_forward(probe, obj, positions, prop, torch.full((3,), 1 / 3))
    torch.testing.assert_close(default, equal)
    assert float(default.sum()) < 1.0  # partly absorbing object: not a sum of 3 patterns


def test_gradients_match_finite_differences_for_all_inputs(generator: torch.Generator) -> None:
    window = Grid((12, 12), (0.25, 0.25))
    ky, kx = window.frequencies(dtype=torch.float64)
    prop = fresnel_propagator(ky, kx, LAM, 10.0, (2.0, -1.0))
    probe = build_probe(
        window, ENERGY, 20.0, {"defocus": 10.0}, num_modes=2, dtype=torch.complex128
    )
    obj = _random_object(generator, states=2, slices=2, shape=(18, 18)).to(torch.complex128)
    positions = torch.tensor([[8.3, 9.6], [9.49, 8.51]], dtype=torch.float64)
    weights = torch.tensor([0.4, 0.6], dtype=torch.float64)
    inputs = tuple(t.clone().requires_grad_(True) for t in (probe, obj, positions, weights))

    def forward(probe, obj, positions, weights):  # type: ignore[no-untyped-def]
        return multislice_forward(probe, obj, positions, prop, weights)

    assert torch.autograd.gradcheck(forward, inputs, eps=1e-6, atol=1e-8, rtol=1e-4)


def test_bad_forward_inputs_are_clear_errors() -> None:
    probe = build_probe(WINDOW, ENERGY, 22.0)
    obj = torch.ones((2, 1, 80, 90), dtype=torch.complex64)
    prop = _propagator()
    good = torch.tensor([[40.0, 45.0]])
    with pytest.raises(ValueError, match="at least one position"):
        multislice_forward(probe, obj, torch.zeros((0, 2)), prop)
    with pytest.raises(ValueError, match="positions_px must be finite"):
        multislice_forward(probe, obj, torch.tensor([[float("nan"), 3.0]]), prop)
    with pytest.raises(ValueError, match="propagator must have shape"):
        multislice_forward(probe, obj, good, prop[:40])
    with pytest.raises(ValueError, match="propagator must have shape"):
        multislice_forward(probe, obj, good, prop.expand(3, -1, -1))
    with pytest.raises(ValueError, match="state_weights must be >= 0"):
        multislice_forward(probe, obj, good, prop, torch.tensor([1.5, -0.5]))
    with pytest.raises(ValueError, match=r"state_weights must have shape \(states,\)"):
        multislice_forward(probe, obj, good, prop, torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"shifts_px must have shape \(2,\) or \(B, 2\)"):
        fourier_shift(probe, torch.zeros(3))


def _column_slices(count: int, total_phase_rad: float) -> torch.Tensor:
    """(count, ny, nx) complex128 planes of one Gaussian column (σ 0.3 Å) at the window
    centre, each carrying total_phase_rad / count of its phase."""
    ny, nx = WINDOW.shape
    y, x = WINDOW.coordinates(dtype=torch.float64)
    centre = WINDOW.extent_ang[0] / 2, WINDOW.extent_ang[1] / 2
    profile = torch.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * 0.3**2))
    phase = (total_phase_rad / count) * profile.expand(count, ny, nx)
    return torch.polar(torch.ones_like(phase), phase)


def test_sub_slicing_converges_to_thin_slices_at_second_order() -> None:
    """Three 12 Å slices of a column tilted 25 mrad, against 48 planes per slice.

    n planes of O^(1/n) at the start of each Δz/n step are the centred split-step scheme
    (planes mid-step) seen by a probe defocused by Δz/2n, so each run's probe is first
    propagated by Δz/2n − Δz/96 (the reference's own offset); the centred scheme's error is
    O((Δz/n)²) per slice, so the intensity error should fall about n²-fold: we require at
    least 2.5× for n = 2 and 8× for n = 4 (measured 4.4× and 18×).
    """
    ky, kx = WINDOW.frequencies(dtype=torch.float64)
    dz, slices, fine, tilt = 12.0, 3, 48, (0.0, 25.0)
    probe = build_probe(WINDOW, ENERGY, 22.0).to(torch.complex128)
    thin = _column_slices(fine, 1.2).repeat(slices, 1, 1)
    reference = multislice_exit_waves(
        probe, thin[None, None], fresnel_propagator(ky, kx, LAM, dz / fine, tilt)
    )
    target = torch.fft.fft2(reference).abs() ** 2
    thick = _column_slices(1, 1.2).repeat(slices, 1, 1)  # each the product of its planes

    def error(substeps: int) -> float:
        offset = fresnel_propagator(ky, kx, LAM, dz / (2 * substeps) - dz / (2 * fine), tilt)
        entering = torch.fft.ifft2(torch.fft.fft2(probe) * offset)
        propagator = fresnel_propagator(ky, kx, LAM, dz / substeps, tilt)
        exit_waves = multislice_exit_waves(
            entering, thick[None, None], propagator, substeps=substeps
        )
        intensity = torch.fft.fft2(exit_waves).abs() ** 2
        return float((intensity - target).abs().sum() / target.sum())

    one, two, four = error(1), error(2), error(4)
    assert one > 1e-3  # the single plane's error is visible at all
    assert two < one / 2.5
    assert four < one / 8


def test_one_plane_per_slice_cannot_tell_a_tilt_from_shifted_slices() -> None:
    """Why sub-slicing exists: with one plane per slice a tilt θ with Δz·tanθ = one pixel
    gives exactly the intensities of the untilted pass through slices shifted by j pixels
    (slice j rolled by j), so the loss cannot see the tilt; with two planes per slice the
    columns inside each slice are tilted too and the two differ."""
    generator = torch.Generator().manual_seed(7)
    ky, kx = WINDOW.frequencies(dtype=torch.float64)
    dz, slices = 10.0, 4
    tilt = (0.0, 1e3 * math.atan(WINDOW.pixel_size_ang[1] / dz))
    probe = build_probe(WINDOW, ENERGY, 22.0).to(torch.complex128)
    phase = 0.5 * torch.rand(1, 1, slices, *WINDOW.shape, generator=generator, dtype=torch.float64)
    patches = torch.polar(torch.ones_like(phase), phase)
    shifted = torch.stack([torch.roll(patches[:, :, j], j, dims=-1) for j in range(slices)], 2)

    def intensity(obj: torch.Tensor, tilt_mrad: tuple[float, float], substeps: int) -> torch.Tensor:
        propagator = fresnel_propagator(ky, kx, LAM, dz / substeps, tilt_mrad)
        waves = multislice_exit_waves(probe, obj, propagator, substeps=substeps)
        return torch.fft.fft2(waves).abs() ** 2

    def difference(substeps: int) -> float:
        tilted = intensity(patches, tilt, substeps)
        untilted = intensity(shifted, (0.0, 0.0), substeps)
        return float((tilted - untilted).abs().sum() / tilted.sum())

    assert difference(1) < 1e-12  # identical up to rounding (float64)
    assert difference(2) > 1e-3
