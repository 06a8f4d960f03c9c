"""Predicted peak memory and time per iteration of a reconstruction (``ptyscope estimate``).

Peak memory
-----------
"Peak memory" is the most memory the reconstruction holds at once beyond what its process
held before it started (Python, torch and ptyscope imported): on the CPU the growth of the
resident set, on CUDA the device memory torch allocates (``torch.cuda.max_memory_allocated``)
and, separately, the host memory. It is predicted from the config and the data file's
header alone (the data is not read), as the largest of four moments, each a sum of named
terms:

* **preflight checks**: a block of the data (at most 32 MiB as stored) and its working
  copies (float64 sums, masks): four times the block;
* **reading the data** (host): the array as stored, its float32 copy when stored
  otherwise, the float32 patterns kept, the initial object while it is built (its float32
  phases and the complex64 object) and the parameters;
* **forward and backward of one chunk** (the largest of the equal chunks a batch is
  split into, :mod:`~ptyscope.reconstruction.chunking`): the persistent terms below, the
  gradients of the earlier chunks of the update if there are several, and what the pass
  itself allocates. That last part is measured, not written down:
  :mod:`~ptyscope.reconstruction.activations` runs the real forward model and loss on a
  tiny problem of the same slices, modes and states (and the window, cut to at most
  24 × 24 px and scaled by its pixels) at 2 and 3 positions and extrapolates linearly
  (exactly: every tensor of the pass but the object-sized gradient scales with the
  positions), giving the tensors saved for
  backward and the largest set of tensors alive at once in the backward (gradients of the
  waves, FFT outputs, the object-sized gradient of the patch gather);
* **the optimiser step**: the persistent terms, the gradients and the step's temporaries
  (Adam on the CPU: √v and its quotient, two copies of the largest parameter; the foreach
  kernels on CUDA: two copies of all the fitted parameters).

The persistent terms: the measured patterns (N × ny × nx float32; on the host for a CUDA
run, where the engine moves one chunk at a time to the device), the object (states ×
slices × Ny × Nx complex64), the probe (modes × ny × nx complex64), the smaller parameters
(positions, tilt, thickness, state weights), the optimiser's state (Adam: two moments per
fitted parameter; SGD: one; L-BFGS: about 22 flat copies of all the parameters, from its
history of 10, not validated by measurement), the numerical guard's snapshot (a deep copy
of the parameters and the optimiser state, taken before every iteration) and the
propagator.

Three terms are not tensors; they are host memory (the device's own on the CPU):
:data:`CPU_RUNTIME_BYTES` (code pages and Python objects a run touches for the first
time), :data:`DYNAMO_BYTES` (``torch._dynamo``, which the first torch optimiser of a
process imports; left out when this process has imported it already) and, on the CPU only,
the heap allowance :data:`CPU_HEAP_ALLOWANCE`: glibc carves tensors below its 32 MiB mmap
threshold from a heap whose freed holes later allocations only partly reuse, so the
resident set of a chunk's pass exceeds the tensors alive. The allowance is the part of the
prediction that depends most on the machine: measured 0.7-1.2 times the pass's tensors.

Not modelled: an FFT library's scratch space, the CUDA caching allocator's fragmentation
and the CUDA context (neither is in ``max_memory_allocated``; the free memory
``torch.cuda.mem_get_info`` reports is already net of the context), the second snapshot
while rolling back after a NaN, and the buffers of a data-parallel all-reduce.

Time per iteration
------------------
An estimate, with its basis printed beside it, the sum of three parts measured on the
device: the two-dimensional FFTs of one iteration (counted on the tiny problem, forward
and backward; with today's forward model 2·M·(1 + S·(2L − 1)) per position) times one
transform of the probe window, timed in batches like the run's; the bytes the element-wise
operations write (counted on the tiny problem, plus the passes over the object: the
gather's backward per chunk, the optimiser per update, the snapshot and constraints per
iteration) times a copy's time per byte times :data:`ELEMENTWISE_FACTOR`; and, per pass,
its fixed cost (the dispatch of its operations: the tiny problem's pass of one position
in a window of at most 24 × 24 px, timed on the device). Timings are the fastest of a few
repetitions. L-BFGS evaluates the loss up to 25 times per iteration: its estimate is that
upper bound.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ptyscope._device import Available, available_memory
from ptyscope.config import ReconstructionConfig
from ptyscope.data.checks import CHECK_BLOCK_BYTES
from ptyscope.data.dataset import Dataset4D
from ptyscope.physics import fft_backend

from .activations import ChunkMemory, measure_chunk, time_chunk
from .chunking import auto_chunk_size, chunk_sizes
from .setup import axis_offset_px, object_grid, scan_half_mask

__all__ = [
    "ELEMENTWISE_FACTOR",
    "Available",
    "MemoryLimitError",
    "MemoryTerm",
    "Moment",
    "RunEstimate",
    "RunShape",
    "available_memory",
    "check_memory",
    "estimate_run",
    "run_shape",
]

MIB = 2**20

#: Seconds of element-wise work per byte written, in units of a copy's seconds per byte:
#: complex products read two operands and compute; a copy reads one. Calibrated with the
#: calibration configs of ``benchmarks/estimate_accuracy.py`` on a 2-core x86 CPU (torch
#: 2.13): 3.5 where the element-wise work is a third of the time, 14 (weakly determined)
#: where the FFTs take 95 %; 4 fits both within 15 %. See docs/performance.md.
ELEMENTWISE_FACTOR = 4.0

#: Resident memory a CPU run gains beyond its tensors: code pages of HDF5, MKL and numpy
#: loaded on first use (about 6 MiB), Python objects, autograd's graph nodes, FFT plans.
#: Calibrated on the calibration configs of benchmarks/estimate_accuracy.py (8.4-8.9 MiB).
CPU_RUNTIME_BYTES = 17 * MIB // 2

#: Resident memory of ``torch._dynamo``, which the first torch optimiser of a process
#: imports (Python objects and code; host memory). Measured: 69 MiB with torch 2.13.
DYNAMO_BYTES = 69 * MIB

#: Freed memory glibc's heap keeps resident during a chunk's pass, as a fraction of the
#: tensors the pass allocates (tensors below glibc's 32 MiB mmap threshold are carved from
#: the heap, whose holes later allocations of other sizes only partly reuse). Calibrated on
#: the calibration configs of benchmarks/estimate_accuracy.py, not on the three it checks:
#: 0.65-1.2 from run to run, mean 0.85.
CPU_HEAP_ALLOWANCE = 0.85

#: Name of the heap allowance term (the one term that is not a tensor).
HEAP_TERM = "freed memory glibc keeps resident (heap allowance)"

#: Passes over the object per chunk (the gather's backward: zero fill, scatter, add to
#: the gradient), per update (Adam: about 12 element-wise passes) and per iteration (the
#: guard's snapshot, the constraints).
OBJECT_PASSES_PER_CHUNK = 3
OBJECT_PASSES_PER_UPDATE = {"adam": 12, "sgd": 4, "lbfgs": 8}
OBJECT_PASSES_PER_ITERATION = 8

#: Loss evaluations per L-BFGS step (torch's default max_eval for max_iter = 20).
LBFGS_EVALUATIONS = 25
#: Flat copies of all parameters held by L-BFGS (history 10: 2 × 10, plus d and the
#: previous gradient).
LBFGS_COPIES = 22


class MemoryLimitError(ValueError):
    """The predicted peak memory exceeds the memory available on the device."""


@dataclass(frozen=True)
class RunShape:
    """The sizes that set a reconstruction's memory and time.

    Attributes
    ----------
    patterns:
        N, patterns reconstructed (one half of the scan with ``data.scan_half``).
    scan_patterns:
        Patterns in the file.
    window:
        (ny, nx) probe window = detector [px].
    object_shape:
        (states, slices, Ny, Nx) of the object.
    modes:
        Probe modes.
    stored_itemsize, stored_float32:
        Bytes per detector pixel in the file, and whether it is stored as float32.
    batch, chunk, updates:
        Patterns per update (this process's share), in the largest forward/backward pass
        (chunk) of an update, and updates per iteration.
    optimizer, loss:
        Names from the config.
    tilt_map, propagator_trainable:
        One tilt per position; the tilt or thickness is fitted.
    fit_probe, fit_positions:
        Groups that get an optimiser state.
    processes:
        Processes of a data-parallel run (each holds everything but its share of a batch).
    substeps:
        Planes per slice of the forward model; the pass is measured as one over
        slices × substeps planes (the same FFTs; its saved windows are an upper bound, the
        planes of one slice share theirs).
    exit_ramp:
        The data's optical axis lies between pixels: the model multiplies its exit waves
        by the detector-offset ramp.
    """

    patterns: int
    scan_patterns: int
    window: tuple[int, int]
    object_shape: tuple[int, int, int, int]
    modes: int
    stored_itemsize: int
    stored_float32: bool
    batch: int
    chunk: int
    updates: int
    optimizer: str
    loss: str
    tilt_map: bool = False
    propagator_trainable: bool = False
    fit_probe: bool = True
    fit_positions: bool = False
    processes: int = 1
    substeps: int = 1
    exit_ramp: bool = False

    @property
    def planes(self) -> int:
        """Planes of the multislice pass: slices × substeps."""
        return self.object_shape[1] * self.substeps

    @property
    def chunks_per_update(self) -> int:
        return math.ceil(self.batch / self.chunk)

    @property
    def object_bytes(self) -> int:
        return math.prod(self.object_shape) * 8

    @property
    def probe_bytes(self) -> int:
        return self.modes * self.window[0] * self.window[1] * 8

    @property
    def small_parameter_bytes(self) -> int:
        """Positions (and their nominal values), tilt, thickness and state weights."""
        tilt = self.patterns * 8 if self.tilt_map else 8
        return 2 * self.patterns * 8 + tilt + 4 + self.object_shape[0] * 4

    @property
    def data_bytes(self) -> int:
        return self.patterns * self.window[0] * self.window[1] * 4


def run_shape(
    config: ReconstructionConfig,
    dataset: Dataset4D,
    processes: int = 1,
    device: torch.device | str = "cpu",
) -> RunShape:
    """The sizes of the run ``config`` describes on ``dataset`` (read lazily, header only).

    ``processes``: processes of a data-parallel run (each takes 1/processes of a batch);
    ``device``: where it runs (``chunk_size = "auto"`` depends on it).
    """
    if not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be an integer >= 1, got {processes!r}")
    obj, opt, propagator = config.object, config.optimization, config.propagator
    window = dataset.detector_shape
    _, _, _, (big_y, big_x) = object_grid(dataset)
    patterns = int(scan_half_mask(dataset.scan_shape, config.data.scan_half).sum())
    batch = patterns if opt.batch_size is None else min(opt.batch_size, patterns)
    if opt.batching == "compact" and batch < patterns and config.data.scan_half is None:
        side = max(1, round(math.sqrt(batch)))  # the engine's square tiles
        batch = min(side * side, patterns)
    updates = 1 if opt.optimizer == "lbfgs" else math.ceil(patterns / batch)
    share = math.ceil(batch / processes)
    limit = opt.chunk_size
    if limit == "auto":
        limit = auto_chunk_size(window, config.probe.modes, obj.states, device)
    return RunShape(
        patterns=patterns,
        scan_patterns=dataset.scan_shape[0] * dataset.scan_shape[1],
        window=window,
        object_shape=(obj.states, obj.slices, big_y, big_x),
        modes=config.probe.modes,
        stored_itemsize=dataset.dtype.itemsize,
        stored_float32=dataset.dtype == np.float32,
        batch=share,
        chunk=chunk_sizes(share, limit)[0],
        updates=updates,
        optimizer=opt.optimizer,
        loss=opt.loss,
        tilt_map=propagator.fit_tilt == "map",
        propagator_trainable=propagator.fit_thickness
        or (propagator.fit_tilt != "off" and propagator.tilt_lr > 0),
        fit_probe=config.probe.fit,
        fit_positions=config.positions.fit,
        processes=processes,
        substeps=propagator.planes_per_slice(config.object.slice_thickness_ang),
        exit_ramp=axis_offset_px(dataset) is not None,
    )


@dataclass(frozen=True)
class MemoryTerm:
    """One named contribution to a moment's memory [bytes], and where it lives."""

    name: str
    nbytes: int
    where: str = "device"


@dataclass(frozen=True)
class Moment:
    """The memory held at one moment of the run: the sum of its terms."""

    name: str
    terms: tuple[MemoryTerm, ...]

    def total(self, where: str | None = None, *, allowance: bool = True) -> int:
        """Sum of the terms (those on ``where`` only, if given; without the CPU heap
        allowance if ``allowance`` is false: the tensors alone)."""
        return sum(
            t.nbytes
            for t in self.terms
            if (where is None or t.where == where) and (allowance or t.name != HEAP_TERM)
        )


@dataclass(frozen=True)
class RunEstimate:
    """Predicted memory and time of one reconstruction on one device.

    Attributes
    ----------
    device:
        Where it runs.
    shape:
        :class:`RunShape`.
    persistent:
        Terms held through every iteration.
    moments:
        Reading the data, a chunk's pass and the optimiser step, each with every term.
    chunk:
        The measured chunk memory and FFT count (:class:`ChunkMemory`).
    ffts_per_iteration:
        Two-dimensional transforms of the probe window per iteration.
    bytes_written_per_iteration:
        Bytes the element-wise operations of the passes write, plus the passes over the
        object (the gather's backward, the optimiser, the snapshot, the constraints).
    chunks_per_iteration:
        Forward and backward passes per iteration.
    seconds_per_fft, seconds_per_byte, seconds_per_chunk:
        Measured on the device: one transform of the window in batches like the run's, a
        copy per byte, the fixed cost of a pass (``None`` when timing was skipped).
    """

    device: torch.device
    shape: RunShape
    persistent: tuple[MemoryTerm, ...]
    moments: tuple[Moment, ...]
    chunk: ChunkMemory
    ffts_per_iteration: float
    bytes_written_per_iteration: float
    chunks_per_iteration: int
    seconds_per_fft: float | None = None
    seconds_per_byte: float | None = None
    seconds_per_chunk: float | None = None

    def peak(self, where: str = "device", *, allowance: bool = True) -> int:
        """Predicted peak bytes on the device, or on the host (``where="host"``).

        On the CPU both are the same memory, and both give the largest moment's total.
        ``allowance=False`` leaves out the CPU heap allowance: the tensors alone.
        """
        return self.peak_moment(where, allowance=allowance).total(
            None if self.device.type == "cpu" else where, allowance=allowance
        )

    def peak_moment(self, where: str = "device", *, allowance: bool = True) -> Moment:
        """The moment with the most memory on ``where``."""
        key = None if self.device.type == "cpu" else where
        return max(self.moments, key=lambda m: m.total(key, allowance=allowance))

    @property
    def seconds_per_iteration(self) -> float | None:
        """Predicted wall seconds of one iteration (module docstring), ``None`` untimed."""
        parts = self.seconds_parts()
        return None if parts is None else sum(parts.values())

    def seconds_parts(self) -> dict[str, float] | None:
        """The predicted seconds per iteration by basis: FFTs, element-wise, fixed."""
        if self.seconds_per_fft is None or self.seconds_per_byte is None:
            return None
        assert self.seconds_per_chunk is not None
        evaluations = LBFGS_EVALUATIONS if self.shape.optimizer == "lbfgs" else 1
        return {
            "ffts": evaluations * self.ffts_per_iteration * self.seconds_per_fft,
            "element-wise": evaluations
            * ELEMENTWISE_FACTOR
            * self.bytes_written_per_iteration
            * self.seconds_per_byte,
            "fixed": evaluations * self.chunks_per_iteration * self.seconds_per_chunk,
        }


def _optimizer_state(shape: RunShape) -> tuple[int, str]:
    """Bytes of the optimiser's state and how they are made up."""
    fitted = shape.object_bytes + (shape.probe_bytes if shape.fit_probe else 0)
    fitted += shape.patterns * 8 if shape.fit_positions else 0
    if shape.optimizer == "adam":
        return 2 * fitted, "adam: 2 moments of the fitted parameters"
    if shape.optimizer == "sgd":
        return fitted, "sgd: 1 momentum of the fitted parameters"
    everything = shape.object_bytes + shape.probe_bytes + shape.small_parameter_bytes
    return LBFGS_COPIES * everything, f"lbfgs: ~{LBFGS_COPIES} flat copies of all parameters"


def _step_temporaries(shape: RunShape, device: torch.device) -> int:
    fitted = shape.object_bytes + (shape.probe_bytes if shape.fit_probe else 0)
    if shape.optimizer == "adam":  # √v and √v / c alive at once
        return 2 * (fitted if device.type == "cuda" else shape.object_bytes)
    if shape.optimizer == "lbfgs":  # the flat gradient and the line search's start point
        return 2 * (shape.object_bytes + shape.probe_bytes + shape.small_parameter_bytes)
    return 0


def memory_moments(
    shape: RunShape, chunk: ChunkMemory, device: torch.device, *, dynamo_loaded: bool = False
) -> tuple[tuple[MemoryTerm, ...], tuple[Moment, ...]]:
    """The persistent terms and the moments of a run (module docstring) [bytes].

    ``chunk`` is measured on a first chunk of an update (no gradients yet). A later chunk
    finds the gradients of the earlier ones and adds its own to them in place; its peak is
    the same pass plus those gradients, since the gather's backward holds its two
    object-sized buffers beside the gradient in both cases. ``dynamo_loaded``: this process
    has imported ``torch._dynamo`` already (it then costs the run nothing).
    """
    states, slices, big_y, big_x = shape.object_shape
    ny, nx = shape.window
    data_where = "device" if device.type == "cpu" else "host"
    state, state_note = _optimizer_state(shape)
    parameters = shape.object_bytes + shape.probe_bytes + shape.small_parameter_bytes
    cached = 0 if shape.tilt_map or shape.propagator_trainable else ny * nx * 8
    persistent = (
        MemoryTerm(
            f"measured data ({shape.patterns} × {ny} × {nx} float32)", shape.data_bytes, data_where
        ),
        MemoryTerm(
            f"object ({states} × {slices} × {big_y} × {big_x} complex64)", shape.object_bytes
        ),
        MemoryTerm(f"probe ({shape.modes} × {ny} × {nx} complex64)", shape.probe_bytes),
        MemoryTerm("positions, tilt, thickness, state weights", shape.small_parameter_bytes),
        MemoryTerm(f"optimiser state ({state_note})", state),
        MemoryTerm("guard snapshot (parameters + optimiser state)", parameters + state),
        MemoryTerm("propagator (frequencies, cached propagator)", 2 * ny * nx * 4 + cached),
    )
    gradients = (
        MemoryTerm("object gradient", shape.object_bytes),
        MemoryTerm("probe and position gradients", shape.probe_bytes + shape.patterns * 8),
    )
    c = shape.chunk
    saved = chunk.saved(c)
    pass_terms = (
        MemoryTerm(f"activations saved for backward (chunk of {c})", saved),
        MemoryTerm(
            "backward: gradients and gather buffers alive at once",
            chunk.peak(c, shape.object_bytes) - saved,
        ),
    )
    earlier = gradients if shape.chunks_per_update > 1 else ()
    stored = shape.scan_patterns * ny * nx * shape.stored_itemsize
    converted = 0 if shape.stored_float32 else shape.scan_patterns * ny * nx * 4
    block = min(stored, CHECK_BLOCK_BYTES)
    runtime: tuple[MemoryTerm, ...] = (
        MemoryTerm("libraries and caches loaded on first use", CPU_RUNTIME_BYTES, "host"),
    )
    reading = (
        MemoryTerm("data as stored in the file", stored, "host"),
        MemoryTerm("data converted to float32", converted, "host"),
        MemoryTerm("patterns kept (float32)", shape.data_bytes, "host"),
        MemoryTerm(
            "initial object being built (phases + object)", shape.object_bytes * 3 // 2, "host"
        ),
        MemoryTerm("parameters", parameters),
    )
    dynamo = MemoryTerm("torch._dynamo, imported by torch.optim", DYNAMO_BYTES, "host")
    engine = runtime if dynamo_loaded else (*runtime, dynamo)
    moments = (
        Moment(
            "preflight checks of the data",
            (*runtime, MemoryTerm("a block of the data and its working copies", 4 * block, "host")),
        ),
        Moment("reading the data", (*runtime, *reading)),
        Moment(
            f"forward + backward of a chunk of {c}",
            (
                *engine,
                *persistent,
                *earlier,
                *pass_terms,
                *_heap_allowance(pass_terms, device),
            ),
        ),
        Moment(
            "optimiser step",
            (
                *engine,
                *persistent,
                *gradients,
                MemoryTerm("optimiser step temporaries", _step_temporaries(shape, device)),
            ),
        ),
    )
    return persistent, moments


def _heap_allowance(terms: tuple[MemoryTerm, ...], device: torch.device) -> tuple[MemoryTerm, ...]:
    """On the CPU: the freed memory glibc's heap keeps resident (module docstring)."""
    if device.type != "cpu":
        return ()
    allocated = sum(t.nbytes for t in terms)
    return (MemoryTerm(HEAP_TERM, round(CPU_HEAP_ALLOWANCE * allocated)),)


def _time_fft(window: tuple[int, int], device: torch.device, waves: int, repeats: int = 7) -> float:
    """Seconds per two-dimensional complex64 FFT of ``window`` on ``device``, in batches of
    ``waves`` transforms (at most 64 MiB); the fastest of ``repeats`` (other work on the
    machine only ever slows a repetition down)."""
    batch = max(1, min(waves, (64 * MIB) // (window[0] * window[1] * 8)))
    generator = torch.Generator().manual_seed(0)
    data = torch.randn((batch, *window), generator=generator, dtype=torch.complex64)
    data = data.to(device)
    out = torch.empty_like(data)
    # the library the multislice pass uses (FFTW on the CPU where installed)
    return _fastest(lambda: fft_backend.fft2(data, out=out), device, repeats) / batch


def _time_copy(nbytes: int, device: torch.device, repeats: int = 7) -> float:
    """Seconds per byte of a copy of about ``nbytes`` (4 to 64 MiB) on ``device``, the
    fastest of ``repeats``."""
    size = max(4 * MIB, min(nbytes, 64 * MIB))
    source = torch.ones(size // 4, device=device)
    target = torch.empty_like(source)
    return _fastest(lambda: target.copy_(source), device, repeats) / size


def _fastest(work: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The shortest wall time of ``work`` after one warm-up call."""
    times = []
    for _ in range(repeats + 1):
        _synchronize(device)
        start = time.perf_counter()
        work()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate_run(
    config: ReconstructionConfig,
    dataset: Dataset4D,
    device: torch.device | str = "cpu",
    *,
    processes: int = 1,
    timing: bool = True,
) -> RunEstimate:
    """Predict the peak memory and the time per iteration of a reconstruction.

    Parameters
    ----------
    config:
        The ``ptyscope reconstruct`` config.
    dataset:
        Its data as read by ``read_4dstem`` (lazily: only the header and calibration are
        used).
    device:
        Where the run would go; FFTs are timed there.
    processes:
        Processes of a data-parallel run.
    timing:
        Time an FFT and a pass over the object on ``device`` (``False``: memory only).

    Returns
    -------
    RunEstimate
        Every memory term, the peak, the FFTs per iteration and the predicted seconds.
    """
    device = torch.device(device)
    shape = run_shape(config, dataset, processes, device)
    states = shape.object_shape[0]
    chunk = measure_chunk(
        shape.window,
        shape.planes,
        shape.modes,
        states,
        loss=shape.loss,
        tilt_map=shape.tilt_map,
        propagator_trainable=shape.propagator_trainable,
        exit_ramp=shape.exit_ramp,
    )
    dynamo_loaded = "torch._dynamo" in sys.modules
    persistent, moments = memory_moments(shape, chunk, device, dynamo_loaded=dynamo_loaded)
    chunks = shape.updates * shape.chunks_per_update
    positions = shape.batch * shape.updates
    ffts = chunks * chunk.ffts_intercept + chunk.ffts_per_position * positions
    passes = (
        OBJECT_PASSES_PER_CHUNK * chunks
        + OBJECT_PASSES_PER_UPDATE[shape.optimizer] * shape.updates
        + OBJECT_PASSES_PER_ITERATION
    )
    written = chunks * chunk.written_intercept + chunk.written_per_position * positions
    written += passes * shape.object_bytes
    seconds_fft = seconds_byte = seconds_chunk = None
    if timing:
        seconds_fft = _time_fft(shape.window, device, shape.chunk * states * shape.modes)
        wave = shape.chunk * states * shape.modes * shape.window[0] * shape.window[1] * 8
        seconds_byte = _time_copy(wave, device)  # the size the pass's operations write
        seconds_chunk = time_chunk(
            shape.window, shape.planes, shape.modes, states, device, exit_ramp=shape.exit_ramp
        )
    return RunEstimate(
        device,
        shape,
        persistent,
        moments,
        chunk,
        ffts,
        written,
        chunks,
        seconds_fft,
        seconds_byte,
        seconds_chunk,
    )


def check_memory(
    estimate: RunEstimate,
    *,
    device: Available | None = None,
    host: Available | None = None,
    config_name: str = "optimization.memory_check",
) -> None:
    """Refuse a run whose predicted peak exceeds the available memory.

    Parameters
    ----------
    estimate:
        :func:`estimate_run`.
    device, host:
        Memory available on the run's device and on the host (for a CUDA run; the CPU's
        is ``device``); default :func:`available_memory`. Unknown memory is not checked.

    Raises
    ------
    MemoryLimitError
        Naming the predicted peak, the available memory, the largest terms and what to
        change.
    """
    checks = [("device", device if device is not None else available_memory(estimate.device))]
    if estimate.device.type == "cuda":
        checks.append(("host", host if host is not None else available_memory("cpu")))
    for where, available in checks:
        if available is None:
            continue
        peak = estimate.peak(where)
        if peak <= available.nbytes:
            continue
        moment = estimate.peak_moment(where)
        key = None if estimate.device.type == "cpu" else where
        largest = sorted(
            (t for t in moment.terms if key is None or t.where == key),
            key=lambda t: -t.nbytes,
        )[:3]
        terms = ", ".join(f"{t.name} {_gib(t.nbytes)}" for t in largest)
        place = estimate.device if where == "device" else "the host"
        shape = estimate.shape
        raise MemoryLimitError(
            f"predicted peak memory on {place} is {_gib(peak)} ({moment.name}), more than the "
            f"{_gib(available.nbytes)} available ({available.source}); largest terms: {terms}. "
            f"Lower optimization.chunk_size (now {shape.chunk}) or optimization.batch_size, "
            f"or object.states ({shape.object_shape[0]}), probe.modes ({shape.modes}) or "
            f"object.slices ({shape.object_shape[1]})"
            + (f" or propagator.substeps ({shape.substeps})" if shape.substeps > 1 else "")
            + ", or use another device; `ptyscope "
            f"estimate` lists every term. To start anyway set {config_name} = false or pass "
            "--skip-memory-check."
        )


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / MIB:.1f} MiB"


def render(estimate: RunEstimate, available: dict[str, Available | None]) -> str:
    """The ``ptyscope estimate`` table: every term in MiB, the peaks, the time."""
    shape = estimate.shape
    lines = [
        f"{shape.patterns} patterns of {shape.window[0]} × {shape.window[1]}, object "
        f"{' × '.join(map(str, shape.object_shape))} (states × slices × Ny × Nx), "
        f"{shape.modes} probe mode(s)"
        + (f", {shape.substeps} planes per slice" if shape.substeps > 1 else "")
        + f"; {shape.updates} update(s) per iteration of "
        f"{shape.batch} patterns in chunks of {shape.chunk}",
        "",
        f"{'memory':<66}{'where':>7}{'MiB':>11}",
    ]
    cpu = estimate.device.type == "cpu"

    def row(name: str, where: str, nbytes: int) -> str:
        place = "cpu" if cpu else ("host" if where == "host" else str(estimate.device))
        return f"  {name:<64}{place if where else '':>7}{nbytes / MIB:>11.1f}"

    iterating = [m for m in estimate.moments if set(estimate.persistent) <= set(m.terms)]
    held = [t for t in iterating[0].terms if all(t in m.terms for m in iterating)]
    lines.append("held through the iterations (part of the totals marked *):")
    lines += [row(t.name, t.where, t.nbytes) for t in held]
    lines.append(row("sum", "", sum(t.nbytes for t in held)))
    for moment in estimate.moments:
        mark = " *" if moment in iterating else ""
        lines.append(f"{moment.name}{mark}:")
        shown = [t for t in moment.terms if t not in held or moment not in iterating]
        lines += [row(t.name, t.where, t.nbytes) for t in shown]
        lines.append(row("total" + mark, "", moment.total()))
    places = ["device"] if estimate.device.type == "cpu" else ["device", "host"]
    lines.append("")
    for where in places:
        place = str(estimate.device) if where == "device" else "host"
        free = available.get(where)
        free_text = (
            f"{free.nbytes / MIB:.1f} MiB available ({free.source})"
            if free is not None
            else "available memory unknown"
        )
        peak = estimate.peak(where)
        verdict = "" if free is None else ("fits" if peak <= free.nbytes else "DOES NOT FIT")
        lines.append(
            f"predicted peak on {place}: {peak / MIB:.1f} MiB "
            f"({estimate.peak_moment(where).name}); {free_text}; {verdict}"
        )
    lines.append(
        f"FFTs per iteration: {estimate.ffts_per_iteration:.0f} ({shape.window[0]} × "
        f"{shape.window[1]}, forward and backward)"
    )
    parts = estimate.seconds_parts()
    if parts is not None:
        assert estimate.seconds_per_fft is not None and estimate.seconds_per_chunk is not None
        bound = "at most " if shape.optimizer == "lbfgs" else ""
        lines.append(
            f"predicted time per iteration: {bound}{sum(parts.values()):.3g} s on "
            f"{estimate.device} (an estimate): FFTs {parts['ffts']:.3g} s "
            f"({estimate.seconds_per_fft * 1e6:.1f} µs each, measured), element-wise "
            f"{parts['element-wise']:.3g} s ({estimate.bytes_written_per_iteration / MIB:.0f} "
            f"MiB written, {ELEMENTWISE_FACTOR} × the measured copy time), fixed "
            f"{parts['fixed']:.3g} s ({estimate.chunks_per_iteration} passes × "
            f"{estimate.seconds_per_chunk * 1e3:.1f} ms, measured); docs/performance.md"
        )
    return "\n".join(lines)
