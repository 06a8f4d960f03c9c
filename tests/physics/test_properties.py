"""Property-based checks of the propagator algebra and the Fourier shift."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptyscope.physics import Grid, fourier_shift, fresnel_propagator, wavelength_ang

LAM = wavelength_ang(200e3)
KY, KX = Grid((24, 20), (0.11, 0.09)).frequencies(dtype=torch.float64)

thickness = st.floats(min_value=-200.0, max_value=200.0, allow_nan=False)
tilt = st.tuples(
    st.floats(min_value=-50.0, max_value=50.0), st.floats(min_value=-50.0, max_value=50.0)
)


@settings(max_examples=60, deadline=None)
@given(dz1=thickness, dz2=thickness, theta=tilt)
def test_propagators_compose_and_invert(dz1: float, dz2: float, theta: tuple[float, float]) -> None:
    p1 = fresnel_propagator(KY, KX, LAM, dz1, theta)
    p2 = fresnel_propagator(KY, KX, LAM, dz2, theta)
    torch.testing.assert_close(
        p1 * p2, fresnel_propagator(KY, KX, LAM, dz1 + dz2, theta), rtol=0, atol=1e-9
    )
    # Propagating back by −Δz undoes the step (p is unitary: p(−Δz) = conj(p(Δz))).
    torch.testing.assert_close(
        fresnel_propagator(KY, KX, LAM, -dz1, theta), p1.conj(), rtol=0, atol=1e-12
    )


@settings(max_examples=60, deadline=None)
@given(
    sy=st.floats(min_value=-5.0, max_value=5.0),
    sx=st.floats(min_value=-5.0, max_value=5.0),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_fourier_shift_is_invertible_and_preserves_norm(sy: float, sx: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn((16, 18), dtype=torch.complex128, generator=g)
    shift = torch.tensor([sy, sx], dtype=torch.float64)
    moved = fourier_shift(image, shift)
    assert abs(float(moved.abs().pow(2).sum() - image.abs().pow(2).sum())) < 1e-9
    torch.testing.assert_close(fourier_shift(moved, -shift), image, rtol=0, atol=1e-10)
