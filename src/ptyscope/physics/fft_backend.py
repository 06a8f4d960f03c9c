"""Unnormalised 2D FFTs for the multislice loops: FFTW on the CPU where pyFFTW is
installed, ``torch.fft`` everywhere else.

On the CPU the multislice iteration is bound by its 2D transforms of (…, ny, nx) complex
waves. torch's CPU FFT is MKL's, and FFTW's planned transforms are faster than it on the
2-core AMD EPYC development machine (figures under ``PTYSCOPE_FFTW_PLANNER`` below).
The transforms here are the unnormalised sums of both directions,

    fft2:  X[k] = Σ_r x[r]·exp(−2πi k·r/N)        ifft2:  x[r] = Σ_k X[k]·exp(+2πi k·r/N)

(so ``ifft2(fft2(x)) = N·x``, N = ny·nx; ``torch.fft.ifft2(…, norm="forward")``): callers
fold the 1/N into a product they make anyway, which saves a pass over the wave.

Environment variables, read once at import:

``PTYSCOPE_FFT``
    ``auto`` (the default): FFTW where pyFFTW is installed (the ``[fft]`` extra, which
    ``make setup`` installs), ``torch.fft`` otherwise; ``torch``; or ``fftw`` (an error
    if pyFFTW is missing: ``pip install 'ptyscope[fft]'``). FFTW's transforms round
    differently from MKL's. With the ``estimate`` planner the whole default test suite
    passes with either (2026-11-24: 1152 passed with FFTW), and the two-process L-BFGS
    comparison, the suite's most rounding-sensitive, came out at 0.23 / 0.13 of its
    limits (object / probe) with FFTW against 0.22 / 0.08 with torch, one thread each.
``PTYSCOPE_FFTW_PLANNER``
    ``measure`` (the default), ``patient`` or ``estimate``. ``measure`` and ``patient``
    time candidate algorithms and keep the fastest; ``estimate`` picks by rule. On the
    2-core development machine (batches of 64 complex64 98 × 98 transforms, 2 threads):
    14.5 µs per transform with ``estimate``, 12.6 µs with ``measure`` (10 ms of
    planning), 11.7–12.0 µs with ``patient`` (0.45 s of planning), 14.6–15.3 µs with
    torch's; the PtyRAD case of issue 10 with 4 probe modes took 1.64–1.69 s per
    iteration with ``estimate`` and 1.44–1.48 s with ``measure`` or ``patient``.
    Algorithms round differently, so which plan a process gets decides the last bits of
    its results, and a reconstruction's trajectory can follow them (a tomography test's
    resolution moved from 0.93 to 1.18 Å on one axis between two plans). The timed
    planners therefore keep their choices in a wisdom file (below): the plan measured
    once for a shape is the plan every later process on the machine uses, so runs repeat
    to the bit from the first. ``estimate`` neither reads nor writes wisdom; its plans
    are the same in every process and on every machine with the same instruction set
    (the test suite runs with it, ``tests/conftest.py``).
``PTYSCOPE_FFTW_WISDOM``
    The wisdom file of the timed planners: a path, or ``off`` (or empty) to measure
    again in every process. Default: ``$XDG_CACHE_HOME/ptyscope`` (``~/.cache/ptyscope``)
    ``/fftw-wisdom-<key>.json``, where the key names the CPU model, the architecture and
    pyFFTW's version (wisdom measured on one CPU is valid on another, but not the fastest
    there). The file is read before the first plan and written atomically after each new
    one, merged under a lock with what other processes have written meanwhile. Two
    processes that measure the same new shape at the same moment may choose differently;
    the later write wins for every process after them. An unreadable file is reported by
    a warning and replaced; wisdom that cannot be written costs only the next process's
    planning time.

FFTW serves only CPU tensors of complex64/complex128 that are contiguous, not conjugate
views and aligned as its plan needs; any other tensor, and every CUDA tensor, goes to
``torch.fft``. Plans are cached per thread (an FFTW plan holds its arrays while it runs)
and made under one lock (FFTW's planner is not thread-safe). A plan keeps a reference to
the last arrays it transformed until its next call.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "BACKEND",
    "PLANNER",
    "WISDOM",
    "describe",
    "fft2",
    "fftw_log",
    "ifft2",
    "torch_transforms",
]

_CHOICES = ("auto", "torch", "fftw")


def _load_fftw() -> Any:
    try:
        import pyfftw  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return None
    return pyfftw


def _setting(name: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, choices[0]).strip().lower() or choices[0]
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _choose() -> tuple[str, Any]:
    requested = _setting("PTYSCOPE_FFT", _CHOICES)
    pyfftw = None if requested == "torch" else _load_fftw()
    if pyfftw is None and requested == "fftw":
        raise ImportError(
            "PTYSCOPE_FFT=fftw needs pyFFTW: pip install 'ptyscope[fft]' (or unset PTYSCOPE_FFT)"
        )
    return ("fftw" if pyfftw is not None else "torch"), pyfftw


def describe() -> str:
    """The transforms CPU tensors get, for a result's provenance: ``"torch"`` or
    ``"fftw <pyFFTW version> (<planner>[, wisdom <file>])"``. A wisdom file under the
    user's home directory is written as ``~/…``: results are shared, user names need not
    be."""
    if BACKEND == "torch":
        return "torch"
    planner = PLANNER if WISDOM is None else f"{PLANNER}, wisdom {_home_as_tilde(WISDOM)}"
    return f"fftw {getattr(_PYFFTW, '__version__', '?')} ({planner})"


def _home_as_tilde(path: Path) -> str:
    try:
        return str(Path("~") / path.relative_to(Path.home()))
    except (ValueError, RuntimeError):  # not under home, or no home to resolve
        return str(path)


def _wisdom_path(backend: str, planner: str) -> Path | None:
    """The timed planners' wisdom file (module docstring), or None (torch's transforms,
    ``estimate``, or ``PTYSCOPE_FFTW_WISDOM=off``)."""
    if backend != "fftw" or planner == "estimate":
        return None
    chosen = os.environ.get("PTYSCOPE_FFTW_WISDOM")
    if chosen is not None:
        chosen = chosen.strip()
        if chosen.lower() in ("", "off", "none"):
            return None
        return Path(chosen).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ptyscope" / f"fftw-wisdom-{_machine_key()}.json"


def _machine_key() -> str:
    """12 hex digits naming the CPU model, the architecture and pyFFTW's version."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    model = model or platform.processor()
    version = getattr(_PYFFTW, "__version__", "?")
    text = f"{platform.machine()}|{model}|{version}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


