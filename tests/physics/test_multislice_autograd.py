"""The hand-written backward passes equal autograd of the plain multislice loop."""

from __future__ import annotations

import pytest
import torch

from ptyscope.physics import multislice_autograd
from ptyscope.physics.multislice import extract_patches, multislice_exit_waves
from ptyscope.physics.multislice_autograd import (
    gather_windows,
    multislice_object_waves,
    multislice_waves,
)


def _complex(generator: torch.Generator, *shape: int) -> torch.Tensor:
    real = torch.randn(*shape, 2, generator=generator, dtype=torch.float64)
    return torch.view_as_complex(real)


def _reference_waves(
    probe: torch.Tensor, patches: torch.Tensor, propagator: torch.Tensor
) -> torch.Tensor:
    """ψ_{j+1} = F⁻¹[p·F[ψ_j·O_j]] written plainly, differentiated by autograd."""
    wave = probe[:, None]
    for j in range(patches.shape[2]):
        wave = wave * patches[:, :, j, None]
        if j < patches.shape[2] - 1:
            wave = torch.fft.ifft2(torch.fft.fft2(wave) * propagator)
    return wave


def _reference_windows(
    obj: torch.Tensor, corners: torch.Tensor, window: tuple[int, int]
) -> torch.Tensor:
    rows = torch.remainder(corners[:, 0, None] + torch.arange(window[0]), obj.shape[-2])
    cols = torch.remainder(corners[:, 1, None] + torch.arange(window[1]), obj.shape[-1])
    return obj[..., rows[:, :, None], cols[:, None, :]].movedim(-3, 0)


