"""What one chunk's forward and backward pass allocates, measured on a tiny problem.

The memory of the forward model's autograd graph is not written down anywhere: it is
whatever :func:`~ptyscope.reconstruction.forward.predict` and the loss save for backward,
and whatever the backward allocates on its way. Rather than hard-coding today's numbers,
:func:`measure_chunk` runs the real forward and backward on the CPU for a problem with the
run's slices, modes and states, its window cut to at most :data:`MEASURED_WINDOW` pixels a
side, and an object barely larger than the window, at two chunk sizes, and records

* the bytes saved for backward (``torch.autograd.graph.saved_tensors_hooks``; tensors
  deduplicated by storage, the parameters, the data and the cached propagator left out);
* the bytes alive after every operation of the forward and the backward (a dispatch mode
  that follows every storage an operation creates until it is freed), separating the
  buffers of the object's shape, which scale with the object and not with the chunk
  (the backward of the patch gather scatters into a zero-filled object-sized tensor);
* the two-dimensional Fourier transforms the pass computes and the bytes its other
  operations write (for the time estimate).

Everything else in the graph scales linearly with the number of positions in the chunk
and with the window's pixels, so every event's bytes extrapolate exactly to the run's
chunk and window (the tiny problem's intercept included). Allocations inside a kernel
that never become a tensor (an FFT library's scratch space) are not seen.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ptyscope.physics import fft_backend
from ptyscope.physics.multislice import detector_offset_ramp

from .forward import PropagatorCache, predict
from .losses import get_loss
from .parameters import PtychoParameters

__all__ = ["ChunkMemory", "measure_chunk", "time_chunk"]

#: Chunk sizes of the two measurements (not 1: the forward model may broadcast one
#: position differently, and the two passes must run the same operations).
SIZES = (2, 3)

#: Largest side of the window the tiny problem is run with [px]. Every tensor of the pass
#: but the object's is (..., ny, nx), so the bytes scale with the window's pixels: a run's
#: window is measured at this size and scaled (exact but for 1-D tensors of one side's
#: length), which keeps the measurement small for any window.
MEASURED_WINDOW = 24

#: Electron wavelength used by the tiny problem [Å] (300 kV; any value works).
_WAVELENGTH_ANG = 0.0197

_FFT_OPS = ("_fft_c2c", "_fft_r2c", "_fft_c2r")


@dataclass(frozen=True)
class ChunkMemory:
    """Bytes and transforms of one chunk's forward + backward, as functions of its size c.

    Attributes
    ----------
    saved_intercept, saved_per_position:
        Bytes saved for backward: ``saved_intercept + saved_per_position · c``.
    live_intercept, live_per_position:
        float64 arrays (events,): bytes alive after each operation, without the
        object-sized buffers, as ``live_intercept + live_per_position · c``.
    object_buffers:
        int64 array (events,): object-sized buffers alive after each operation.
    ffts_intercept, ffts_per_position:
        Two-dimensional transforms (forward and backward): ``intercept + per_position · c``.
    written_intercept, written_per_position:
        Bytes the other (element-wise) operations write: ``intercept + per_position · c``.
    """

    saved_intercept: float
    saved_per_position: float
    live_intercept: np.ndarray
    live_per_position: np.ndarray
    object_buffers: np.ndarray
    ffts_intercept: float
    ffts_per_position: float
    written_intercept: float = 0.0
    written_per_position: float = 0.0

    def saved(self, chunk: int) -> int:
        """Bytes saved for backward by a chunk of ``chunk`` positions."""
        return round(self.saved_intercept + self.saved_per_position * chunk)

    def peak(self, chunk: int, object_bytes: int) -> int:
        """Most bytes alive at once during the chunk's pass (object buffers included)."""
        live = (
            self.live_intercept
            + self.live_per_position * chunk
            + self.object_buffers * float(object_bytes)
        )
        return round(float(live.max()))

    def ffts(self, chunk: int) -> float:
        """Two-dimensional transforms of a chunk of ``chunk`` positions."""
        return self.ffts_intercept + self.ffts_per_position * chunk

    def written(self, chunk: int) -> float:
        """Bytes written by the element-wise operations of a chunk of ``chunk`` positions."""
        return self.written_intercept + self.written_per_position * chunk


@dataclass(frozen=True)
class _Pass:
    """One measured pass: bytes saved for backward, (bytes alive, object buffers) after
    each operation, the object's bytes, FFTs and bytes written by the other operations."""

    saved: int
    events: list[tuple[int, int]]
    object_bytes: int
    ffts: float
    written: int