#: PTYSCOPE_FFTW_PLANNER's choices, the default first
_PLANNERS = ("measure", "patient", "estimate")
#: "fftw" or "torch": what CPU tensors use.
BACKEND, _PYFFTW = _choose()
#: FFTW's planner (module docstring): "measure" (timed, kept in WISDOM), "patient" or
#: "estimate" (by rule, no wisdom)
PLANNER = _setting("PTYSCOPE_FFTW_PLANNER", _PLANNERS)
#: where the timed planners keep their plans, or None (module docstring)
WISDOM = _wisdom_path(BACKEND, PLANNER)
#: the FFTW precisions in the order pyFFTW's export_wisdom/import_wisdom use
_PRECISIONS = ("double", "single", "long double")
_WISDOM_READ = False
_PLAN_LOCK = threading.Lock()
_LOCAL = threading.local()
#: seconds FFTW's timed planners may spend on one shape (once per shape, direction and
#: thread)
_PLANNING_LIMIT_S = 2.0


#: (direction "F" or "F⁻¹", (batch, ny, nx)) -> calls, and [seconds inside FFTW]; None
#: unless fftw_log() is open
_LOG: Counter[tuple[str, tuple[int, int, int]]] | None = None
_LOG_SECONDS: list[float] = [0.0]


@contextmanager
def fftw_log() -> Iterator[tuple[Counter[tuple[str, tuple[int, int, int]]], list[float]]]:
    """Record the transforms FFTW does inside the block (the PyTorch profiler sees only
    ``torch.fft``'s): yields (calls per (direction, (batch, ny, nx)), [seconds inside
    FFTW]), filled as the block runs. For ``benchmarks/fft_bound.py``; not thread-safe."""
    global _LOG, _LOG_SECONDS
    _LOG, _LOG_SECONDS = Counter(), [0.0]
    try:
        yield _LOG, _LOG_SECONDS
    finally:
        _LOG = None


