"""The multislice pass and the patch gather with hand-written backward passes.

Autograd of the plain loop in :func:`ptyscope.physics.multislice.multislice_exit_waves`
is correct but slow on a reconstruction's batches: it materialises conjugates, stacks the
slice gradients, and the gather's backward (``index_put`` with accumulation) sorts its
indices. The functions here give the same values and the same gradients (PyTorch's
convention: the gradient of a real loss with respect to z is ∂L/∂Re z + i ∂L/∂Im z) with
the FFTs the model needs and a few elementwise products, and save only the wave entering
each slice (benchmarks/fft_bound.py measures the difference; ``tests/physics/
test_multislice_autograd.py`` checks both against autograd of the plain loop).

Gradients of one slice step, u = ψ_j·O_j, ψ_{j+1} = F⁻¹[p·F[u]] (F unnormalised, as
``torch.fft.fft2``; F⁻¹ = ``ifft2`` with its 1/N):

    ḡ_u = F⁻¹[p* · F[ḡ_{j+1}]]          (F⁻¹ p F is unitary up to |p|)
    ḡ_p = Σ F[ḡ_{j+1}] · F[u]* / N        (summed over states, modes, slices; positions too
                                           for one global propagator)
    ḡ_O_j = Σ_modes ḡ_u · ψ_j*,   ḡ_ψ_j = ḡ_u · O_j*

The backward runs on h = ḡ*, for which the same steps need no conjugate inside the loop
(conjugating a tensor costs a full copy): h_u = F[p · F⁻¹[h_{j+1}]], h_ψ_j = h_u · O_j,
ḡ_O_j = (Σ_modes h_u · ψ_j)*, ḡ_p = (Σ F⁻¹[h_{j+1}] · F[u])*.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["gather_windows", "multislice_waves"]


def gather_windows(
    obj: torch.Tensor, corners: torch.Tensor, window_shape: tuple[int, int], periodic: bool
) -> torch.Tensor:
    """Windows of ``obj`` (S, L, Ny, Nx) at integer ``corners`` (B, 2): (B, S, L, ny, nx).

    The result is a view of an (S, L, B, ny, nx) tensor. Its backward scatter-adds the
    window gradients with ``index_add_`` over flat pixel indices (overlaps accumulate).
    No bounds check: see :func:`ptyscope.physics.multislice.extract_patches`.
    """
    windows: torch.Tensor = _GatherWindows.apply(obj, corners, window_shape, periodic)  # type: ignore[no-untyped-call]
    return windows.movedim(2, 0)


def multislice_waves(
    probe: torch.Tensor, patches: torch.Tensor, propagator: torch.Tensor
) -> torch.Tensor:
    """Exit waves (B, S, M, ny, nx) of probes (B|1, M, ny, nx) through patches
    (B|1, S, L, ny, nx) with a propagator (ny, nx) or (B, 1, 1, ny, nx).

    Shapes are checked by the caller (:func:`ptyscope.physics.multislice.multislice_exit_waves`).
    """
    waves: torch.Tensor = _MultisliceWaves.apply(probe, patches, propagator)  # type: ignore[no-untyped-call]
    return waves


def _flat_indices(
    corners: torch.Tensor, window_shape: tuple[int, int], big: tuple[int, int], periodic: bool
) -> torch.Tensor:
    """int64 (B·ny·nx,) indices into a flattened (Ny·Nx) image of every window pixel."""
    ny, nx = window_shape
    rows = corners[:, 0, None] + torch.arange(ny, device=corners.device)
    cols = corners[:, 1, None] + torch.arange(nx, device=corners.device)
    if periodic:
        rows, cols = torch.remainder(rows, big[0]), torch.remainder(cols, big[1])
    return (rows[:, :, None] * big[1] + cols[:, None, :]).reshape(-1)


class _GatherWindows(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        obj: torch.Tensor,
        corners: torch.Tensor,
        window_shape: tuple[int, int],
        periodic: bool,
    ) -> torch.Tensor:
        states, slices, big_y, big_x = obj.shape
        ny, nx = window_shape
        corners = corners.to(obj.device)
        batch = corners.shape[0]
        if periodic:
            flat = _flat_indices(corners, window_shape, (big_y, big_x), periodic=True)
            picked = obj.reshape(states * slices, big_y * big_x).index_select(1, flat)
            windows = picked.reshape(states, slices, batch, ny, nx)
        else:
            flat = None
            # A view of every (ny, nx) window; indexing its two window axes copies whole
            # windows, which is faster than indexing pixel by pixel.
            every = obj.unfold(2, ny, 1).unfold(3, nx, 1)  # (S, L, Ny−ny+1, Nx−nx+1, ny, nx)
            windows = every[:, :, corners[:, 0], corners[:, 1]]  # (S, L, B, ny, nx)
        ctx.save_for_backward(corners)
        ctx.flat = flat
        ctx.geometry = (obj.shape, window_shape, periodic)
        return windows

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (corners,) = ctx.saved_tensors
        shape, window_shape, periodic = ctx.geometry
        states, slices, big_y, big_x = shape
        flat = ctx.flat
        if flat is None:
            flat = _flat_indices(corners, window_shape, (big_y, big_x), periodic)
        result = torch.zeros(states * slices, big_y * big_x, dtype=grad.dtype, device=grad.device)
        result.index_add_(1, flat, grad.reshape(states * slices, -1))
        return result.reshape(shape), None, None, None


class _MultisliceWaves(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, probe: torch.Tensor, patches: torch.Tensor, propagator: torch.Tensor
    ) -> torch.Tensor:
        batch = max(probe.shape[0], patches.shape[0])
        states, slices = patches.shape[1], patches.shape[2]
        wave = probe[:, None].expand(batch, states, *probe.shape[1:])
        keep = any(ctx.needs_input_grad)
        entering: list[torch.Tensor] = []
        for j in range(slices):
            if keep:
                entering.append(wave)
            wave = wave * patches[:, :, j, None]  # (B, S, M, ny, nx)
            if j < slices - 1:
                spectrum = torch.fft.fft2(wave)
                spectrum.mul_(propagator)
                wave = torch.fft.ifft2(spectrum)
        if keep:
            ctx.save_for_backward(probe, patches, propagator, *entering)
        return wave

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        # Runs on h = ḡ*, the conjugated gradient (module docstring).
        probe, patches, propagator, *entering = ctx.saved_tensors
        want_probe, want_patches, want_propagator = ctx.needs_input_grad
        states, slices = patches.shape[1], patches.shape[2]
        patch_batch = patches.shape[0]
        ny, nx = grad.shape[-2:]
        # (S, L, B, ny, nx): the layout the gather's backward adds from without a copy
        patches_grad = (
            grad.new_empty((states, slices, patch_batch, ny, nx)) if want_patches else None
        )
        propagator_grad = torch.zeros_like(grad[:, 0, 0]) if want_propagator else None
        h = grad.conj_physical()  # h: the conjugated gradient of the wave leaving slice j
        for j in range(slices - 1, -1, -1):
            patch = patches[:, :, j, None]
            if j < slices - 1:  # through ψ_{j+1} = F⁻¹[p·F[ψ_j·O_j]]
                h = torch.fft.ifft2(h)
                if propagator_grad is not None:
                    spectrum = torch.fft.fft2(entering[j] * patch)
                    propagator_grad += (h * spectrum).sum(dim=(1, 2))
                h.mul_(propagator)
                h = torch.fft.fft2(h)
            if patches_grad is not None:
                # Σ over modes, and over positions for one patch shared by the batch,
                # written straight into the (S, L, B) buffer
                target = patches_grad[:, j].transpose(0, 1)  # (B, S, ny, nx) view
                if patch_batch != h.shape[0]:
                    target.copy_(_reduce_to((h * entering[j]).sum(dim=2), patch_batch))
                elif h.shape[2] == 1:
                    torch.mul(h[:, :, 0], entering[j][:, :, 0], out=target)
                else:
                    torch.sum(h * entering[j], dim=2, out=target)
            if j > 0 or want_probe:
                h = h * patch
        probe_grad = None
        if want_probe:
            probe_grad = _reduce_to(h.sum(dim=1), probe.shape[0]).conj_physical_()
        patches_view = None
        if patches_grad is not None:
            patches_view = patches_grad.conj_physical_().movedim(2, 0)
        if propagator_grad is not None:
            propagator_grad = propagator_grad.conj_physical_()
            if propagator.ndim == 2:
                propagator_grad = propagator_grad.sum(dim=0)
            else:
                propagator_grad = propagator_grad.reshape(propagator.shape)
        return probe_grad, patches_view, propagator_grad


def _reduce_to(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Sum the leading (position) axis when the input it belongs to had batch 1."""
    return tensor.sum(dim=0, keepdim=True) if batch == 1 and tensor.shape[0] != 1 else tensor