def _gradients(
    function: object, inputs: list[torch.Tensor], weights: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = function(*leaves)  # type: ignore[operator]
    # A real loss that mixes every output element with a distinct complex weight.
    loss = (out * weights).real.sum() + (out.abs() ** 2).sum()
    loss.backward()
    return out.detach(), [leaf.grad for leaf in leaves]  # type: ignore[misc]


def _assert_same_values_and_gradients(
    fast_fn: object,
    slow_fn: object,
    inputs: list[torch.Tensor],
    weights: torch.Tensor,
    names: tuple[str, ...],
) -> None:
    """float64 throughout: only rounding separates the two (|values| ~ 1 to 100)."""
    fast, fast_grads = _gradients(fast_fn, inputs, weights)
    slow, slow_grads = _gradients(slow_fn, inputs, weights)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)
    for name, a, b in zip(names, fast_grads, slow_grads, strict=True):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize(
    ("probe_batch", "patch_batch", "per_position_propagator", "modes", "substeps"),
    [
        (3, 3, False, 2, 1),
        (3, 3, False, 1, 1),
        (3, 3, True, 2, 1),
        (3, 1, False, 2, 1),
        (1, 3, True, 1, 1),
        (3, 3, False, 2, 2),
        (3, 3, True, 2, 3),
    ],
)
def test_waves_and_gradients_equal_autograd_of_the_plain_loop(
    probe_batch: int, patch_batch: int, per_position_propagator: bool, modes: int, substeps: int
) -> None:
    """With substeps n > 1 the reference is the plain loop through every slice's principal
    n-th root repeated n times (transmissions with phases inside ±2.5 rad: away from the
    root's branch cut)."""
    generator = torch.Generator().manual_seed(1)
    batch, states, slices, ny, nx = 3, 2, 4, 6, 5
    probe = _complex(generator, probe_batch, modes, ny, nx)
    make = _complex if substeps == 1 else _transmission
    patches = make(generator, patch_batch, states, slices, ny, nx)
    shape = (batch, 1, 1, ny, nx) if per_position_propagator else (ny, nx)
    propagator = _complex(generator, *shape)
    weights = _complex(generator, batch, states, modes, ny, nx)

    def fast_fn(p: torch.Tensor, o: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return multislice_waves(p, o, q, substeps)

    def slow_fn(p: torch.Tensor, o: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return _reference_waves(p, o if substeps == 1 else _subdivided(o, substeps), q)

    _assert_same_values_and_gradients(
        fast_fn, slow_fn, [probe, patches, propagator], weights, ("probe", "patches", "propagator")
    )


def test_a_wrong_conjugate_would_be_caught() -> None:
    """The comparison above is sensitive: conjugating the propagator changes the gradient."""
    generator = torch.Generator().manual_seed(2)
    probe = _complex(generator, 2, 1, 6, 6)
    patches = _complex(generator, 2, 1, 3, 6, 6)
    propagator = _complex(generator, 6, 6)
    weights = _complex(generator, 2, 1, 1, 6, 6)
    _, right = _gradients(_reference_waves, [probe, patches, propagator], weights)
    _, wrong = _gradients(_reference_waves, [probe, patches, propagator.conj()], weights)
    assert (right[1] - wrong[1]).abs().max() > 1.0


def test_gradcheck_of_the_multislice_pass() -> None:
    generator = torch.Generator().manual_seed(3)
    inputs = (
        _complex(generator, 2, 1, 3, 3).requires_grad_(True),
        _complex(generator, 2, 2, 2, 3, 3).requires_grad_(True),
        _complex(generator, 3, 3).requires_grad_(True),
    )
    assert torch.autograd.gradcheck(multislice_waves, inputs)


@pytest.mark.parametrize("periodic", [False, True])
def test_gather_and_scatter_equal_advanced_indexing(periodic: bool) -> None:
    generator = torch.Generator().manual_seed(4)
    obj = _complex(generator, 2, 3, 11, 13)
    window = (5, 6)
    # overlapping windows; with periodic=True some wrap around the edges
    corners = torch.tensor([[0, 0], [2, 3], [6, 7], [3, 3]])
    if periodic:
        corners = corners + torch.tensor([[0, 0], [0, 0], [4, 5], [-5, -6]])
    weights = _complex(generator, 4, 2, 3, *window)
    fast, (fast_grad,) = _gradients(
        lambda o: gather_windows(o, corners, window, periodic), [obj], weights
    )
    slow, (slow_grad,) = _gradients(
        lambda o: _reference_windows(o, corners, window), [obj], weights
    )
    torch.testing.assert_close(fast, slow, rtol=0, atol=0)
    torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-12, atol=1e-12)


def test_public_functions_use_the_fast_path_with_the_same_results() -> None:
    generator = torch.Generator().manual_seed(5)
    obj = _complex(generator, 2, 3, 20, 20).to(torch.complex64)
    probe = _complex(generator, 2, 8, 8).to(torch.complex64)
    corners = torch.tensor([[0, 0], [5, 7], [12, 12]])
    propagator = _complex(generator, 8, 8).to(torch.complex64)
    patches = extract_patches(obj, corners, (8, 8))
    reference = _reference_windows(obj, corners, (8, 8))
    torch.testing.assert_close(patches, reference, rtol=0, atol=0)
    waves = multislice_exit_waves(probe, patches, propagator)
    torch.testing.assert_close(waves, _reference_waves(probe[None], reference, propagator))


@pytest.mark.parametrize(
    ("periodic", "states", "modes", "per_position_propagator", "substeps"),
    [
        (False, 1, 1, False, 1),
        (False, 2, 2, True, 1),
        (True, 2, 1, False, 1),
        (False, 2, 1, False, 3),
        (True, 2, 2, True, 2),
    ],
)
def test_object_windows_equal_gather_then_multislice(
    periodic: bool, states: int, modes: int, per_position_propagator: bool, substeps: int
) -> None:
    """The slice-by-slice gather/scatter gives the values and gradients of
    gather_windows followed by multislice_waves (both against autograd above), with
    and without sub-slicing."""
    generator = torch.Generator().manual_seed(6)
    window = (5, 6)
    corners = torch.tensor([[0, 0], [2, 3], [6, 7], [3, 3]])
    if periodic:
        corners = corners + torch.tensor([[0, 0], [0, 0], [4, 5], [-5, -6]])
    obj = (_complex if substeps == 1 else _transmission)(generator, states, 3, 11, 13)
    probe = _complex(generator, 4, modes, *window)
    shape = (4, 1, 1, *window) if per_position_propagator else window
    propagator = _complex(generator, *shape)
    weights = _complex(generator, 4, states, modes, *window)

    def fast_fn(p: torch.Tensor, o: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return multislice_object_waves(p, o, corners, q, periodic, substeps)

    def slow_fn(p: torch.Tensor, o: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        windows = _reference_windows(o, corners, window)
        return _reference_waves(p, windows if substeps == 1 else _subdivided(windows, substeps), q)

    _assert_same_values_and_gradients(
        fast_fn, slow_fn, [probe, obj, propagator], weights, ("probe", "object", "propagator")
    )


@pytest.mark.parametrize("group", [1, 2, 3, 5, 7])
def test_grouped_scatter_add_equals_autograd(group: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The object gradient is scatter-added a group of slices at a time (groups that
    divide the 5 slices, that do not, and that exceed them), with 2 states whose
    gradients sit in strided slots."""
    monkeypatch.setattr(multislice_autograd, "_scatter_group", lambda *_: group)
    generator = torch.Generator().manual_seed(8)
    window = (5, 6)
    corners = torch.tensor([[0, 0], [2, 3], [6, 7]])
    obj = _complex(generator, 2, 5, 11, 13)
    probe = _complex(generator, 3, 2, *window)
    propagator = _complex(generator, *window)
    weights = _complex(generator, 3, 2, 2, *window)

    def fast_fn(p: torch.Tensor, o: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return multislice_object_waves(p, o, corners, q)

    def slow_fn(p: torch.Tensor, o: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return _reference_waves(p, _reference_windows(o, corners, window), q)

    _assert_same_values_and_gradients(
        fast_fn, slow_fn, [probe, obj, propagator], weights, ("probe", "object", "propagator")
    )


def test_scatter_group_follows_threads_slices_and_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    obj = torch.zeros(2, 20, 4, 4, dtype=torch.complex64)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert multislice_autograd._scatter_group(obj, 1000, 20) == 4
    assert multislice_autograd._scatter_group(obj, 1000, 3) == 3
    # 2 states × 8 bytes × pixels: 16 MiB hold three slots of 2.7 MiB, not four
    pixels = (16 * 2**20) // (3 * 2 * 8)
    assert multislice_autograd._scatter_group(obj, pixels, 20) == 3
    assert multislice_autograd._scatter_group(obj, 10**9, 20) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert multislice_autograd._scatter_group(obj, 1000, 20) == 1


def _transmission(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Complex transmissions near unit modulus with phases well inside (−π, π)."""
    magnitude = 1.0 + 0.2 * torch.randn(*shape, generator=generator, dtype=torch.float64)
    phase = torch.clamp(torch.randn(*shape, generator=generator, dtype=torch.float64), -2.5, 2.5)
    return torch.polar(magnitude, phase)


def _subdivided(patches: torch.Tensor, substeps: int) -> torch.Tensor:
    """Every slice of (B, S, L, ny, nx) as ``substeps`` planes of its principal root."""
    root = torch.polar(patches.abs() ** (1.0 / substeps), torch.angle(patches) / substeps)
    return root.repeat_interleave(substeps, dim=2)


def test_one_substep_is_the_plain_pass_and_bad_substeps_are_refused() -> None:
    generator = torch.Generator().manual_seed(5)
    probe = _complex(generator, 2, 1, 6, 6)
    patches = _transmission(generator, 2, 1, 3, 6, 6)
    propagator = _complex(generator, 6, 6)
    plain = multislice_exit_waves(probe, patches, propagator)
    torch.testing.assert_close(multislice_exit_waves(probe, patches, propagator, substeps=1), plain)
    assert not torch.allclose(multislice_exit_waves(probe, patches, propagator, substeps=2), plain)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"substeps must be an integer >= 1, got"):
            multislice_exit_waves(probe, patches, propagator, substeps=bad)  # type: ignore[arg-type]