@contextmanager
def torch_transforms() -> Iterator[None]:
    """Inside the block this thread's transforms go to ``torch.fft``, whose operations a
    ``TorchDispatchMode`` sees (``ptyscope.reconstruction.activations`` counts them)."""
    before = getattr(_LOCAL, "torch_only", False)
    _LOCAL.torch_only = True
    try:
        yield
    finally:
        _LOCAL.torch_only = before


def fft2(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Unnormalised forward 2D FFT over the last two axes (module docstring); ``out``
    (same shape and dtype) receives it and may be ``x`` itself. Differentiable when ``x``
    requires a gradient (then without ``out``)."""
    return _differentiable(x, out, forward=True)


def ifft2(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Unnormalised inverse 2D FFT over the last two axes: ``ifft2(fft2(x)) = ny·nx·x``;
    ``out`` and gradients as in :func:`fft2`."""
    return _differentiable(x, out, forward=False)


def _differentiable(x: torch.Tensor, out: torch.Tensor | None, forward: bool) -> torch.Tensor:
    if not (x.requires_grad and torch.is_grad_enabled()):
        return _transform(x, out, forward)
    if out is not None:
        raise ValueError("out must be None when the input requires a gradient, got a tensor")
    result: torch.Tensor = _Transform.apply(x, forward)  # type: ignore[no-untyped-call]
    return result


class _Transform(torch.autograd.Function):
    # The adjoint of the unnormalised F is its conjugate transpose, the unnormalised F⁻¹
    # (and the other way round): each direction's backward is the other direction.
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, forward: bool) -> torch.Tensor:
        ctx.forward = forward
        return _transform(x, None, forward)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _transform(grad.contiguous(), None, not ctx.forward), None