class _Tracker(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Follows every storage an operation creates until it is freed.

    After each operation it records the bytes alive (storages created inside the block)
    and how many of them have ``object_bytes`` bytes; it counts two-dimensional FFTs.
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Never run under torch.compile: without this, torch wraps __torch_dispatch__ for
        # Dynamo, which imports torch._dynamo (seconds) on the first operation.
        return False

    def __init__(self, excluded: set[int], object_bytes: int, window: tuple[int, int]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.excluded = excluded
        self.object_bytes = object_bytes
        self.window_pixels = window[0] * window[1]
        self.live = 0
        self.objects = 0
        self.events: list[tuple[int, int]] = []
        self.ffts = 0.0
        self.written = 0
        self._refs: dict[int, weakref.ref[torch.UntypedStorage]] = {}

    def _freed(self, key: int, nbytes: int) -> Callable[[Any], None]:
        def callback(_: Any) -> None:
            self._refs.pop(key, None)
            if nbytes == self.object_bytes:
                self.objects -= 1
            else:
                self.live -= nbytes

        return callback

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        fft = name in _FFT_OPS and len(args) > 1 and len(list(args[1])) >= 2
        if fft:  # in units of one transform of the probe window
            self.ffts += args[0].numel() / self.window_pixels
        in_place = name.endswith("_")
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            pointer = storage.data_ptr()
            key = id(storage)
            if in_place and not fft:
                self.written += tensor.numel() * tensor.element_size()
            if pointer in self.excluded or key in self._refs or storage.nbytes() == 0:
                continue  # a view, or an in-place result, of a storage already counted
            nbytes = storage.nbytes()
            self._refs[key] = weakref.ref(storage, self._freed(key, nbytes))
            if not fft and not in_place:
                self.written += nbytes
            if nbytes == self.object_bytes:
                self.objects += 1
            else:
                self.live += nbytes
        self.events.append((self.live, self.objects))
        return out


def _tiny_problem(
    batch: int,
    window: tuple[int, int],
    slices: int,
    modes: int,
    states: int,
    tilt_map: bool,
    exit_ramp: bool = False,
    device: torch.device | str = "cpu",
) -> tuple[PtychoParameters, PropagatorCache, torch.Tensor]:
    """Random parameters, frequencies and data of a chunk, drawn on the CPU (the same
    numbers on every device) and placed on ``device``."""
    ny, nx = window
    generator = torch.Generator().manual_seed(0)
    # Odd margins make the object's byte count differ from every activation's.
    big = (ny + 7, nx + 9)
    phase = 0.1 * torch.randn((states, slices, *big), generator=generator)
    obj = torch.polar(torch.ones_like(phase), phase)
    probe = torch.randn((modes, ny, nx), generator=generator, dtype=torch.complex64)
    centre = torch.tensor([big[0] / 2, big[1] / 2])
    positions = centre + 0.3 * torch.rand((batch, 2), generator=generator)
    tilt = torch.zeros((batch, 2) if tilt_map else (2,))
    params = PtychoParameters(obj, probe, positions, tilt, 2.0).to(device)
    ky = (torch.fft.fftfreq(ny)[:, None].expand(ny, nx) * 2.0).contiguous().to(device)
    kx = (torch.fft.fftfreq(nx)[None, :].expand(ny, nx) * 2.0).contiguous().to(device)
    # Any fractional offset: the ramp's cost does not depend on its value.
    ramp = detector_offset_ramp(window, (0.25, -0.25), device) if exit_ramp else None
    cache = PropagatorCache(ky, kx, _WAVELENGTH_ANG, exit_ramp=ramp)
    measured = torch.rand((batch, ny, nx), generator=generator).to(device)
    return params, cache, measured


def _pointers(tensors: list[torch.Tensor | None]) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors if t is not None}


def _measure(
    batch: int,
    window: tuple[int, int],
    slices: int,
    modes: int,
    states: int,
    *,
    loss: str,
    tilt_map: bool,
    propagator_trainable: bool,
    gradients_exist: bool,
    exit_ramp: bool,
) -> _Pass:
    """What one chunk of ``batch`` positions saves, holds, transforms and writes."""
    params, cache, measured = _tiny_problem(
        batch, window, slices, modes, states, tilt_map, exit_ramp
    )
    if gradients_exist:  # later chunks of a batch accumulate into existing gradients
        for parameter in params.parameters():
            parameter.grad = torch.zeros_like(parameter)
    if not propagator_trainable:
        cache.propagator(params, torch.arange(batch), False)  # cached before the pass
    existing: list[torch.Tensor | None] = [*params.parameters(), *params.buffers()]
    existing += [measured, cache.ky, cache.kx, cache._cached, cache.exit_ramp]
    existing += [p.grad for p in params.parameters()]
    excluded = _pointers(existing)
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    loss_fn = get_loss(loss)
    object_bytes = params.object.numel() * params.object.element_size()
    indices = torch.arange(batch)
    tracker = _Tracker(excluded, object_bytes, window)
    # torch's transforms here: the tracker sees (and counts) only ATen operations, and
    # FFTW's fill the same tensors the same way (fft_backend)
    with tracker, fft_backend.torch_transforms():
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            predicted = predict(
                params, indices, cache, 1.0, propagator_trainable=propagator_trainable
            )
            value = loss_fn(predicted, measured[indices]) / batch
        del predicted
        torch.autograd.backward(value)
        del value
    return _Pass(sum(saved.values()), tracker.events, object_bytes, tracker.ffts, tracker.written)


def measure_chunk(
    window: tuple[int, int],
    slices: int,
    modes: int,
    states: int,
    *,
    loss: str = "amplitude",
    tilt_map: bool = False,
    propagator_trainable: bool = False,
    gradients_exist: bool = False,
    exit_ramp: bool = False,
) -> ChunkMemory:
    """Measure a chunk's forward + backward on a tiny CPU problem (module docstring).

    Parameters
    ----------
    window:
        Probe window (ny, nx) [px].
    slices, modes, states:
        Object slices, probe modes and object states.
    loss:
        Loss name (:data:`~ptyscope.reconstruction.losses.LOSSES`).
    tilt_map:
        One tilt per position (the propagator is built per chunk).
    propagator_trainable:
        The tilt or thickness is fitted (the propagator is part of the graph).
    gradients_exist:
        The parameters' gradients exist before the pass (a chunk after the first of a
        batch): the object-sized gradient of the gather is added and freed.
    exit_ramp:
        The data's optical axis lies between pixels, so the exit waves are multiplied by
        the detector-offset ramp (one more exit wave saved per position and mode).

    Returns
    -------
    ChunkMemory
        Linear in the chunk size; exact for this forward model up to kernel scratch space.

    Examples
    --------
    >>> chunk = measure_chunk((16, 16), slices=2, modes=1, states=1)
    >>> chunk.saved(8) > chunk.saved(4) > 0
    True
    """
    if len(window) != 2 or min(window) < 2:
        raise ValueError(f"window must be (ny, nx) with both >= 2 px, got {window!r}")
    for name, value in (("slices", slices), ("modes", modes), ("states", states)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    options: dict[str, Any] = {
        "loss": loss,
        "tilt_map": tilt_map,
        "propagator_trainable": propagator_trainable,
        "gradients_exist": gradients_exist,
        "exit_ramp": exit_ramp,
    }
    small, large = SIZES
    reduced = (min(window[0], MEASURED_WINDOW), min(window[1], MEASURED_WINDOW))
    scale = window[0] * window[1] / (reduced[0] * reduced[1])
    a = _measure(small, reduced, slices, modes, states, **options)
    b = _measure(large, reduced, slices, modes, states, **options)
    step = large - small
    live_a = np.array([e[0] for e in a.events], dtype=np.float64)
    live_b = np.array([e[0] for e in b.events], dtype=np.float64)
    objects_a = np.array([e[1] for e in a.events], dtype=np.int64)
    objects_b = np.array([e[1] for e in b.events], dtype=np.int64)
    if live_a.shape != live_b.shape or not np.array_equal(objects_a, objects_b):
        # The operations differ between the two sizes: extrapolate the peaks instead.
        peak_a, peak_b = float(live_a.max()), float(live_b.max())
        live_a, live_b = np.array([peak_a]), np.array([peak_b])
        objects_a = np.array([max(objects_a.max(), objects_b.max())])
    per_position = (live_b - live_a) / step

    def line(value_a: float, value_b: float) -> tuple[float, float]:
        slope = (value_b - value_a) / step
        return value_a - small * slope, slope

    saved = line(a.saved, b.saved)
    ffts = line(a.ffts, b.ffts)
    written = line(a.written, b.written)
    return ChunkMemory(
        saved_intercept=saved[0] * scale,
        saved_per_position=saved[1] * scale,
        live_intercept=(live_a - small * per_position) * scale,
        live_per_position=per_position * scale,
        object_buffers=objects_a,
        ffts_intercept=ffts[0],
        ffts_per_position=ffts[1],
        written_intercept=written[0] * scale,
        written_per_position=written[1] * scale,
    )


def time_chunk(
    window: tuple[int, int],
    slices: int,
    modes: int,
    states: int,
    device: torch.device | str = "cpu",
    *,
    positions: int = 1,
    repeats: int = 3,
    exit_ramp: bool = False,
) -> float:
    """Wall seconds of one forward + backward pass of ``positions`` on ``device``.

    The tiny problem of :func:`measure_chunk`, its window cut to at most
    :data:`MEASURED_WINDOW` (the fastest of ``repeats`` after a warm-up): for one position
    mostly the fixed cost of a pass, the launch and dispatch of its operations, which a
    chunk pays once whatever its size. ``exit_ramp`` as in :func:`measure_chunk`.
    """
    device = torch.device(device)
    window = (min(window[0], MEASURED_WINDOW), min(window[1], MEASURED_WINDOW))
    params, cache, measured = _tiny_problem(
        positions, window, slices, modes, states, False, exit_ramp, device
    )
    indices = torch.arange(positions, device=device)
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        value = get_loss("amplitude")(predict(params, indices, cache, 1.0), measured).sum()
        torch.autograd.backward(value)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times[1:])
