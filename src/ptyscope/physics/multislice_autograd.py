"""The multislice pass and the patch gather with hand-written backward passes.

Autograd of the plain loop in :func:`ptyscope.physics.multislice.multislice_exit_waves`
is correct but slow on a reconstruction's batches: it materialises conjugates, stacks the
slice gradients, and the gather's backward (``index_put`` with accumulation) sorts its
indices. The functions here give the same values and the same gradients (PyTorch's
convention: the gradient of a real loss with respect to z is ∂L/∂Re z + i ∂L/∂Im z) with
the FFTs the model needs and a few elementwise products, and save only the wave entering
each slice and that slice's window (benchmarks/fft_bound.py measures the difference;
``tests/physics/test_multislice_autograd.py`` checks both against autograd of the plain
loop).

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

from ptyscope.physics import fft_backend

__all__ = ["far_field_power", "gather_windows", "multislice_object_waves", "multislice_waves"]

#: |O| below this is treated as this in a negative power of a transmission (the gradient
#: of a sub-sliced slice's root).
_SMALLEST_TRANSMISSION = 1e-6


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
    probe: torch.Tensor, patches: torch.Tensor, propagator: torch.Tensor, substeps: int = 1
) -> torch.Tensor:
    """Exit waves (B, S, M, ny, nx) of probes (B|1, M, ny, nx) through patches
    (B|1, S, L, ny, nx) with a propagator (ny, nx) or (B, 1, 1, ny, nx); with ``substeps``
    n > 1 each slice is n planes of O^(1/n) (see :class:`_SubslicedSource`).

    Shapes are checked by the caller (:func:`ptyscope.physics.multislice.multislice_exit_waves`).
    """
    patch_source = _PatchSource(patches)
    source: _Source = patch_source
    if substeps > 1:
        source = _SubslicedSource(patch_source, substeps)
    waves: torch.Tensor = _MultisliceWaves.apply(probe, patches, propagator, source)  # type: ignore[no-untyped-call]
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


class _PatchSource:
    """Slices of given patches (B|1, S, L, ny, nx); their gradient is a tensor like them."""

    def __init__(self, patches: torch.Tensor) -> None:
        self.patches = patches
        self.batch, self.states, self.slices = patches.shape[:3]
        self.grad: torch.Tensor | None = None

    def window(self, j: int) -> torch.Tensor:
        return self.patches[:, :, j]  # (B|1, S, ny, nx)

    def start_backward(self) -> None:
        states, slices, ny, nx = self.patches.shape[1:]
        # (S, L, B, ny, nx): the layout the gather's backward adds from without a copy
        self.grad = self.patches.new_empty((states, slices, self.batch, ny, nx))

    def gradient_out(self, j: int) -> None:
        return None  # add() copies into its own layout

    def add(self, j: int, conj_grad: torch.Tensor) -> None:
        assert self.grad is not None
        self.grad[:, j].copy_(conj_grad.transpose(0, 1)).conj_physical_()

    def result(self) -> torch.Tensor:
        assert self.grad is not None
        grad, self.grad = self.grad, None  # the graph may outlive the backward
        return grad.movedim(2, 0)


class _ObjectSource:
    """Windows of an object (S, L, Ny, Nx) at integer corners, gathered one slice at a time;
    the gradient is scatter-added into an object-sized tensor, so no (B, S, L, ny, nx)
    buffer is ever allocated (a fresh one per batch costs page faults on the CPU).

    The scatter-add runs over a group of slices at once (:func:`_scatter_group`): on the
    CPU ``index_add_`` into one (1, Ny·Nx) row runs on one thread, and over G rows on up
    to G threads (PtyRAD case of issue 10, 32 windows of 98 × 98, 2 threads: 196 µs per
    slice one at a time, 93 µs in pairs). The backward writes each slice's gradient
    straight into its slot (:meth:`gradient_out`), so the grouping costs no copy.
    """

    def __init__(
        self, obj: torch.Tensor, corners: torch.Tensor, window: tuple[int, int], periodic: bool
    ) -> None:
        self.obj = obj
        self.states, self.slices = int(obj.shape[0]), int(obj.shape[1])
        self.big = (int(obj.shape[-2]), int(obj.shape[-1]))
        self.corners = corners.to(obj.device)
        self.batch = int(corners.shape[0])
        self.shape = window
        self.flat = _flat_indices(self.corners, window, self.big, periodic)
        self.periodic = periodic
        self.grad: torch.Tensor | None = None
        self.group = _scatter_group(obj, self.flat.numel(), self.slices)  # B·ny·nx pixels
        self._slots: torch.Tensor | None = None  # (S, group, B·ny·nx): pending slices
        self._lent: torch.Tensor | None = None

    def window(self, j: int) -> torch.Tensor:
        states = self.obj.shape[0]
        ny, nx = self.shape
        if self.periodic:
            picked = self.obj[:, j].reshape(states, -1).index_select(1, self.flat)
            return picked.reshape(states, self.batch, ny, nx).transpose(0, 1)
        every = self.obj[:, j].unfold(1, ny, 1).unfold(2, nx, 1)  # (S, Ny−ny+1, Nx−nx+1, ny, nx)
        return every[:, self.corners[:, 0], self.corners[:, 1]].transpose(0, 1)

    def start_backward(self) -> None:
        self.grad = torch.zeros_like(self.obj).reshape(*self.obj.shape[:2], -1)
        self._slots = self.obj.new_empty((self.states, self.group, self.flat.numel()))

    def gradient_out(self, j: int) -> torch.Tensor:
        """The (B, S, ny, nx) slot that slice j's gradient may be written into."""
        assert self._slots is not None
        ny, nx = self.shape
        slot = self._slots[:, j % self.group].view(self.states, self.batch, ny, nx)
        self._lent = slot.transpose(0, 1)
        return self._lent

    def add(self, j: int, conj_grad: torch.Tensor) -> None:
        # The backward visits the slices from the last to the first: a group's slots are
        # full when its lowest slice j (j % group = 0) has been added.
        assert self.grad is not None and self._slots is not None
        if conj_grad is not self._lent:
            self.gradient_out(j).copy_(conj_grad)
        self._lent = None
        if j % self.group == 0:
            count = min(self.group, self.slices - j)
            pending = self._slots[:, :count]
            self.grad[:, j : j + count].index_add_(2, self.flat, pending)

    def result(self) -> torch.Tensor:
        assert self.grad is not None
        grad, self.grad, self._slots = self.grad, None, None  # the graph may outlive it
        return grad.reshape(self.obj.shape).conj_physical_()