def _transform(x: torch.Tensor, out: torch.Tensor | None, forward: bool) -> torch.Tensor:
    x = x.detach()
    if _PYFFTW is not None and _fftw_can(x) and not getattr(_LOCAL, "torch_only", False):
        out = torch.empty_like(x) if out is None else out  # torch's below, should FFTW not
        if _fftw_can(out) and out.shape == x.shape and out.dtype == x.dtype:
            # As (batch, ny, nx) with canonical strides: a contiguous tensor's size-1 axes
            # may carry any stride, and an FFTW plan is bound to its arrays' strides.
            shape = (x.numel() // (x.shape[-2] * x.shape[-1]), x.shape[-2], x.shape[-1])
            plan = _plan(x, out, shape, forward)
            if plan is not None:
                plan.update_arrays(_as_array(x, shape), _as_array(out, shape))
                if _LOG is None:
                    plan.execute()
                else:
                    start = time.perf_counter()
                    plan.execute()
                    _LOG_SECONDS[0] += time.perf_counter() - start
                    _LOG["F" if forward else "F⁻¹", shape] += 1
                return out
    result: torch.Tensor
    if forward:
        result = torch.fft.fft2(x, norm="backward", out=out)
    else:
        result = torch.fft.ifft2(x, norm="forward", out=out)
    return result


def _fftw_can(t: torch.Tensor) -> bool:
    return (
        t.device.type == "cpu"
        and t.dtype in (torch.complex64, torch.complex128)
        and t.ndim >= 2
        and t.is_contiguous()
        and not t.is_conj()
        and t.numel() > 0
    )


def _as_array(t: torch.Tensor, shape: tuple[int, int, int]) -> Any:
    return t.detach().numpy().reshape(-1).reshape(shape)


def _plan(x: torch.Tensor, out: torch.Tensor, shape: tuple[int, int, int], forward: bool) -> Any:
    """The thread's cached FFTW plan for (batch, ny, nx), dtype, direction and
    in-place-ness, or None when the arrays are not aligned as the plan needs."""
    threads = torch.get_num_threads()
    inplace = x.data_ptr() == out.data_ptr()
    key = (shape, x.dtype, forward, inplace, threads)
    plans: dict[tuple[Any, ...], Any] = _LOCAL.__dict__.setdefault("plans", {})
    plan = plans.get(key)
    if plan is None:
        plan = _make_plan(shape, x.dtype, forward, inplace, threads)
        plans[key] = plan
    if x.data_ptr() % plan.input_alignment or out.data_ptr() % plan.output_alignment:
        return None
    return plan


def _make_plan(
    shape: tuple[int, ...], dtype: torch.dtype, forward: bool, inplace: bool, threads: int
) -> Any:
    numpy_dtype = "complex64" if dtype == torch.complex64 else "complex128"
    # Planning with FFTW_MEASURE overwrites the arrays: plan on scratch ones.
    scratch_in = _PYFFTW.empty_aligned(shape, dtype=numpy_dtype)
    scratch_out = scratch_in if inplace else _PYFFTW.empty_aligned(shape, dtype=numpy_dtype)
    global _WISDOM_READ
    with _PLAN_LOCK:
        if WISDOM is not None and not _WISDOM_READ:
            _WISDOM_READ = True
            _read_wisdom(WISDOM, complain=True)
        before = _PYFFTW.export_wisdom() if WISDOM is not None else None
        plan = _PYFFTW.FFTW(
            scratch_in,
            scratch_out,
            axes=(-2, -1),
            direction="FFTW_FORWARD" if forward else "FFTW_BACKWARD",
            flags=("FFTW_" + PLANNER.upper(),),
            threads=threads,
            planning_timelimit=_PLANNING_LIMIT_S,
        )
        if WISDOM is not None and _PYFFTW.export_wisdom() != before:
            _write_wisdom(WISDOM)
        return plan


def _read_wisdom(path: Path, complain: bool) -> None:
    """Add the wisdom in ``path`` (if any) to FFTW's; an unreadable file is warned about
    when ``complain`` and otherwise ignored (the next write replaces it)."""
    try:
        stored = json.loads(path.read_text(encoding="ascii"))
        accepted = _PYFFTW.import_wisdom(tuple(stored[p].encode("ascii") for p in _PRECISIONS))
        if not all(accepted):
            raise ValueError(f"FFTW rejected the wisdom of {accepted.count(False)} precisions")
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError, UnicodeError) as error:
        if complain:
            warnings.warn(
                f"ignoring the FFTW wisdom file {path} ({error}); it will be replaced "
                "(PTYSCOPE_FFTW_WISDOM names another file, or 'off')",
                RuntimeWarning,
                stacklevel=4,
            )


def _write_wisdom(path: Path) -> None:
    """Merge FFTW's wisdom with the file's (other processes may have added to it) and
    replace the file atomically, under an advisory lock where the OS has one."""
    from ptyscope.io.atomic import atomic_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path.with_name(path.name + ".lock")):
            _read_wisdom(path, complain=False)
            wisdom = zip(_PRECISIONS, _PYFFTW.export_wisdom(), strict=True)
            text = json.dumps({precision: w.decode("ascii") for precision, w in wisdom})
            with atomic_path(path) as temporary:
                temporary.write_text(text, encoding="ascii")
    except OSError as error:
        warnings.warn(
            f"could not write the FFTW wisdom file {path} ({error}); the next process "
            "plans its transforms again",
            RuntimeWarning,
            stacklevel=4,
        )


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): the atomic replace still holds
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