class _SubslicedSource:
    """Each slice of another source as ``substeps`` n planes of its n-th root.

    A slice of thickness Δz whose transmission is O becomes n planes of r = O^(1/n)
    (principal root: |O|^(1/n)·exp(i·arg(O)/n)) with the propagator of Δz/n between them,
    so the slice's potential is spread through its depth instead of sitting in one plane.
    For n = 1 the two are the same; as n grows the pass tends to the one a simulator with
    thin slices makes (the limit of the phase-grating approximation). The root is correct
    while |arg O| < π; a slice whose phase wraps needs thinner slices.

    Gradient (conjugated convention of the module docstring): the n planes of one slice add
    their h_r, and h_O = h_r · dr/dO = h_r / (n·r^(n−1)).
    """

    def __init__(self, inner: _PatchSource | _ObjectSource, substeps: int) -> None:
        self.inner = inner
        self.substeps = substeps
        self.batch, self.states = inner.batch, inner.states
        self.slices = inner.slices * substeps
        self._root: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None

    def window(self, k: int) -> torch.Tensor:
        if k % self.substeps == 0:  # the first plane of a slice: one root per slice
            self._root = _principal_power(
                self.inner.window(k // self.substeps), 1.0 / self.substeps
            )
        assert self._root is not None
        return self._root

    def start_backward(self) -> None:
        self.inner.start_backward()
        self._grad = None

    def gradient_out(self, k: int) -> None:
        return None  # the planes of a slice are summed first (add)

    def add(self, k: int, conj_grad: torch.Tensor) -> None:
        # the backward visits the planes of slice j from the last (k = jn + n − 1) to the
        # first (k = jn); the gradient leaves for the slice when the first is reached
        self._grad = conj_grad.clone() if self._grad is None else self._grad.add_(conj_grad)
        if k % self.substeps == 0:
            n = self.substeps
            # dr/dO = 1/(n·r^(n−1)) = O^(1/n − 1)/n; the slice is gathered again rather
            # than kept from the forward pass (one window, against n planes of FFTs)
            factor = _principal_power(self.inner.window(k // n), 1.0 / n - 1.0).div_(n)
            self.inner.add(k // n, self._grad.mul_(factor))
            self._grad = None

    def result(self) -> torch.Tensor:
        return self.inner.result()


_Source = _PatchSource | _ObjectSource | _SubslicedSource

#: bytes of pending slice gradients an object source may hold for one grouped scatter-add
_SCATTER_GROUP_BYTES = 16 * 2**20


def _scatter_group(obj: torch.Tensor, pixels: int, slices: int) -> int:
    """Slices per scatter-add: the CPU threads (one row each, see :class:`_ObjectSource`),
    within :data:`_SCATTER_GROUP_BYTES` of pending gradients; 1 on a GPU, where one
    slice's ``index_add_`` fills the device already."""
    if obj.device.type != "cpu":
        return 1
    slot_bytes = int(obj.shape[0]) * pixels * obj.element_size()
    fitting = max(1, _SCATTER_GROUP_BYTES // max(slot_bytes, 1))
    return max(1, min(torch.get_num_threads(), slices, fitting))


def _principal_power(transmission: torch.Tensor, exponent: float) -> torch.Tensor:
    """O^e on the principal branch, |O|^e·exp(i·e·arg O), with |O| kept off zero for
    negative e (a transmission is never near zero)."""
    magnitude = transmission.abs()
    if exponent < 0:
        magnitude = magnitude.clamp_min(_SMALLEST_TRANSMISSION)
    return torch.polar(magnitude.pow(exponent), torch.angle(transmission) * exponent)


def multislice_object_waves(
    probe: torch.Tensor,
    obj: torch.Tensor,
    corners: torch.Tensor,
    propagator: torch.Tensor,
    periodic: bool = False,
    substeps: int = 1,
) -> torch.Tensor:
    """Exit waves (B, S, M, ny, nx) of probes (B|1, M, ny, nx) through the windows of
    ``obj`` (S, L, Ny, Nx) at integer ``corners`` (B, 2), with a propagator (ny, nx) or
    (B, 1, 1, ny, nx): :func:`multislice_waves` of :func:`gather_windows`, gathering and
    scatter-adding one slice at a time (``substeps``: as in :func:`multislice_waves`).
    Shapes and bounds are checked by the caller
    (:func:`ptyscope.physics.multislice.multislice_forward`).
    """
    window = (int(probe.shape[-2]), int(probe.shape[-1]))
    object_source = _ObjectSource(obj, corners, window, periodic)
    source: _Source = object_source
    if substeps > 1:
        source = _SubslicedSource(object_source, substeps)
    waves: torch.Tensor = _MultisliceWaves.apply(probe, obj, propagator, source)  # type: ignore[no-untyped-call]
    return waves


class _MultisliceWaves(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        probe: torch.Tensor,
        windows_of: torch.Tensor,
        propagator: torch.Tensor,
        source: _Source,
    ) -> torch.Tensor:
        states, slices = source.states, source.slices
        batch = max(probe.shape[0], source.batch)
        wave = probe[:, None].expand(batch, states, *probe.shape[1:])
        keep = any(ctx.needs_input_grad)
        entering: list[torch.Tensor] = []
        windows: list[torch.Tensor] = []
        product: torch.Tensor | None = None  # ψ_j·O_j, reused: only the ψ_j are kept
        spectrum: torch.Tensor | None = None
        scaled = _with_inverse_norm(propagator)
        for j in range(slices):
            window = source.window(j)[:, :, None]  # (B|1, S, 1, ny, nx)
            if keep:
                entering.append(wave)
                windows.append(window)
            if j == slices - 1:
                wave = wave * window  # the exit wave (B, S, M, ny, nx)
                break
            product = torch.mul(wave, window, out=product)
            spectrum = fft_backend.fft2(product, out=spectrum)
            spectrum.mul_(scaled)
            wave = fft_backend.ifft2(spectrum)
        if keep:
            # save_for_backward, not ctx attributes: autograd frees them when the backward
            # has run, though the caller may keep the graph (e.g. the last chunk's output
            # while the next chunk's forward runs), and saved-tensor hooks see them.
            ctx.save_for_backward(probe, windows_of, propagator, *entering, *windows)
            ctx.source = source
        return wave

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        # Runs on h = ḡ*, the conjugated gradient (module docstring).
        probe, _, propagator, *saved = ctx.saved_tensors
        source = ctx.source
        slices = len(saved) // 2
        entering, windows = saved[:slices], saved[slices:]
        want_probe, want_windows, want_propagator = ctx.needs_input_grad[:3]
        if want_windows:
            source.start_backward()
        propagator_grad = torch.zeros_like(grad[:, 0, 0]) if want_propagator else None
        # Two work buffers, updated in place: no allocation inside the loop.
        # h: the conjugated gradient of the wave leaving slice j
        h = grad.conj_physical().contiguous()
        work = torch.empty_like(h)
        scaled = _with_inverse_norm(propagator)
        conj_grad: torch.Tensor | None = None
        for j in range(slices - 1, -1, -1):
            window = windows[j]
            if j < slices - 1:  # through ψ_{j+1} = F⁻¹[p·F[ψ_j·O_j]]
                fft_backend.ifft2(h, out=work)  # N·F⁻¹[h]: the 1/N is in `scaled`
                if propagator_grad is not None:
                    spectrum = fft_backend.fft2(entering[j] * window)
                    propagator_grad += (work * spectrum).sum(dim=(1, 2))
                work.mul_(scaled)
                fft_backend.fft2(work, out=h)
            if want_windows:
                # Σ over modes into one buffer (a product of all modes, then a sum, wrote
                # and read a mode-sized temporary): the source's slot where it lends one,
                # else a reused one; then over positions for one window shared by the batch
                lent = source.gradient_out(j)
                out = conj_grad if lent is None else lent
                target = torch.mul(h[:, :, 0], entering[j][:, :, 0], out=out)
                for m in range(1, h.shape[2]):
                    target.addcmul_(h[:, :, m], entering[j][:, :, m])
                if lent is None:
                    conj_grad = target
                source.add(j, _reduce_to(target, source.batch))
            if j > 0 or want_probe:
                h.mul_(window)
        probe_grad = None
        if want_probe:
            probe_grad = _reduce_to(h.sum(dim=1), probe.shape[0]).conj_physical_()
        windows_grad = source.result() if want_windows else None
        if propagator_grad is not None:
            propagator_grad = propagator_grad.conj_physical_().div_(_pixels(propagator))
            if propagator.ndim == 2:
                propagator_grad = propagator_grad.sum(dim=0)
            else:
                propagator_grad = propagator_grad.reshape(propagator.shape)
        return probe_grad, windows_grad, propagator_grad, None


def far_field_power(exit_waves: torch.Tensor) -> torch.Tensor:
    """Σ_m |F[exit]|² / N: the far-field power of exit waves (B, S, M, ny, nx), summed over
    the probe modes (axis 2), with the orthonormal FFT; real (B, S, ny, nx), zero frequency
    at index (0, 0).

    One transform each way, and the backward is a product and the inverse transform:
    for P = Σ_m |A_m|²/N with A = F[ψ], ḡ_ψ = F⁻¹_unnormalised[2·ḡ_P·A/N].
    """
    power: torch.Tensor = _FarFieldPower.apply(exit_waves)  # type: ignore[no-untyped-call]
    return power


class _FarFieldPower(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, exit_waves: torch.Tensor) -> torch.Tensor:
        spectrum = fft_backend.fft2(exit_waves.contiguous())
        # (re² + im²) summed over modes: 6× faster than a sum over (modes, re/im) of
        # view_as_real, whose reduction strides through memory
        power = (spectrum.real.square() + spectrum.imag.square()).sum(dim=2)
        power.div_(_pixels(exit_waves))
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(spectrum)
        return power

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (spectrum,) = ctx.saved_tensors
        weight = grad * (2.0 / _pixels(spectrum))  # (B, S, ny, nx), real
        wave_grad = spectrum * weight[:, :, None]
        return fft_backend.ifft2(wave_grad, out=wave_grad)


def _pixels(tensor: torch.Tensor) -> int:
    return int(tensor.shape[-2]) * int(tensor.shape[-1])


def _with_inverse_norm(propagator: torch.Tensor) -> torch.Tensor:
    """p/N: the propagator with the 1/N of the inverse transform folded in (the transforms
    of :mod:`ptyscope.physics.fft_backend` are unnormalised)."""
    return propagator / _pixels(propagator)


def _reduce_to(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Sum the leading (position) axis when the input it belongs to had batch 1."""
    return tensor.sum(dim=0, keepdim=True) if batch == 1 and tensor.shape[0] != 1 else tensor
